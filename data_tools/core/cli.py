"""What the ``lfkit data`` sub-commands of both kinds share: console, inputs, interruptions.

Kept free of heavy imports: ``lfkit --help`` imports the command modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from lfkit.data_tools.core.inputs import InputSet, Skipped
    from rich.console import Console

SHOW_SKIPPED = 10


class Format(str, Enum):
    """The dataset file format (``--format``), for both kinds."""

    jsonl = "jsonl"
    parquet = "parquet"


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def expand(inputs: list[Path]) -> InputSet:
    """The files to read; a missing path or an empty directory is a usage error naming it."""
    from lfkit.data_tools.core.inputs import expand_inputs

    try:
        return expand_inputs(inputs)
    except (OSError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="INPUTS") from None


@contextlib.contextmanager
def interruptible(wrote: bool = True) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into a clean exit (status 128 + signal) after the run cleaned up."""
    from lfkit.data_tools.core.workdir import Interrupted, exit_on_signals

    try:
        with exit_on_signals():
            yield
    except Interrupted as stop:
        note = "; nothing was written, previous outputs are unchanged" if wrote else ""
        typer.echo(f"interrupted by {stop.name}{note}", err=True)
        raise typer.Exit(code=stop.exit_code) from None


def print_skipped(console: Console, skipped: list[Skipped]) -> None:
    """List the files under input directories that were not read, and why."""
    if not skipped:
        return
    console.print(f"[yellow]{len(skipped)} file(s) under the input directories were not read:[/]")
    for item in skipped[:SHOW_SKIPPED]:
        console.print(f"  {item.path}: {item.reason}", markup=False, soft_wrap=True)
    if len(skipped) > SHOW_SKIPPED:
        console.print(f"  ... and {len(skipped) - SHOW_SKIPPED} more")


def print_stale_work(console: Console, removed: list[Path]) -> None:
    """Say which work folders of killed earlier runs were removed."""
    for path in removed:
        console.print(
            f"removed {path}: the work folder of an earlier run of this name that was killed",
            markup=False,
            soft_wrap=True,
        )
