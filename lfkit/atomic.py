"""Atomic file replacement: the one way lfkit writes a file, so an interrupted run never leaves a
half-written output behind.

Every file lfkit writes (datasets, rejects files, ``dataset_info.json``, reports, plots, run
records, recipe headers) goes through :func:`atomic_write` (or :func:`write_text` /
:func:`write_bytes` for data already in memory), and every directory it builds (tiny and
random-weight models) through :func:`atomic_dir`. The data is written to a temporary file in
the destination's own directory (so the final ``os.replace`` is a same-filesystem rename, which
POSIX makes atomic), flushed and fsynced, and only then renamed over the destination. If
anything raises before that, the temporary file is removed and the previous file, if any, is
left untouched. :class:`AtomicGroup` does the same for several outputs of one run that must
change together: all are written to temporaries first and renamed into place only once every
one is complete.
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


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; returns the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically replace ``path`` with ``text`` (UTF-8); returns the path."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, exist_ok: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling; on clean exit rename it onto ``path``.

    The body fills the yielded temporary directory. On an exception the temporary directory is
    removed and nothing appears at ``path``. If ``path`` exists when the rename comes (another
    process built it first), ``exist_ok=True`` keeps that one and drops this build; otherwise
    :class:`FileExistsError` is raised and the build is dropped.
    """
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)  # fails on an existing non-empty directory: never merges two builds
        except OSError:
            if target.exists() and exist_ok:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            if target.exists():
                raise FileExistsError(f"{target} already exists") from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(target.parent)


def _replace_dir(tmp: str, target: Path) -> None:
    """Put the directory ``tmp`` where ``target`` is (a directory or a file, replaced)."""
    import shutil

    old = None
    if target.is_dir() and not target.is_symlink():
        old = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
        os.rmdir(old)
        os.rename(target, old)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _final_mode(target: Path) -> int:
    """Keep the mode of the file being replaced; a new file gets the usual 0o666 minus umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _dir_mode(target: Path) -> int:
    """Keep the mode of the directory being replaced; a new one gets 0o777 minus umask."""
    if target.is_dir():
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (best effort: not every platform can fsync a directory)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicGroup:
    """Several outputs staged as temporary files and published together, in staging order.

    One run's outputs (dataset, validation split, rejects, ``dataset_info.json``) must change
    together: :meth:`open` stages each beside its destination; leaving the ``with`` block
    normally fsyncs every file and renames them into place in the order they were staged (so
    stage ``dataset_info.json`` last, and it never names a file that is not there yet); leaving
    it with an exception, or :meth:`discard` for one path, deletes the temporaries and keeps the
    previous files. Only the renames themselves (one syscall each) can be interrupted between
    two outputs.

    ``tmp_dir`` stages every temporary there instead of beside its destination (a run's
    private work folder, so a killed run leaves its temporaries in one place that the next
    run removes); it must be on the destinations' filesystem for the renames to be atomic.
    """

    def __init__(self, tmp_dir: str | os.PathLike[str] | None = None) -> None:
        self._staged: dict[Path, tuple[str, IO[Any] | None]] = {}  # None: a staged directory
        self._tmp_dir = None if tmp_dir is None else Path(tmp_dir)

    def open(self, path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> IO[Any]:
        """A file object writing to a temporary beside ``path`` (see :func:`atomic_write` for ``mode``)."""
        if not mode.startswith("w"):
            raise ValueError(f"AtomicGroup.open needs a write mode ('w' or 'wb'), got {mode!r}")
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        target = Path(path)
        if target in self._staged:
            raise ValueError(f"{target} is already staged")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = self._tmp_dir or target.parent
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=tmp_dir)
        try:
            os.fchmod(fd, _final_mode(target))
            fh = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            os.unlink(tmp_name)
            raise
        self._staged[target] = (tmp_name, fh)
        return fh

    def stage_dir(self, path: str | os.PathLike[str]) -> Path:
        """An empty temporary directory that replaces the directory (or file) ``path`` on publish.

        For outputs that are a folder of files (Parquet shards written by several processes).
        Publishing moves the previous ``path`` aside and the new folder into place (two renames,
        so another process may, for an instant, see no ``path``), then deletes the old one.
        """
        target = Path(path)
        if target in self._staged:
            raise ValueError(f"{target} is already staged")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=self._tmp_dir or target.parent)
        os.chmod(tmp, _dir_mode(target))
        self._staged[target] = (tmp, None)
        return Path(tmp)

    def discard(self, path: str | os.PathLike[str]) -> None:
        """Drop one staged output: its previous file stays as it was."""
        tmp_name, fh = self._staged.pop(Path(path))
        if fh is None:
            import shutil

            shutil.rmtree(tmp_name, ignore_errors=True)
            return
        fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)

    def move_to_end(self, path: str | os.PathLike[str]) -> None:
        """Publish the staged ``path`` after every output staged so far (staging order otherwise)."""
        target = Path(path)
        self._staged[target] = self._staged.pop(target)

    def publish(self) -> None:
        """Flush and fsync every staged file, then rename each onto its destination, in order."""
        for _, fh in self._staged.values():
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
        staged = list(self._staged.items())
        for target, (tmp_name, fh) in staged:
            if fh is None:
                _replace_dir(tmp_name, target)
            else:
                os.replace(tmp_name, target)
            del self._staged[target]
        for directory in {target.parent for target, _ in staged}:
            _fsync_dir(directory)

    def abort(self) -> None:
        """Discard every staged output."""
        for target in list(self._staged):
            self.discard(target)

    def __enter__(self) -> AtomicGroup:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.publish()
        except BaseException:
            self.abort()
            raise
