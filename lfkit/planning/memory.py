"""Per-device peak GPU memory of a LlamaFactory training run, from first principles.

The estimate adds up what a run keeps on each GPU, following what LlamaFactory 0.9.5,
transformers, PEFT and DeepSpeed actually allocate:

* weights: frozen parameters in the compute dtype (2 bytes), or 4-bit / 8-bit bitsandbytes
  storage for the decoder's ``nn.Linear`` layers (embeddings, norms and fused MoE experts stay
  16-bit); trainable parameters are upcast to fp32 by LlamaFactory (``pure_bf16`` keeps them
  16-bit). Under DeepSpeed the engine holds 16-bit working weights instead.
* gradients and AdamW state: 4 + 8 bytes per trainable parameter (fp32 grads, two fp32
  moments); DeepSpeed keeps 16-bit grads plus an fp32 master copy and two moments (2 + 12).
  ZeRO-1 shards the optimizer state over the GPUs, ZeRO-2 also the gradients, ZeRO-3 also the
  weights; ``offload_optimizer`` moves the optimizer state to CPU RAM and ``offload_param``
  moves the ZeRO-3 weight shards there, leaving a gathered working set on the GPU.
* activations for the longest batch (``per_device_train_batch_size`` x ``cutoff_len``
  tokens): with gradient checkpointing (LlamaFactory's default) one hidden state per layer
  plus one layer recomputed in backward; without it every layer's saved tensors. The
  logits are counted apart: bf16 logits, their fp32 upcast for the loss and its gradient.
* the CUDA context, outside PyTorch's allocator but inside the card's memory.
* ``kl_beta`` (lfkit plugin): freeze/full tuning, or LoRA with ``kl_ref_model``, loads a frozen
  reference model, one more copy of the weights in the compute dtype, per GPU unless ZeRO-3 shards
  it. LoRA alone uses the model with its adapters disabled: no copy. The KL term's float32
  [response tokens x vocabulary] tensors and its extra forward pass are *not* modelled; the plan
  says so in a note.

Assumptions that a measurement should replace are named constants below. The estimate is
uncalibrated: no GPU run has been measured against it yet (see docs in recipes/README.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfkit.planning.models import ModelShape

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.6  # CUDA context + cuBLAS workspace, outside torch's allocator
ALLOCATOR_HEADROOM = 0.95  # fraction of the card usable before fragmentation bites
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit + 8-bit absmax per 64 + fp32 per 256 blocks
NF4_BYTES_NO_DOUBLE_QUANT = 0.5 + 4 / 64
INT8_BYTES = 1.0 + 4 / 4096
LOGIT_BYTES_PER_ENTRY = 10  # bf16 logits (2) + fp32 upcast (4) + fp32 grad / log-softmax (4)


class RecipeValueError(ValueError):
    """A recipe value the planner cannot interpret."""


@dataclass
class DeepSpeedSetup:
    """What the planner reads from a DeepSpeed JSON config."""

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket: float | None = None  # elements; None = 'auto' (hidden^2)
    allgather_bucket: float = 5e8
    prefetch_bucket: float | None = None
    overlap_comm: bool = False
    path: str | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> DeepSpeedSetup:
        p = Path(path)
        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecipeValueError(f"deepspeed config {p} does not exist") from None
        except json.JSONDecodeError as err:
            raise RecipeValueError(f"{p}:{err.lineno}: not valid JSON ({err.msg})") from None
        zero = cfg.get("zero_optimization") or {}

        def device(key: str) -> bool:
            return str((zero.get(key) or {}).get("device", "none")).lower() in ("cpu", "nvme")

        def number(key: str, default: float | None) -> float | None:
            value = zero.get(key, default)
            return None if value == "auto" or value is None else float(value)

        return cls(
            stage=int(zero.get("stage", 0)),
            offload_optimizer=device("offload_optimizer"),
            offload_param=device("offload_param"),
            reduce_bucket=number("reduce_bucket_size", None),
            allgather_bucket=number("allgather_bucket_size", 5e8) or 5e8,
            prefetch_bucket=number("stage3_prefetch_bucket_size", None),
            overlap_comm=bool(zero.get("overlap_comm", False)),
            path=str(p),
        )


@dataclass
class TrainingSetup:
    """The recipe values the estimate depends on, normalised."""

    method: str  # lora | freeze | full
    lora_rank: int = 8
    lora_targets: list[str] = field(default_factory=lambda: ["all"])
    lora_dropout: float = 0.0
    dora: bool = False
    quantization_bit: int | None = None
    double_quantization: bool = True
    freeze_layers: int = 2
    compute_bytes: int = 2
    bf16: bool = False
    fp16: bool = False
    pure_bf16: bool = False
    gradient_checkpointing: bool = True
    batch_size: int = 1
    grad_accum: int = 1
    cutoff_len: int = 2048
    flash_attn: str = "auto"
    deepspeed: DeepSpeedSetup = field(default_factory=DeepSpeedSetup)
    epochs: float = 3.0
    max_steps: int = -1
    optim: str = "adamw_torch_fused"
    kl_beta: float = 0.0  # lfkit plugin key: KL to a reference model (lfkit.plugin.kl_loss)
    kl_ref_model: str | None = None

    @classmethod
    def from_recipe(cls, recipe: dict[str, Any], base_dir: Path | None = None) -> TrainingSetup:
        """Read the keys that matter, with LlamaFactory's own defaults for absent ones."""
        method = str(recipe.get("finetuning_type", "lora"))
        if method not in ("lora", "freeze", "full"):
            raise RecipeValueError(
                f"finetuning_type: {method!r} is not one the planner models (lora, freeze, full)"
            )
        targets = recipe.get("lora_target", "all")
        targets = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets)
        ds = DeepSpeedSetup()
        if recipe.get("deepspeed"):
            ds_path = Path(str(recipe["deepspeed"]))
            if not ds_path.is_absolute() and base_dir is not None and not ds_path.exists():
                # llamafactory-cli resolves it from the launch directory; planning from elsewhere,
                # try the recipe's directory and its parents (recipes name recipes/deepspeed/...).
                found = [d / ds_path for d in (base_dir, *base_dir.parents) if (d / ds_path).is_file()]
                ds_path = found[0] if found else ds_path
            ds = DeepSpeedSetup.from_file(ds_path)
        bf16, fp16, pure = bool(recipe.get("bf16")), bool(recipe.get("fp16")), bool(recipe.get("pure_bf16"))
        gc = not recipe.get("disable_gradient_checkpointing", False)
        qbit = recipe.get("quantization_bit")
        return cls(
            method=method,
            lora_rank=int(recipe.get("lora_rank", 8)),
            lora_targets=targets,
            lora_dropout=float(recipe.get("lora_dropout", 0.0)),
            dora=bool(recipe.get("use_dora", False)),
            quantization_bit=int(qbit) if qbit is not None else None,
            double_quantization=bool(recipe.get("double_quantization", True)),
            freeze_layers=int(recipe.get("freeze_trainable_layers", 2)),
            compute_bytes=2 if (bf16 or fp16 or pure) else 4,
            bf16=bf16,
            fp16=fp16,
            pure_bf16=pure,
            gradient_checkpointing=gc,
            batch_size=int(recipe.get("per_device_train_batch_size", 8)),
            grad_accum=int(recipe.get("gradient_accumulation_steps", 1)),
            cutoff_len=int(recipe.get("cutoff_len", 2048)),
            flash_attn=str(recipe.get("flash_attn", "auto")),
            deepspeed=ds,
            epochs=float(recipe.get("num_train_epochs", 3.0)),
            max_steps=int(recipe.get("max_steps", -1)),
            optim=str(recipe.get("optim", "adamw_torch_fused")),
            kl_beta=float(recipe.get("kl_beta") or 0.0),
            kl_ref_model=str(recipe["kl_ref_model"]) if recipe.get("kl_ref_model") else None,
        )

    @property
    def kl_reference_copy(self) -> bool:
        """Whether ``kl_beta`` loads a frozen reference model (LoRA without kl_ref_model does not)."""
        return self.kl_beta > 0 and (self.method != "lora" or self.kl_ref_model is not None)


