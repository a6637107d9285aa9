"""A plan for one recipe on given GPUs: memory, time, fit, and the team's decision tree.

Two verdicts, kept apart: ``fits`` is about memory alone (the estimated peak within the card's
usable memory); ``runs`` is false as well when a setting cannot work on the hardware at all
(``blocking``: bf16 on a Turing card, FlashAttention-2 before Ampere, ...), so a plan never says
"fits" and leaves the reader to spot that the run would fail at start-up.

The decision tree the team uses, applied to the recipe's model and the chosen GPUs:

* up to 8B parameters full fine-tuning is fine (when it fits);
* 13B-30B prefer LoRA (full tuning needs ZeRO-3 and many GPUs for little gain);
* 30B and up LoRA is required (the Qwen3-30B full ZeRO-3 run measured 28 s/step against
  5-8 s/step for LoRA);
* GPUs under 16 GB: use QLoRA (4-bit weights).

When the recipe does not fit, the plan re-estimates a few standard changes (gradient
checkpointing, batch 1 with more accumulation, ZeRO-3, ZeRO-3 with CPU offload, 4-bit) and
lists the ones that fit, with the recipe keys to set.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from lfkit.planning.gpus import Gpu
from lfkit.planning.memory import (
    ALLOCATOR_HEADROOM,
    GIB,
    DeepSpeedSetup,
    TrainingSetup,
    estimate_memory,
    fits,
    steps_per_epoch,
)
from lfkit.planning.models import ModelShape, billions, resolve_model
from lfkit.planning.throughput import estimate_throughput

CALIBRATION_NOTE = (
    "uncalibrated first-principles estimate: no GPU run has been measured against it yet "
    "(lfkit/planning/memory.py and throughput.py name every assumption)"
)


def size_advice(shape: ModelShape, setup: TrainingSetup, gpu: Gpu) -> list[str]:
    """The decision-tree lines that apply to this model, method and GPU."""
    b = shape.total_params / 1e9
    method = setup.method
    lines = []
    if b <= 9:
        lines.append(
            f"{billions(shape.total_params)}B parameters: full fine-tuning is fine when it fits; "
            "LoRA is the cheaper default."
        )
    elif b < 12.5:
        lines.append(
            f"{billions(shape.total_params)}B parameters: full fine-tuning only with ZeRO and room to "
            "spare; LoRA preferred."
        )
    elif b < 29:
        lines.append(f"{billions(shape.total_params)}B parameters (13-30B): prefer LoRA.")
        if method in ("full", "freeze"):
            lines.append(
                f"finetuning_type: {method} on a 13-30B model: switch to finetuning_type: lora "
                "unless you have measured a gain."
            )
    else:
        lines.append(f"{billions(shape.total_params)}B parameters (>=30B): LoRA is required.")
        if method in ("full", "freeze"):
            lines.append(
                f"finetuning_type: {method} on a >=30B model is the slow path (team measurement on "
                "Qwen3-30B: 28 s/step full ZeRO-3 vs 5-8 s/step LoRA): use finetuning_type: lora."
            )
    if gpu.memory_gib < 16 and setup.quantization_bit is None:
        lines.append(
            f"{gpu.name} has {gpu.memory_gib:g} GB (<16 GB): use QLoRA (quantization_bit: 4, "
            "finetuning_type: lora)."
        )
    return lines


def blocking_problems(setup: TrainingSetup, gpu: Gpu, n_gpus: int) -> list[str]:
    """Settings that fail on this hardware regardless of memory."""
    out = []
    if not gpu.bf16 and (setup.bf16 or setup.pure_bf16):
        key = "pure_bf16" if setup.pure_bf16 else "bf16"
        out.append(f"{key}: true but {gpu.name} ({gpu.arch}) has no bf16: set {key}: false and fp16: true")
    if gpu.arch == "turing" and setup.flash_attn == "fa2":
        out.append(f"flash_attn: fa2 needs Ampere or newer; {gpu.name} is Turing: use flash_attn: sdpa")
    if setup.deepspeed.stage and setup.pure_bf16 and setup.deepspeed.stage >= 3:
        out.append("pure_bf16 is incompatible with DeepSpeed ZeRO-3 (LlamaFactory refuses it)")
    if setup.deepspeed.offload_param and setup.deepspeed.stage < 3:
        out.append("offload_param needs ZeRO stage 3")
    return out


def kl_note(shape: ModelShape, setup: TrainingSetup) -> str | None:
    """What the estimate leaves out of ``kl_beta``'s cost (None without it): said, not hidden."""
    if setup.kl_beta <= 0:
        return None
    tokens = setup.batch_size * setup.cutoff_len
    tensor_gib = tokens * shape.vocab_size * 4 / GIB
    reference = (
        "the frozen reference model's weights are counted (kl_reference)"
        if setup.kl_reference_copy
        else "LoRA: the reference is this model with its adapters disabled, so there is no weight copy"
    )
    return (
        f"kl_beta {setup.kl_beta:g} NOT MODELLED: the reference forward pass per micro-batch (roughly a "
        "quarter to a third more step time) and the KL term's float32 [response tokens x vocabulary] "
        f"tensors (a few at the peak, each up to {tensor_gib:.2f} GiB at {tokens} "
        f"tokens) are not in the peak memory or the throughput; {reference}"
    )


