"""Suggestions: changes to the recipe, each re-estimated, listed only when they change something and help.

A suggestion is a set of YAML keys (and keys to delete), applied to the recipe mapping and re-read
by :meth:`TrainingSetup.from_recipe`, then judged by :func:`lfkit.planning.assess.assess` like the
recipe itself. It is listed when the re-read setup differs from the recipe's and

* the recipe cannot run (blocked, or over memory) and the change makes it run: "fixes" / "fits";
* the recipe runs and the change runs too, and is at least 10% faster ("faster"), or leaves at
  least 10% more of the card free while the recipe's fit is tight and costs at most 10% speed
  ("more headroom");
* the team's size rule asks for it (LoRA for a 13B+ model tuned in full or freeze) and it runs.

Changes that lift a blocker (bf16 on Turing -> fp16, ...) are part of every other suggestion, so each
listed change is complete on its own. The team's decision tree (up to 8B full tuning is fine; 13-30B
prefer LoRA; 30B and up LoRA is required; under 16 GB QLoRA) appears only through these suggestions:
a rule is never printed for a recipe that already follows it, nor QLoRA for a recipe that fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfkit.planning.assess import Assessment, assess, liger_applies
from lfkit.planning.gpus import Cluster
from lfkit.planning.models import ModelShape
from lfkit.planning.throughput import TimeConstants
from lfkit.planning.training_setup import CATALOG_DEEPSPEED, DeepSpeedSetup, TrainingSetup

SPEED_GAIN = 1.10  # a "faster" suggestion is at least this much faster
HEADROOM_GAIN = 0.10  # a "more headroom" suggestion frees at least this fraction of the card
MAX_LISTED = 5


@dataclass(frozen=True)
class Suggestion:
    """A recipe change, its re-estimate, and why it is listed."""

    title: str
    set: tuple[tuple[str, Any], ...]  # YAML keys to set
    remove: tuple[str, ...]  # YAML keys to delete
    reason: str  # fixes | fits | faster | more headroom | team rule ...
    peak_gib: float
    runs: bool
    samples_per_s: float | None

    def yaml_changes(self) -> str:
        """The change in YAML spelling: ``quantization_bit: 4, finetuning_type: lora; delete deepspeed``."""
        parts = [f"{k}: {yaml_scalar(v)}" for k, v in self.set]
        text = ", ".join(parts)
        if self.remove:
            text += ("; " if text else "") + "delete " + ", ".join(self.remove)
        return text

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "set": dict(self.set),
            "remove": list(self.remove),
            "yaml": self.yaml_changes(),
            "reason": self.reason,
            "peak_memory_gib": round(self.peak_gib, 2),
            "runs": self.runs,
            "samples_per_second": None if self.samples_per_s is None else round(self.samples_per_s, 3),
        }


def yaml_scalar(value: Any) -> str:
    """A value as YAML writes it (true, 4, 1.0e-05, recipes/deepspeed/ds_z3.json)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@dataclass(frozen=True)
class _Change:
    title: str
    set: tuple[tuple[str, Any], ...] = ()
    remove: tuple[str, ...] = ()
    rule: str = ""  # the team rule this change follows, when one does


def _candidates(shape: ModelShape, setup: TrainingSetup, cluster: Cluster, fits: bool) -> list[_Change]:
    b = shape.total_params / 1e9
    ds = setup.deepspeed
    out: list[_Change] = []
    small_batch = ()
    if setup.batch_size > 1:
        small_batch = (
            ("per_device_train_batch_size", 1),
            ("gradient_accumulation_steps", setup.grad_accum * setup.batch_size),
        )
    memory_basics = (("disable_gradient_checkpointing", False),) + small_batch
    out.append(_Change("gradient checkpointing on", (("disable_gradient_checkpointing", False),)))
    out.append(_Change("gradient checkpointing off", (("disable_gradient_checkpointing", True),)))
    if small_batch:
        out.append(_Change("batch 1, same effective batch", small_batch))
    if liger_applies(shape) and setup.kl_beta <= 0:
        out.append(_Change("Liger kernels", (("enable_liger_kernel", True),)))
    if not fits:
        out.append(_Change("checkpointing on, batch 1", memory_basics))
    prefix = () if fits else memory_basics
    if cluster.world_size > 1 and ds.stage < 3 and not setup.quantization_bit:
        out.append(_Change("DeepSpeed ZeRO-3", prefix + (("deepspeed", "recipes/deepspeed/ds_z3.json"),)))
    if not (ds.offload_param and ds.offload_optimizer) and not setup.quantization_bit:
        out.append(
            _Change(
                "DeepSpeed ZeRO-3 + CPU offload",
                prefix + (("deepspeed", "recipes/deepspeed/ds_z3_offload.json"),),
            )
        )
    if ds.stage >= 3 and ds.offload_param:
        out.append(_Change("ZeRO-3 without offload", (("deepspeed", "recipes/deepspeed/ds_z3.json"),)))
    if ds.stage >= 3 and cluster.world_size > 1:
        out.append(_Change("ZeRO-2", (("deepspeed", "recipes/deepspeed/ds_z2.json"),)))
    if ds.stage:
        out.append(_Change("no DeepSpeed", remove=("deepspeed",)))
    if setup.quantization_bit is None and (setup.method == "lora" or not fits):
        rank = setup.lora_rank if setup.method == "lora" else 16
        q = (("finetuning_type", "lora"), ("quantization_bit", 4))
        if setup.method != "lora":
            q += (("lora_rank", rank), ("lora_target", "all"))
        remove = ("deepspeed",) if ds.offload_param or ds.offload_optimizer else ()
        rule = "team rule: GPUs under 16 GB use QLoRA" if cluster.gpu.label_gb < 16 and not fits else ""
        out.append(_Change("QLoRA 4-bit", prefix + q, remove, rule))
    if not fits and setup.cutoff_len >= 512:
        half = setup.cutoff_len // 2
        out.append(_Change(f"cutoff_len {half} (truncates longer samples)", prefix + (("cutoff_len", half),)))
    if setup.method in ("full", "freeze") and b >= 12.5:
        rule = "team rule: 30B and up, LoRA is required" if b >= 29 else "team rule: 13-30B, prefer LoRA"
        out.append(
            _Change(
                "LoRA r16", (("finetuning_type", "lora"), ("lora_rank", 16), ("lora_target", "all")), (), rule
            )
        )
    elif setup.method in ("full", "freeze") and not fits:
        out.append(
            _Change(
                "LoRA r16", prefix + (("finetuning_type", "lora"), ("lora_rank", 16), ("lora_target", "all"))
            )
        )
    return out