@dataclass
class MemoryEstimate:
    """Per-device bytes by component, and the peak."""

    components: dict[str, float]
    trainable_params: int
    peak_bytes: float
    notes: list[str]

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def components_gib(self) -> dict[str, float]:
        return {k: round(v / GIB, 3) for k, v in self.components.items()}


def trainable_params(shape: ModelShape, setup: TrainingSetup) -> int:
    """Parameters the optimizer updates."""
    if setup.method == "full":
        return shape.total_params
    if setup.method == "freeze":
        layers = min(abs(setup.freeze_layers), shape.num_layers)
        return layers * shape.layer_params
    return shape.lora_params(setup.lora_targets, setup.lora_rank, setup.dora)


def _weight_bytes(shape: ModelShape, setup: TrainingSetup, trainable: int) -> float:
    """Bytes of all model weights on one device before any ZeRO-3 sharding."""
    half = setup.compute_bytes
    base = shape.total_params
    if setup.quantization_bit in (4, 8):
        per = (
            (NF4_BYTES if setup.double_quantization else NF4_BYTES_NO_DOUBLE_QUANT)
            if (setup.quantization_bit == 4)
            else INT8_BYTES
        )
        frozen = shape.quantizable_params * per + (base - shape.quantizable_params) * half
    else:
        frozen_count = base - (trainable if setup.method != "lora" else 0)
        frozen = frozen_count * half
    if setup.deepspeed.stage:
        # The DeepSpeed engine runs 16-bit working weights; the fp32 copy is the master state.
        return frozen + trainable * half if setup.method == "lora" else base * half
    trainable_bytes = trainable * (half if setup.pure_bf16 else 4)
    return frozen + trainable_bytes


