"""Per-device peak GPU memory of a LlamaFactory 0.9.5 training run, as ``nvidia-smi`` shows it.

The estimate adds what one GPU holds at the worst moment of a step, term by term, each term
derived from what PyTorch, transformers 5, PEFT, bitsandbytes and DeepSpeed allocate:

* **weights**: frozen parameters in the compute dtype (2 bytes), bitsandbytes 4/8-bit storage for
  the decoder's ``nn.Linear`` layers (embeddings, norms and fused MoE experts stay 16-bit);
  trainable parameters upcast to fp32 by LlamaFactory (``pure_bf16`` keeps them 16-bit). Under
  DeepSpeed the engine holds 16-bit working weights; ZeRO-3 shards them over every GPU of every
  node, and ``offload_param`` moves the shards to CPU RAM.
* **gradients and optimizer state**: without DeepSpeed 4 + 8 bytes per trainable parameter (fp32
  gradients, two fp32 Adam moments) and, on several GPUs, DDP's gradient buckets (4 more). Under
  DeepSpeed, the same split as DeepSpeed's own estimators (``estimate_zero2/3_model_states_mem_needs``):
  16-bit gradients with ZeRO-1/2 (2, sharded from ZeRO-2 on; ZeRO-3 reduces straight into the fp32
  partition) and 16 bytes of optimizer state (fp32 master weights, fp32 gradient partition, two
  Adam moments), sharded, or in CPU RAM with ``offload_optimizer`` (the host side:
  :mod:`lfkit.planning.host_memory`).
* **ZeRO-3 gathered parameters**: the layer being computed, the prefetch (DeepSpeed always fetches
  at least one whole parameter, whatever ``stage3_prefetch_bucket_size`` says), and the embedding
  *and* the ``lm_head`` together: the prefetcher gathers ``lm_head`` while the embedding's gathered
  buffer (same size, 1.09 GB for a 7B Qwen2.5) still holds its allocator segment, so both count.
  Parameters under ``stage3_param_persistence_threshold`` (norms, biases) stay gathered.
* **activations**, per token per layer, from what autograd saves (see :func:`layer_activations`),
  for ``per_device_train_batch_size x cutoff_len`` tokens. With gradient checkpointing (LlamaFactory's
  default) each layer keeps only its input and one layer is recomputed in backward; without it every
  layer keeps its saved tensors. Liger kernels (``enable_liger_kernel``) save less in RMSNorm and
  SwiGLU and never materialise the full logits.
* **logits**: the loss's backward peak is 12 bytes per [token x vocabulary] entry (the fp32
  log-softmax output cross-entropy saves, its incoming gradient and the gradient it produces; the
  bf16 logits are gone by then). ``kl_beta`` replaces that loss (:mod:`lfkit.plugin.kl_loss`): the
  model runs without labels, so there is no float32 copy; the chunked CE+KL keeps the model's logits
  and fills one logits-shaped gradient buffer in the forward (2 x the compute dtype per entry), plus a
  few float32 ``[chunk x vocabulary]`` temporaries and the reference's hidden states at the response
  positions (response tokens taken as all tokens: an upper bound).
* **CUDA context** (and NCCL's buffers in a distributed run), outside PyTorch's allocator but in
  ``nvidia-smi``; and the **allocator reserve**: PyTorch's caching allocator holds more than the
  tensors alive at the peak (rounding and fragmentation).

The peak is the larger of the backward pass (everything static, the saved activations, and the
larger of the loss backward and one layer's backward) and the optimizer step (with
``optim: adamw_torch``'s temporaries). The estimate is compared with measured peaks in
``lfkit plan calibrate`` (:mod:`lfkit.planning.measurements`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lfkit.planning.models import ModelShape
from lfkit.planning.training_setup import TrainingSetup
from lfkit.planning.units import GB, GIB

CUDA_CONTEXT_BYTES = 0.6 * GIB  # CUDA context + cuBLAS/cuDNN workspaces, outside torch's allocator
NCCL_BUFFERS_BYTES = 0.25 * GIB  # NCCL communicators' buffers when torch.distributed is initialised
ALLOCATOR_RESERVE = 0.05  # caching-allocator overhead, as a fraction of the tensors alive at the peak
LOGIT_PEAK_BYTES = 12  # per [token x vocab] entry at the loss's backward (3 fp32 tensors)
# kl_beta (lfkit.plugin.kl_loss): the model's logits and the gradient buffer the chunked loss fills in
# the forward, per entry and per byte of the compute dtype; and its float32 [chunk x vocab] temporaries
# (about four alive at a time). KL_CHUNK_ELEMENTS is the plugin's CHUNK_ELEMENTS, restated because
# importing it would load torch into the planner; tests/planning/test_memory_model.py keeps them equal.
KL_LOGITS_COPIES = 2
KL_CHUNK_ELEMENTS = 1 << 22
KL_CHUNK_BYTES = 4 * KL_CHUNK_ELEMENTS * 4
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit + 8-bit absmax per 64 + fp32 per 256 blocks
NF4_BYTES_NO_DOUBLE_QUANT = 0.5 + 4 / 64
INT8_BYTES = 1.0 + 4 / 4096
DEEPSPEED_STATE_BYTES = 16  # fp32 master + fp32 gradient partition + Adam m and v (DeepSpeed's 16 of 18)


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one token leaves saved for backward in one decoder layer, by what saves them."""

    norms: float  # the two RMSNorms: their fp32 input (Qwen upcasts), or Liger's bf16 input
    attention: float  # q, k, v, the attention output and its log-sum-exp (SDPA / FlashAttention)
    mlp: float  # gate and up projections and the activation (Liger's SwiGLU: two of the three)
    adapters: float  # LoRA/DoRA: each adapted layer's input copy, LoRA's rank-r middle, DoRA's outputs
    trainable_inputs: float  # trainable weights (full / freeze): the inputs their gradients need

    @property
    def total(self) -> float:
        return self.norms + self.attention + self.mlp + self.adapters + self.trainable_inputs