def _alternatives(shape: ModelShape, setup: TrainingSetup, gpu: Gpu, n_gpus: int) -> list[dict[str, Any]]:
    """Standard changes that make a recipe fit, each re-estimated."""
    small_batch = {}
    if setup.batch_size > 1:
        small_batch = {
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": setup.grad_accum * setup.batch_size,
        }
    base = replace(
        setup,
        gradient_checkpointing=True,
        batch_size=1 if small_batch else setup.batch_size,
        grad_accum=setup.grad_accum * setup.batch_size if small_batch else setup.grad_accum,
    )
    base_keys = (
        {"disable_gradient_checkpointing": False, **small_batch}
        if (not setup.gradient_checkpointing or small_batch)
        else {}
    )
    z3 = DeepSpeedSetup(stage=3, path="recipes/deepspeed/ds_z3.json")
    z3_off = DeepSpeedSetup(
        stage=3, offload_optimizer=True, offload_param=True, path="recipes/deepspeed/ds_z3_offload.json"
    )
    candidates: list[tuple[str, TrainingSetup, dict[str, Any]]] = []
    if base_keys:
        candidates.append(("checkpointing on, batch 1", base, base_keys))
    if n_gpus > 1 and setup.deepspeed.stage < 3 and setup.quantization_bit is None:
        candidates.append(
            ("DeepSpeed ZeRO-3", replace(base, deepspeed=z3), {**base_keys, "deepspeed": z3.path})
        )
    if (
        not (setup.deepspeed.offload_param and setup.deepspeed.offload_optimizer)
        and setup.quantization_bit is None
    ):
        candidates.append(
            (
                "DeepSpeed ZeRO-3 + CPU offload",
                replace(base, deepspeed=z3_off),
                {**base_keys, "deepspeed": z3_off.path},
            )
        )
    if setup.quantization_bit is None:
        rank = setup.lora_rank if setup.method == "lora" else 8
        q = replace(
            base, method="lora", lora_rank=rank, quantization_bit=4, deepspeed=DeepSpeedSetup(), dora=False
        )
        candidates.append(
            (
                "QLoRA 4-bit",
                q,
                {
                    **base_keys,
                    "finetuning_type": "lora",
                    "lora_rank": rank,
                    "quantization_bit": 4,
                    "deepspeed": None,
                },
            )
        )
    if setup.method != "lora":
        lora = replace(base, method="lora", lora_rank=16)
        candidates.append(("LoRA rank 16", lora, {**base_keys, "finetuning_type": "lora", "lora_rank": 16}))
    out = []
    for label, alt, keys in candidates:
        est = estimate_memory(shape, alt, n_gpus)
        out.append(
            {
                "change": label,
                "set": keys,
                "peak_memory_gb": round(est.peak_gib, 2),
                "fits": fits(est, gpu.memory_gib),
            }
        )
    return out


