"""Training throughput: FLOPs at a fitted utilisation, plus the communication a setup cannot hide.

One optimizer step, per GPU, is ``gradient_accumulation_steps`` micro-batches of
``per_device_train_batch_size x tokens_per_sample`` tokens, then the optimizer. The terms:

* **Compute**: FLOPs per token x tokens, at the GPU's dense 16-bit tensor peak times an
  achievable model-FLOPs utilisation (MFU) for its class (Turing; Ampere/Ada/Blackwell GDDR cards;
  data-centre HBM parts). A forward pass is 2 FLOPs per active weight per token plus causal
  attention (2 x layers x sequence x query width). Backward is 1 forward for LoRA/QLoRA/DoRA
  (activation gradients only), 2 for full tuning; freeze tuning runs backward (2 passes) through
  its trainable layers only, as LlamaFactory puts only layers with trainable parameters on the
  autograd graph (and checkpoints only those). Gradient checkpointing recomputes the forward of
  the checkpointed layers once more; ``kl_beta`` runs one more forward (the reference). Routed MoE
  expert FLOPs run at a fitted fraction of the dense efficiency (``moe_efficiency``: grouped GEMMs
  over small per-expert token groups). Liger kernels speed up the rest by a measured factor.
* **QLoRA dequantisation**: bitsandbytes turns each 4-bit weight into a 16-bit one in every pass
  that uses it (read 0.5, write 2, read 2 bytes per weight), bound by device memory bandwidth.
* **DoRA's weight norm**: PEFT rebuilds each adapted weight (``W + scale * B @ A``, fp32) and takes
  its column norms in every forward (and recompute), about ``DORA_BYTES_PER_PARAM`` bytes of device
  memory traffic per adapted weight, bound by memory bandwidth like the dequantisation.
* **ZeRO-3 gathers**: all weights all-gathered twice per micro-batch (forward, backward; once more
  for ``kl_beta``'s reference forward), and with ``offload_param`` each GPU's shard copied from host
  RAM over PCIe first. DeepSpeed prefetches them on a side stream, so only the part longer than the
  micro-batch's compute adds time.
* **Gradient collectives**: DDP all-reduces fp32 gradients (overlapped with backward); ZeRO-1/2
  reduce-scatters 16-bit gradients (per micro-batch from stage 2) and all-gathers the updated
  weights per step; ZeRO-3 reduce-scatters per micro-batch. With ``overlap_comm: false`` (the
  catalog's configs) DeepSpeed's reductions are not hidden.
* **CPU offload of the optimizer**: gradients to host per micro-batch, DeepSpeed's CPU Adam on the
  node's share of the parameters (``CPU_ADAM_PARAMS_PER_S``), updated weights back.
* **Bandwidths**: a collective over W GPUs moves (W-1)/W of the data into each GPU over its peer
  link (``Gpu.peer_gbs``); across nodes each node also receives (N-1)/N of it through its network
  (``Cluster.inter_node_gbit``), and the slower of the two sets the time.

Tokens per sample default to ``cutoff_len``: LlamaFactory pads each batch to its longest sample,
so this is an upper bound for short data, and it is the convention the calibration used (the team's
measurements do not record mean sample lengths, so the fitted utilisations are per padded
``cutoff_len`` token of that data). Which constants are fitted and which are fixed, and the
residual of each measurement, are printed by ``lfkit plan calibrate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from lfkit.planning.gpus import Cluster
from lfkit.planning.memory import frozen_weight_bytes, trainable_params
from lfkit.planning.models import ModelShape
from lfkit.planning.training_setup import TrainingSetup

CPU_ADAM_PARAMS_PER_S = 1e9  # DeepSpeed CPU Adam on one node's cores (assumed, not fitted)
DEQUANT_BYTES_PER_PARAM = 0.5 + 2 + 2  # read 4-bit, write 16-bit, read it back for the matmul
DORA_BYTES_PER_PARAM = (
    4 + 2 + 4 + 4 + 4
)  # write B@A (fp32), read W and B@A, write the sum, read it for the norm
CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class TimeConstants:
    """The time model's constants: fitted by ``lfkit plan calibrate`` or fixed (see ``fitted``)."""

    mfu: tuple[tuple[str, float], ...]  # (utilisation class, achievable MFU)
    moe_efficiency: float  # routed-expert FLOPs efficiency relative to dense FLOPs
    liger_speedup: float  # compute speed-up of Liger kernels (checkpointing on)
    fitted: tuple[str, ...]  # names of the constants a fit set; the others are fixed assumptions

    def mfu_for(self, utilisation_class: str) -> float:
        return dict(self.mfu)[utilisation_class]

    def to_json(self) -> dict:
        return {
            "mfu": dict(self.mfu),
            "moe_efficiency": self.moe_efficiency,
            "liger_speedup": self.liger_speedup,
            "fitted": list(self.fitted),
        }

    @classmethod
    def from_json(cls, data: dict) -> TimeConstants:
        return cls(
            mfu=tuple(sorted((str(k), float(v)) for k, v in data["mfu"].items())),
            moe_efficiency=float(data["moe_efficiency"]),
            liger_speedup=float(data["liger_speedup"]),
            fitted=tuple(data["fitted"]),
        )


