"""Benchmark ``lfkit data convert --engine ray`` against the local engine (not a test).

Run: ``.venv/bin/python benchmarks/bench_ray.py [--records 120000] [--max-per-role 2] [--ray-address ADDR]``

It generates the short role-play corpus of ``bench_convert.py``'s ``third`` scenario (scaled
to ``--records``) and converts it, in the same run, with the local engine (Parquet output)
and with ``--engine ray`` (a local Ray started by the command, or the cluster at
``--ray-address``), each as a subprocess, interleaved; then once more with a one-line file, to
separate Ray's fixed cost (starting or joining the cluster, scheduling) from its cost per
record. It prints wall and CPU seconds, records per second, the Ray engine's rate as a ratio
of the local engine's, and whether both kept the same conversations.

On a machine of a few cores Ray does not win: every step is a task with its own scheduling,
serialisation and object-store traffic, paid so that the same work spreads over many nodes.
The point is that it runs and that its cost per record is known.

A local Ray started by ``ray.init()`` writes an authentication token to ``~/.ray/auth_token``
(Ray >= 2.5x), after which every ``ray start`` of this user enables token authentication.
The benchmark runs its children with ``RAY_AUTH_MODE=disabled`` (unless set) so that it leaves
the machine as it found it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import WORDS, run_child  # noqa: E402


def generate(path: Path, records: int, seed: int = 0) -> int:
    """``records`` short conversations over records/4 roles (62% of them with one); returns roles."""
    rng = random.Random(seed)
    roles = max(1, records // 4)
    sizes = [1 if rng.random() < 0.62 else 2 + int(rng.expovariate(1 / 7.5)) for _ in range(roles)]
    order = [r for r, n in enumerate(sizes) for _ in range(n)][:records]
    rng.shuffle(order)
    with open(path, "wb", buffering=1 << 20) as fh:
        for r in order:
            turns = []
            for _ in range(rng.randint(1, 3)):
                turns.append({"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 15)))})
                turns.append(
                    {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=rng.randint(5, 25)))}
                )
            fh.write(orjson.dumps({"user_id": f"u{r:06d}", "messages": turns}) + b"\n")
    return len({r for r in order})


def rows(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return sorted(json.dumps(row, sort_keys=True) for row in pq.read_table(path).to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=120_000)
    parser.add_argument("--max-per-role", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--ray-address", default=None, help="an existing cluster (default: a local Ray)")
    args = parser.parse_args()
    lfkit = str(Path(sys.executable).parent / "lfkit")
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    ray_options = ["--engine", "ray"] + (["--ray-address", args.ray_address] if args.ray_address else [])
    with tempfile.TemporaryDirectory(prefix="lfkit-bench-ray-") as tmp:
        src, one = Path(tmp) / "chats.jsonl", Path(tmp) / "one.jsonl"
        t0 = time.perf_counter()
        roles = generate(src, args.records)
        generate(one, 1)
        size_mb = src.stat().st_size / 1e6
        print(
            f"input: {size_mb:.1f} MB, {args.records:,} conversations, {roles:,} roles, --max-per-role "
            f"{args.max_per_role} (generated in {time.perf_counter() - t0:.1f} s); CPUs: {os.cpu_count()}, "
            f"load average: {os.getloadavg()[0]:.2f}; Ray: {args.ray_address or 'a local Ray per run'}"
        )

        def cmd(source: Path, out: str, *extra: str) -> list[str]:
            options = ["--name", "rp", "--role-key", "user_id", "--max-per-role", str(args.max_per_role)]
            return [lfkit, "data", "convert", str(source), "--out", str(Path(tmp) / out), *options, *extra]

        local, ray, ray_one = [], [], []
        for _ in range(args.repeat):
            local.append(run_child(cmd(src, "local", "--format", "parquet"), env))
            ray.append(run_child(cmd(src, "ray", *ray_options), env))
            ray_one.append(run_child(cmd(one, "ray_one", *ray_options), env))
        lo, ra, fixed = (min(runs, key=lambda r: r["wall"]) for runs in (local, ray, ray_one))
        print(f"{'engine':28} {'wall s':>7} {'CPU s':>7} {'records/s':>10}")
        for label, r in (("local (Parquet)", lo), ("ray", ra), ("ray, a one-line file", fixed)):
            print(f"{label:28} {r['wall']:7.2f} {r['cpu']:7.2f} {args.records / r['wall']:10,.0f}")
        per_record = (ra["wall"] - fixed["wall"]) / args.records * 1e6
        print(f"Ray rate / local rate, wall clock: {lo['wall'] / ra['wall']:.2f}")
        local_per_record = lo["wall"] / args.records * 1e6
        print(
            f"Ray fixed cost {fixed['wall']:.1f} s (start or join the cluster, schedule the steps); beyond "
            f"it {per_record:.0f} us of wall time per record, the local engine {local_per_record:.0f} us"
        )
        same = rows(Path(tmp) / "ray" / "rp") == rows(Path(tmp) / "local" / "rp.parquet")
        print(f"the same conversations kept by both engines: {'yes' if same else 'NO'}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
