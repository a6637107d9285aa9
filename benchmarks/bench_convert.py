"""Benchmark ``lfkit data convert`` against the bare JSON parse of the same file (not a test).

Run: ``.venv/bin/python benchmarks/bench_convert.py [--scenario tenth|third|all] [--repeat 3]``

Each scenario generates, in a temporary directory, a role-play JSONL shaped like real corpora
(many roles, heavy-tailed conversations per role) and measures in the same run, on the same
file (warm in the page cache for every contender):

1. a bare orjson parse loop over the file, in-process: the floor of any converter that
   parses every record;
2. ``lfkit data convert`` as a subprocess (end-to-end wall time, interpreter start
   included, with its default workers, and with ``--workers 1``), with its peak RSS (``ru_maxrss``
   of that child and its workers, and the sampled sum over all of them);
3. with ``--baseline-lfkit PATH``, another installation's ``lfkit data convert`` with the same
   options (an earlier version), its runs interleaved with 2.'s;
4. with ``--pandas``, a straightforward pandas script (``read_json(lines=True)``, per-role
   ``groupby().sample()``, ``to_json``).

Scenarios (the targets of issue 15):

* ``tenth``: 220 MB of long conversations (2-24 turns) over ~6,000 roles, ``--max-per-role 1``:
  about 8% of the records are kept. Target: lfkit's rate >= 1.0x the bare-parse rate.
* ``third``: ~450,000 short conversations (1-3 exchanges) over 110,000 roles,
  ``--max-per-role 2``: about a third are kept. Target: >= 0.5x.

Also measured: the fixed cost, ``lfkit data convert`` of a one-line file (median of 7 runs;
target < 0.2 s), beside ``python -c pass``. It prints the ratios (wall clock and CPU time) and
the peak RSS (target < 500 MB). Timings on a loaded machine are only comparable within a run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "the a of to and in you I that it is was for on are with as be at have this from or one had by "
    "but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more "
    "write go see number no way could people my than first water been call who oil its now find long "
    "down day did get come made may part sword ship storm castle dragon tavern secret letter captain "
    "moon forest whisper promise shadow lantern harbor journey stranger crown river potion map"
).split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi))).capitalize() + "."


def generate_long(path: Path, size_mb: float, seed: int = 0, alpha: float = 0.8) -> tuple[int, list[int]]:
    """Long role-play conversations until ``size_mb``; returns (records, conversations per role)."""
    rng = random.Random(seed)
    target = int(size_mb * 1_000_000)
    written = records = 0
    sizes: list[int] = []
    with open(path, "wb", buffering=1 << 20) as fh:
        while written < target:
            role = f"char_{len(sizes):06d}"
            persona = f"You are {role}, " + _text(rng, 20, 80)
            n_conv = min(int(rng.paretovariate(alpha)), 400)  # 1 .. 400, heavy tailed like real corpora
            sizes.append(n_conv)
            for _ in range(n_conv):
                turns = []
                for _ in range(rng.randint(1, 12)):
                    turns.append({"role": "user", "content": _text(rng, 5, 60)})
                    turns.append({"role": "assistant", "content": _text(rng, 10, 120)})
                line = orjson.dumps({"user_id": role, "system": persona, "messages": turns}) + b"\n"
                fh.write(line)
                written += len(line)
                records += 1
    return records, sizes


def generate_short(path: Path, roles: int = 110_000, seed: int = 0) -> tuple[int, list[int]]:
    """~4.2 short conversations per role on average, 62% of the roles with one; shuffled."""
    rng = random.Random(seed)
    sizes = [1 if rng.random() < 0.62 else 2 + int(rng.expovariate(1 / 7.5)) for _ in range(roles)]
    order = [r for r, n in enumerate(sizes) for _ in range(n)]
    rng.shuffle(order)
    with open(path, "wb", buffering=1 << 20) as fh:
        for r in order:
            turns = []
            for _ in range(rng.randint(1, 3)):
                turns.append({"role": "user", "content": _text(rng, 3, 15)})
                turns.append({"role": "assistant", "content": _text(rng, 5, 25)})
            fh.write(orjson.dumps({"user_id": f"u{r:06d}", "messages": turns}) + b"\n")
    return len(order), sizes


def bare_parse(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds for ``orjson.loads`` of every line: the floor of a full-parse converter."""
    wall, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb", buffering=1 << 20) as fh:  # 1 MiB buffer: the fastest plain loop
        for line in fh:
            orjson.loads(line)
    return time.perf_counter() - wall, time.process_time() - cpu