def load_constants() -> TimeConstants:
    """The constants stored by ``lfkit plan calibrate --write`` (shipped in the package)."""
    text = resources.files("lfkit.planning").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")
    return TimeConstants.from_json(json.loads(text)["constants"])


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step by term, and the resulting throughput (all GPUs together)."""

    tokens_per_sample: int
    flops_per_token: float  # model FLOPs per token, all passes (forward, backward, recompute, kl)
    mfu: float
    compute_s: float  # per step, all micro-batches
    dequant_s: float  # QLoRA's dequantisation and DoRA's weight norms (memory-bandwidth bound)
    gather_s: float  # ZeRO-3 all-gathers and offload copies, per step (before overlap)
    exposed_gather_s: float  # the part of gather_s that compute does not hide
    reduce_s: float  # gradient collectives not hidden by backward
    offload_step_s: float  # CPU optimizer and its transfers
    step_s: float
    samples_per_s: float
    effective_batch: int

    def to_json(self) -> dict:
        return {
            "samples_per_second": round(self.samples_per_s, 3),
            "step_seconds": round(self.step_s, 3),
            "effective_batch": self.effective_batch,
            "tokens_per_sample": self.tokens_per_sample,
            "flops_per_token": self.flops_per_token,
            "mfu": self.mfu,
            "seconds_per_step_by_term": {
                "compute": round(self.compute_s, 3),
                "qlora_dequantisation_or_dora_norm": round(self.dequant_s, 3),
                "zero3_gathers_total": round(self.gather_s, 3),
                "zero3_gathers_not_hidden": round(self.exposed_gather_s, 3),
                "gradient_collectives": round(self.reduce_s, 3),
                "cpu_offload_optimizer": round(self.offload_step_s, 3),
            },
        }


def collective_seconds(nbytes: float, cluster: Cluster, *, all_reduce: bool = False) -> float:
    """Seconds for an all-gather / reduce-scatter (``all_reduce``: twice that) of ``nbytes`` in all."""
    world = cluster.world_size
    if world <= 1 or nbytes <= 0:
        return 0.0
    intra = 0.0
    if cluster.gpus_per_node > 1:
        intra = nbytes * (world - 1) / world / (cluster.gpu.peer_gbs * 1e9)
    inter = 0.0
    if cluster.nodes > 1:
        inter = nbytes * (cluster.nodes - 1) / cluster.nodes / (cluster.inter_node_gbs * 1e9)
    return max(intra, inter) * (2 if all_reduce else 1)


def _passes(shape: ModelShape, setup: TrainingSetup) -> float:
    """Forward-pass equivalents per token: forward, backward, recompute, kl_beta's reference."""
    if setup.method == "full":
        backward = 2.0
    elif setup.method == "freeze":
        # Only the trainable layers are on the autograd graph (and checkpointed): see memory.py.
        share = min(abs(setup.freeze_layers), shape.num_layers) / shape.num_layers
        return (
            1.0
            + 2 * share
            + (share if setup.gradient_checkpointing else 0.0)
            + (1.0 if setup.kl_beta > 0 else 0.0)
        )
    else:
        backward = 1.0
    return (
        1.0 + backward + (1.0 if setup.gradient_checkpointing else 0.0) + (1.0 if setup.kl_beta > 0 else 0.0)
    )


def forward_flops(shape: ModelShape, seq_len: int) -> tuple[float, float]:
    """(dense, routed-expert) forward FLOPs per token at sequence length ``seq_len``."""
    attention = 2 * shape.num_layers * seq_len * shape.num_heads * shape.head_dim
    dense = 2 * (shape.num_layers * shape.layer_linear_params + shape.vocab_size * shape.hidden_size)
    experts = 0.0
    if shape.num_experts:
        experts = (
            2
            * shape.num_layers
            * shape.experts_per_token
            * 3
            * shape.hidden_size
            * shape.moe_intermediate_size
        )
    return dense + attention, experts


