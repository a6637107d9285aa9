"""Quiet by default: a command's noisy output goes to a log file, the terminal gets a summary.

LlamaFactory prints hundreds of lines per run (the model config several times, token ids,
per-step dicts). :func:`output_to_log` sends everything this process writes to its stdout and
stderr -- file descriptors 1 and 2, so C extensions and child processes (torchrun ranks) are
caught too -- into a log file, appended as it comes (a log, not an output: it is read while it
grows, so it is not written through :mod:`lfkit.atomic`). With ``echo`` the same bytes also
reach the terminal (``-v``). The caller prints its own progress and summary through the
function it is given, which writes to the real terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def output_to_log(log_path: Path, *, echo: bool) -> Iterator[Callable[[str], None]]:
    """Redirect fds 1 and 2 into ``log_path`` (and to the terminal too with ``echo``).

    Yields ``say(line)``, which prints a line on the terminal whatever the redirection.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_fd = os.dup(1)
    saved_err = os.dup(2)
    read_fd, write_fd = os.pipe()
    lock = threading.Lock()

    def pump(log) -> None:
        while chunk := os.read(read_fd, 1 << 16):
            log.write(chunk)
            log.flush()
            if echo:
                with lock:
                    os.write(terminal_fd, chunk)

    def say(line: str) -> None:
        with lock:
            os.write(terminal_fd, (line + "\n").encode())

    with open(log_path, "ab") as log:
        pumping = threading.Thread(target=pump, args=(log,), daemon=True)
        pumping.start()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        try:
            yield say
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(terminal_fd, 1)  # the pipe's last write ends close here (children's too, once they exit)
            os.dup2(saved_err, 2)
            pumping.join(timeout=10)
            os.close(read_fd)
            os.close(saved_err)
            os.close(terminal_fd)
