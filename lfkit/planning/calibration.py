"""``lfkit plan calibrate``: fit the time model's free constants to the measurements, report residuals.

The time model (:mod:`lfkit.planning.throughput`) has a few constants no datasheet gives. The fit
sets exactly those a measurement can determine, and leaves the others at stated assumptions:

* the achievable MFU of a GPU utilisation class is fitted when some measurement of a dense model
  ran on that class; otherwise it stays at :data:`DEFAULT_MFU`;
* ``moe_efficiency`` is fitted when a mixture-of-experts measurement exists, else 1;
* ``liger_speedup`` is fixed at 1.04, issue 13's measured ratio with checkpointing on.

Everything else is fixed from datasheets or physics (peak TFLOPS, memory and link bandwidths, the
FLOPs per token of each method, bytes moved by each collective). The fit minimises the squared log
ratio of predicted to measured throughput (so 2x too fast and 2x too slow weigh the same), within
bounds [0.02, 1]. With about seven figures and three or four fitted constants the in-sample residuals
flatter the model, so the report also gives each measurement's leave-one-out residual: its
prediction by a fit made without it (none when it is the only measurement of a fitted constant).

Memory has no fitted constant: its checks print the estimate beside each measured peak.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from lfkit.atomic import write_text
from lfkit.planning.measurements import (
    ISSUE_MEMORY,
    ISSUE_RATIOS,
    TEAM_THROUGHPUT,
    MemoryMeasurement,
    RatioMeasurement,
    Setting,
    ThroughputMeasurement,
    gpu_run_measurements,
)
from lfkit.planning.memory import estimate_memory, trainable_params
from lfkit.planning.models import ModelShape, resolve_model
from lfkit.planning.throughput import CALIBRATION_FILE, StepTime, TimeConstants, estimate_step_time
from lfkit.planning.training_setup import TrainingSetup
from lfkit.planning.units import GIB

DEFAULT_MFU = {
    "turing": 0.30,
    "ampere-ada": 0.35,
    "datacenter": 0.40,
}  # assumptions where nothing is measured
LIGER_SPEEDUP = 1.04  # issue 13: Liger kernels with checkpointing on, 1.04x the plain default's samples/s
BOUNDS = (0.02, 1.0)
DEFAULTS = TimeConstants(
    mfu=tuple(sorted(DEFAULT_MFU.items())), moe_efficiency=1.0, liger_speedup=LIGER_SPEEDUP, fitted=()
)


@dataclass(frozen=True)
class Evaluated:
    """A setting resolved to what the estimators take."""

    shape: ModelShape
    setup: TrainingSetup
    setting: Setting

    @classmethod
    def of(cls, setting: Setting, root: Path) -> Evaluated:
        values = setting.recipe_values(root)
        setup = TrainingSetup.from_recipe(values, base_dir=root.resolve())
        return cls(resolve_model(values.get("model_name_or_path")), setup, setting)

    def step_time(self, constants: TimeConstants) -> StepTime:
        cluster = self.setting.cluster()
        t = trainable_params(self.shape, self.setup)
        return estimate_step_time(
            self.shape, self.setup, cluster, t, constants, self.setting.tokens_per_sample
        )

    def peak_gib(self, kind: str = "nvidia-smi") -> float:
        est = estimate_memory(self.shape, self.setup, self.setting.cluster().world_size)
        peak = est.peak_bytes
        if kind == "torch-reserved":  # PyTorch's allocator does not see the context or NCCL
            peak -= est.get("cuda_context") + est.get("nccl")
        return peak / GIB


def predicted(m: ThroughputMeasurement, ev: Evaluated, constants: TimeConstants) -> float:
    st = ev.step_time(constants)
    return st.samples_per_s if m.unit == "samples/s" else st.step_s


@dataclass(frozen=True)
class ThroughputRow:
    key: str
    unit: str
    measured: float
    measured_range: tuple[float, float] | None
    predicted: float
    residual: float  # predicted / measured - 1 (in the measurement's own unit)
    loo_predicted: float | None  # predicted by a fit that left this measurement out
    loo_residual: float | None
    assumptions: str
    source: str


@dataclass(frozen=True)
class MemoryRow:
    key: str
    kind: str
    measured_low_gib: float
    measured_high_gib: float
    estimate_gib: float
    residual_worst: float  # the larger relative error against either end of the measured range
    derivation: str
    source: str


@dataclass(frozen=True)
class RatioRow:
    key: str
    quantity: str
    measured: float
    predicted: float
    residual: float
    source: str


@dataclass(frozen=True)
class CalibrationReport:
    constants: TimeConstants
    fixed: tuple[tuple[str, str], ...]  # (constant, why it is fixed)
    throughput: tuple[ThroughputRow, ...]
    memory: tuple[MemoryRow, ...]
    ratios: tuple[RatioRow, ...]
    skipped_runs: tuple[str, ...]

    def to_json(self) -> dict:
        def rows(items):
            return [r.__dict__ for r in items]

        return {
            "constants": self.constants.to_json(),
            "fixed": dict(self.fixed),
            "throughput": rows(self.throughput),
            "memory": rows(self.memory),
            "ratios": rows(self.ratios),
            "skipped_runs": list(self.skipped_runs),
        }

    def stored(self) -> dict:
        """What ``--write`` keeps in the package: the constants, and the residuals for reference."""
        return {
            "about": "written by `lfkit plan calibrate --write`; read by lfkit/planning/throughput.py",
            "constants": self.constants.to_json(),
            "residuals": {r.key: round(r.residual, 4) for r in self.throughput},
        }


def _free_constants(items: list[tuple[ThroughputMeasurement, Evaluated]]) -> list[str]:
    """The constants these measurements determine: MFU of classes with a dense measurement, MoE."""
    names = set()
    for _, ev in items:
        if ev.shape.num_experts:
            names.add("moe_efficiency")
        else:
            names.add("mfu:" + ev.setting.cluster().gpu.utilisation_class)
    return sorted(names)


def _with(base: TimeConstants, names: list[str], x) -> TimeConstants:
    mfu = dict(base.mfu)
    moe = base.moe_efficiency
    for name, value in zip(names, x, strict=True):
        if name == "moe_efficiency":
            moe = float(value)
        else:
            mfu[name.split(":", 1)[1]] = float(value)
    return replace(base, mfu=tuple(sorted(mfu.items())), moe_efficiency=moe, fitted=tuple(names))


def fit(
    items: list[tuple[ThroughputMeasurement, Evaluated]], base: TimeConstants = DEFAULTS
) -> TimeConstants:
    """Least squares on log(predicted / measured) over the free constants (bounded)."""
    from scipy.optimize import least_squares

    names = _free_constants(items)
    if not names:
        return base

    def residuals(x):
        c = _with(base, names, x)
        return [math.log(predicted(m, ev, c) / m.value) for m, ev in items]

    x0 = [base.moe_efficiency if n == "moe_efficiency" else dict(base.mfu)[n.split(":")[1]] for n in names]
    x0 = [min(max(v, BOUNDS[0]), BOUNDS[1]) for v in x0]
    result = least_squares(residuals, x0, bounds=BOUNDS, xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return _with(base, names, [round(float(v), 4) for v in result.x])


def calibrate(root: Path, runs: Path | None = None) -> CalibrationReport:
    """Fit on the team's figures and the recorded GPU runs; check memory and ratios."""
    run_items, skipped = gpu_run_measurements(runs if runs is not None else root / "results/runs/gpu", root)
    throughput = list(TEAM_THROUGHPUT) + [m for m in run_items if isinstance(m, ThroughputMeasurement)]
    memory = list(ISSUE_MEMORY) + [m for m in run_items if isinstance(m, MemoryMeasurement)]
    items = [(m, Evaluated.of(m.setting, root)) for m in throughput]
    constants = fit(items)
    rows = []
    for i, (m, ev) in enumerate(items):
        rest = items[:i] + items[i + 1 :]
        loo = None
        if set(_free_constants([(m, ev)])) <= set(_free_constants(rest)):
            loo = predicted(m, ev, fit(rest))
        p = predicted(m, ev, constants)
        rows.append(
            ThroughputRow(
                m.key,
                m.unit,
                m.value,
                m.value_range,
                p,
                p / m.value - 1,
                loo,
                None if loo is None else loo / m.value - 1,
                m.assumptions,
                m.source,
            )
        )
    fixed = tuple(
        (f"mfu:{cls}", f"{value} assumed: no dense-model measurement on this class")
        for cls, value in sorted(DEFAULT_MFU.items())
        if f"mfu:{cls}" not in constants.fitted
    ) + (
        ("liger_speedup", f"{LIGER_SPEEDUP} from issue 13's measured ratio (checkpointing on)"),
        (
            "bandwidths, TFLOPS, FLOPs per token",
            "datasheets and the arithmetic in lfkit/planning/throughput.py",
        ),
    )
    return CalibrationReport(
        constants,
        fixed,
        tuple(rows),
        tuple(_memory_row(m, root) for m in memory),
        tuple(_ratio_row(r, root, constants) for r in ISSUE_RATIOS),
        tuple(skipped),
    )


