"""The ``lfkit`` command line: one typer app with a sub-command group per area.

Each group lives beside the code it drives and imports its heavy dependencies inside the
commands, so ``lfkit --help`` answers instantly. Two things here apply to every command,
whichever module declares it:

* errors: an exception a command lets escape becomes one plain sentence on stderr and exit
  status 1 (:func:`lfkit.cli_errors.plain_message`); ``lfkit --debug ...`` (or
  ``LFKIT_DEBUG=1``) shows the traceback instead;
* help: a boolean flag is shown as a flag (``--strict``), not as an option taking a value.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperOption

from lfkit import __version__
from lfkit.cli_errors import plain_message
from lfkit.data_tools.cli import app as data_app
from lfkit.data_tools.core.cli import PlainGroup
from lfkit.planning.cli import plan_app, recipe_app
from lfkit.reporting.cli import app as results_app

# typer 0.29's rich help panel prints every option's type, flags included: "--strict <bool>",
# even "--help <bool>", which reads as if the flag took a value ("--strict true" then fails with
# "Invalid value for INPUTS: true"). Its plain-text help already leaves the type out for flags
# and counters (TyperOption.get_help_record); this makes the rich panel agree, for every command.
_display_type_rich = TyperOption.display_type_rich


def _flag_display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    if self.is_flag or self.count:
        return None
    return _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_display_type_rich  # type: ignore[method-assign]

DEBUG_ENV = "LFKIT_DEBUG"
_debug = os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


class LfkitTyper(typer.Typer):
    """The root app: an exception that escapes a command is printed as one plain sentence.

    Usage errors stay click's (exit 2). Anything else ends with ``error: <sentence>`` on
    stderr and exit status 1; with ``--debug`` it propagates with its full traceback.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if _debug:
                raise
            typer.secho(f"error: {plain_message(exc)}", fg=typer.colors.RED, err=True)
            sys.exit(1)


app = LfkitTyper(
    cls=PlainGroup,  # --help / --version / completion checked without pydantic (lfkit.data_tools.core.cli)
    name="lfkit",
    help="Data tools, recipes, a LlamaFactory plugin and results tooling for Qwen and ChatTS fine-tuning.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")
app.add_typer(results_app, name="results")
app.add_typer(plan_app, name="plan")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lfkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        help=f"On an error, show the full traceback instead of one sentence (or set {DEBUG_ENV}=1).",
    ),
) -> None:
    """lfkit: convert data, check and plan recipes, train with the plugin, report results."""
    global _debug
    _debug = _debug or debug