def _apply(values: dict[str, Any], change: _Change) -> dict[str, Any]:
    new = {k: v for k, v in values.items() if k not in change.remove}
    new.update(change.set)
    return new


def _setup_for(
    values: dict[str, Any], current: TrainingSetup, change: _Change, base_dir: Path | None
) -> TrainingSetup:
    keys = dict(change.set)
    if "deepspeed" in change.remove:
        ds = DeepSpeedSetup()
    elif "deepspeed" in keys:
        ds = CATALOG_DEEPSPEED[keys["deepspeed"]]
    else:
        ds = current.deepspeed
    return TrainingSetup.from_recipe(_apply(values, change), base_dir, deepspeed=ds)


def suggest(
    values: dict[str, Any],
    current: Assessment,
    shape: ModelShape,
    cluster: Cluster,
    constants: TimeConstants,
    *,
    base_dir: Path | None = None,
    tokens_per_sample: int | None = None,
    host_limit_gib: float | None = None,
) -> tuple[Suggestion, ...]:
    """The changes worth listing for ``values`` (see the module docstring for the rules)."""

    def judge(setup: TrainingSetup) -> Assessment:
        return assess(
            shape,
            setup,
            cluster,
            constants,
            tokens_per_sample=tokens_per_sample,
            host_limit_gib=host_limit_gib,
        )

    if any(not b.fix for b in current.blockers):
        return ()  # something no recipe key lifts: nothing to suggest
    found: list[Suggestion] = []
    seen: set[TrainingSetup] = {current.setup}
    baseline, fix_keys = current, tuple(kv for b in current.blockers for kv in b.fix)
    if fix_keys:
        fix = _Change("fix what blocks it", fix_keys)
        fixed = judge(_setup_for(values, current.setup, fix, base_dir))
        seen.add(fixed.setup)
        if fixed.runs:
            reason = "fixes: " + "; ".join(b.message for b in current.blockers)
            found.append(
                _suggestion(_minimal(values, current.setup, fix, fixed.setup, base_dir), fixed, reason)
            )
        baseline = fixed
    for change in _candidates(shape, baseline.setup, cluster, baseline.fits):
        change = _Change(change.title, fix_keys + change.set, change.remove, change.rule)
        try:
            setup = _setup_for(values, current.setup, change, base_dir)
        except ValueError:
            continue
        if setup in seen:
            continue  # changes nothing (or repeats an earlier suggestion)
        seen.add(setup)
        new = judge(setup)
        reason = _reason(baseline, new, change)
        if reason:
            if fix_keys:
                reason = "with the fix: " + reason
            found.append(_suggestion(_minimal(values, current.setup, change, setup, base_dir), new, reason))
    found.sort(
        key=lambda s: (
            not s.reason.startswith(("fixes", "fits", "with the fix: fits")),
            -(s.samples_per_s or 0),
        )
    )
    return tuple(found[:MAX_LISTED])


def _suggestion(change: _Change, new: Assessment, reason: str) -> Suggestion:
    return Suggestion(
        change.title,
        change.set,
        change.remove,
        reason,
        new.memory.peak_gib,
        new.runs,
        new.time.samples_per_s if new.runs else None,
    )


def _minimal(
    values: dict[str, Any],
    current: TrainingSetup,
    change: _Change,
    target: TrainingSetup,
    base_dir: Path | None,
) -> _Change:
    """``change`` without the keys that change nothing (a key already set to that value)."""
    kept = list(change.set)
    for item in change.set:
        trial = _Change(change.title, tuple(kv for kv in kept if kv != item), change.remove, change.rule)
        try:
            if _setup_for(values, current, trial, base_dir) == target:
                kept.remove(item)
        except ValueError:
            continue
    return _Change(change.title, tuple(kept), change.remove, change.rule)


def _reason(baseline: Assessment, new: Assessment, change: _Change) -> str:
    if not new.runs:
        return ""
    rule = f"; {change.rule}" if change.rule else ""
    if not baseline.runs:
        return "fits" + rule
    speed = new.time.samples_per_s / baseline.time.samples_per_s
    if speed >= SPEED_GAIN:
        return f"faster: {speed:.2f}x the samples/s" + rule
    if (
        baseline.headroom < HEADROOM_GAIN
        and new.headroom - baseline.headroom >= HEADROOM_GAIN
        and speed >= 1 / SPEED_GAIN
    ):
        return f"more headroom: {new.headroom:.0%} of the card free instead of {baseline.headroom:.0%}" + rule
    return change.rule