def make_plan(
    recipe: dict[str, Any],
    gpu: Gpu,
    n_gpus: int,
    *,
    recipe_path: str | None = None,
    model_size: str | None = None,
    samples: int | None = None,
    tokens_per_sample: int | None = None,
) -> dict[str, Any]:
    """The full estimate for ``recipe`` as a JSON-ready dict."""
    base_dir = Path(recipe_path).resolve().parent if recipe_path else None
    setup = TrainingSetup.from_recipe(recipe, base_dir=base_dir)
    shape = resolve_model(recipe.get("model_name_or_path"), model_size)
    est = estimate_memory(shape, setup, n_gpus)
    ok = fits(est, gpu.memory_gib)
    blocking = blocking_problems(setup, gpu, n_gpus)
    notes = list(est.notes)
    kl = kl_note(shape, setup)
    if kl:
        notes.append(kl)
    tp = estimate_throughput(shape, setup, gpu, n_gpus, est.trainable_params, tokens_per_sample)
    eff_batch = setup.batch_size * setup.grad_accum * n_gpus

    time: dict[str, Any] = {
        "samples_per_s": round(tp.samples_per_s, 3),
        "step_seconds": round(tp.step_seconds, 2),
        "compute_seconds_per_step": round(tp.compute_seconds, 2),
        "communication_seconds_per_step": round(tp.comm_seconds, 2),
        "tokens_per_sample": tp.tokens_per_sample,
        "mfu_assumed": tp.mfu,
        "effective_batch": eff_batch,
        "epochs": setup.epochs,
    }
    if samples:
        per_epoch = steps_per_epoch(samples, n_gpus, setup.batch_size, setup.grad_accum)
        steps = setup.max_steps if setup.max_steps > 0 else int(-(-setup.epochs * per_epoch // 1))
        seconds = steps * tp.step_seconds
        time.update(
            samples=samples,
            steps_per_epoch=per_epoch,
            total_steps=steps,
            seconds=round(seconds, 1),
            hours=round(seconds / 3600, 2),
        )
    elif setup.max_steps > 0:
        seconds = setup.max_steps * tp.step_seconds
        time.update(total_steps=setup.max_steps, seconds=round(seconds, 1), hours=round(seconds / 3600, 2))
    else:
        time["note"] = "pass --samples N for steps and wall time"

    ds = setup.deepspeed
    plan: dict[str, Any] = {
        "recipe": recipe_path,
        "model": {
            "name": shape.name,
            "source": shape.source,
            "total_params": shape.total_params,
            "total_params_b": billions(shape.total_params),
            "trainable_params": est.trainable_params,
            "notes": list(shape.notes),
        },
        "gpu": gpu.as_dict(),
        "n_gpus": n_gpus,
        "method": setup.method
        + (" (DoRA)" if setup.dora else "")
        + (f" + {setup.quantization_bit}-bit" if setup.quantization_bit else ""),
        "precision": "bf16"
        if setup.bf16
        else "pure_bf16"
        if setup.pure_bf16
        else "fp16"
        if setup.fp16
        else "fp32",
        "gradient_checkpointing": setup.gradient_checkpointing,
        "kl_beta": setup.kl_beta,
        "deepspeed": {
            "stage": ds.stage,
            "offload_optimizer": ds.offload_optimizer,
            "offload_param": ds.offload_param,
            "config": ds.path,
        },
        "micro_batch_tokens": setup.batch_size * setup.cutoff_len,
        "memory_gb": est.components_gib(),
        "peak_memory_gb": round(est.peak_gib, 2),
        "gpu_memory_gb": gpu.memory_gib,
        "usable_memory_gb": round(gpu.memory_gib * ALLOCATOR_HEADROOM, 2),
        "fits": ok,  # memory only
        "runs": ok and not blocking,  # fits, and nothing in `blocking` stops it on this hardware
        "time": time,
        "blocking": blocking,
        "recommendation": size_advice(shape, setup, gpu),
        "notes": notes,
        "calibrated": False,
        "calibration": CALIBRATION_NOTE,
    }
    if not ok:
        plan["alternatives"] = _alternatives(shape, setup, gpu, n_gpus)
    return plan


def plan_for_recipe_file(path: str | Path, gpu: Gpu, n_gpus: int, **kwargs: Any) -> dict[str, Any]:
    """Load a YAML recipe (as LlamaFactory loads it) and plan it."""
    from lfkit.planning.recipe_yaml import load_values

    return make_plan(copy.deepcopy(load_values(path)), gpu, n_gpus, recipe_path=str(path), **kwargs)
