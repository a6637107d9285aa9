"""The ``lfkit`` command line: one typer app with a sub-command group per area.

Each group lives beside the code it drives and imports its heavy dependencies inside the
commands, so ``lfkit --help`` answers instantly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from lfkit import __version__
from lfkit.data_tools.cli import app as data_app
from lfkit.planning.cli import plan_command, recipe_app
from lfkit.reporting.cli import app as results_app

app = typer.Typer(
    name="lfkit",
    help="Data tools, recipes, a LlamaFactory plugin and results tooling for Qwen and ChatTS fine-tuning.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")
app.add_typer(results_app, name="results")
app.command("plan")(plan_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lfkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """lfkit: convert data, check and plan recipes, train with the plugin, report results."""


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="A LlamaFactory YAML recipe."),
) -> None:
    """Train a recipe with the lfkit plugin active: the explicit form of **llamafactory-cli train**.

    After **pip install lfkit** plain **llamafactory-cli train RECIPE** already loads the plugin in
    every process (through the lfkit_plugin.pth hook); this command does the same where that hook
    is not installed (for example a source checkout on PYTHONPATH), for single-process runs: the
    ranks of a multi-GPU torchrun launch are new interpreters that only the installed hook
    reaches, so there it refuses to start rather than let the ranks reject lfkit's keys.
    Extra KEY=VALUE words override recipe keys, as with llamafactory-cli:
    `lfkit train r.yaml learning_rate=1e-4`
    """
    from lfkit.plugin.activate import hook_installed, install

    if not hook_installed() and _launches_torchrun():
        typer.echo(
            "lfkit train: this launch starts torchrun ranks, and lfkit_plugin.pth is not installed in "
            "this environment's site-packages, so the ranks would run without the plugin. "
            "Install lfkit (pip install lfkit, or pip install . in the checkout) and run "
            "llamafactory-cli train as usual.",
            err=True,
        )
        raise typer.Exit(2)
    from lfkit.plugin.errors import LfkitError

    try:  # patches the LlamaFactory modules already imported; refuses in one line if a name moved
        install()
    except LfkitError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    from llamafactory.cli import main as llamafactory_main

    sys.argv = ["llamafactory-cli", "train", str(recipe), *ctx.args]
    llamafactory_main()


def _launches_torchrun() -> bool:
    """Whether llamafactory-cli train will start torchrun ranks (its launcher's own rule)."""
    import os

    if os.environ.get("FORCE_TORCHRUN", "").lower() in ("1", "true", "y", "yes"):
        return True
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 1


@app.command("tiny-model")
def tiny_model(
    out_dir: Path = typer.Argument(..., help="Directory to write the tokenizer and model into."),
    corpus: list[Path] = typer.Option(
        [], "--corpus", help="Text or JSONL files whose text trains the tokenizer (repeatable)."
    ),
    seed: int = typer.Option(0, help="Seed for the random weights."),
) -> None:
    """Build a tiny random-weight Qwen2 model and BPE tokenizer locally (no model hub needed).

    Used by the tests and the bundled sample job: a real LlamaFactory run on it takes seconds.
    """
    from lfkit.tiny_model import build_tiny_model

    # The corpus only shapes the tokenizer's merges: undecodable bytes (messy JSONL has them) are
    # replaced rather than fatal.
    lines = [
        line for path in corpus for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
    ]
    path = build_tiny_model(out_dir, lines, seed=seed)
    typer.echo(f"tiny model written to {path}")


if __name__ == "__main__":
    app()
