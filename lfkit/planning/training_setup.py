"""The recipe values the estimates depend on, read as LlamaFactory 0.9.5 reads them.

:class:`TrainingSetup` is built from a recipe mapping (``recipe_yaml.load_values``) with
LlamaFactory's own defaults for absent keys, and from the DeepSpeed JSON it names. Suggestions in
:mod:`lfkit.planning.suggestions` are changes to the recipe mapping, re-read through
:meth:`TrainingSetup.from_recipe`, so what the plan re-estimates is exactly what the named keys do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class RecipeValueError(ValueError):
    """A recipe value the planner cannot interpret."""


@dataclass(frozen=True)
class DeepSpeedSetup:
    """What the planner reads from a DeepSpeed JSON config (``zero_optimization`` and batch keys)."""

    stage: int = 0  # ZeRO stage; 0 = no DeepSpeed
    offload_optimizer: bool = False  # optimizer state (and its fp32 gradients) in CPU RAM
    offload_param: bool = False  # ZeRO-3 weight shards in CPU RAM
    reduce_bucket: float | None = None  # elements; None = "auto" (hidden^2, as transformers fills it)
    allgather_bucket: float = 5e8  # ZeRO-2 all-gather bucket, elements
    prefetch_bucket: float | None = None  # ZeRO-3 prefetch, elements; None = "auto" (0.9 hidden^2)
    overlap_comm: bool = False  # extra buffers, gradient reduction overlapped with backward
    train_batch_size: int | None = None  # a number DeepSpeed checks against batch x accumulation x GPUs
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
        return cls.from_config(cfg, str(p))

    @classmethod
    def from_config(cls, cfg: dict[str, Any], path: str | None = None) -> DeepSpeedSetup:
        zero = cfg.get("zero_optimization") or {}

        def device(key: str) -> bool:
            return str((zero.get(key) or {}).get("device", "none")).lower() in ("cpu", "nvme")

        def number(key: str, default: float | None) -> float | None:
            value = zero.get(key, default)
            return None if value == "auto" or value is None else float(value)

        batch = cfg.get("train_batch_size")
        return cls(
            stage=int(zero.get("stage", 0)),
            offload_optimizer=device("offload_optimizer"),
            offload_param=device("offload_param"),
            reduce_bucket=number("reduce_bucket_size", None),
            allgather_bucket=number("allgather_bucket_size", 5e8) or 5e8,
            prefetch_bucket=number("stage3_prefetch_bucket_size", None),
            overlap_comm=bool(zero.get("overlap_comm", False)),
            train_batch_size=int(batch) if isinstance(batch, (int, float)) else None,
            path=path,
        )

    def describe(self) -> str:
        if not self.stage:
            return "no DeepSpeed"
        text = f"ZeRO-{self.stage}"
        parts = (("optimizer", self.offload_optimizer), ("weights", self.offload_param))
        offloaded = [name for name, on in parts if on]
        return text + (f" + CPU offload ({', '.join(offloaded)})" if offloaded else "")


# The DeepSpeed configs shipped in recipes/deepspeed/, as suggestions name them (a test checks that
# these equal the files). Suggestions use them without reading the files, so a recipe planned from
# anywhere gets the same advice.
CATALOG_DEEPSPEED = {
    "recipes/deepspeed/ds_z2.json": DeepSpeedSetup(
        stage=2, reduce_bucket=2e8, allgather_bucket=2e8, path="recipes/deepspeed/ds_z2.json"
    ),
    "recipes/deepspeed/ds_z3.json": DeepSpeedSetup(stage=3, path="recipes/deepspeed/ds_z3.json"),
    "recipes/deepspeed/ds_z3_offload.json": DeepSpeedSetup(
        stage=3, offload_optimizer=True, offload_param=True, path="recipes/deepspeed/ds_z3_offload.json"
    ),
}


@dataclass(frozen=True)
class TrainingSetup:
    """The recipe values the estimates depend on, normalised (LlamaFactory's defaults filled in)."""

    method: str  # finetuning_type: lora | freeze | full
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("all",)
    lora_dropout: float = 0.0
    dora: bool = False  # use_dora
    quantization_bit: int | None = None  # 4 or 8 (bitsandbytes), None = 16-bit weights
    double_quantization: bool = True
    freeze_layers: int = 2  # freeze_trainable_layers (negative: the first layers)
    compute_bytes: int = 2  # 2 with bf16/fp16/pure_bf16, else 4
    bf16: bool = False
    fp16: bool = False
    pure_bf16: bool = False
    gradient_checkpointing: bool = True  # not disable_gradient_checkpointing
    liger: bool = False  # enable_liger_kernel
    batch_size: int = 1  # per_device_train_batch_size (LlamaFactory's default is 8, filled in below)
    grad_accum: int = 1
    cutoff_len: int = 2048
    flash_attn: str = "auto"
    deepspeed: DeepSpeedSetup = field(default_factory=DeepSpeedSetup)
    epochs: float = 3.0
    max_steps: int = -1
    optim: str = "adamw_torch_fused"  # transformers 5's default
    kl_beta: float = 0.0  # lfkit plugin key: KL to a reference model (lfkit.plugin.kl_loss)
    kl_ref_model: str | None = None

    @classmethod
    def from_recipe(
        cls,
        recipe: dict[str, Any],
        base_dir: Path | None = None,
        deepspeed: DeepSpeedSetup | None = None,
    ) -> TrainingSetup:
        """Read the keys that matter, with LlamaFactory's own defaults for absent ones.

        ``deepspeed`` replaces reading the file the recipe names (suggestions pass the catalog's
        configs this way).
        """
        method = str(recipe.get("finetuning_type", "lora"))
        if method not in ("lora", "freeze", "full"):
            raise RecipeValueError(
                f"finetuning_type: {method!r} is not one the planner models (lora, freeze, full)"
            )
        targets = recipe.get("lora_target", "all")
        targets = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets)
        ds = deepspeed if deepspeed is not None else DeepSpeedSetup()
        if deepspeed is None and recipe.get("deepspeed"):
            ds = _read_deepspeed(str(recipe["deepspeed"]), base_dir)
        bf16, fp16, pure = bool(recipe.get("bf16")), bool(recipe.get("fp16")), bool(recipe.get("pure_bf16"))
        qbit = recipe.get("quantization_bit")
        return cls(
            method=method,
            lora_rank=int(recipe.get("lora_rank", 8)),
            lora_targets=tuple(targets),
            lora_dropout=float(recipe.get("lora_dropout", 0.0)),
            dora=bool(recipe.get("use_dora", False)),
            quantization_bit=int(qbit) if qbit is not None else None,
            double_quantization=bool(recipe.get("double_quantization", True)),
            freeze_layers=int(recipe.get("freeze_trainable_layers", 2)),
            compute_bytes=2 if (bf16 or fp16 or pure) else 4,
            bf16=bf16,
            fp16=fp16,
            pure_bf16=pure,
            gradient_checkpointing=not recipe.get("disable_gradient_checkpointing", False),
            liger=bool(recipe.get("enable_liger_kernel", False)),
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

    @property
    def precision(self) -> str:
        if self.pure_bf16:
            return "pure_bf16"
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def describe_method(self) -> str:
        text = {"lora": "DoRA" if self.dora else "LoRA", "freeze": "freeze", "full": "full"}[self.method]
        if self.method == "lora":
            text = f"{'Q' if self.quantization_bit else ''}{text} r{self.lora_rank}"
            if self.quantization_bit:
                text += f" ({self.quantization_bit}-bit)"
        elif self.method == "freeze":
            text += f" (last {self.freeze_layers} layers trainable)"
        return text


def _read_deepspeed(name: str, base_dir: Path | None) -> DeepSpeedSetup:
    path = Path(name)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        # llamafactory-cli resolves it from the launch directory; planning from elsewhere, try
        # the recipe's directory and its parents (recipes name recipes/deepspeed/...).
        found = [d / path for d in (base_dir, *base_dir.parents) if (d / path).is_file()]
        path = found[0] if found else path
    return DeepSpeedSetup.from_file(path)