def _activation_bytes(shape: ModelShape, setup: TrainingSetup) -> tuple[float, float]:
    """(hidden activations, logits) in bytes for one micro-batch of the longest sequences."""
    tokens = setup.batch_size * setup.cutoff_len
    b = setup.compute_bytes
    h, q, kv = shape.hidden_size, shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    if shape.num_experts:
        mlp = 4 * shape.experts_per_token * shape.moe_intermediate_size * b + shape.experts_per_token * h * b
        mlp += shape.num_experts * 4  # router logits in fp32
    else:
        mlp = 4 * shape.intermediate_size * b  # gate, up, act(gate), act(gate)*up
    # RMSNorm saves its fp32 input (Qwen upcasts) and 16-bit output, twice per layer;
    # attention saves q, k, v, the rotary q and k, and its output.
    per_token_layer = 2 * (4 * h + b * h) + b * (2 * q + 3 * kv + q) + mlp
    if setup.method == "lora":
        adapted = shape.linear_shapes()
        names = adapted if "all" in setup.lora_targets else [n for n in setup.lora_targets if n in adapted]
        # PEFT casts each adapted layer's input to the fp32 adapter dtype; dropout keeps another copy.
        extra = sum(adapted[n][0] for n in names) * (4 + (b if setup.lora_dropout > 0 else 0))
        per_token_layer += extra
    attn_scores = 0.0
    if setup.flash_attn in ("disabled", "eager"):
        attn_scores = setup.batch_size * shape.num_heads * setup.cutoff_len**2 * (b + b)
    layer = tokens * per_token_layer + attn_scores
    if setup.gradient_checkpointing:
        # Non-reentrant checkpointing per decoder layer: each layer's input, plus one layer
        # recomputed in backward together with its gradient buffers.
        hidden = shape.num_layers * tokens * h * b + 2 * layer
    else:
        hidden = shape.num_layers * layer
    logits = tokens * shape.vocab_size * LOGIT_BYTES_PER_ENTRY
    return hidden, logits


