"""Host (CPU) RAM per node: what a run needs beside the GPUs, above all with ZeRO's CPU offload.

Users run out of host RAM rather than GPU memory with ZeRO-3 offload (a 32B model with
``offload_param`` needs far more than its 16-bit size in CPU memory). The model states follow
DeepSpeed's own estimators (``estimate_zero2_model_states_mem_needs`` in
``deepspeed/runtime/zero/stage_1_and_2.py`` and ``estimate_zero3_model_states_mem_needs`` in
``deepspeed/runtime/zero/stage3.py``): per trainable parameter, 16 bytes of optimizer state in CPU
RAM with ``offload_optimizer`` (fp32 master, fp32 gradient, Adam m and v), 2 more per parameter for
the 16-bit shards with ``offload_param``, each node holding its GPUs' share, times DeepSpeed's
``additional_buffer_factor`` of 1.5 (pinned staging buffers and fragmentation). The test suite
re-derives DeepSpeed's arithmetic and checks that this module reproduces it.

Where lfkit differs from DeepSpeed's estimator, on purpose:

* only *trainable* parameters carry optimizer state (DeepSpeed's estimator assumes all of them
  train; for LoRA that would overstate the host RAM by orders of magnitude);
* DeepSpeed's ZeRO-2 estimator counts a full fp32 copy of the model per rank in CPU RAM (a load
  without ``zero.Init``); LlamaFactory 0.9.5 loads without DeepSpeed-3 straight onto each rank's GPU
  (``device_map`` set to the current device, ``low_cpu_mem_usage``), so lfkit counts none by
  default (``rank_copy_bytes``). Under ZeRO-3 transformers loads through ``zero.Init``: no copy;
* each rank's Python process (torch, CUDA libraries, LlamaFactory, the tokenizer, dataloader
  workers) takes about ``PROCESS_BYTES`` of RSS, counted per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfkit.planning.memory import DEEPSPEED_STATE_BYTES, Component, trainable_params
from lfkit.planning.models import ModelShape
from lfkit.planning.training_setup import TrainingSetup
from lfkit.planning.units import GB, GIB

BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor default
PROCESS_BYTES = 3 * GIB  # RSS of one training rank's process before model states (assumed)


@dataclass(frozen=True)
class HostMemoryEstimate:
    """Peak host RAM of one node, by component."""

    components: tuple[Component, ...]
    offload: bool  # whether ZeRO offload puts model states in host RAM

    @property
    def peak_bytes(self) -> float:
        return sum(c.bytes for c in self.components)

    def to_json(self) -> dict:
        return {
            "peak_gib": round(self.peak_bytes / GIB, 2),
            "peak_gb": round(self.peak_bytes / GB, 2),
            "offload": self.offload,
            "components_gib": {c.name: round(c.bytes / GIB, 2) for c in self.components},
        }


def offloaded_model_states(
    total_params: int,
    trainable: int,
    setup: TrainingSetup,
    gpus_per_node: int,
    nodes: int,
    *,
    rank_copy_bytes: float = 0.0,
) -> float:
    """Bytes of model states one node keeps in host RAM (DeepSpeed's arithmetic, buffer factor included).

    ZeRO-3 (loaded through ``zero.Init``): 16 bytes per trainable parameter with
    ``offload_optimizer``, plus 2 per parameter with ``offload_param``, over the node's share of the
    GPUs. ZeRO-1/2 with ``offload_optimizer``: the larger of the optimizer state and
    ``rank_copy_bytes`` per parameter per rank (DeepSpeed's estimator: 4, an fp32 CPU load per rank;
    LlamaFactory loads onto the GPUs: 0).
    """
    ds = setup.deepspeed
    share = 1 / nodes  # a node's GPUs hold gpus_per_node / world_size of every partition
    states = 0.0
    if ds.offload_optimizer:
        states += trainable * DEEPSPEED_STATE_BYTES * share
    if ds.stage >= 3 and ds.offload_param:
        states += total_params * 2 * share
    if ds.stage < 3 and ds.offload_optimizer:
        states = max(states, total_params * rank_copy_bytes * gpus_per_node)
    return states * BUFFER_FACTOR


def estimate_host_memory(
    shape: ModelShape, setup: TrainingSetup, gpus_per_node: int, nodes: int
) -> HostMemoryEstimate:
    """Peak host RAM of one node for ``setup``."""
    ds = setup.deepspeed
    t = trainable_params(shape, setup)
    comp = [Component("processes", gpus_per_node * PROCESS_BYTES, f"{gpus_per_node} training process(es)")]
    offload = bool(ds.stage and (ds.offload_optimizer or ds.offload_param))
    if offload:
        comp.append(
            Component(
                "offloaded_states",
                offloaded_model_states(shape.total_params, t, setup, gpus_per_node, nodes),
                "ZeRO offload: optimizer state / weight shards, x1.5 pinned buffers (as DeepSpeed estimates)",
            )
        )
    return HostMemoryEstimate(tuple(comp), offload)