@app.command("doctor")
def doctor(
    network: bool = typer.Option(
        True, "--network/--no-network", help="Check whether the model hub answers (a few seconds at most)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Say what this environment can do before a long run, each line green, yellow or red.

    Python; torch and its CUDA build; each GPU with its memory and bf16 support; LlamaFactory's
    version and whether the lfkit plugin hook is active here and in new interpreters (torchrun
    ranks); DeepSpeed, bitsandbytes, Liger and Ray; the model cache and its free space; where model
    ids download from (huggingface.co, an HF_ENDPOINT mirror, or ModelScope with
    USE_MODELSCOPE_HUB=1) and whether it answers, or that HF_HUB_OFFLINE is set.
    Yellow works with a limitation; red means training as intended will not work: exit status 1.
    """
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lfkit.doctor import Level, run_checks

    findings = run_checks(network=network)
    if as_json:
        typer.echo(json.dumps([asdict(f) | {"level": f.level.value} for f in findings], indent=2))
    else:
        marks = {Level.ok: "[green]ok[/]", Level.warn: "[yellow]warn[/]", Level.fail: "[bold red]FAIL[/]"}
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for f in findings:
            text = escape(f.summary) + (f"\n[dim]-> {escape(f.advice)}[/]" if f.advice else "")
            table.add_row(marks[f.level], f.topic, text)
        Console(highlight=False).print(table)
    if any(f.level is Level.fail for f in findings):
        raise typer.Exit(1)


@app.command("follow")
def follow_command(
    run_dir: Path = typer.Argument(..., help="The run's output_dir (where trainer_log.jsonl appears)."),
    pid: int = typer.Option(
        None, "--pid", help="Follow until this process (the training) exits; default: until the last step."
    ),
    every: float = typer.Option(
        60.0,
        "--every",
        min=0,
        help="Seconds after which a new step gets a progress line anyway (besides one per tenth of steps).",
    ),
) -> None:
    """Follow a training run from its output directory: a progress line now and then, then a summary.

    Reads the **trainer_log.jsonl** LlamaFactory writes (step, loss, eval loss, time left), so a
    run whose own output goes to a log file can still be watched:
    `llamafactory-cli train r.yaml > train.log 2>&1 & lfkit follow saves/run --pid $!`.
    The summary gives train and eval loss from first to last and the chance level ln(vocab).
    """
    from lfkit.follow import follow, process_running

    follow(run_dir, running=process_running(pid) if pid else None, every=every, echo=typer.echo)


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def train(
    ctx: typer.Context,
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="A LlamaFactory YAML recipe."),
    verbose: bool = typer.Option(
        False,
        "-v",
        "--verbose",
        help="Show LlamaFactory's full output too (it is in the log file either way).",
    ),
) -> None:
    """Train a recipe with the lfkit plugin active: the explicit form of **llamafactory-cli train**.

    After **pip install lfkit** plain **llamafactory-cli train RECIPE** already loads the plugin in
    every process (through the lfkit_plugin.pth hook); this command does the same where that hook
    is not installed (for example a source checkout on PYTHONPATH), for single-process runs: the
    ranks of a multi-GPU torchrun launch are new interpreters that only the installed hook
    reaches, so there it refuses to start rather than let the ranks reject lfkit's keys.
    Extra KEY=VALUE words override recipe keys, as with llamafactory-cli:
    `lfkit train r.yaml learning_rate=1e-4`

    Quiet by default: LlamaFactory's output goes to OUTPUT_DIR/lfkit_train.log, and the terminal
    gets a progress line per tenth of the steps (step, loss, eval loss, time left; at least one a
    minute) and a summary.
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
    import threading

    from llamafactory.cli import main as llamafactory_main

    from lfkit.follow import follow
    from lfkit.planning.show import RecipeShowError, merged_recipe
    from lfkit.quiet import output_to_log

    try:
        values = merged_recipe(recipe, list(ctx.args))[0]
    except RecipeShowError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    run_dir = Path(str(values.get("output_dir") or "trainer_output"))
    log = run_dir / "lfkit_train.log"
    typer.echo(f"training {recipe} -> {run_dir} (LlamaFactory's output: {log})")
    sys.argv = ["llamafactory-cli", "train", str(recipe), *ctx.args]
    from lfkit.plugin.preflight import check_train_command

    try:  # the plugin's fail-fast checks, on the screen before LlamaFactory's output goes to the log
        check_train_command(sys.argv)
    except LfkitError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    # the hook wraps llamafactory-cli's main with the same checks: run what it wraps, once checked
    llamafactory_main = getattr(llamafactory_main, "__wrapped__", llamafactory_main)
    status: int | str | None = 0
    done = threading.Event()
    with output_to_log(log, echo=verbose) as say:
        follower = threading.Thread(
            target=follow,
            args=(run_dir,),
            kwargs={"running": lambda: not done.is_set(), "every": 60.0, "echo": say, "quiet": verbose},
        )
        follower.start()
        reason = ""
        try:
            llamafactory_main()
        except SystemExit as exc:
            status = exc.code
            reason = f"exit status {status}"
        except Exception as exc:  # LlamaFactory refuses a recipe with ValueError, in this process
            if _debug:
                raise
            status, reason = 1, str(exc) or type(exc).__name__
        finally:
            done.set()
            follower.join()
    if status:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        typer.echo("\n".join(lines[-30:]), err=True)
        typer.secho(
            f"error: training failed: {reason}. LlamaFactory's full output: {log} "
            "(--debug shows the traceback)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(status if isinstance(status, int) else 1)


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
