"""The GPUs the planner knows, and the cluster a plan runs on (GPUs per node, nodes, network).

Every figure of a :class:`Gpu` is a vendor datasheet value or a property of the bus it sits on:

* ``memory_gib``: the total memory ``nvidia-smi`` reports for the card (its MiB / 1024). That is
  the number the estimate must stay under; the marketing "80 GB" of the name is ``label_gb``.
* ``tflops_16bit``: dense tensor-core throughput with fp16/bf16 inputs and fp32 accumulation
  (what mixed-precision training runs; sparsity figures halved away). GeForce cards run fp32
  accumulation at half their fp16-accumulate headline figure, so their value is half of it.
* ``memory_bandwidth_gbs``: GB/s of device memory (QLoRA's dequantisation is bound by it).
* ``peer_gbs``: GPU-to-GPU bandwidth one way, as a collective (NCCL) sees it in practice: NVLink
  through NVSwitch on the SXM data-centre parts; PCIe peer-to-peer on workstation cards; through
  host memory on GeForce cards (NVIDIA disables PCIe P2P there), so bounded by each card's PCIe
  ingress.
* ``host_gbs``: practical host <-> GPU PCIe bandwidth (pinned memory): about 12 GB/s on 3.0 x16,
  24 on 4.0 x16, 48 on 5.0 x16. ZeRO's CPU offload moves weights and gradients over it.
* ``utilisation_class``: which fitted model-FLOPs utilisation applies (see
  :mod:`lfkit.planning.throughput`; the values come from ``lfkit plan calibrate``).
* ``network_gbit_per_gpu`` / ``network_gbit_per_node``: the inter-node network assumed when
  ``--nodes N`` > 1 and no ``--inter-node-gbit`` is given: one 200 Gbit/s InfiniBand HDR NIC per GPU
  for the SXM data-centre parts (a common A100/H100 cluster layout), one 100 Gbit/s link per node
  otherwise. The plan always prints the figure it assumed.

Sources and notes: A10G is AWS's variant of the A10 (same 24 GB, 600 GB/s; 70 dense fp16 tensor
TFLOPS against the A10's 125, as published comparisons of the two list it; NVIDIA publishes no A10G
datasheet). RTX 5090 (Blackwell): 838 sparse fp16 TFLOPS -> 419 dense -> 209.5 with fp32
accumulation; 32 GB GDDR7 at 1792 GB/s; PCIe 5.0 x16. The GeForce RTX 3050 6GB (2024, GA107) is
18 SMs x 1024 dense fp16 FLOPs per clock x 1.47 GHz = 27.1 TFLOPS, 13.5 with fp32 accumulation, on
PCIe 4.0 x8; the 8 GB RTX 3050 is another chip, so a bare "3050" is refused.

"RTX 6000" names three different cards; the planner refuses to guess which one is meant:
Quadro RTX 6000 (2018, Turing, 24 GB, no bf16), RTX A6000 (2020, Ampere, 48 GB) and RTX 6000 Ada
Generation (2022, Ada Lovelace, 48 GB).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

_PCIE3 = 12.0  # practical x16 gen3 throughput, GB/s
_PCIE4 = 24.0  # practical x16 gen4 throughput, GB/s
_PCIE5 = 48.0  # practical x16 gen5 throughput, GB/s
_NVLINK3_NCCL = 235.0  # A100 SXM through NVSwitch: typical NCCL bus bandwidth, GB/s
_NVLINK4_NCCL = 370.0  # H100/H200 SXM through NVSwitch: typical NCCL bus bandwidth, GB/s


@dataclass(frozen=True)
class Gpu:
    """One GPU model (see the module docstring for what each figure means and where it is from)."""

    key: str
    name: str
    label_gb: int  # the "GB" in the product name
    memory_gib: float  # total device memory as nvidia-smi reports it, GiB
    arch: str  # turing | ampere | ada | hopper | blackwell
    bf16: bool
    tflops_16bit: float  # dense tensor TFLOPS, fp16/bf16 inputs, fp32 accumulate
    memory_bandwidth_gbs: float  # device memory, GB/s
    peer_gbs: float  # GPU <-> GPU one way within a node, GB/s, as NCCL sees it
    host_gbs: float  # host <-> GPU (PCIe, pinned), GB/s
    interconnect: str  # what peer_gbs and host_gbs describe, in words
    utilisation_class: str  # turing | ampere-ada | datacenter
    network_gbit_per_gpu: float = 0.0  # default inter-node NIC bandwidth per GPU (0: per node)
    network_gbit_per_node: float = 100.0  # default inter-node bandwidth per node when per-GPU is 0

    def to_json(self) -> dict:
        return asdict(self)


def _pcie(
    key, name, gb, gib, arch, tflops, bw, pcie, *, p2p: bool, lanes: str = "x16", dc: bool = False
) -> Gpu:
    """A PCIe card: GeForce (``p2p=False``: no peer-to-peer), workstation, or (``dc``) an HBM server part."""
    gen = {_PCIE3: "3.0", _PCIE4: "4.0", _PCIE5: "5.0"}[pcie * (2 if lanes == "x8" else 1)]
    peers = (
        "with peer-to-peer" if p2p else "GeForce: no PCIe peer-to-peer, collectives go through host memory"
    )
    return Gpu(
        key=key,
        name=name,
        label_gb=gb,
        memory_gib=gib,
        arch=arch,
        bf16=arch != "turing",
        tflops_16bit=tflops,
        memory_bandwidth_gbs=bw,
        peer_gbs=pcie,
        host_gbs=pcie,
        interconnect=f"PCIe {gen} {lanes}; {peers}",
        utilisation_class="datacenter" if dc else "turing" if arch == "turing" else "ampere-ada",
    )


def _sxm(key, name, gb, gib, arch, tflops, bw, nvlink, pcie) -> Gpu:
    """An SXM data-centre part: NVLink through NVSwitch inside the node, one NIC per GPU assumed."""
    card = _pcie(key, name, gb, gib, arch, tflops, bw, pcie, p2p=True, dc=True)
    return replace(
        card,
        peer_gbs=nvlink,
        interconnect="NVLink through NVSwitch (SXM), host over PCIe",
        network_gbit_per_gpu=200.0,
    )


GPUS: dict[str, Gpu] = {
    g.key: g
    for g in [
        _pcie("2080ti", "GeForce RTX 2080 Ti", 11, 11.0, "turing", 53.8, 616, _PCIE3, p2p=False),
        _pcie(
            "quadro-rtx-6000", "Quadro RTX 6000 (Turing)", 24, 24.0, "turing", 130.5, 672, _PCIE3, p2p=True
        ),
        _pcie("rtx-a6000", "RTX A6000 (Ampere)", 48, 47.99, "ampere", 154.8, 768, _PCIE4, p2p=True),
        _pcie("rtx-6000-ada", "RTX 6000 Ada Generation", 48, 47.99, "ada", 364.2, 960, _PCIE4, p2p=True),
        _pcie(
            "rtx-3050-6gb",
            "GeForce RTX 3050 6GB",
            6,
            6.0,
            "ampere",
            13.5,
            168,
            _PCIE4 / 2,
            p2p=False,
            lanes="x8",
        ),
        _pcie("3090", "GeForce RTX 3090", 24, 24.0, "ampere", 71.0, 936, _PCIE4, p2p=False),
        _pcie("4090", "GeForce RTX 4090", 24, 23.99, "ada", 165.2, 1008, _PCIE4, p2p=False),
        _pcie("5090", "GeForce RTX 5090", 32, 31.84, "blackwell", 209.5, 1792, _PCIE5, p2p=False),
        _pcie("l40s", "L40S", 48, 44.99, "ada", 362.05, 864, _PCIE4, p2p=True),
        _pcie("a10g", "A10G (AWS)", 24, 22.49, "ampere", 70.0, 600, _PCIE4, p2p=True),
        _sxm("a100-40", "A100 40GB SXM", 40, 40.0, "ampere", 312.0, 1555, _NVLINK3_NCCL, _PCIE4),
        _sxm("a100-80", "A100 80GB SXM", 80, 80.0, "ampere", 312.0, 2039, _NVLINK3_NCCL, _PCIE4),
        _pcie("a100-80-pcie", "A100 80GB PCIe", 80, 80.0, "ampere", 312.0, 1935, _PCIE4, p2p=True, dc=True),
        _sxm("h100", "H100 80GB SXM", 80, 79.65, "hopper", 989.0, 3350, _NVLINK4_NCCL, _PCIE5),
        _sxm("h200", "H200 141GB SXM", 141, 140.4, "hopper", 989.0, 4800, _NVLINK4_NCCL, _PCIE5),
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
    "rtx-3090": "3090",
    "rtx4090": "4090",
    "rtx-4090": "4090",
    "rtx5090": "5090",
    "rtx-5090": "5090",
    "a100": "a100-80",
    "a100-80gb": "a100-80",
    "a100-40gb": "a100-40",
    "a100-80gb-pcie": "a100-80-pcie",
    "h100-80": "h100",
    "h100-80gb": "h100",
    "h100-sxm": "h100",
    "h200-141": "h200",
    "h200-141gb": "h200",
}

_RTX3050 = "rtx-3050-6gb (GA107, 6 GB); the 8 GB RTX 3050 is a different chip and not in the table"
_RTX6000 = "quadro-rtx-6000 (Turing, 24 GB), rtx-a6000 (Ampere, 48 GB) or rtx-6000-ada (Ada, 48 GB)"
AMBIGUOUS = {
    "3050": _RTX3050,
    "rtx3050": _RTX3050,
    "rtx-3050": _RTX3050,
    "rtx-6000": _RTX6000,
    "rtx6000": _RTX6000,
    "a10": "a10g (AWS's variant, 70 dense fp16 TFLOPS); the A10 (125 TFLOPS) is not in the table",
}


class GpuSpecError(ValueError):
    """A ``--gpu`` (or ``--nodes`` / ``--inter-node-gbit``) value the planner cannot resolve."""


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
    """``NAME`` or ``NAMExCOUNT`` (``2080tix2``, ``h100x8``, ``rtx-6000-ada*2``) -> (gpu, GPUs per node)."""
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


@dataclass(frozen=True)
class Cluster:
    """Where a plan runs: ``gpus_per_node`` GPUs of one model on each of ``nodes`` machines.

    ``inter_node_gbit`` is the network bandwidth of one node (all its NICs together, Gbit/s);
    ``inter_node_assumed`` says whether it is the table's default (True) or the user's figure.
    """

    gpu: Gpu
    gpus_per_node: int = 1
    nodes: int = 1
    inter_node_gbit: float = 0.0
    inter_node_assumed: bool = True

    @classmethod
    def of(
        cls, gpu: Gpu, gpus_per_node: int = 1, nodes: int = 1, inter_node_gbit: float | None = None
    ) -> Cluster:
        """A cluster, with the default inter-node bandwidth for ``gpu`` unless one is given."""
        if gpus_per_node < 1 or nodes < 1:
            raise GpuSpecError("GPUs per node and --nodes must be >= 1")
        if inter_node_gbit is not None and inter_node_gbit <= 0:
            raise GpuSpecError("--inter-node-gbit must be > 0")
        if inter_node_gbit is None:
            default = gpu.network_gbit_per_gpu * gpus_per_node or gpu.network_gbit_per_node
            return cls(gpu, gpus_per_node, nodes, default, True)
        return cls(gpu, gpus_per_node, nodes, float(inter_node_gbit), False)

    @property
    def world_size(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def inter_node_gbs(self) -> float:
        """The node's network bandwidth in GB/s (8 bits per byte)."""
        return self.inter_node_gbit / 8

    def describe(self) -> str:
        text = f"{self.gpus_per_node}x {self.gpu.name}"
        if self.nodes > 1:
            origin = "assumed; set --inter-node-gbit" if self.inter_node_assumed else "given"
            text = (
                f"{self.nodes} nodes x {text} ({self.world_size} GPUs), inter-node "
                f"{self.inter_node_gbit:g} Gbit/s = {self.inter_node_gbs:g} GB/s per node ({origin})"
            )
        return text

    def to_json(self) -> dict:
        return {
            "gpu": self.gpu.to_json(),
            "gpus_per_node": self.gpus_per_node,
            "nodes": self.nodes,
            "world_size": self.world_size,
            "inter_node_gbit_per_s": self.inter_node_gbit if self.nodes > 1 else None,
            "inter_node_gb_per_s": self.inter_node_gbs if self.nodes > 1 else None,
            "inter_node_assumed": self.inter_node_assumed if self.nodes > 1 else None,
        }


# torch.cuda.get_device_name() spellings (what lfkit_run.json records) -> table keys, first match wins.
_DEVICE_NAMES = (
    (r"2080 ti", "2080ti"),
    (r"quadro rtx 6000", "quadro-rtx-6000"),
    (r"rtx a6000", "rtx-a6000"),
    (r"rtx 6000 ada", "rtx-6000-ada"),
    (r"rtx 3050", "rtx-3050-6gb"),
    (r"rtx 3090", "3090"),
    (r"rtx 4090", "4090"),
    (r"rtx 5090", "5090"),
    (r"l40s", "l40s"),
    (r"a10g", "a10g"),
    (r"a100.*pcie", "a100-80-pcie"),
    (r"a100.*40gb", "a100-40"),
    (r"a100", "a100-80"),
    (r"h100", "h100"),
    (r"h200", "h200"),
)


def gpu_from_device_name(name: str) -> Gpu | None:
    """The table's GPU for a CUDA device name ("NVIDIA H100 80GB HBM3"), or None if not in the table."""
    low = name.lower()
    for pattern, key in _DEVICE_NAMES:
        if re.search(pattern, low):
            return GPUS[key]
    return None
