"""What differed between compared runs: their settings, each read from the run's own files.

A run's settings come from, in order of precedence: the arguments in the lfkit run record
(every recipe key as LlamaFactory parsed it, defaults included), LlamaBoard's
``training_args.yaml``, ``adapter_config.json`` (rank, alpha, dropout, DoRA, target
modules), ``trainer_state.json`` (batch size, logging/eval/save steps, total steps) and the
record's own fields (GPUs, processes, hardware, library versions). The settings table of a
report lists the keys whose known values differ between its runs; a run whose files do not
hold a key shows it as not recorded. Where a run was written to (output and logging
directories, caches) always differs and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lfkit.reporting.facts import Fact, short_model_name, unknown
from lfkit.reporting.runs import (
    ADAPTER_CONFIG_FILE,
    RUN_RECORD_FILE,
    TRAINER_STATE_FILE,
    TRAINING_ARGS_FILE,
    Run,
)

LOCATION_KEYS = frozenset(
    {
        "output_dir",
        "logging_dir",
        "run_name",
        "dataset_dir",
        "media_dir",
        "image_dir",
        "cache_dir",
        "tokenized_path",
        "export_dir",
    }
)
"""Where a run read or wrote its files: different for every run, no setting to compare."""

ADAPTER_KEYS = {
    "r": "lora_rank",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "use_dora": "use_dora",
    "use_rslora": "use_rslora",
    "target_modules": "target_modules (adapter_config.json)",
}
"""``adapter_config.json`` (PEFT) field -> the recipe key it records."""
STATE_KEYS = {
    "train_batch_size": "per_device_train_batch_size",
    "logging_steps": "logging_steps",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "max_steps": "total optimizer steps",
}
"""``trainer_state.json`` field -> the setting it records (its max_steps is the resolved step count)."""
EFFECTIVE_BATCH = "effective batch (samples per optimizer step)"
MAIN_KEYS = (
    "stage",
    "finetuning_type",
    "model_name_or_path",
    "adapter_name_or_path",
    "pref_loss",
    "pref_beta",
    "kl_beta",
    "dataset",
    "eval_dataset",
    "val_size",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "GPUs",
    "processes (world_size)",
    EFFECTIVE_BATCH,
    "num_train_epochs",
    "max_steps",
    "total optimizer steps",
    "cutoff_len",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "target_modules (adapter_config.json)",
    "use_dora",
    "quantization_bit",
    "quantization",
    "bf16",
    "fp16",
    "deepspeed",
    "seed",
)
"""The settings that matter most, in this order: first in a comparison's settings table (the rest
follow alphabetically), and all of a one-run summary's settings table."""


@dataclass(frozen=True)
class Setting:
    """One setting across the compared runs: a :class:`Fact` per run, in run order."""

    key: str
    values: list[Fact]


def run_settings(run: Run) -> dict[str, Fact]:
    """Every setting the run's files hold, keyed by recipe key (see the module docstring)."""
    found: dict[str, Fact] = {}

    def put(key: str, value: Any, source: str) -> None:
        if value is not None and value != "" and key not in found and key not in LOCATION_KEYS:
            found[key] = Fact(_normal(value, ordered=source != ADAPTER_CONFIG_FILE), source)

    record = run.record
    if record is not None:
        for key, value in record.arguments.items():
            put(key, value, RUN_RECORD_FILE)
    for key, value in (run.training_args or {}).items():
        put(str(key), value, TRAINING_ARGS_FILE)
    for field_name, key in ADAPTER_KEYS.items():
        put(key, (run.adapter_config or {}).get(field_name), ADAPTER_CONFIG_FILE)
    for field_name, key in STATE_KEYS.items():
        put(key, (run.state or {}).get(field_name), TRAINER_STATE_FILE)
    if record is not None:
        put("stage", record.stage, RUN_RECORD_FILE)
        put("finetuning_type", record.finetuning_type, RUN_RECORD_FILE)
        put("quantization", record.quantization, RUN_RECORD_FILE)
        put("kl_beta", record.kl_beta, RUN_RECORD_FILE)
        put("model_name_or_path", record.model_name_or_path, RUN_RECORD_FILE)
        put("GPUs", record.gpu_count, RUN_RECORD_FILE)
        put("processes (world_size)", record.world_size, RUN_RECORD_FILE)
        put("hardware", record.hardware_summary, RUN_RECORD_FILE)
        for package, version in record.versions.items():
            put(f"{package} version", version, RUN_RECORD_FILE)
    put("model_name_or_path", (run.adapter_config or {}).get("base_model_name_or_path"), ADAPTER_CONFIG_FILE)
    batch = [found.get(k) for k in ("per_device_train_batch_size", "gradient_accumulation_steps")]
    world = found.get("processes (world_size)")
    if all(f is not None and isinstance(f.value, int) for f in batch) and world is not None:
        put(
            EFFECTIVE_BATCH,
            batch[0].value * batch[1].value * world.value,
            "per-device batch x accumulation x world_size",
        )
    return found


