"""The private work folder of one run, and what makes an interrupted run leave nothing behind.

A conversion spools records, spills rejects and stages its outputs in one hidden folder,
``OUT/.NAME.work.XXXXXXXX`` (:func:`work_folder`), so every temporary file of a run is in one
place: the folder is removed when the run ends, however it ends short of a ``SIGKILL``.

* **Signals.** :func:`exit_on_signals` turns ``SIGTERM`` and ``SIGHUP`` (what ``timeout``,
  Slurm, Kubernetes and a closed terminal send) into an :class:`Interrupted` exception in the
  main thread, so the same ``with`` blocks that clean up after an error clean up after them;
  ``SIGINT`` already raises ``KeyboardInterrupt``.
* **Workers.** Each worker process calls :func:`die_with_parent` first: Linux's
  ``PR_SET_PDEATHSIG`` makes the kernel ``SIGKILL`` it the moment its parent dies, whatever
  killed the parent (``SIGKILL`` included), so no worker is left running re-parented to init.
  On an error or signal the parent also terminates its workers itself
  (:func:`terminate_workers`) instead of waiting for their current chunk.
* **SIGKILL.** Nothing can run then, so the folder stays. It is locked (``flock``) by its
  run for as long as that run lives; the kernel drops the lock when the process dies. The next
  run of the same name in the same directory removes every such folder whose lock it can take
  (the run that made it is gone) and says so; a folder whose run is still alive is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCK_FILE = ".lock"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Interrupted(BaseException):
    """The run got ``SIGTERM`` or ``SIGHUP``; a BaseException, like KeyboardInterrupt, so that
    ``except Exception`` handlers do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


@dataclass
class WorkFolder:
    """A run's private folder; ``removed_stale`` lists folders of killed runs this run removed."""

    path: Path
    removed_stale: list[Path] = field(default_factory=list)


def work_prefix(name: str) -> str:
    """The folder-name prefix of the work folders of dataset ``name``."""
    return f".{name}.work."


@contextlib.contextmanager
def work_folder(parent: str | os.PathLike[str], name: str) -> Iterator[WorkFolder]:
    """Create ``parent/.NAME.work.XXXXXXXX``, locked for this run; remove it when the block ends.

    Stale folders of the same name (their run was killed) are removed first.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    removed = remove_stale(parent, name)
    path = Path(tempfile.mkdtemp(prefix=work_prefix(name), dir=parent))
    lock_fd = os.open(path / LOCK_FILE, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        yield WorkFolder(path, removed)
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock_fd)


def remove_stale(parent: Path, name: str) -> list[Path]:
    """Remove the work folders of dataset ``name`` in ``parent`` whose run is gone; return them."""
    removed = []
    for folder in sorted(parent.glob(f"{work_prefix(name)}*")):
        if not folder.is_dir() or _in_use(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _in_use(folder: Path) -> bool:
    """Whether a live process holds the folder's lock (a folder without a lock file is stale)."""
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops a lock just taken
    return False


@contextlib.contextmanager
def exit_on_signals(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread on these signals while the block runs."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    try:
        previous = {signum: signal.signal(signum, handler) for signum in signums}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def die_with_parent(parent_pid: int) -> None:
    """In a worker process: be killed by the kernel when the parent dies (Linux), and ignore SIGINT.

    Ctrl-C reaches the whole process group; the parent handles it and terminates its workers,
    so a worker dying of it first would only add a second traceback.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError, ImportError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def terminate_workers(pool: Any) -> None:
    """Terminate the worker processes of a ``ProcessPoolExecutor`` now (on an error or signal)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.terminate()
