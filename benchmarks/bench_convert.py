"""Benchmark ``lfkit data convert`` on a generated 200+ MB role-play JSONL (not a test).

Run: ``.venv/bin/python benchmarks/bench_convert.py [--size-mb 220] [--max-per-role 50]``

It generates, in a temporary directory, a dialogue JSONL shaped like real role-play corpora
(many roles, 1 to a few hundred conversations per role, 2-24 turns each), then measures in the
same run, on the same file (warm in the page cache for every contender):

1. a bare orjson parse loop over the file: the floor any JSONL converter pays;
2. ``lfkit data convert`` as a subprocess (end-to-end wall time, interpreter start included),
   with its peak RSS read from ``os.wait4``'s resource usage of that very child;
3. with ``--baseline-lfkit PATH``, another installation's ``lfkit data convert`` (an earlier
   version, e.g. the main branch's ``.venv/bin/lfkit``) with the same options, its runs
   interleaved with 2.'s so both see the same machine load;
4. a straightforward pandas script as a subprocess: ``read_json(lines=True)``, a per-role
   ``groupby().sample()`` capped at N per role, ``to_json(lines=True)``; its peak RSS too.

It prints throughput (MB/s, records/s), lfkit's rate as a ratio of the bare-parse rate
(target >= 0.5), of the baseline's and of the pandas rate, and the peak RSS (target < 500 MB).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
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


def generate(path: Path, size_mb: float, seed: int = 0) -> tuple[int, int]:
    """Write a role-play JSONL of at least ``size_mb`` MB; returns (records, roles)."""
    rng = random.Random(seed)
    target = int(size_mb * 1_000_000)
    written = records = roles = 0
    with open(path, "wb", buffering=1 << 20) as fh:
        while written < target:
            roles += 1
            role = f"char_{roles:06d}"
            persona = f"You are {role}, " + _text(rng, 20, 80)
            n_conv = min(int(rng.paretovariate(0.9)), 400)  # 1 .. 400, heavy tailed like real corpora
            for _ in range(n_conv):
                turns = []
                for _ in range(rng.randint(1, 12)):
                    turns.append({"role": "user", "content": _text(rng, 5, 60)})
                    turns.append({"role": "assistant", "content": _text(rng, 10, 120)})
                line = orjson.dumps({"user_id": role, "system": persona, "messages": turns}) + b"\n"
                fh.write(line)
                written += len(line)
                records += 1
    return records, roles


def bare_parse(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds for ``orjson.loads`` of every line: the floor of any converter."""
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


def run_child(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``; wall seconds, CPU seconds (user+sys, its workers included) and peak RSS.

    ``rss_mb`` is ru_maxrss from ``os.wait4`` for that very child: the largest single process
    (the child or one of its reaped workers); ``tree_rss_mb`` is the sampled peak of the sum
    over the child and all its workers alive at the same time.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=220.0, help="size of the generated input")
    parser.add_argument("--max-per-role", type=int, default=50, help="per-role cap for both contenders")
    parser.add_argument("--repeat", type=int, default=3, help="runs per contender; the fastest is reported")
    parser.add_argument("--workers", type=int, default=None, help="lfkit --workers (default: its own)")
    parser.add_argument("--skip-pandas", action="store_true", help="skip the (memory-hungry) pandas run")
    parser.add_argument(
        "--baseline-lfkit", type=Path, default=None, help="another lfkit executable to compare (same options)"
    )
    args = parser.parse_args()
    lfkit = Path(sys.executable).parent / "lfkit"
    with tempfile.TemporaryDirectory(prefix="lfkit-bench-") as tmp:
        src = Path(tmp) / "roleplay.jsonl"
        t0 = time.perf_counter()
        records, roles = generate(src, args.size_mb)
        size_mb = src.stat().st_size / 1e6
        print(
            f"input: {size_mb:.1f} MB, {records:,} conversations, {roles:,} roles "
            f"(generated in {time.perf_counter() - t0:.1f} s); CPUs: {os.cpu_count()}, "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        bare_parse(src)  # warm the page cache so every contender reads from memory
        bare_runs = [bare_parse(src) for _ in range(args.repeat)]
        bare = {"wall": min(w for w, _ in bare_runs), "cpu": min(c for _, c in bare_runs)}
        options = ["--name", "bench", "--role-key", "user_id", "--max-per-role", str(args.max_per_role)]
        options += ["--val-ratio", "0.05", "--seed", "0"]
        options += ["--workers", str(args.workers)] if args.workers else []

        def convert_cmd(executable: Path, out: str) -> list[str]:
            return [str(executable), "data", "convert", str(src), "--out", str(Path(tmp) / out), *options]

        lf_runs, base_runs = [], []
        for _ in range(args.repeat):  # interleaved: both see the same load
            lf_runs.append(run_child(convert_cmd(lfkit, "out")))
            if args.baseline_lfkit:
                base_runs.append(run_child(convert_cmd(args.baseline_lfkit, "out_baseline")))
        lf = best(lf_runs)
        rows = [("bare orjson parse loop (in-process)", bare), ("lfkit data convert", lf)]
        if args.baseline_lfkit:
            base = best(base_runs)
            rows.append(("baseline lfkit data convert", base))
            same = (Path(tmp) / "out" / "bench.jsonl").read_bytes() == (
                Path(tmp) / "out_baseline" / "bench.jsonl"
            ).read_bytes()
        if not args.skip_pandas:
            pd_cmd = [sys.executable, "-c", PANDAS_SCRIPT, str(src), str(Path(tmp) / "pandas.jsonl")]
            pd_cmd += [str(args.max_per_role), "0"]
            pdr = best([run_child(pd_cmd) for _ in range(args.repeat)])
            rows.append(("pandas read_json+groupby.sample", pdr))
        print(
            f"{'contender':36} {'wall s':>7} {'CPU s':>7} {'MB/s':>7} {'records/s':>10} "
            f"{'peak RSS MB':>11} {'tree RSS MB':>11}"
        )
        for label, r in rows:
            rss = f"{r['rss_mb']:11.0f}" if "rss_mb" in r else f"{'-':>11}"
            tree = f"{r['tree_rss_mb']:11.0f}" if r.get("tree_rss_mb") else f"{'-':>11}"
            print(
                f"{label:36} {r['wall']:7.2f} {r['cpu']:7.2f} {size_mb / r['wall']:7.1f} "
                f"{records / r['wall']:10,.0f} {rss} {tree}"
            )
        print(
            f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine slows the wall times)"
        )
        print(f"lfkit rate / bare-parse rate, wall clock: {bare['wall'] / lf['wall']:.2f} (target >= 0.5)")
        print(f"lfkit rate / bare-parse rate, CPU time:   {bare['cpu'] / lf['cpu']:.2f}")
        if args.baseline_lfkit:
            print(f"lfkit rate / baseline rate, wall clock: {base['wall'] / lf['wall']:.2f}")
            print(f"lfkit rate / baseline rate, CPU time:   {base['cpu'] / lf['cpu']:.2f}")
            print(f"training files byte-identical to the baseline's: {'yes' if same else 'NO'}")
        if not args.skip_pandas:
            print(f"lfkit rate / pandas rate, wall clock: {pdr['wall'] / lf['wall']:.2f}")
        print(
            f"lfkit peak RSS: {lf['rss_mb']:.0f} MB largest process, "
            f"{lf['tree_rss_mb']:.0f} MB all its processes together (target < 500 MB)"
        )


if __name__ == "__main__":
    main()
