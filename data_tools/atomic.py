"""Atomic file replacement: an interrupted run never leaves a half-written output behind.

Every output of the data tools (datasets, rejects files, ``dataset_info.json``) goes through
:func:`atomic_write`: the data is written to a temporary file in the destination's own
directory (so the final ``os.replace`` is a same-filesystem rename, which POSIX makes atomic),
flushed and fsynced, and only then renamed over the destination. If anything raises before
that, the temporary file is removed and the previous file, if any, is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it onto ``path``.

    ``mode`` must be a write mode (``"wb"`` or ``"w"``); text mode defaults to UTF-8.
    On an exception the temporary file is deleted, ``path`` keeps its old content, and the
    exception propagates.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _final_mode(target))
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _final_mode(target: Path) -> int:
    """Keep the mode of the file being replaced; a new file gets the usual 0o666 minus umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (best effort: not every platform can fsync a directory)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
