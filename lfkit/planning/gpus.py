"""The GPUs the planner knows: memory, bf16 support and a throughput class.

Figures are vendor datasheet values (dense tensor-core throughput at 16-bit precision with
FP32 accumulation, which is what mixed-precision training uses; GeForce cards run FP32
accumulation at half the rate of their FP16-accumulate headline figure). ``memory_gib`` is
what ``torch.cuda.get_device_properties().total_memory`` reports, rounded, i.e. the
marketing "GB" of the card. The throughput class sets the fraction of peak a typical
LlamaFactory run reaches (model FLOPs utilisation). Those fractions are assumptions, not
measurements: the planner is uncalibrated until GPU runs are recorded in ``results/``.

The GeForce RTX 3050 6GB (2024, GA107, 2304 CUDA cores) is the table's 6 GB card: 18 SMs x
1024 dense fp16 tensor FLOPs per clock x 1.47 GHz = 27.1 TFLOPS with fp16 accumulation, half
that with fp32 accumulation. The 8 GB RTX 3050 is another chip, so a bare "3050" is refused.

"RTX 6000" names three different cards; the planner refuses to guess which one is meant:

* Quadro RTX 6000 (2018, Turing): 24 GB, no bf16.
* RTX A6000 (2020, Ampere): 48 GB, bf16.
* RTX 6000 Ada Generation (2022, Ada Lovelace): 48 GB, bf16.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Gpu:
    """One GPU model."""

    key: str
    name: str
    memory_gib: float
    arch: str
    bf16: bool
    tflops_16bit: float  # dense tensor-core TFLOPS, fp16/bf16 inputs, fp32 accumulate
    link_gbs: float  # GPU-to-GPU bandwidth one way, GB/s, as a multi-GPU run sees it
    host_gbs: float  # host <-> GPU bandwidth (PCIe), GB/s, used by ZeRO offload
    throughput_class: str

    def as_dict(self) -> dict:
        return asdict(self)


# Model FLOPs utilisation assumed per class (uncalibrated; see the module docstring).
MFU = {
    "consumer-turing": 0.30,  # no FlashAttention-2 kernels on Turing: SDPA memory-efficient path
    "workstation-turing": 0.30,
    "consumer-ampere-ada": 0.35,
    "workstation-ampere-ada": 0.35,
    "datacenter-ampere": 0.40,
    "datacenter-hopper": 0.40,
}

_PCIE3 = 12.0  # practical x16 gen3 throughput
_PCIE4 = 24.0  # practical x16 gen4 throughput
_PCIE5 = 48.0

GPUS: dict[str, Gpu] = {
    g.key: g
    for g in [
        Gpu("2080ti", "GeForce RTX 2080 Ti", 11.0, "turing", False, 53.8, 6.0, _PCIE3, "consumer-turing"),
        Gpu(
            "quadro-rtx-6000",
            "Quadro RTX 6000 (Turing)",
            24.0,
            "turing",
            False,
            130.5,
            _PCIE3,
            _PCIE3,
            "workstation-turing",
        ),
        Gpu(
            "rtx-a6000",
            "RTX A6000 (Ampere)",
            48.0,
            "ampere",
            True,
            154.8,
            _PCIE4,
            _PCIE4,
            "workstation-ampere-ada",
        ),
        Gpu(
            "rtx-6000-ada",
            "RTX 6000 Ada Generation",
            48.0,
            "ada",
            True,
            364.2,
            _PCIE4,
            _PCIE4,
            "workstation-ampere-ada",
        ),
        Gpu(
            # GA107, 18 SMs at 1470 MHz boost; PCIe 4.0 x8 (half the lanes of the other cards).
            "rtx-3050-6gb",
            "GeForce RTX 3050 6GB",
            6.0,
            "ampere",
            True,
            13.5,
            _PCIE4 / 2,
            _PCIE4 / 2,
            "consumer-ampere-ada",
        ),
        Gpu("3090", "GeForce RTX 3090", 24.0, "ampere", True, 71.0, _PCIE4, _PCIE4, "consumer-ampere-ada"),
        Gpu("4090", "GeForce RTX 4090", 24.0, "ada", True, 165.2, _PCIE4, _PCIE4, "consumer-ampere-ada"),
        Gpu("l40s", "L40S", 48.0, "ada", True, 362.0, _PCIE4, _PCIE4, "workstation-ampere-ada"),
        Gpu("a100-40", "A100 40GB SXM", 40.0, "ampere", True, 312.0, 250.0, _PCIE4, "datacenter-ampere"),
        Gpu("a100-80", "A100 80GB SXM", 80.0, "ampere", True, 312.0, 250.0, _PCIE4, "datacenter-ampere"),
        Gpu("h100", "H100 80GB SXM", 80.0, "hopper", True, 989.0, 400.0, _PCIE5, "datacenter-hopper"),
        Gpu("h200", "H200 141GB SXM", 141.0, "hopper", True, 989.0, 400.0, _PCIE5, "datacenter-hopper"),
    ]
}

ALIASES = {
    "rtx2080ti": "2080ti",
    "geforce-rtx-2080-ti": "2080ti",
    "rtx-2080-ti": "2080ti",
    "quadro-rtx6000": "quadro-rtx-6000",
    "rtx-6000-turing": "quadro-rtx-6000",
    "a6000": "rtx-a6000",
    "rtx6000-ada": "rtx-6000-ada",
    "rtx-6000ada": "rtx-6000-ada",
    "rtx3050-6gb": "rtx-3050-6gb",
    "3050-6gb": "rtx-3050-6gb",
    "rtx3090": "3090",
    "rtx4090": "4090",
    "a100": "a100-80",
    "a100-80gb": "a100-80",
    "a100-40gb": "a100-40",
    "h100-80": "h100",
    "h100-80gb": "h100",
    "h200-141": "h200",
}

_RTX3050 = "rtx-3050-6gb (GA107, 6 GB); the 8 GB RTX 3050 is a different chip and not in the table"
AMBIGUOUS = {
    "3050": _RTX3050,
    "rtx3050": _RTX3050,
    "rtx-3050": _RTX3050,
    "rtx-6000": "quadro-rtx-6000 (Turing, 24 GB), rtx-a6000 (Ampere, 48 GB) or rtx-6000-ada (Ada, 48 GB)",
    "rtx6000": "quadro-rtx-6000 (Turing, 24 GB), rtx-a6000 (Ampere, 48 GB) or rtx-6000-ada (Ada, 48 GB)",
}


class GpuSpecError(ValueError):
    """A ``--gpu`` value the planner cannot resolve."""


def _normalise(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def lookup_gpu(name: str) -> Gpu:
    """The :class:`Gpu` for a key or alias, or a :class:`GpuSpecError` listing the known ones."""
    key = _normalise(name)
    if key in AMBIGUOUS:
        raise GpuSpecError(f"'{name}' is ambiguous: say {AMBIGUOUS[key]}")
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise GpuSpecError(f"unknown GPU '{name}'; known: {', '.join(GPUS)}")
    return GPUS[key]


def parse_gpu_spec(spec: str) -> tuple[Gpu, int]:
    """``NAME`` or ``NAMExCOUNT`` (``2080tix2``, ``h100x8``, ``rtx-6000-ada*2``) -> (gpu, count)."""
    text = spec.strip()
    match = re.fullmatch(r"(?i)(.+)[x*](\d+)", text)
    if match:
        try:
            gpu, count = lookup_gpu(match.group(1)), int(match.group(2))
        except GpuSpecError:
            if _normalise(match.group(1)) in AMBIGUOUS:
                raise
            gpu, count = None, 1  # an 'x' that belongs to the name, as in 'rtx4090'
        if gpu is not None:
            if count < 1:
                raise GpuSpecError(f"GPU count must be >= 1 in '{spec}'")
            return gpu, count
    return lookup_gpu(text), 1
