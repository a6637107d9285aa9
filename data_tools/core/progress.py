"""The rich progress bar the data tools show while streaming their inputs.

Progress is measured in on-disk bytes (see :func:`lfkit.data_tools.core.inputs.iter_lines`'s
``on_progress``), so the bar is right for ``.gz`` inputs and needs no pre-count of lines.

The bar is redrawn from the thread that reports progress (at most :data:`REFRESH_SECONDS`
apart), not from rich's own refresh thread: the converters fork worker processes
(:mod:`lfkit.data_tools.core.parallel`), and forking while another thread may hold a lock
(the console's, the import lock) can deadlock the child.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

REFRESH_SECONDS = 0.1
MIN_BYTES = 32 << 20  # smaller inputs take a moment: no bar (and no import of rich.progress)


@contextlib.contextmanager
def byte_progress(console: Console, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a bytes progress bar; yields ``advance(n_bytes)`` to feed it.

    The bar is transient, and left out when the console is not a terminal or the input is small.
    """
    if total < MIN_BYTES or not console.is_terminal:
        yield _ignore
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        auto_refresh=False,
    )
    with progress:
        task = progress.add_task(description, total=max(total, 1))
        last = [0.0]

        def advance(n: int) -> None:
            progress.advance(task, n)
            now = time.monotonic()
            if now - last[0] >= REFRESH_SECONDS:
                last[0] = now
                progress.refresh()

        yield advance


def _ignore(n: int) -> None:
    """The progress callback when there is no bar."""
