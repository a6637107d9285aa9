"""``lfkit_run.json``: what LlamaFactory does not record about a run, written at train end.

LlamaFactory's output directory says nothing about the machine: not the GPU, not how
much memory the run needed, not the library versions, the recipe file nor the arguments
as parsed. The results report (:mod:`lfkit.reporting`) and the planner's calibration need
exactly these, so :class:`RunRecordCallback` writes them into ``output_dir`` when training
ends (or, for a predict-only run, when prediction ends). The record's schema is
:class:`lfkit.plugin.run_record_schema.RunRecord`; this module only fills it in.
:mod:`lfkit.plugin.workflows` attaches the callback to every training stage.

Peak memory is per device: in a multi-GPU run each rank only sees its own device, so
every rank reports its peaks and the main process gathers them (``on_train_end`` runs on
every rank, which the collective needs). On CPU the process's peak resident set size is
recorded instead, labelled as such.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lfkit.plugin.params import param_numel
from lfkit.plugin.run_record_schema import RECORD_VERSION, RUN_RECORD_FILE, DeviceStats, RunRecord
from transformers import TrainerCallback

from lfkit.atomic import write_text

__all__ = [
    "RECIPE_ENV",
    "RECORD_VERSION",
    "RunRecordCallback",
    "launch_recipe",
    "parsed_arguments",
    "write_record",
]

VERSIONED_PACKAGES = (
    "lfkit",
    "llamafactory",
    "transformers",
    "torch",
    "peft",
    "trl",
    "deepspeed",
    "accelerate",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a run depends on (``None``: not installed)."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def recipe_from_argv(argv: list[str]) -> dict[str, Any]:
    """The YAML recipe path and the ``key=value`` overrides LlamaFactory was started with.

    ``llamafactory-cli train r.yaml k=v`` reaches the training process as ``[..., r.yaml, k=v]``
    (LlamaFactory's parser reads a first argument ending in .yaml/.yml the same way).
    """
    for index, arg in enumerate(argv[1:], start=1):
        if arg.endswith((".yaml", ".yml")):
            overrides = [a for a in argv[index + 1 :] if "=" in a]
            return {"path": str(Path(arg).resolve()), "overrides": overrides}
    return {"path": None, "overrides": []}


RECIPE_ENV = "LFKIT_RUN_RECIPE"
"""The launch's recipe as JSON (:func:`recipe_from_argv`), for processes that do not get its argv.

A Ray worker's ``sys.argv`` is Ray's own worker command; :mod:`lfkit.plugin.ray_launch` sets this
variable in the ``llamafactory-cli`` process, and LlamaFactory hands that environment to its workers.
"""


def launch_recipe() -> dict[str, Any]:
    """The recipe this run was launched with: from :data:`RECIPE_ENV` if set, else from ``sys.argv``."""
    exported = os.environ.get(RECIPE_ENV)
    return json.loads(exported) if exported else recipe_from_argv(sys.argv)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _local_device_stats() -> dict[str, Any]:
    """This rank's accelerator and its peak memory (CUDA), or the process's peak RSS (CPU)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        index = torch.cuda.current_device()
        return {
            "device": f"cuda:{index}",
            "node": platform.node(),  # cuda:0 on two nodes are two GPUs
            "name": torch.cuda.get_device_name(index),
            "peak_allocated_bytes": int(torch.cuda.max_memory_allocated(index)),
            "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(index)),
            "peak_rss_bytes": peak_rss_bytes(),
        }
    return {"device": "cpu", "name": cpu_name(), "peak_rss_bytes": peak_rss_bytes()}


def cpu_name() -> str:
    """The CPU model and logical core count, e.g. "cpu: AMD EPYC 7B13 (2 logical cores)"."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown"
    return f"cpu: {model} ({os.cpu_count()} logical cores)"


def _gather(local: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's stats on every rank (a no-op list of one without torch.distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        return gathered
    return [local]


def quantization_of(model: Any) -> str:
    """A short description of how the trained model's base weights are quantized ("none" if not)."""
    config = getattr(model, "config", None)
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return "none"
    q = quant.to_dict() if hasattr(quant, "to_dict") else dict(quant)
    method = q.get("quant_method", "unknown")
    method = str(getattr(method, "value", method)).lower()  # an enum in transformers' configs
    if q.get("load_in_4bit"):
        return f"{method} 4-bit {q.get('bnb_4bit_quant_type', '')}".strip()
    if q.get("load_in_8bit"):
        return f"{method} 8-bit"
    bits = q.get("bits")
    return f"{method} {bits}-bit" if bits else method


def count_parameters(model: Any) -> tuple[int | None, int | None]:
    """Total and trainable parameter counts as loaded (quantized weights count as stored)."""
    if model is None or not hasattr(model, "parameters"):
        return None, None
    total = trainable = 0
    for p in model.parameters():
        n = param_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def gpus_used(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct GPUs the ranks ran on (one entry per node and device), in rank order.

    ``torch.cuda.device_count()`` would count the GPUs visible on the main process's node,
    not those the run used (``CUDA_VISIBLE_DEVICES`` unset, fewer ranks than GPUs, several nodes).
    """
    seen: dict[tuple[Any, str], dict[str, Any]] = {}
    for d in devices:
        if d.get("device", "cpu") != "cpu":
            seen.setdefault((d.get("node"), d["device"]), d)
    return list(seen.values())


def hardware_summary(devices: list[dict[str, Any]]) -> str:
    """The CPU (see :func:`cpu_name`), or the GPU models and their count ("2x NVIDIA H100 80GB HBM3")."""
    gpus = gpus_used(devices)
    if not gpus:
        names = [d.get("name", "?") for d in devices]
        return names[0] if len(names) == 1 else f"{names[0]}, {len(names)} processes"
    counts: dict[str, int] = {}
    for d in gpus:
        name = d.get("name", "?")
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{n}x {name}" for name, n in counts.items())


LEFT_OUT_ARGUMENTS = frozenset({"output_dir", "logging_dir", "run_name", "hub_model_id", "hub_strategy"})
"""Arguments the record leaves out: where this run wrote, which every run has different."""
SECRET_MARKERS = ("_token", "api_key", "password", "secret")
"""Arguments whose name contains one of these (hf_hub_token, swanlab_api_key, ...) are never written."""


def parsed_arguments(*arg_sets: Any) -> dict[str, Any]:
    """Every recipe key of the given argument dataclasses, as parsed, in JSON-safe form.

    LlamaFactory resolves some keys while parsing (``lora_alpha`` defaults to twice the rank,
    the eval strategy follows ``val_size``), so these are the values the run used, defaults
    included: two records compare key by key without knowing LlamaFactory's defaults.
    Locations (:data:`LEFT_OUT_ARGUMENTS`) and secrets (:data:`SECRET_MARKERS`) are left out.
    """
    out: dict[str, Any] = {}
    for args in arg_sets:
        if args is None or not dataclasses.is_dataclass(args):
            continue
        for f in dataclasses.fields(args):
            name = f.name
            if not f.init or name.startswith("_") or name in LEFT_OUT_ARGUMENTS:
                continue
            if any(marker in name for marker in SECRET_MARKERS):
                continue
            out.setdefault(name, _jsonable(getattr(args, name, None)))
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name, None)) for f in dataclasses.fields(value)}
    return str(value)


def process_start() -> tuple[str | None, float | None]:
    """This process's start as an ISO time and as seconds since the epoch (``None`` if psutil cannot tell)."""
    try:
        import psutil

        created = psutil.Process().create_time()
    except Exception:  # psutil missing or the platform cannot say: the record leaves it out
        return None, None
    when = datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="seconds")
    return when, created


class RunRecordCallback(TrainerCallback):
    """Writes ``lfkit_run.json`` into ``output_dir`` at the end of training (main process only).

    A predict-only run (``do_train: false``) gets its record when prediction ends instead.
    ``arguments`` are the run's parsed recipe keys (:func:`parsed_arguments`).
    """

    def __init__(self, finetuning_args: Any, arguments: dict[str, Any] | None = None) -> None:
        self.stage = getattr(finetuning_args, "stage", None)
        self.finetuning_type = getattr(finetuning_args, "finetuning_type", None)
        self.kl_beta = getattr(finetuning_args, "kl_beta", None)
        self.arguments = dict(arguments or {})
        self._started: float | None = None
        self._started_at: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = time.monotonic()
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._write(args, state, model)

    def on_predict(self, args, state, control, model=None, **kwargs):
        if not args.do_train:  # a training run's record was written at train end
            self._write(args, state, model)

    def _write(self, args, state, model) -> None:
        ended = time.monotonic()
        devices = _gather(_local_device_stats())  # collective: every rank takes part
        if not state.is_world_process_zero:
            return
        write_record(Path(args.output_dir), self.build(args, state, model, devices, ended))

    def build(self, args, state, model, devices: list[dict[str, Any]], ended: float) -> RunRecord:
        """The record's content (see the module docstring for why each field is there)."""
        on_gpu = any(d["device"] != "cpu" for d in devices)
        total, trainable = count_parameters(model)
        recipe = launch_recipe()
        process_started_at, created = process_start()
        now = datetime.now(timezone.utc)
        kl_beta = self.kl_beta
        return RunRecord(
            written_at=now.isoformat(timespec="seconds"),
            hardware_summary=hardware_summary(devices),
            accelerator="cuda" if on_gpu else "cpu",
            gpu_count=len(gpus_used(devices)),
            devices=tuple(
                DeviceStats(
                    rank=rank,
                    device=d["device"],
                    name=d["name"],
                    node=d.get("node"),
                    peak_allocated_bytes=d.get("peak_allocated_bytes"),
                    peak_reserved_bytes=d.get("peak_reserved_bytes"),
                    peak_rss_bytes=d.get("peak_rss_bytes"),
                )
                for rank, d in enumerate(devices)
            ),
            memory_kind="cuda" if on_gpu else "cpu_rss",
            peak_rss_bytes=max(d["peak_rss_bytes"] for d in devices),
            world_size=args.world_size,
            train_started_at=self._started_at,
            train_wall_seconds=round(ended - self._started, 3) if self._started is not None else None,
            process_started_at=process_started_at,
            process_wall_seconds=round(now.timestamp() - created, 3) if created is not None else None,
            # Timings on a shared machine mean little without knowing how busy it was.
            load_average_1m_at_end=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            cpu_count=os.cpu_count(),
            versions=package_versions(),
            recipe_path=recipe["path"],
            recipe_overrides=tuple(recipe["overrides"]),
            model_name_or_path=getattr(model, "name_or_path", None)
            or getattr(getattr(model, "config", None), "_name_or_path", None),
            parameters_total=total,
            parameters_trainable=trainable,
            stage=self.stage,
            finetuning_type=self.finetuning_type,
            quantization=quantization_of(model),
            kl_beta=float(kl_beta) if isinstance(kl_beta, (int, float)) else None,
            global_step=state.global_step,
            epoch=state.epoch,
            num_input_tokens_seen=getattr(state, "num_input_tokens_seen", None),
            arguments=self.arguments,
        )


def write_record(output_dir: Path, record: RunRecord) -> Path:
    """Write the record atomically (temp file + rename) and return its path."""
    return write_text(Path(output_dir) / RUN_RECORD_FILE, record.to_json())