class TreeRss:
    """Samples the summed RSS of a process and all its descendants (workers included)."""

    def __init__(self, pid: int) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid,), daemon=True)
        self._thread.start()

    def _run(self, pid: int) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs)
                self.peak_mb = max(self.peak_mb, total / 2**20)
            except psutil.Error:
                pass
            self._stop.wait(0.02)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd``; wall seconds, CPU seconds (user+sys, its workers included) and peak RSS.

    ``rss_mb`` is ru_maxrss from ``os.wait4`` for that very child: the largest single process
    (the child or one of its reaped workers); ``tree_rss_mb`` is the sampled peak of the sum
    over the child and all its workers alive at the same time.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    tree = TreeRss(proc.pid)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tree_mb = tree.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed ({proc.returncode}):\n{err[-3000:]}")
    rss_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": rss_mb, "tree_rss_mb": tree_mb}


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The fastest run (least wall time) of several; peak memory is the worst seen."""
    fastest = dict(min(runs, key=lambda r: r["wall"]))
    for key in ("rss_mb", "tree_rss_mb"):
        fastest[key] = max(r[key] for r in runs)
    fastest["walls"] = [r["wall"] for r in runs]
    return fastest


PANDAS_SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    src, dst, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    df = pd.read_json(src, lines=True)
    shuffled = df.groupby("user_id", group_keys=False).sample(frac=1.0, random_state=seed)
    picked = shuffled.groupby("user_id").head(n)
    picked.to_json(dst, orient="records", lines=True, force_ascii=False)
    """
)


@dataclass(frozen=True)
class Scenario:
    name: str
    cap: int
    target: float  # lfkit rate / bare-parse rate, wall clock


SCENARIOS = {"tenth": Scenario("tenth", 1, 1.0), "third": Scenario("third", 2, 0.5)}


