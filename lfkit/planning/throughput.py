"""Training throughput from FLOPs and bytes moved: a first-principles samples/s figure.

One optimizer step costs, per GPU, the matmul FLOPs of its share of the effective batch at
the GPU's dense 16-bit tensor throughput times an assumed utilisation (MFU, by throughput
class in :mod:`lfkit.planning.gpus`), plus the communication and host transfers the
parallel setup makes, counted as not overlapped with compute (conservative):

* forward = 2 FLOPs per active parameter per token + causal attention (2·L·s·heads·head_dim);
  backward = 2x forward for full and freeze tuning (activation and weight gradients), 1x for
  LoRA (activation gradients only); gradient checkpointing recomputes the forward once more.
* DDP: one ring all-reduce of the fp32 trainable gradients per optimizer step.
* ZeRO-2: a reduce-scatter of 16-bit gradients per micro-batch, an all-gather of updated
  weights per step. ZeRO-3: two all-gathers of all 16-bit weights per micro-batch (forward
  and backward) -- with LoRA too, which is why ZeRO-3 on PCIe cards is slow. offload_param
  adds the host-to-GPU copy of each GPU's weight shard twice per micro-batch; offload_optimizer
  a CPU Adam step (assumed 1e9 parameters/s) and the gradient/weight round trip.
* 4-bit weights are dequantised on the fly: compute is assumed 1.3x slower.

Tokens per sample default to ``cutoff_len`` (LlamaFactory pads each batch to its longest
sample, so real samples are shorter and the time is an upper bound); pass the mean length
from ``lfkit data stats`` for a closer figure. None of these constants is calibrated yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from lfkit.planning.gpus import MFU, Gpu
from lfkit.planning.memory import TrainingSetup
from lfkit.planning.models import ModelShape

CPU_ADAM_PARAMS_PER_S = 1e9
QUANT_SLOWDOWN = 1.3


@dataclass
class Throughput:
    samples_per_s: float
    step_seconds: float
    compute_seconds: float
    comm_seconds: float
    flops_per_token: float
    mfu: float
    tokens_per_sample: int


def flops_per_token(shape: ModelShape, setup: TrainingSetup, seq_len: int) -> float:
    """Training FLOPs per token (forward, backward and recomputation)."""
    attention = 2 * shape.num_layers * seq_len * shape.num_heads * shape.head_dim
    forward = 2 * shape.active_params_per_token + attention
    if setup.method == "lora":
        backward = forward
    elif setup.method == "freeze":
        # Backward stops at the lowest trainable layer.
        share = min(abs(setup.freeze_layers), shape.num_layers) / shape.num_layers
        backward = 2 * forward * share
    else:
        backward = 2 * forward
    recompute = forward if setup.gradient_checkpointing else 0.0
    return forward + backward + recompute


def estimate_throughput(
    shape: ModelShape,
    setup: TrainingSetup,
    gpu: Gpu,
    n_gpus: int,
    trainable: int,
    tokens_per_sample: int | None = None,
) -> Throughput:
    """Samples per second for the whole run (all GPUs together)."""
    tokens = int(tokens_per_sample or setup.cutoff_len)
    mfu = MFU[gpu.throughput_class]
    fpt = flops_per_token(shape, setup, tokens)
    micro_samples = setup.batch_size
    micro_batches = setup.grad_accum
    compute = micro_batches * micro_samples * tokens * fpt / (gpu.tflops_16bit * 1e12 * mfu)
    if setup.quantization_bit:
        compute *= QUANT_SLOWDOWN

    ds, half = setup.deepspeed, setup.compute_bytes
    ring = 2 * (n_gpus - 1) / n_gpus if n_gpus > 1 else 0.0
    link = gpu.link_gbs * 1e9
    comm = 0.0
    stage = ds.stage
    if stage == 0 and n_gpus > 1:
        comm += ring * trainable * 4 / link
    if stage in (1, 2) and n_gpus > 1:
        comm += micro_batches * (ring / 2) * trainable * half / link + (ring / 2) * trainable * half / link
    if stage >= 3:
        weight_bytes = shape.total_params * half
        comm += micro_batches * (2 * (ring / 2) * weight_bytes + (ring / 2) * trainable * half) / link
        if ds.offload_param:
            comm += micro_batches * 2 * (weight_bytes / n_gpus) / (gpu.host_gbs * 1e9)
    if stage and ds.offload_optimizer:
        shard = trainable / n_gpus
        comm += shard / CPU_ADAM_PARAMS_PER_S + 2 * shard * half / (gpu.host_gbs * 1e9)
    step = compute + comm
    samples = micro_batches * micro_samples * n_gpus
    return Throughput(samples / step, step, compute, comm, fpt, mfu, tokens)