def layer_activations(shape: ModelShape, setup: TrainingSetup, *, trainable: bool) -> LayerActivations:
    """What autograd saves per token in one layer (``trainable``: this layer's weights train).

    Frozen ``nn.Linear`` layers save nothing (their weight gradient, the only use of their input,
    is not needed), and neither do rotary embeddings (cos/sin are constants) nor RMSNorm's
    multiplication by a frozen weight. With LoRA, PEFT casts each adapted layer's input to the
    adapter's fp32 dtype and autocast casts it back to 16-bit for the matmul: that 16-bit copy is
    saved, once per adapted layer (q, k and v each keep their own). SDPA with a padding mask runs
    the memory-efficient kernel on k and v repeated to every query head (transformers'
    ``repeat_kv``); FlashAttention-2 keeps them at their grouped size.
    """
    b = setup.compute_bytes
    h, heads = shape.hidden_size, shape.num_heads
    q, kv = heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    norms = 2 * (2 * h if setup.liger else 4 * h)
    kv_saved = kv if setup.flash_attn == "fa2" else q
    attention = b * (q + 2 * kv_saved + q) + 4 * heads
    if setup.flash_attn in ("disabled", "eager"):
        attention += heads * setup.cutoff_len * 2 * b  # eager: softmax probabilities (and scores)
    per_expert = 2 if setup.liger else 3
    if shape.num_experts:
        mlp = shape.experts_per_token * per_expert * shape.moe_intermediate_size * b
        mlp += shape.num_experts * 4  # router logits, fp32
    else:
        mlp = per_expert * shape.intermediate_size * b
    adapters = 0.0
    if setup.method == "lora":
        linear = shape.linear_shapes()
        names = linear if "all" in setup.lora_targets else [n for n in setup.lora_targets if n in linear]
        for name in names:
            fan_in, fan_out = linear[name]
            adapters += b * (fan_in + setup.lora_rank)
            if setup.lora_dropout > 0:
                adapters += fan_in  # dropout's boolean mask
            if setup.dora:
                adapters += 2 * b * fan_out  # base and LoRA outputs, kept for the magnitude's gradient
    trainable_inputs = 0.0
    if trainable:
        widest = (
            shape.experts_per_token * shape.moe_intermediate_size
            if shape.num_experts
            else shape.intermediate_size
        )
        trainable_inputs = b * (h + q + h + widest) + 2 * b * h  # q/k/v, o, gate/up, down inputs; norms
    return LayerActivations(norms, attention, mlp, adapters, trainable_inputs)