def estimate_memory(shape: ModelShape, setup: TrainingSetup, n_gpus: int) -> MemoryEstimate:
    """Peak bytes per device for ``setup`` on ``n_gpus`` data-parallel GPUs."""
    ds = setup.deepspeed
    stage = ds.stage if n_gpus > 1 or ds.stage else 0
    shards = max(n_gpus, 1)
    notes: list[str] = []
    t = trainable_params(shape, setup)
    comp: dict[str, float] = {}

    weights = _weight_bytes(shape, setup, t)
    half = setup.compute_bytes
    if stage >= 3:
        # Gathered at once: the embedding or lm_head alone, or the current and the prefetched layer.
        largest = max(shape.embedding_params, shape.lm_head_params, 2 * shape.layer_params)
        prefetch = ds.prefetch_bucket if ds.prefetch_bucket is not None else 0.9 * shape.hidden_size**2
        working = (largest + prefetch) * half
        comp["weights"] = (0.0 if ds.offload_param else weights / shards) + working
        if ds.offload_param:
            notes.append(
                "ZeRO-3 offload_param: weight shards live in CPU RAM; GPU holds the gathered working set"
            )
    else:
        comp["weights"] = weights
    if setup.kl_reference_copy:
        # kl_beta's frozen reference (create_ref_model): the whole model again in the compute dtype.
        # trl's prepare_deepspeed shards it only under ZeRO-3 (with its offload_param setting).
        ref = shape.total_params * half
        comp["kl_reference"] = 0.0 if stage >= 3 and ds.offload_param else ref / (shards if stage >= 3 else 1)
        where = "sharded by ZeRO-3" if stage >= 3 else "a full copy per GPU"
        if setup.kl_ref_model:
            where += f"; kl_ref_model {setup.kl_ref_model} taken as this model's shape"
        notes.append(f"kl_beta: frozen reference counted as kl_reference ({ref / GIB:.1f} GiB, {where})")

    if stage:
        grads = t * half
        optim = t * 12  # fp32 master + Adam m and v
        comp["gradients"] = grads / shards if stage >= 2 else grads
        comp["optimizer"] = 0.0 if ds.offload_optimizer else (optim / shards)
        reduce_bucket = ds.reduce_bucket if ds.reduce_bucket is not None else shape.hidden_size**2
        buckets = min(reduce_bucket, t) * half * (2 if ds.overlap_comm else 1)
        if stage == 2:
            buckets += min(ds.allgather_bucket, t) * half
        comp["comm_buffers"] = buckets
        if ds.offload_optimizer:
            notes.append(
                f"offload_optimizer: {t * 12 / shards / GIB:.1f} GiB of optimizer state per GPU in CPU RAM"
            )
    else:
        grad_bytes = half if setup.pure_bf16 else 4
        comp["gradients"] = t * grad_bytes
        comp["optimizer"] = t * 2 * grad_bytes
        comp["comm_buffers"] = t * grad_bytes if n_gpus > 1 else 0.0  # DDP gradient buckets

    hidden, logits = _activation_bytes(shape, setup)
    comp["activations"] = hidden
    comp["logits"] = logits
    if setup.quantization_bit:
        # bitsandbytes dequantises one weight matrix at a time into the compute dtype.
        comp["dequant_buffer"] = max(i * o for i, o in shape.linear_shapes().values()) * half
    comp["cuda_context"] = CUDA_CONTEXT_GIB * GIB

    static = sum(v for k, v in comp.items() if k not in ("activations", "logits", "dequant_buffer"))
    # transformers 5 defaults to the fused AdamW (no temporaries); the foreach implementation
    # (optim: adamw_torch) materialises about one more copy of the trainable parameters.
    optimizer_step_tmp = 0.0
    if setup.optim == "adamw_torch" and not (stage and ds.offload_optimizer):
        optimizer_step_tmp = t / (shards if stage else 1) * (half if stage or setup.pure_bf16 else 4)
    transient = max(hidden + logits + comp.get("dequant_buffer", 0.0), optimizer_step_tmp)
    peak = static + transient
    if transient == optimizer_step_tmp and optimizer_step_tmp > hidden + logits:
        notes.append("peak is at the optimizer step (AdamW temporaries), not in forward/backward")
    return MemoryEstimate(comp, t, peak, notes)


def fits(estimate: MemoryEstimate, memory_gib: float) -> bool:
    return estimate.peak_gib <= memory_gib * ALLOCATOR_HEADROOM


def steps_per_epoch(samples: int, n_gpus: int, batch: int, accum: int) -> int:
    """Optimizer steps per epoch as transformers 5's Trainer counts them.

    Each rank gets ceil(samples / n_gpus) samples, in ceil(that / batch) micro-batches; a last
    partial accumulation still makes a step (transformers 4.x dropped it: floor instead).
    """
    per_rank = math.ceil(samples / n_gpus)
    batches = math.ceil(per_rank / batch)
    return max(math.ceil(batches / accum), 1)
