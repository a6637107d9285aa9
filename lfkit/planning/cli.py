"""``lfkit recipe check`` and ``lfkit plan``: keep the recipe catalog honest and say what fits."""

from __future__ import annotations

import typer

recipe_app = typer.Typer(help="Check recipes with LlamaFactory's own argument parser.", no_args_is_help=True)


def plan_command() -> None:
    """Estimate peak GPU memory and training time for a recipe on given GPUs."""