def differing_settings(runs: list[Run]) -> list[Setting]:
    """The settings whose values differ between ``runs`` (empty for fewer than two runs).

    A key of another method or stage (``lora_rank`` of a full run, ``pref_beta`` of an SFT run)
    holds its unused default: it is shown as not applying, and never counts as a difference.
    """
    if len(runs) < 2:
        return []
    per_run = [run_settings(r) for r in runs]
    keys = _ordered({k for settings in per_run for k in settings})
    out = []
    for key in keys:
        values = []
        for settings in per_run:
            fact = settings.get(key) or unknown("not in this run's files")
            why_not = not_applying(key, settings)
            values.append(unknown(why_not) if why_not else fact)
        known = {repr(v.value) for v in values if v.known}
        if len(known) > 1:
            out.append(Setting(key, values))
    return out


def summary_settings(run: Run) -> list[Setting]:
    """The main settings of one run that apply to its stage and method, for a one-run summary."""
    settings = run_settings(run)
    return [
        Setting(k, [settings[k]])
        for k in MAIN_KEYS
        if k in settings and not not_applying(k, settings) and not (k == "kl_beta" and not settings[k].value)
    ]


METHOD_KEYS = {
    "lora": (
        "lora_",
        "use_dora",
        "use_rslora",
        "loraplus_",
        "pissa_",
        "target_modules",
        "create_new_adapter",
    ),
    "freeze": ("freeze_",),
    "oft": ("oft_",),
}
"""Key prefixes that configure one finetuning_type only."""
STAGE_KEYS = {
    "dpo": ("pref_", "dpo_", "simpo_", "ld_alpha"),
    "kto": ("pref_", "kto_"),
    "ppo": ("ppo_", "reward_model"),
}
"""Key prefixes that configure one stage only."""


def not_applying(key: str, settings: dict[str, Fact]) -> str | None:
    """Why ``key`` does not apply to the run with ``settings`` (its method or stage), or ``None``."""
    for kind, table in (("finetuning_type", METHOD_KEYS), ("stage", STAGE_KEYS)):
        own = settings.get(kind)
        owners = [name for name, prefixes in table.items() if key.startswith(prefixes)]
        if owners and own is not None and own.known and own.value not in owners:
            return f"does not apply: {kind} {own.value}"
    return None


def display(key: str, value: Any) -> str:
    """A setting's value as the table shows it (a local model path by its last component)."""
    if key in ("model_name_or_path", "adapter_name_or_path") and isinstance(value, str):
        return ", ".join(short_model_name(part) for part in value.split(", "))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _normal(value: Any, *, ordered: bool = True) -> Any:
    """Lists as a comma-separated string (sorted where their order means nothing: PEFT's target
    modules); everything else as it is."""
    if isinstance(value, (list, tuple, set)):
        items = [str(v) for v in value]
        return ", ".join(items if ordered and not isinstance(value, set) else sorted(items))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
    return value


def _ordered(keys: set[str]) -> list[str]:
    leading = [k for k in MAIN_KEYS if k in keys]
    return leading + sorted(keys - set(leading))