@dataclass(frozen=True)
class Component:
    """One term of the estimate: bytes per GPU, and what they are."""

    name: str
    bytes: float
    what: str


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU peak bytes as the sum of named components (they add up to ``peak_bytes``)."""

    components: tuple[Component, ...]
    trainable_params: int
    peak_phase: str  # "backward" or "optimizer step"
    notes: tuple[str, ...]

    @property
    def peak_bytes(self) -> float:
        return sum(c.bytes for c in self.components)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def get(self, name: str) -> float:
        return sum(c.bytes for c in self.components if c.name == name)

    def to_json(self) -> dict:
        return {
            "peak_gib": round(self.peak_gib, 3),
            "peak_gb": round(self.peak_bytes / GB, 3),
            "peak_phase": self.peak_phase,
            "components_gib": {c.name: round(c.bytes / GIB, 3) for c in self.components},
            "components_what": {c.name: c.what for c in self.components},
            "trainable_params": self.trainable_params,
        }


def trainable_params(shape: ModelShape, setup: TrainingSetup) -> int:
    """Parameters the optimizer updates."""
    if setup.method == "full":
        return shape.total_params
    if setup.method == "freeze":
        return _freeze_layers(shape, setup) * shape.layer_params
    return shape.lora_params(list(setup.lora_targets), setup.lora_rank, setup.dora)


def _freeze_layers(shape: ModelShape, setup: TrainingSetup) -> int:
    return min(abs(setup.freeze_layers), shape.num_layers)


def frozen_weight_bytes(shape: ModelShape, setup: TrainingSetup) -> float:
    """Bytes of the weights that do not train, in their stored form (16-bit or 4/8-bit)."""
    half = setup.compute_bytes
    if setup.quantization_bit in (4, 8):
        per = INT8_BYTES
        if setup.quantization_bit == 4:
            per = NF4_BYTES if setup.double_quantization else NF4_BYTES_NO_DOUBLE_QUANT
        return shape.quantizable_params * per + (shape.total_params - shape.quantizable_params) * half
    if setup.method == "lora":
        return shape.total_params * half
    return (shape.total_params - trainable_params(shape, setup)) * half


def _activation_phase(shape: ModelShape, setup: TrainingSetup) -> tuple[float, float, float, str]:
    """(saved activations, loss-backward transient, layer-backward transient, note) in bytes."""
    tokens = setup.batch_size * setup.cutoff_len
    b = setup.compute_bytes
    h = shape.hidden_size
    frozen_layer = layer_activations(shape, setup, trainable=False).total
    trained_layer = layer_activations(shape, setup, trainable=True).total
    n_layers = shape.num_layers
    if setup.method == "full":
        layer_bytes = [trained_layer] * n_layers
    elif setup.method == "freeze":
        # LlamaFactory checkpoints (and asks input gradients of) only layers with trainable
        # parameters; the frozen layers below run without autograd and keep nothing.
        layer_bytes = [trained_layer] * _freeze_layers(shape, setup)
    else:
        layer_bytes = [frozen_layer] * n_layers
    final = h * (4 + b)  # final norm's fp32 input and the hidden state the lm_head reads
    if setup.gradient_checkpointing:
        saved = tokens * (len(layer_bytes) * h * b + final)
        recompute = tokens * max(layer_bytes)
    else:
        saved = tokens * (sum(layer_bytes) + final)
        recompute = 0.0
    widest = (
        shape.experts_per_token * shape.moe_intermediate_size
        if shape.num_experts
        else shape.intermediate_size
    )
    workspace = tokens * 3 * b * max(widest, h)  # gradient buffers of the layer in backward
    vocab = shape.vocab_size
    if setup.liger:
        # Liger's fused linear cross-entropy: logits in chunks of next_pow2(tokens / ceil(V / h)).
        chunk = 2 ** math.ceil(math.log2(max(1, math.ceil(tokens / math.ceil(vocab / h)))))
        logits = chunk * vocab * (b + 4) + tokens * h * 4
        note = "logits: Liger's fused linear cross-entropy (chunked, never the full [tokens x vocab])"
    elif setup.kl_beta > 0:
        per_entry = KL_LOGITS_COPIES * b
        logits = tokens * vocab * per_entry + KL_CHUNK_BYTES + tokens * h * b  # + reference hidden states
        note = (
            f"logits: kl_beta's chunked CE+KL, {per_entry} bytes per [token x vocab] entry (the logits and "
            "their gradient buffer) + float32 chunks + the reference's hidden states (all tokens taken as "
            "response tokens: an upper bound)"
        )
    else:
        logits = tokens * vocab * LOGIT_PEAK_BYTES
        note = f"logits: {LOGIT_PEAK_BYTES} bytes per [token x vocab] entry (fp32 log-softmax, gradients)"
    return saved, logits, recompute + workspace, note


def estimate_memory(shape: ModelShape, setup: TrainingSetup, world_size: int) -> MemoryEstimate:
    """Peak bytes per GPU for ``setup`` on ``world_size`` data-parallel GPUs (all nodes together)."""
    ds = setup.deepspeed
    stage = ds.stage
    shards = max(world_size, 1)
    half = setup.compute_bytes
    notes: list[str] = []
    t = trainable_params(shape, setup)
    comp: list[Component] = []

    frozen = frozen_weight_bytes(shape, setup)
    if stage:
        trainable_w = t * half if setup.method == "lora" else 0.0  # DeepSpeed: 16-bit working weights
        weights = frozen + trainable_w + (t * half if setup.method != "lora" else 0.0)
    else:
        weights = frozen + t * (half if setup.pure_bf16 else 4)
    if stage >= 3:
        comp.append(
            Component(
                "weights",
                0.0 if ds.offload_param else weights / shards,
                "16-bit weight shards in CPU RAM (offload_param)"
                if ds.offload_param
                else f"weight shard (1/{shards})",
            )
        )
        comp.append(Component("zero3_gathered", _zero3_gathered(shape, setup), _ZERO3_GATHERED))
    else:
        comp.append(Component("weights", weights, "all weights on every GPU"))
    if setup.kl_reference_copy:
        # kl_beta's frozen reference (create_ref_model): the whole model again in the compute dtype;
        # trl's prepare_deepspeed shards it only under ZeRO-3 (with its offload_param setting).
        ref = shape.total_params * half
        ref_here = 0.0 if stage >= 3 and ds.offload_param else ref / (shards if stage >= 3 else 1)
        where = "sharded by ZeRO-3" if stage >= 3 else "a full copy per GPU"
        if setup.kl_ref_model:
            where += f"; kl_ref_model {setup.kl_ref_model} taken as this model's shape"
        comp.append(Component("kl_reference", ref_here, f"kl_beta's frozen reference model ({where})"))

    if stage:
        if stage <= 2:  # ZeRO-3 reduces straight into the fp32 gradient partition (in "optimizer")
            grads = t * half / (shards if stage == 2 else 1)
            comp.append(Component("gradients", grads, "16-bit gradients (DeepSpeed ZeRO-1/2)"))
        optim = 0.0 if ds.offload_optimizer else t * DEEPSPEED_STATE_BYTES / shards
        comp.append(
            Component(
                "optimizer",
                optim,
                "in CPU RAM (offload_optimizer)"
                if ds.offload_optimizer
                else "fp32 master weights + fp32 gradient partition + Adam m, v",
            )
        )
        reduce_bucket = ds.reduce_bucket if ds.reduce_bucket is not None else shape.hidden_size**2
        buckets = min(reduce_bucket, t) * half * (2 if ds.overlap_comm else 1)
        if stage <= 2:
            buckets += min(ds.allgather_bucket, t) * half
        comp.append(Component("comm_buffers", buckets, "DeepSpeed reduce / all-gather buckets"))
    else:
        grad_bytes = half if setup.pure_bf16 else 4
        comp.append(Component("gradients", t * grad_bytes, "gradients of the trainable weights"))
        comp.append(Component("optimizer", t * 2 * grad_bytes, "AdamW m and v"))
        if world_size > 1:
            comp.append(Component("comm_buffers", t * grad_bytes, "DDP gradient buckets"))

    saved, loss_peak, layer_peak, logit_note = _activation_phase(shape, setup)
    dequant = 0.0
    if setup.quantization_bit:
        # bitsandbytes dequantises one weight matrix at a time into the compute dtype.
        dequant = max(i * o for i, o in shape.linear_shapes().values()) * half
    comp.append(
        Component(
            "activations",
            saved,
            "layer inputs kept by gradient checkpointing"
            if setup.gradient_checkpointing
            else "every layer's saved tensors (no gradient checkpointing)",
        )
    )
    # transformers 5 defaults to the fused AdamW (no temporaries); the foreach implementation
    # (optim: adamw_torch) materialises about one more copy of the trainable parameters.
    step_tmp = 0.0
    if setup.optim == "adamw_torch" and not (stage and ds.offload_optimizer):
        step_tmp = t / (shards if stage else 1) * (half if stage or setup.pure_bf16 else 4)
    backward = max(loss_peak, layer_peak) + dequant
    if step_tmp > backward + saved:
        comp[-1] = Component("activations", 0.0, "freed before the optimizer step")
        comp.append(Component("optimizer_step", step_tmp, "adamw_torch (foreach) temporaries"))
        phase = "optimizer step"
    else:
        if loss_peak >= layer_peak:
            comp.append(Component("logits", loss_peak, "loss backward: " + logit_note.split(": ", 1)[1]))
        else:
            comp.append(
                Component(
                    "layer_backward",
                    layer_peak,
                    "one layer recomputed and its gradient buffers"
                    if setup.gradient_checkpointing
                    else "one layer's gradient buffers",
                )
            )
        if dequant:
            comp.append(Component("dequant_buffer", dequant, "bitsandbytes: one weight dequantised"))
        phase = "backward"
    allocated = sum(c.bytes for c in comp)
    comp.append(Component("allocator_reserve", allocated * ALLOCATOR_RESERVE, _RESERVE))
    comp.append(Component("cuda_context", CUDA_CONTEXT_BYTES, "CUDA context and library workspaces"))
    if world_size > 1 or stage:
        comp.append(Component("nccl", NCCL_BUFFERS_BYTES, "NCCL communicator buffers"))
    if stage >= 3 and ds.offload_param:
        notes.append("ZeRO-3 offload_param: weight shards in CPU RAM; the GPU holds the gathered working set")
    return MemoryEstimate(tuple(comp), t, phase, tuple(notes))


_ZERO3_GATHERED = (
    "ZeRO-3 gathered: embedding and lm_head (two segments), one layer, the prefetch, persistent params"
)
_RESERVE = f"caching-allocator reserve ({ALLOCATOR_RESERVE:.0%} of the tensors alive at the peak)"


def _zero3_gathered(shape: ModelShape, setup: TrainingSetup) -> float:
    """Bytes of parameters ZeRO-3 holds gathered at the peak (see the module docstring)."""
    half = setup.compute_bytes
    h = shape.hidden_size
    if setup.quantization_bit:
        per = NF4_BYTES if setup.quantization_bit == 4 else INT8_BYTES
        layer = shape.layer_linear_params * per + (shape.layer_params - shape.layer_linear_params) * half
        largest = max(i * o for i, o in shape.linear_shapes().values()) * per
    else:
        layer = shape.layer_params * half
        largest = (
            max(
                [i * o for i, o in shape.linear_shapes().values()]
                + [shape.num_experts * 2 * h * shape.moe_intermediate_size]
            )
            * half
        )
    prefetch_elems = setup.deepspeed.prefetch_bucket
    prefetch = max((prefetch_elems if prefetch_elems is not None else 0.9 * h * h) * half, largest)
    ends = (shape.embedding_params + shape.lm_head_params) * half
    # stage3_param_persistence_threshold 'auto' = 10 x hidden: norms and biases stay gathered.
    persistent = (shape.num_layers * shape.layer_other_params + h) * half
    if shape.attention_bias:
        persistent += shape.num_layers * (shape.num_heads + 2 * shape.num_kv_heads) * shape.head_dim * half
    return ends + layer + prefetch + persistent


def steps_per_epoch(samples: int, world_size: int, batch: int, accum: int) -> int:
    """Optimizer steps per epoch as transformers 5's Trainer counts them.

    Each rank gets ceil(samples / world_size) samples, in ceil(that / batch) micro-batches; a last
    partial accumulation still makes a step (transformers 4.x dropped it: floor instead).
    """
    per_rank = math.ceil(samples / world_size)
    batches = math.ceil(per_rank / batch)
    return max(math.ceil(batches / accum), 1)
