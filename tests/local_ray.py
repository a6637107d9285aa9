"""A real two-node Ray cluster on this machine, for tests: a head node and one worker node.

Both nodes are started with ``ray start --block`` as child processes of the test: each ``ray start``
then owns its node's processes (GCS, raylet, dashboard, workers) and, on SIGTERM, stops exactly
those, so teardown never touches another Ray cluster on the machine. (``ray stop`` would: it kills
every process on the machine whose name looks like Ray's.) Every port is chosen free, the
session files live in a temporary directory of their own, and the object store is kept small.

Ray resolves ``--node-ip-address 127.0.0.1`` to the machine's routable address, so the nodes
register under that address; both still run on this machine, and ``address`` (``127.0.0.1:PORT``)
reaches the head's GCS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_LINE = "Ray runtime started"
"""What ``ray start`` prints once its node is up (before ``--block`` makes it wait)."""

OBJECT_STORE_BYTES = 80 * 1024**2
"""Per node; the tests move only small objects through it (Ray's floor is about 75 MiB)."""

NODE_ENV = {
    # No idle workers started ahead of demand: each is a Python process of ~100 MB.
    "RAY_enable_worker_prestart": "0",
    "RAY_prestart_worker_first_driver": "0",
    # SIGTERM stops the node at once instead of first waiting for it to drain.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@dataclass(frozen=True)
class RayNodeSpec:
    """What a test asks of one node."""

    num_cpus: int
    """Logical CPUs the node declares (Ray schedules on these; they need not exist)."""


@dataclass(frozen=True)
class LocalRayCluster:
    """A running cluster: where to reach it and what it holds."""

    address: str
    """The head's GCS address, ``127.0.0.1:PORT``: for ``ray.init(address=...)`` / ``ray_init_kwargs``."""
    temp_dir: Path
    """Ray's session files and logs (``session_latest/logs``)."""
    nodes: tuple[RayNodeSpec, ...]
    """Head first."""

    def alive_nodes(self) -> list[dict]:
        """The alive nodes as Ray's GCS lists them (``ray.nodes()``), asked from a separate driver."""
        probe = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "print(json.dumps([n for n in ray.nodes() if n['Alive']]))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe],
            env=node_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def ray_executable() -> str:
    """The ``ray`` command of the running interpreter's environment."""
    local = Path(sys.executable).parent / "ray"
    found = str(local) if local.exists() else shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is not installed: pip install 'lfkit[ray]'")
    return found


def node_env() -> dict[str, str]:
    """Environment of the nodes and of drivers that talk to them (no GPUs, no usage reports)."""
    env = dict(os.environ)
    env.update(NODE_ENV)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _node_ports(head: bool) -> list[str]:
    names = [
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    ]
    if head:
        names += ["--dashboard-port", "--ray-client-server-port"]
    args = []
    for name, port in zip(names, free_ports(len(names)), strict=True):
        args += [name, str(port)]
    return args


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so a killed pytest stops its nodes too."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def _ray_node(args: list[str], log: Path, cwd: Path, timeout: float) -> Iterator[subprocess.Popen]:
    """Run ``ray start --block ARGS`` in ``cwd`` until its node is up; stop that node (only) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ray_executable(), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=node_env(),
            cwd=cwd,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + timeout
        while READY_LINE not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start did not come up:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the ``ray start --block`` process: it stops its node's processes, then exits."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # the node's processes share its fate (Ray sets PR_SET_PDEATHSIG on them)
            proc.wait(timeout=30)


@contextmanager
def local_ray_cluster(
    head: RayNodeSpec = RayNodeSpec(num_cpus=10),
    worker: RayNodeSpec = RayNodeSpec(num_cpus=10),
    *,
    cwd: Path,
    timeout: float = 180,
) -> Iterator[LocalRayCluster]:
    """Start a head and one worker node on this machine, both in ``cwd``; stop both on exit.

    Ray workers run in the directory their node was started from, so relative paths in what
    they run (a recipe's ``dataset_dir``) resolve against ``cwd``. The temporary directory is
    short on purpose: Ray puts Unix sockets in it, whose paths are limited to about 107 bytes.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="lfkray", dir="/tmp"))
    gcs_port = free_ports(1)[0]
    common = [
        "--node-ip-address",
        "127.0.0.1",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(OBJECT_STORE_BYTES),
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
        "--min-worker-port",
        "0",  # 0 and 0: workers bind random free ports, not Ray's shared 10002-19999 range
        "--max-worker-port",
        "0",
    ]
    address = f"127.0.0.1:{gcs_port}"
    try:
        with ExitStack() as nodes:
            head_args = ["--head", "--port", str(gcs_port), "--include-dashboard", "true"]
            head_args += ["--num-cpus", str(head.num_cpus), *common, *_node_ports(head=True)]
            nodes.enter_context(_ray_node(head_args, temp_dir / "head.log", cwd, timeout))
            worker_args = ["--address", address, "--num-cpus", str(worker.num_cpus)]
            worker_args += [*common, *_node_ports(head=False)]
            nodes.enter_context(_ray_node(worker_args, temp_dir / "worker.log", cwd, timeout))
            # the worker's stop runs first (ExitStack unwinds in reverse), then the head's
            yield LocalRayCluster(address=address, temp_dir=temp_dir, nodes=(head, worker))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
