"""``lfkit results``: loss-curve plots and a markdown results report from LlamaFactory runs."""

from __future__ import annotations

import typer

app = typer.Typer(help="Plot loss curves and write a markdown report from LlamaFactory output directories.", no_args_is_help=True)
