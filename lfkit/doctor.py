"""``lfkit doctor``: what a user needs to know about this environment before training.

Each check returns :class:`Finding` values: a topic, a level (``ok`` green, ``warn`` yellow:
works with a limitation, ``fail`` red: training as intended will not work) and, unless all is
well, what to do. The checks only read: nothing is installed, downloaded or written. The hub
check is the one network access, bounded by a few seconds (``--no-network`` skips it).

The judgements are plain functions of what was read (:func:`gpu_findings` takes the GPU list,
:func:`hub_finding` the hub and a probe result), so the tests exercise them on this CPU machine
with the GPUs and hubs users have.
"""

from __future__ import annotations

import enum
import importlib.metadata
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from lfkit.model_source import Hub, current_hub

HUB_TIMEOUT_S = 3.0
"""Seconds the hub probe may take in all (DNS included): a doctor must not hang on a closed network."""

MODEL_DISK_GIB = 30.0
"""Free space wanted in the model cache: a 14B model in bf16 is about 30 GB on disk (7B: ~15 GB)."""


class Level(str, enum.Enum):
    """How a finding is shown: green, yellow or red."""

    ok = "ok"
    warn = "warn"
    fail = "fail"


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report."""

    topic: str
    """What was checked: python, torch, gpu, llamafactory, plugin, deepspeed, hf-cache, hub, ..."""
    level: Level
    summary: str
    """What was found, e.g. 'torch 2.9.1, CUDA 12.8 build'."""
    advice: str = ""
    """What to do about it; empty when nothing needs doing."""


@dataclass(frozen=True)
class GpuInfo:
    """One visible CUDA device, as torch reports it."""

    index: int
    name: str
    memory_gib: float
    capability: tuple[int, int]

    @property
    def bf16(self) -> bool:
        """Ampere (compute capability 8.0) and newer have bf16; Turing (2080 Ti, 7.5) has not."""
        return self.capability >= (8, 0)


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------
def python_findings() -> list[Finding]:
    """The interpreter (pip refuses lfkit below Python 3.10, so there is nothing to judge)."""
    version = ".".join(map(str, sys.version_info[:3]))
    return [Finding("python", Level.ok, f"Python {version} ({sys.executable})")]


def _nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def torch_findings() -> tuple[list[Finding], list[GpuInfo], str | None]:
    """torch's version and build; returns the findings, the visible GPUs and the CUDA build."""
    try:
        import torch
    except Exception as err:  # missing, or a broken install (e.g. mismatched CUDA libraries)
        return (
            [Finding("torch", Level.fail, f"torch does not import: {err}", "reinstall: pip install lfkit")],
            [],
            None,
        )
    cuda = torch.version.cuda
    if cuda is None:
        if _nvidia_driver_present():
            return (
                [
                    Finding(
                        "torch",
                        Level.fail,
                        f"torch {torch.__version__}, CPU-only build, but this machine has an NVIDIA driver",
                        "install a CUDA build of torch (pip install torch from PyPI is one on Linux)",
                    )
                ],
                [],
                None,
            )
        return [Finding("torch", Level.ok, f"torch {torch.__version__}, CPU-only build")], [], None
    gpus = [
        GpuInfo(
            i,
            torch.cuda.get_device_name(i),
            torch.cuda.get_device_properties(i).total_memory / 2**30,
            torch.cuda.get_device_capability(i),
        )
        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    ]
    return [Finding("torch", Level.ok, f"torch {torch.__version__}, CUDA {cuda} build")], gpus, cuda