def _memory_row(m: MemoryMeasurement, root: Path) -> MemoryRow:
    estimate = Evaluated.of(m.setting, root).peak_gib(m.kind)
    worst = max(abs(estimate / m.low_gib - 1), abs(estimate / m.high_gib - 1))
    sign = 1 if estimate >= (m.low_gib + m.high_gib) / 2 else -1
    return MemoryRow(m.key, m.kind, m.low_gib, m.high_gib, estimate, sign * worst, m.derivation, m.source)


def _ratio_row(r: RatioMeasurement, root: Path, constants: TimeConstants) -> RatioRow:
    num, den = Evaluated.of(r.numerator, root), Evaluated.of(r.denominator, root)
    if r.quantity == "memory":
        value = num.peak_gib() / den.peak_gib()
    else:
        value = num.step_time(constants).samples_per_s / den.step_time(constants).samples_per_s
    return RatioRow(r.key, r.quantity, r.ratio, value, value / r.ratio - 1, r.source)


def stored_path(root: Path) -> Path:
    return root / "lfkit" / "planning" / CALIBRATION_FILE


def write_calibration(report: CalibrationReport, root: Path) -> Path:
    """Store the fitted constants in the checkout (lfkit plan reads them from the installed package)."""
    return write_text(stored_path(root), json.dumps(report.stored(), indent=2) + "\n")
