"""Every measured figure the planner is checked against, with where it comes from.

Three kinds, each a typed record:

* :class:`ThroughputMeasurement`: samples/s or s/step of a recipe on named hardware. The team's
  six figures (the recipe headers and issue 12) are :data:`TEAM_THROUGHPUT`. Their settings are
  the recipe files as shipped; the team's notes do not record the mean tokens per sample, so every
  one is taken at ``cutoff_len`` tokens per sample (the planner's convention).
* :class:`MemoryMeasurement`: peak memory per GPU. :data:`ISSUE_MEMORY` holds the figures issue 12
  reports for plain LlamaFactory 0.9.5 (Qwen2.5-7B shape, cutoff 1024, batch 4, bf16, peak as
  ``nvidia-smi`` shows it). The issue gives them as the error of the planner as it stood at commit
  0e3143a (its estimates, in GiB, are written here beside each), so each measurement is that
  estimate divided by (1 + error): e.g. "no checkpointing: ~24% high" means measured ~ 61.88 /
  1.24 GiB. "Within ~8%" gives a range, [estimate / 1.08, estimate / 0.92].
* :class:`RatioMeasurement`: a ratio of two runs measured together. Issue 13 reports, on an H100
  against the plain LlamaFactory default (LoRA r16, checkpointing on, cutoff 1024, batch 4): Liger
  kernels without checkpointing 1.73x the throughput at 1.46x the memory, with checkpointing 1.04x
  at 0.71x.

GPU runs recorded with lfkit (``results/runs/gpu/<run>/``: ``lfkit_run.json``, ``trainer_log.jsonl``
and the recipe) become measurements too, through :func:`gpu_run_measurements`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfkit.planning.gpus import Cluster, gpu_from_device_name, parse_gpu_spec
from lfkit.planning.units import GIB

if TYPE_CHECKING:
    from lfkit.plugin.run_record_schema import RunRecord

Values = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Setting:
    """A recipe (a catalog file and/or explicit values) on a cluster: what a measurement ran."""

    recipe: str | None  # path relative to the repository, or None for values only
    values: Values = ()  # keys set on top of the recipe (or the whole recipe when recipe is None)
    gpu: str = "h100"  # --gpu spec: NAME[xGPUS_PER_NODE]
    nodes: int = 1
    tokens_per_sample: int | None = None

    def recipe_values(self, root: Path) -> dict[str, Any]:
        """The recipe mapping, catalog paths read from ``root`` (a checkout: recipes/ is not installed)."""
        from lfkit.planning.recipe_yaml import load_values

        values = load_values(root / self.recipe) if self.recipe else {}
        values.update(dict(self.values))
        return values

    def cluster(self) -> Cluster:
        gpu, count = parse_gpu_spec(self.gpu)
        return Cluster.of(gpu, count, self.nodes)


@dataclass(frozen=True)
class ThroughputMeasurement:
    key: str
    setting: Setting
    unit: str  # "samples/s" or "s/step"
    value: float  # the figure compared with (a range's midpoint)
    source: str
    value_range: tuple[float, float] | None = None  # when the figure was given as a range
    assumptions: str = ""


@dataclass(frozen=True)
class MemoryMeasurement:
    key: str
    setting: Setting
    low_gib: float  # measured peak, or the low end of the range the source allows
    high_gib: float
    kind: str  # "nvidia-smi" (whole card) or "torch-reserved" (PyTorch's allocator only)
    source: str
    derivation: str = ""


@dataclass(frozen=True)
class RatioMeasurement:
    key: str
    quantity: str  # "memory" or "throughput"
    numerator: Setting
    denominator: Setting
    ratio: float
    source: str


def _team(key, recipe, gpu, unit, value, source, value_range=None, assumptions="", values=()):
    setting = Setting(recipe, values, gpu=gpu)
    return ThroughputMeasurement(key, setting, unit, value, source, value_range, assumptions)


_HEADER = "team measurement on the ChatTS-Training fork, quoted in the recipe header and issue 12"
TEAM_THROUGHPUT: tuple[ThroughputMeasurement, ...] = (
    _team(
        "chatts-14b lora r16, 2x rtx-6000-ada, ddp",
        "recipes/14b_rtx6000.yaml",
        "rtx-6000-adax2",
        "samples/s",
        1.72,
        _HEADER + " (5 epochs of 417 samples: 65 steps in 20 min)",
    ),
    _team(
        "chatts-14b lora r8, 2x 2080ti, zero-3 + offload",
        "recipes/14b_2080ti_lora_zero3_offload.yaml",
        "2080tix2",
        "samples/s",
        0.57,
        _HEADER,
    ),
    _team(
        "chatts-14b qlora r8, 2x 2080ti, zero-3",
        "recipes/14b_2080ti_qlora.yaml",
        "2080tix2",
        "samples/s",
        0.58,
        _HEADER,
        assumptions=(
            "ZeRO-3 as in the recipe (the team's notes do not say whether it was on), at cutoff_len 1024 "
            "as the recipe stood when the figure was recorded (it now ships 512 to fit 11 GB)"
        ),
        values=(("cutoff_len", 1024),),
    ),
    _team(
        "chatts-8b lora r8, 1x quadro-rtx-6000",
        "recipes/8b_rtx6000.yaml",
        "quadro-rtx-6000",
        "samples/s",
        0.93,
        _HEADER,
        assumptions="the 24 GB Quadro RTX 6000 (Turing), as the catalog records the card",
    ),
    _team(
        "chatts-8b qlora r8, 2x 2080ti, ddp",
        "recipes/8b_2080ti_qlora.yaml",
        "2080tix2",
        "samples/s",
        0.98,
        _HEADER,
    ),
    _team(
        "qwen3-30b-a3b full, 8 gpus, zero-3",
        "recipes/qwen3_30b_roleplay_full_zero3.yaml",
        "a100-80-pciex8",
        "s/step",
        28.0,
        "team measurement quoted in the recipe header and issue 12",
        assumptions=(
            "8x 80 GB GPUs, interconnect not recorded: taken as A100 80GB PCIe (with NVLink/NVSwitch "
            "the model puts this run near 11 s/step at any plausible efficiency)"
        ),
    ),
    _team(
        "qwen3-30b-a3b lora r64, 8 gpus, zero-2",
        "recipes/qwen3_30b_roleplay_lora_zero2.yaml",
        "a100-80-pciex8",
        "s/step",
        6.5,
        "team measurement quoted in the recipe header and issue 12 (5-8 s/step)",
        value_range=(5.0, 8.0),
        assumptions="the same 8 GPUs as the full run",
    ),
)

# Issue 12's memory figures: plain LlamaFactory 0.9.5, Qwen2.5-7B shape, cutoff 1024, batch 4, bf16,
# one GPU (an H100-class card), peak as nvidia-smi shows it.
PLAIN_7B: Values = (
    ("model_name_or_path", "Qwen/Qwen2.5-7B-Instruct"),
    ("finetuning_type", "lora"),
    ("lora_rank", 16),
    ("lora_target", "all"),
    ("cutoff_len", 1024),
    ("per_device_train_batch_size", 4),
    ("gradient_accumulation_steps", 1),
    ("bf16", True),
)
_ISSUE = "issue 12: plain LlamaFactory 0.9.5, Qwen2.5-7B shape, cutoff 1024, batch 4, bf16, nvidia-smi"


def _from_issue(key: str, extra: Values, old_estimate_gib: float, error: float | None) -> MemoryMeasurement:
    setting = Setting(None, PLAIN_7B + extra, gpu="h100")
    if error is None:
        low, high = old_estimate_gib / 1.08, old_estimate_gib / 0.92
        how = f"the issue: within ~8% of the old estimate {old_estimate_gib} GiB"
    else:
        low = high = old_estimate_gib / (1 + error)
        how = f"the issue: the old estimate {old_estimate_gib} GiB was {error:+.0%} off"
    return MemoryMeasurement(key, setting, low, high, "nvidia-smi", _ISSUE, how)


ISSUE_MEMORY: tuple[MemoryMeasurement, ...] = (
    _from_issue("7b lora r16", (), 24.86, None),
    _from_issue("7b dora r16", (("use_dora", True),), 24.88, None),
    _from_issue("7b qlora r16", (("quantization_bit", 4),), 15.97, None),
    _from_issue("7b lora r16, no checkpointing", (("disable_gradient_checkpointing", True),), 61.88, 0.24),
    _from_issue(
        "7b lora r16, zero-3 + cpu offload",
        (("deepspeed", "recipes/deepspeed/ds_z3_offload.json"),),
        11.21,
        -0.33,
    ),
)

_PLAIN = Setting(None, PLAIN_7B, gpu="h100")
_LIGER = (("enable_liger_kernel", True),)
_NO_CKPT = (("disable_gradient_checkpointing", True),)
_ISSUE13 = "issue 13: measured on an H100 against the plain LlamaFactory default"
ISSUE_RATIOS: tuple[RatioMeasurement, ...] = (
    RatioMeasurement(
        "liger, checkpointing on: memory", "memory", Setting(None, PLAIN_7B + _LIGER), _PLAIN, 0.71, _ISSUE13
    ),
    RatioMeasurement(
        "liger, checkpointing off: memory",
        "memory",
        Setting(None, PLAIN_7B + _LIGER + _NO_CKPT),
        _PLAIN,
        1.46,
        _ISSUE13,
    ),
    RatioMeasurement(
        "liger, checkpointing on: throughput",
        "throughput",
        Setting(None, PLAIN_7B + _LIGER),
        _PLAIN,
        1.04,
        _ISSUE13,
    ),
    RatioMeasurement(
        "liger, checkpointing off: throughput",
        "throughput",
        Setting(None, PLAIN_7B + _LIGER + _NO_CKPT),
        _PLAIN,
        1.73,
        _ISSUE13,
    ),
)


# ---- GPU runs recorded with lfkit ---------------------------------------------------------------

GPU_RUNS = Path("results") / "runs" / "gpu"  # under the checkout root


class RunRecordError(ValueError):
    """A recorded run the calibration cannot use (the message says why)."""


def _seconds(elapsed: str) -> float:
    """transformers' ``str(timedelta)`` ("0:01:23", "1 day, 2:03:04") in seconds."""
    days = 0
    if "day" in elapsed:
        head, elapsed = elapsed.split(",", 1)
        days = int(head.split()[0])
    h, m, s = (float(x) for x in elapsed.strip().split(":"))
    return days * 86400 + h * 3600 + m * 60 + s