def gpu_findings(gpus: list[GpuInfo], cuda_build: str | None) -> list[Finding]:
    """One line per visible GPU (memory, bf16), or why there is none."""
    if not gpus:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        if hidden is not None and not hidden.strip():
            why = "CUDA_VISIBLE_DEVICES is empty, which hides every GPU"
        elif cuda_build is None:
            why = "torch is a CPU-only build"
        else:
            why = "torch sees no CUDA device"
        return [
            Finding(
                "gpu",
                Level.warn,
                f"no GPU: {why}",
                "training runs on the CPU: fine for the sample and the tests, far too slow for real "
                "models; the recipes in recipes/ need GPUs",
            )
        ]
    out = []
    for g in gpus:
        summary = (
            f"GPU {g.index}: {g.name}, {g.memory_gib:.1f} GiB, compute {g.capability[0]}.{g.capability[1]}, "
            f"{'bf16' if g.bf16 else 'no bf16'}"
        )
        if g.bf16:
            out.append(Finding("gpu", Level.ok, summary))
        else:
            out.append(
                Finding(
                    "gpu",
                    Level.warn,
                    summary,
                    "use fp16 recipes (bf16: true fails on this GPU; the 2080ti recipes use fp16); "
                    "lfkit plan RECIPE --gpu ... says what fits",
                )
            )
    return out


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _required_llamafactory() -> str | None:
    """The llamafactory version lfkit's own metadata pins (``llamafactory==0.9.5``)."""
    for req in importlib.metadata.requires("lfkit") or []:
        name, _, version = req.partition("==")
        if name.strip().lower() == "llamafactory":
            return version.split(";")[0].strip()
    return None


def llamafactory_findings() -> list[Finding]:
    have = _installed("llamafactory")
    want = _required_llamafactory()
    if have is None:
        return [Finding("llamafactory", Level.fail, "LlamaFactory is not installed", "pip install lfkit")]
    if want and have != want:
        return [
            Finding(
                "llamafactory",
                Level.warn,
                f"LlamaFactory {have}, but lfkit is built and tested for {want}",
                f"pip install llamafactory=={want}",
            )
        ]
    return [Finding("llamafactory", Level.ok, f"LlamaFactory {have}")]


def _finder_active() -> bool:
    """Whether lfkit's import hook is on sys.meta_path in this interpreter (without adding it)."""
    return any(type(f).__module__ == "lfkit.plugin.activate" for f in sys.meta_path)


def _new_interpreter_has_hook() -> bool:
    """Whether a fresh interpreter of this environment (a torchrun rank, say) gets the hook."""
    code = "import sys; print(any(type(f).__module__ == 'lfkit.plugin.activate' for f in sys.meta_path))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    return proc.stdout.strip() == "True"


def plugin_findings() -> list[Finding]:
    """The plugin hook: active here, and in new interpreters (installed lfkit_plugin.pth)."""
    active_here = _finder_active()  # before importing activate below, which would install it
    disabled = os.environ.get("LFKIT_DISABLE_PLUGIN", "").lower() in ("1", "true", "yes")
    from lfkit.plugin.activate import hook_installed

    installed = hook_installed()
    if disabled:
        return [
            Finding(
                "plugin",
                Level.warn,
                "LFKIT_DISABLE_PLUGIN is set: LlamaFactory runs without lfkit's keys and trainer",
                "unset LFKIT_DISABLE_PLUGIN unless you want a stock-LlamaFactory baseline",
            )
        ]
    if not installed:
        return [
            Finding(
                "plugin",
                Level.fail,
                "lfkit_plugin.pth is not in this environment's site-packages: llamafactory-cli runs "
                "without the plugin (recipes with lfkit keys are rejected)",
                "install lfkit (pip install lfkit, or pip install . in the checkout); until then "
                "lfkit train RECIPE runs single-process training with the plugin",
            )
        ]
    if not active_here or not _new_interpreter_has_hook():
        return [
            Finding(
                "plugin",
                Level.fail,
                "lfkit_plugin.pth is installed but the hook is not active"
                + ("" if active_here else " in this interpreter"),
                "Python skips .pth files under python -S or -I: run without them; "
                "reinstall lfkit if it persists",
            )
        ]
    return [
        Finding(
            "plugin",
            Level.ok,
            "plugin hook active in this interpreter and in new ones (torchrun ranks included)",
        )
    ]


@dataclass(frozen=True)
class OptionalPackage:
    """An optional package and what it is for."""

    dist: str
    topic: str
    needed_for: str
    install: str


OPTIONAL = (
    OptionalPackage(
        "deepspeed", "deepspeed", "the ZeRO-2/3 recipes, on GPUs", 'pip install "lfkit[deepspeed]"'
    ),
    OptionalPackage(
        "bitsandbytes", "bitsandbytes", "the QLoRA recipes, on GPUs", 'pip install "lfkit[qlora]"'
    ),
    OptionalPackage(
        "liger-kernel", "liger", "enable_liger_kernel: true, on GPUs", "pip install liger-kernel"
    ),
    OptionalPackage("ray", "ray", "multi-node training with USE_RAY=1", 'pip install "ray[default]"'),
)


