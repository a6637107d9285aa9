"""The schema of ``lfkit_run.json``: one definition, versioned, owned by the plugin that writes it.

:class:`RunRecord` is the record :mod:`lfkit.plugin.run_record` writes into ``output_dir`` when a
run ends, and the only way anything reads it back (the results report, the planner's calibration):
:meth:`RunRecord.to_json` writes it, :func:`read_run_record` / :meth:`RunRecord.from_json` read and
type-check it. The reader accepts every version up to :data:`RECORD_VERSION` (a field added later is
``None`` in an older record) and refuses a newer one, naming the version, rather than misreading it.

This module imports nothing beyond the standard library, so readers (``lfkit.planning``) stay light.

Versions:

1. the first record (hardware, memory, versions, recipe path, model, stage, method, kl_beta);
2. adds per-device memory on CPU as well, the process start and wall time, the input tokens seen,
   and ``arguments``: every recipe key of the run as LlamaFactory parsed it (model, data, training,
   fine-tuning and generation arguments; locations and secrets left out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUN_RECORD_FILE = "lfkit_run.json"
"""Name of the record in a run's ``output_dir``."""
RECORD_VERSION = 2
"""Bumped when a field is added or changes meaning; see the module docstring."""
VERSION_KEY = "lfkit_run_record"
"""The JSON key holding the version (also how a file is recognised as a run record)."""


class RunRecordError(ValueError):
    """A run record that cannot be read: bad JSON, an unknown version or a field of the wrong type."""


@dataclass(frozen=True)
class DeviceStats:
    """One rank's device and its peak memory (CUDA allocator peaks on a GPU, peak RSS always)."""

    rank: int
    device: str
    """``cuda:<index>`` or ``cpu``."""
    name: str
    """The GPU model, or the CPU model and core count (``cpu: AMD EPYC (2 logical cores)``)."""
    node: str | None = None
    """Host name: ``cuda:0`` on two nodes are two GPUs."""
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_rss_bytes: int | None = None


