"""Worker processes for the data tools: forked, only where they pay, gone with their parent.

Both passes of a conversion can split their work into independent pieces (line-aligned chunks
of the inputs, batches of picked records) and run them in worker processes. :func:`ordered_map`
does that:

* **fork, not spawn.** A spawned worker starts a fresh interpreter and imports the modules it
  needs (for a ``lfkit`` command, the whole CLI), which costs more CPU than a small input takes
  to convert; a forked worker starts with everything already imported, in milliseconds. Fork is
  safe here because the data tools start no threads of their own before forking (the progress
  bar refreshes from the main thread, see :mod:`lfkit.data_tools.core.progress`) and the workers
  only compute and write files in the run's work folder.
* **Only where they pay.** With one worker, or one piece of work, everything runs in the calling
  process; the callers also choose one worker below a size where starting processes costs more
  than it saves.
* **Results in order.** Results come back in the order of the work items whatever finishes first,
  so the output never depends on the number of workers.
* **Nothing outlives the run.** Each worker calls
  :func:`~lfkit.data_tools.core.workdir.die_with_parent` first (the kernel kills it when its
  parent dies, even of ``SIGKILL``); on an error or a signal the parent terminates its workers at
  once instead of waiting for the pieces in flight.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TypeVar

from lfkit.data_tools.core.workdir import die_with_parent, terminate_workers

MAX_WORKERS = 8
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """CPUs this process may use, at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    on_result: Callable[[T, R], None] | None = None,
) -> Iterator[R]:
    """``fn`` over ``items``, in forked worker processes when ``workers`` > 1; results in order.

    ``fn`` and the items must be picklable only for the trip back: a forked worker inherits
    ``fn``. ``on_result(item, result)`` runs in the parent as each result is taken, in order
    (progress bars).
    """
    items = list(items)
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        for item in items:
            result = fn(item)
            if on_result is not None:
                on_result(item, result)
            yield result
        return
    import multiprocessing  # here: a run that starts no worker does not pay for the imports
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=partial(die_with_parent, os.getpid()),
    )
    try:
        for item, result in zip(items, pool.map(fn, items), strict=True):
            if on_result is not None:
                on_result(item, result)
            yield result
    except BaseException:
        terminate_workers(pool)  # an error or a signal: do not wait for the pieces in flight
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