def optional_findings(packages: Iterable[OptionalPackage] = OPTIONAL) -> list[Finding]:
    """Each optional package: its version, or what it is needed for and how to add it."""
    out = []
    for p in packages:
        version = _installed(p.dist)
        if version:
            out.append(Finding(p.topic, Level.ok, f"{p.dist} {version}"))
        else:
            out.append(
                Finding(p.topic, Level.warn, f"{p.dist} not installed (needed for {p.needed_for})", p.install)
            )
    return out


def cache_findings(hub: Hub) -> list[Finding]:
    """The model cache: where it is and the free space on its disk."""
    path = hub.cache_dir
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free_gib = shutil.disk_usage(probe).free / 2**30
    state = "exists" if os.path.isdir(path) else "not created yet"
    summary = f"{hub.name} cache {path} ({state}), {free_gib:.0f} GiB free on its disk"
    if free_gib < MODEL_DISK_GIB:
        return [
            Finding(
                "model-cache",
                Level.warn,
                summary,
                f"a 14B model needs about {MODEL_DISK_GIB:.0f} GB: free space, or point "
                + ("HF_HOME/HF_HUB_CACHE" if hub.name == "Hugging Face" else "the hub's cache variable")
                + " at a larger disk",
            )
        ]
    return [Finding("model-cache", Level.ok, summary)]


@dataclass(frozen=True)
class Probe:
    """The result of one bounded request to a hub endpoint."""

    reachable: bool
    detail: str
    """'HTTP 200 in 0.21 s', or why not: 'no answer within 3 s', 'connection refused', ..."""


def probe_endpoint(url: str, timeout: float = HUB_TIMEOUT_S) -> Probe:
    """One HEAD request to ``url``, given at most ``timeout`` seconds in all (DNS included).

    The request runs in a daemon thread: socket timeouts do not cover name resolution, which
    can stall far longer on a closed network. Any HTTP answer (even 4xx) means reachable.
    """
    result: list[Probe] = []

    def attempt() -> None:
        start = time.monotonic()
        try:
            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "lfkit-doctor"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            text = getattr(reason, "strerror", None) or str(reason) or type(err).__name__
            result.append(Probe(False, text[0].lower() + text[1:]))
            return
        result.append(Probe(True, f"HTTP {status} in {time.monotonic() - start:.2f} s"))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else Probe(False, f"no answer within {timeout:g} s")


def hub_finding(hub: Hub, probe: Callable[[str], Probe] | None) -> Finding:
    """Where model ids come from, and whether that hub answers (``probe=None``: not asked)."""
    source = hub.endpoint
    if hub.is_mirror:
        source += " (a mirror, set by HF_ENDPOINT)"
    elif hub.selected_by:
        source += f" ({hub.selected_by}=1)"
    if hub.offline and hub.name == "Hugging Face":
        return Finding(
            "hub",
            Level.warn,
            f"offline mode (HF_HUB_OFFLINE): model ids load only from the cache {hub.cache_dir}",
            "use local model paths, or fill the cache on a connected machine first; unset "
            "HF_HUB_OFFLINE to download",
        )
    summary = f"model ids download from {hub.name}: {source}"
    if probe is None:
        return Finding("hub", Level.ok, summary + "; reachability not checked (--no-network)")
    result = probe(hub.endpoint)
    if result.reachable:
        return Finding("hub", Level.ok, f"{summary}; reachable ({result.detail})")
    return Finding(
        "hub",
        Level.warn,
        f"{summary}; not reachable: {result.detail}",
        "use local model paths (model_name_or_path: /path/to/model), set HF_ENDPOINT to a mirror you "
        "can reach (or USE_MODELSCOPE_HUB=1), or set HF_HUB_OFFLINE=1 to load from the cache only",
    )


def run_checks(*, network: bool = True) -> list[Finding]:
    """Every check, in the order the report shows them."""
    findings = python_findings()
    torch_found, gpus, cuda = torch_findings()
    findings += torch_found
    findings += gpu_findings(gpus, cuda)
    findings += llamafactory_findings()
    findings += plugin_findings()
    findings += optional_findings()
    hub = current_hub()
    findings += cache_findings(hub)
    findings.append(hub_finding(hub, probe_endpoint if network else None))
    return findings