@dataclass(frozen=True)
class RunRecord:
    """What LlamaFactory's own files do not say about a run: machine, memory, versions, arguments."""

    written_at: str
    hardware_summary: str
    """The GPU models and count (``2x NVIDIA H100 80GB HBM3``), or the CPU."""
    accelerator: str
    """``cuda`` or ``cpu``."""
    gpu_count: int
    """Distinct GPUs the ranks ran on (not the GPUs visible on the machine)."""
    devices: tuple[DeviceStats, ...]
    memory_kind: str
    """``cuda`` (allocator peaks per device) or ``cpu_rss`` (peak resident set size of each process)."""
    peak_rss_bytes: int | None
    """The largest peak RSS of any rank."""
    world_size: int | None = None
    train_started_at: str | None = None
    train_wall_seconds: float | None = None
    """Seconds from the start to the end of the training loop (the Trainer's ``train_runtime`` span)."""
    process_started_at: str | None = None
    process_wall_seconds: float | None = None
    """Seconds from the main process's start to the record, model loading and data preparation included."""
    load_average_1m_at_end: float | None = None
    cpu_count: int | None = None
    versions: Mapping[str, str | None] = field(default_factory=dict)
    recipe_path: str | None = None
    recipe_overrides: tuple[str, ...] = ()
    model_name_or_path: str | None = None
    parameters_total: int | None = None
    parameters_trainable: int | None = None
    stage: str | None = None
    finetuning_type: str | None = None
    quantization: str | None = None
    kl_beta: float | None = None
    global_step: int | None = None
    epoch: float | None = None
    num_input_tokens_seen: int | None = None
    """Transformers' count of input tokens (0 unless ``include_num_input_tokens_seen`` is set)."""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    """Every recipe key as parsed (version 2 on; empty in a version 1 record)."""
    version: int = RECORD_VERSION

    def argument(self, key: str) -> Any:
        """A recipe key's parsed value, or ``None`` when the record does not hold it."""
        return self.arguments.get(key)

    def to_json(self) -> str:
        """The record as the indented JSON written to ``lfkit_run.json``."""
        devices = [asdict(d) for d in self.devices]
        data = {
            VERSION_KEY: self.version,
            "written_at": self.written_at,
            "process_started_at": self.process_started_at,
            "process_wall_seconds": self.process_wall_seconds,
            "train_started_at": self.train_started_at,
            "train_wall_seconds": self.train_wall_seconds,
            "hardware": {
                "accelerator": self.accelerator,
                "gpu_count": self.gpu_count,
                "devices": [{k: d[k] for k in ("rank", "device", "name", "node")} for d in devices],
                "summary": self.hardware_summary,
            },
            "world_size": self.world_size,
            "load_average_1m_at_end": self.load_average_1m_at_end,
            "cpu_count": self.cpu_count,
            "memory": {
                "kind": self.memory_kind,
                "per_device": devices,
                "peak_rss_bytes": self.peak_rss_bytes,
            },
            "versions": dict(self.versions),
            "recipe": {"path": self.recipe_path, "overrides": list(self.recipe_overrides)},
            "model": {
                "name_or_path": self.model_name_or_path,
                "parameters_total": self.parameters_total,
                "parameters_trainable": self.parameters_trainable,
            },
            "stage": self.stage,
            "finetuning_type": self.finetuning_type,
            "quantization": self.quantization,
            "kl_beta": self.kl_beta,
            "global_step": self.global_step,
            "epoch": self.epoch,
            "num_input_tokens_seen": self.num_input_tokens_seen,
            "arguments": dict(self.arguments),
        }
        return json.dumps(data, indent=2, allow_nan=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """Parse and type-check a record; :class:`RunRecordError` names the field that is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RunRecordError(f"invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
        if not isinstance(data, dict):
            raise RunRecordError("not a JSON object")
        version = data.get(VERSION_KEY)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RunRecordError(f"field '{VERSION_KEY}': not a record version: {version!r}")
        if version > RECORD_VERSION:
            raise RunRecordError(
                f"record version {version} was written by a newer lfkit; this one reads versions up to "
                f"{RECORD_VERSION}: upgrade lfkit"
            )
        r = _Reader(data)
        hardware_devices = r.list("hardware.devices", required=False)
        per_device = r.list("memory.per_device", required=False)
        devices = tuple(_device(r, f"memory.per_device[{i}]", d) for i, d in enumerate(per_device or []))
        if not devices and hardware_devices:  # version 1 on CPU: devices without memory figures
            devices = tuple(_device(r, f"hardware.devices[{i}]", d) for i, d in enumerate(hardware_devices))
        versions = r.mapping("versions")
        for name, value in versions.items():
            if value is not None and not isinstance(value, str):
                raise RunRecordError(f"field 'versions.{name}': expected a string, got {value!r}")
        overrides = r.list("recipe.overrides", required=False) or []
        if not all(isinstance(o, str) for o in overrides):
            raise RunRecordError("field 'recipe.overrides': expected a list of strings")
        return cls(
            version=version,
            written_at=r.get("written_at", str),
            hardware_summary=r.get("hardware.summary", str),
            accelerator=r.get("hardware.accelerator", str),
            gpu_count=r.get("hardware.gpu_count", int),
            devices=devices,
            memory_kind=r.get("memory.kind", str),
            peak_rss_bytes=r.opt("memory.peak_rss_bytes", int),
            world_size=r.opt("world_size", int),
            train_started_at=r.opt("train_started_at", str),
            train_wall_seconds=r.opt("train_wall_seconds", float),
            process_started_at=r.opt("process_started_at", str),
            process_wall_seconds=r.opt("process_wall_seconds", float),
            load_average_1m_at_end=r.opt("load_average_1m_at_end", float),
            cpu_count=r.opt("cpu_count", int),
            versions=versions,
            recipe_path=r.opt("recipe.path", str),
            recipe_overrides=tuple(overrides),
            model_name_or_path=r.opt("model.name_or_path", str),
            parameters_total=r.opt("model.parameters_total", int),
            parameters_trainable=r.opt("model.parameters_trainable", int),
            stage=r.opt("stage", str),
            finetuning_type=r.opt("finetuning_type", str),
            quantization=r.opt("quantization", str),
            kl_beta=r.opt("kl_beta", float),
            global_step=r.opt("global_step", int),
            epoch=r.opt("epoch", float),
            num_input_tokens_seen=r.opt("num_input_tokens_seen", int),
            arguments=r.mapping("arguments"),
        )


def read_run_record(path: str | Path) -> RunRecord:
    """Read ``lfkit_run.json`` (a file, or a run directory holding one).

    Raises :class:`FileNotFoundError` when there is none and :class:`RunRecordError` (with the
    file name) when it cannot be read as a record.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RUN_RECORD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RunRecordError(f"{path}: not UTF-8 text ({err.reason})") from None
    try:
        return RunRecord.from_json(text)
    except RunRecordError as err:
        raise RunRecordError(f"{path}: {err}") from None


def _device(r: _Reader, where: str, data: Any) -> DeviceStats:
    if not isinstance(data, dict):
        raise RunRecordError(f"field '{where}': expected an object, got {data!r}")
    sub = _Reader(data, prefix=where + ".")
    return DeviceStats(
        rank=sub.get("rank", int),
        device=sub.get("device", str),
        name=sub.get("name", str),
        node=sub.opt("node", str),
        peak_allocated_bytes=sub.opt("peak_allocated_bytes", int),
        peak_reserved_bytes=sub.opt("peak_reserved_bytes", int),
        peak_rss_bytes=sub.opt("peak_rss_bytes", int),
    )


class _Reader:
    """Typed access to dotted paths of a parsed record; errors name the field."""

    def __init__(self, data: dict[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def _lookup(self, dotted: str) -> tuple[bool, Any]:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def opt(self, dotted: str, kind: type) -> Any:
        found, value = self._lookup(dotted)
        if not found or value is None:
            return None
        return self._check(dotted, value, kind)

    def get(self, dotted: str, kind: type) -> Any:
        found, value = self._lookup(dotted)
        if not found or value is None:
            raise RunRecordError(f"field '{self.prefix}{dotted}': missing")
        return self._check(dotted, value, kind)

    def list(self, dotted: str, *, required: bool) -> list[Any] | None:
        found, value = self._lookup(dotted)
        if not found or value is None:
            if required:
                raise RunRecordError(f"field '{self.prefix}{dotted}': missing")
            return None
        if not isinstance(value, list):
            raise RunRecordError(f"field '{self.prefix}{dotted}': expected a list, got {value!r}")
        return value

    def mapping(self, dotted: str) -> dict[str, Any]:
        found, value = self._lookup(dotted)
        if not found or value is None:
            return {}
        if not isinstance(value, dict):
            raise RunRecordError(f"field '{self.prefix}{dotted}': expected an object, got {value!r}")
        return value

    def _check(self, dotted: str, value: Any, kind: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            ok = False
        elif kind is float:
            ok = isinstance(value, (int, float))
            value = float(value) if ok else value
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise RunRecordError(f"field '{self.prefix}{dotted}': expected {kind.__name__}, got {value!r}")
        return value
