"""An interrupted conversion leaves nothing behind: no worker, no work folder, no temporary file.

Real ``lfkit data convert`` processes with two worker processes (the input is large enough for
the parallel scan), killed while they work: ``SIGKILL`` (nothing can run: the workers die with
their parent through ``PR_SET_PDEATHSIG``, the work folder stays and the next run removes it)
and ``SIGTERM`` (the run cleans up itself and exits 143). The previous outputs stay intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil
import pytest
from dialogue_helpers import chat, write_jsonl

LFKIT = str(Path(sys.executable).parent / "lfkit")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    """~24 MB of conversations: above the size where the scan starts worker processes."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    filler = "lorem ipsum dolor sit amet " * 40
    with open(path, "wb") as fh:
        for i in range(20_000):
            record = chat(f"role{i % 500}", 1, tag=f"{i} {filler}")
            fh.write(orjson.dumps(record) + b"\n")
    return path


def start(src: Path, out: Path) -> subprocess.Popen:
    cmd = [LFKIT, "data", "convert", "dialogue", str(src), "--out", str(out), "--name", "rp"]
    cmd += ["--role-key", "user_id", "--workers", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_workers(proc: subprocess.Popen, out: Path, timeout: float = 60) -> list[psutil.Process]:
    """The run's descendants once both scan workers run and the work folder exists.

    The workers are forked: they run the parent's command line.
    """
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        kids = parent.children(recursive=True)
        workers = [k for k in kids if _cmdline(k) == _cmdline(parent)]
        if len(workers) >= 2 and list(out.glob(".rp.work.*")):
            return kids
        time.sleep(0.05)
    raise AssertionError("the scan workers did not start")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def gone(processes: list[psutil.Process], timeout: float = 5) -> list[psutil.Process]:
    """The processes still alive after ``timeout`` seconds (a zombie is dead, only not reaped yet:
    a killed parent's children are re-parented to a reaper that may be slow to collect them)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def small_run(src: Path, out: Path) -> list[str]:
    """The command of a quick conversion into ``out`` (the old ``convert FILE`` form)."""
    return [LFKIT, "data", "convert", str(src), "--out", str(out), "--name", "rp", "--role-key", "user_id",
            "--val-ratio", "0.25"]  # fmt: skip


def previous_run(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    out = tmp_path / "out"
    small = write_jsonl(tmp_path / "small.jsonl", [chat(f"r{i}", tag=str(i)) for i in range(8)])
    done = subprocess.run(small_run(small, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return small, snapshot(out)


def test_sigkill_leaves_previous_outputs_and_no_process_and_the_next_run_cleans_up(tmp_path, big_input):
    small, before = previous_run(tmp_path)
    out = tmp_path / "out"
    proc = start(big_input, out)
    descendants = wait_for_workers(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not gone(descendants), "lfkit processes outlived the killed run"
    assert snapshot(out) == before  # previous outputs intact, no temporary file beside them
    (stale,) = out.glob(".rp.work.*")  # nothing could run at SIGKILL: the work folder stays ...
    later = subprocess.run(small_run(small, out), capture_output=True, text=True)
    assert later.returncode == 0, later.stderr
    assert f"removed {stale}" in " ".join(later.stdout.split())  # ... and the next run removes it, saying so
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no hidden folder, no .tmp file


def test_sigterm_cleans_up_and_exits_143(tmp_path, big_input):
    _, before = previous_run(tmp_path)
    out = tmp_path / "out"
    proc = start(big_input, out)
    descendants = wait_for_workers(proc, out)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "interrupted by SIGTERM; nothing was written, previous outputs are unchanged" in stderr
    assert not gone(descendants)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # the work folder is gone too
    assert snapshot(out) == before


def test_a_live_run_keeps_its_work_folder(tmp_path):
    """Only the folders of dead runs are stale: one whose lock is held is left alone."""
    from lfkit.data_tools.core.workdir import remove_stale, work_folder

    with work_folder(tmp_path, "rp") as first:
        assert remove_stale(tmp_path, "rp") == []
        assert first.path.exists()
    assert not first.path.exists()
    dead = tmp_path / ".rp.work.dead"
    dead.mkdir()
    (dead / "spool.x").write_bytes(b"x")
    assert remove_stale(tmp_path, "rp") == [dead] and not dead.exists()
    assert os.listdir(tmp_path) == []


PARENT = """
import multiprocessing, os, sys, time
from functools import partial
from lfkit.data_tools.core.workdir import die_with_parent

def sleep_forever():
    time.sleep(600)

if __name__ == "__main__":
    from concurrent.futures import ProcessPoolExecutor
    ctx = multiprocessing.get_context("spawn")
    init = partial(die_with_parent, os.getpid()) if sys.argv[1] == "guarded" else None
    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=init)
    pool.submit(sleep_forever)
    print("started", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_a_busy_worker_dies_with_its_parent_only_when_guarded(tmp_path, guarded):
    """The mechanism itself: a worker busy for minutes dies at once with a SIGKILLed parent."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen([sys.executable, str(script), "guarded" if guarded else "bare"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "started"
    deadline = time.monotonic() + 30
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # the worker has run its initializer and took the task
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    alive = gone(workers, timeout=3)
    try:
        assert (not alive) if guarded else alive
    finally:
        for p in alive:
            p.kill()