def steady_samples_per_s(log_path: Path, effective_batch: int) -> float | None:
    """Samples/s between the first and last line of LlamaFactory's ``trainer_log.jsonl``.

    Start-up (model loading, the first step's compilation and warm-up) falls before the first
    logged step, so this is the steady rate. None when fewer than two timed steps are logged.
    """
    points = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if "current_steps" in entry and "elapsed_time" in entry:
            points.append((int(entry["current_steps"]), _seconds(str(entry["elapsed_time"]))))
    if len(points) < 2:
        return None
    (s0, t0), (s1, t1) = points[0], points[-1]
    if s1 <= s0 or t1 <= t0:
        return None
    return (s1 - s0) * effective_batch / (t1 - t0)


def _override(text: str) -> tuple[str, Any]:
    import yaml

    key, _, raw = text.partition("=")
    return key.strip(), yaml.safe_load(raw)


def _run_recipe(run_dir: Path, record: RunRecord, root: Path) -> tuple[str, dict[str, Any]]:
    """(the recipe file used, its values with the run's overrides) for a recorded run."""
    from lfkit.planning.recipe_yaml import load_values

    recorded = record.recipe_path
    candidates = [run_dir / "recipe.yaml"]
    if recorded:
        candidates += [run_dir / Path(recorded).name, root / "recipes" / Path(recorded).name, Path(recorded)]
    for path in candidates:
        if path.is_file():
            values = load_values(path)
            values.update(_override(o) for o in record.recipe_overrides)
            return str(path), values
    raise RunRecordError(
        f"{run_dir}: recipe {recorded or '(none recorded)'} not found beside the run or in recipes/"
    )