def measure(scenario: Scenario, args: argparse.Namespace, tmp: Path, lfkit: Path) -> None:
    src = tmp / f"{scenario.name}.jsonl"
    t0 = time.perf_counter()
    if scenario.name == "tenth":
        records, sizes = generate_long(src, args.size_mb)
    else:
        records, sizes = generate_short(src)
    kept = sum(min(scenario.cap, n) for n in sizes)
    size_mb = src.stat().st_size / 1e6
    print(
        f"\n== {scenario.name}: {size_mb:.1f} MB, {records:,} conversations, {len(sizes):,} roles, "
        f"--max-per-role {scenario.cap} keeps {kept:,} ({kept / records:.1%}); generated in "
        f"{time.perf_counter() - t0:.1f} s; load average before: {os.getloadavg()[0]:.2f}"
    )
    bare_parse(src)  # warm the page cache so every contender reads from memory
    options = ["--name", "bench", "--role-key", "user_id", "--max-per-role", str(scenario.cap), "--seed", "0"]

    def convert_cmd(executable: Path, out: str, *extra: str) -> list[str]:
        return [str(executable), "data", "convert", str(src), "--out", str(tmp / out), *options, *extra]

    bare_runs, lf_runs, one_runs, base_runs = [], [], [], []
    for _ in range(args.repeat):  # interleaved: every contender sees the same load
        bare_runs.append(bare_parse(src))
        lf_runs.append(run_child(convert_cmd(lfkit, "out")))
        one_runs.append(run_child(convert_cmd(lfkit, "out1", "--workers", "1")))
        if args.baseline_lfkit:
            base_runs.append(run_child(convert_cmd(args.baseline_lfkit, "out_baseline")))
    bare = {
        "wall": min(w for w, _ in bare_runs),
        "cpu": min(c for _, c in bare_runs),
        "walls": [w for w, _ in bare_runs],
    }
    lf, one = best(lf_runs), best(one_runs)
    rows = [
        ("bare orjson parse loop (in-process)", bare),
        ("lfkit data convert", lf),
        ("lfkit ... --workers 1", one),
    ]
    if args.baseline_lfkit:
        rows.append(("baseline lfkit data convert", best(base_runs)))
    if args.pandas:
        pd_cmd = [
            sys.executable,
            "-c",
            PANDAS_SCRIPT,
            str(src),
            str(tmp / "pandas.jsonl"),
            str(scenario.cap),
            "0",
        ]
        rows.append(
            ("pandas read_json+groupby.sample", best([run_child(pd_cmd) for _ in range(args.repeat)]))
        )
    header = f"{'wall s':>7} {'CPU s':>7} {'MB/s':>7} {'records/s':>10} {'peak RSS MB':>11}"
    print(f"{'contender':36} {header} {'tree RSS MB':>11}")
    for label, r in rows:
        rss = f"{r['rss_mb']:11.0f}" if "rss_mb" in r else f"{'-':>11}"
        tree = f"{r['tree_rss_mb']:11.0f}" if r.get("tree_rss_mb") else f"{'-':>11}"
        rate = f"{size_mb / r['wall']:7.1f} {records / r['wall']:10,.0f}"
        print(f"{label:36} {r['wall']:7.2f} {r['cpu']:7.2f} {rate} {rss} {tree}")
    walls = f"bare {_list(bare['walls'])}; lfkit {_list(lf['walls'])}; --workers 1 {_list(one['walls'])}"
    print(f"wall times of every run: {walls}")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine slows the wall times)")
    for label, r in (("lfkit", lf), ("lfkit --workers 1", one)):
        print(
            f"{label} rate / bare-parse rate: wall clock {bare['wall'] / r['wall']:.2f} "
            f"(target >= {scenario.target}), CPU time {bare['cpu'] / r['cpu']:.2f}"
        )
    if args.baseline_lfkit:
        base = rows[3][1]
        ratio = f"wall clock {base['wall'] / lf['wall']:.2f}, CPU {base['cpu'] / lf['cpu']:.2f}"
        print(f"lfkit rate / baseline rate: {ratio}")
        same = (tmp / "out" / "bench.jsonl").read_bytes() == (
            tmp / "out_baseline" / "bench.jsonl"
        ).read_bytes()
        print(
            f"training files byte-identical to the baseline's: {'yes' if same else 'no (a different draw)'}"
        )
    same = (tmp / "out" / "bench.jsonl").read_bytes() == (tmp / "out1" / "bench.jsonl").read_bytes()
    print(f"training files byte-identical with 1 and with the default workers: {'yes' if same else 'NO'}")
    print(
        f"lfkit peak RSS: {max(lf['rss_mb'], one['rss_mb']):.0f} MB largest process, "
        f"{max(lf['tree_rss_mb'], one['tree_rss_mb']):.0f} MB all its processes together (target < 500 MB)"
    )


def fixed_cost(tmp: Path, lfkit: Path, runs: int = 7) -> None:
    """``lfkit data convert`` of a one-line file, and an empty interpreter, median of ``runs``."""
    src = tmp / "one.jsonl"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    src.write_bytes(orjson.dumps({"user_id": "a", "messages": turns}) + b"\n")
    cmd = [str(lfkit), "data", "convert", str(src), "--out", str(tmp / "one"), "--name", "one"]
    convert = [run_child(cmd) for _ in range(runs)]
    empty = [run_child([sys.executable, "-c", "pass"]) for _ in range(runs)]
    wall = statistics.median(r["wall"] for r in convert)
    print(
        f"\n== fixed cost: lfkit data convert of a one-line file: median {wall:.3f} s wall, "
        f"{statistics.median(r['cpu'] for r in convert):.3f} s CPU (target < 0.2 s); python -c pass: "
        f"{statistics.median(r['wall'] for r in empty):.3f} s; load average {os.getloadavg()[0]:.2f}"
    )


def _list(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["tenth", "third", "all"], default="all")
    parser.add_argument("--size-mb", type=float, default=220.0, help="size of the tenth scenario's input")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the fastest is reported")
    parser.add_argument("--pandas", action="store_true", help="also time the (memory-hungry) pandas script")
    parser.add_argument(
        "--baseline-lfkit", type=Path, default=None, help="another lfkit executable to compare (same options)"
    )
    args = parser.parse_args()
    lfkit = Path(sys.executable).parent / "lfkit"
    print(f"CPUs: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="lfkit-bench-") as tmp:
        fixed_cost(Path(tmp), lfkit)
        for name in ("tenth", "third") if args.scenario == "all" else (args.scenario,):
            measure(SCENARIOS[name], args, Path(tmp), lfkit)


if __name__ == "__main__":
    main()