def gathered_bytes(shape: ModelShape, setup: TrainingSetup) -> float:
    """Bytes of all weights as ZeRO-3 stores and gathers them (4-bit storage for QLoRA's linears)."""
    if setup.method == "lora":
        return frozen_weight_bytes(shape, setup) + trainable_params(shape, setup) * setup.compute_bytes
    return shape.total_params * setup.compute_bytes


def estimate_step_time(
    shape: ModelShape,
    setup: TrainingSetup,
    cluster: Cluster,
    trainable: int,
    constants: TimeConstants,
    tokens_per_sample: int | None = None,
) -> StepTime:
    """Seconds per optimizer step and samples per second for ``setup`` on ``cluster``."""
    gpu, world = cluster.gpu, cluster.world_size
    tokens = int(tokens_per_sample or setup.cutoff_len)
    micro, accum = setup.batch_size, setup.grad_accum
    passes = _passes(shape, setup)
    dense, experts = forward_flops(shape, tokens)
    mfu = constants.mfu_for(gpu.utilisation_class)
    effective = dense + experts / constants.moe_efficiency
    per_micro = micro * tokens * passes * effective / (gpu.tflops_16bit * 1e12 * mfu)
    if setup.liger:
        per_micro /= constants.liger_speedup
    backward_share = (passes - 1) / passes
    dequant = 0.0
    if setup.quantization_bit:
        weight_passes = 3 if setup.gradient_checkpointing else 2
        dequant = (
            weight_passes
            * shape.quantizable_params
            * DEQUANT_BYTES_PER_PARAM
            / (gpu.memory_bandwidth_gbs * 1e9)
        )

    if setup.method == "lora" and setup.dora:
        adapted = shape.linear_shapes()
        names = adapted if "all" in setup.lora_targets else [n for n in setup.lora_targets if n in adapted]
        weights = shape.num_layers * sum(adapted[n][0] * adapted[n][1] for n in names)
        norm_passes = 2 if setup.gradient_checkpointing else 1
        dequant += norm_passes * weights * DORA_BYTES_PER_PARAM / (gpu.memory_bandwidth_gbs * 1e9)
    ds, half = setup.deepspeed, setup.compute_bytes
    gather = exposed = 0.0
    reduce_micro = reduce_step = 0.0
    if ds.stage >= 3:
        weights = gathered_bytes(shape, setup)
        n_gathers = 2 + (1 if setup.kl_beta > 0 else 0)
        gather = n_gathers * collective_seconds(weights, cluster)
        if ds.offload_param:
            gather += n_gathers * weights / world / (gpu.host_gbs * 1e9)
        exposed = max(0.0, gather - per_micro)
        reduce_micro = collective_seconds(trainable * half, cluster)
    elif ds.stage in (1, 2):
        grads = collective_seconds(trainable * half, cluster)
        if ds.stage == 2:
            reduce_micro = grads
        else:
            reduce_step = grads
        reduce_step += collective_seconds(trainable * half, cluster)  # updated weights
    elif world > 1:
        grad_bytes = half if setup.pure_bf16 else 4
        allreduce = collective_seconds(trainable * grad_bytes, cluster, all_reduce=True)
        reduce_step = max(0.0, allreduce - per_micro * backward_share)  # DDP overlaps it with backward
    if ds.stage and ds.overlap_comm:
        reduce_micro = max(0.0, reduce_micro - per_micro * backward_share)
    offload = 0.0
    if ds.stage and ds.offload_optimizer:
        shard = trainable / world
        offload = trainable / cluster.nodes / CPU_ADAM_PARAMS_PER_S  # CPU Adam on the node's share
        offload += accum * shard * half / (gpu.host_gbs * 1e9)  # gradients to host
        if not ds.offload_param:
            offload += shard * half / (gpu.host_gbs * 1e9)  # updated weights back
    step = accum * (per_micro + dequant + exposed + reduce_micro) + reduce_step + offload
    samples = accum * micro * world
    return StepTime(
        tokens_per_sample=tokens,
        flops_per_token=passes * (dense + experts),
        mfu=mfu,
        compute_s=accum * per_micro,
        dequant_s=accum * dequant,
        gather_s=accum * gather,
        exposed_gather_s=accum * exposed,
        reduce_s=accum * reduce_micro + reduce_step,
        offload_step_s=offload,
        step_s=step,
        samples_per_s=samples / step,
        effective_batch=samples,
    )