def gpu_run_measurements(
    runs: Path, root: Path
) -> tuple[list[ThroughputMeasurement | MemoryMeasurement], list[str]]:
    """Measurements from every ``lfkit_run.json`` under ``runs`` made on a GPU, and skip reasons.

    Records are read with the plugin's own reader (:func:`lfkit.plugin.run_record_schema.read_run_record`),
    the one definition of the file's layout and versions.
    """
    from lfkit.plugin.run_record_schema import RUN_RECORD_FILE, read_run_record
    from lfkit.plugin.run_record_schema import RunRecordError as UnreadableRecord

    found: list[ThroughputMeasurement | MemoryMeasurement] = []
    skipped: list[str] = []
    if not runs.is_dir():
        return found, skipped
    for record_path in sorted(runs.rglob(RUN_RECORD_FILE)):
        run_dir = record_path.parent
        try:
            found.extend(_measurements_of(run_dir, read_run_record(record_path), root))
        except (RunRecordError, UnreadableRecord, ValueError, KeyError) as err:
            skipped.append(str(err) if str(run_dir) in str(err) else f"{run_dir}: {err}")
    return found, skipped


def _measurements_of(run_dir: Path, record: RunRecord, root: Path) -> list:
    if record.accelerator != "cuda":
        raise RunRecordError(f"{run_dir}: not a GPU run")
    names = {d.name for d in record.devices}
    gpus = {gpu_from_device_name(n) for n in names}
    if len(gpus) != 1 or None in gpus:
        raise RunRecordError(f"{run_dir}: GPU(s) {sorted(names)} not one model in the planner's table")
    gpu = gpus.pop()
    world = int(record.world_size or record.gpu_count or 1)
    recipe_path, values = _run_recipe(run_dir, record, root)
    values["model_name_or_path"] = _model_of_run(run_dir, values, record)
    setting = Setting(None, tuple(values.items()), gpu=f"{gpu.key}x{world}")
    key = f"run {run_dir.name} ({Path(recipe_path).name})"
    source = str(run_dir / "lfkit_run.json")
    out: list = []
    batch = int(values.get("per_device_train_batch_size", 8)) * int(
        values.get("gradient_accumulation_steps", 1)
    )
    log = run_dir / "trainer_log.jsonl"
    rate = steady_samples_per_s(log, batch * world) if log.is_file() else None
    if rate is not None:
        out.append(ThroughputMeasurement(key, setting, "samples/s", rate, source + " + trainer_log.jsonl"))
    peaks = [d.peak_reserved_bytes for d in record.devices if d.peak_reserved_bytes]
    if peaks:
        peak = max(peaks) / GIB
        out.append(MemoryMeasurement(key, setting, peak, peak, "torch-reserved", source))
    if not out:
        raise RunRecordError(f"{run_dir}: no timed steps in trainer_log.jsonl and no peak memory")
    return out


