"""The rich progress bar the data tools show while streaming their inputs.

Progress is measured in on-disk bytes (see :func:`lfkit.data_tools.core.inputs.iter_lines`'s
``on_progress``), so the bar is right for ``.gz`` inputs and needs no pre-count of lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextlib.contextmanager
def byte_progress(console: Console, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a bytes progress bar; yields ``advance(n_bytes)`` to feed it.

    The bar is transient and disabled automatically when the console is not a terminal.
    """
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task(description, total=max(total, 1))

        def advance(n: int) -> None:
            progress.advance(task, n)

        yield advance