def _model_of_run(run_dir: Path, values: dict[str, Any], record: RunRecord) -> str:
    """A model the planner can shape for a recorded run: the path if it resolves here, else the
    known shape a ``lfkit recipe random-model`` directory was named after (``qwen2.5-7b-random``), else
    the known shape with the recorded parameter count (within 2%)."""
    from lfkit.planning.models import KNOWN_MODELS, ModelShapeError, lookup_known, resolve_model

    name = str(record.model_name_or_path or values.get("model_name_or_path") or "")
    try:
        resolve_model(name)
        return name
    except ModelShapeError:
        pass
    base = Path(name).name.lower().removesuffix("-random")
    if lookup_known(base) is not None:
        return base
    total = record.parameters_total
    if total:
        if values.get("finetuning_type", "lora") == "lora":
            total -= record.parameters_trainable or 0  # PEFT counts the adapters too
        best = min(KNOWN_MODELS.values(), key=lambda m: abs(m.total_params - total))
        if abs(best.total_params - total) <= 0.02 * total:
            return best.name
    raise RunRecordError(f"{run_dir}: model {name or '(none recorded)'} is not one the planner can shape")


def describe_setting(setting: Setting) -> str:
    text = setting.recipe or ", ".join(f"{k}={v}" for k, v in setting.values if k != "model_name_or_path")
    if setting.recipe and setting.values:
        text += " + " + ", ".join(f"{k}={v}" for k, v in setting.values)
    return (
        re.sub(r"\s+", " ", text)
        + f" on {setting.gpu}"
        + (f" x {setting.nodes} nodes" if setting.nodes > 1 else "")
    )
