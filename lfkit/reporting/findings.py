"""Key findings computed from the runs table: health, speed ratios and which method converged best.

Health findings come first: a run that diverged, became unstable or has not finished is
named with its evidence, and it is left out of the loss comparisons (a NaN run's logged
loss of 0.0 would otherwise "win"). Every other finding is a comparison between rows of the
table, worded with the numbers it was computed from, and only between runs of the same
stage (a DPO loss and a cross-entropy are different quantities; a DPO step processes
pairs). Where no comparison applies (one run, one hardware, ...) the finding says so
instead of being left out, so the reader knows it was looked for.
"""

from __future__ import annotations

from collections import defaultdict

from lfkit.reporting.facts import RunFacts, short_model_name
from lfkit.reporting.health import (
    DIVERGED,
    HEALTHY,
    IN_PROGRESS,
    UNFINISHED,
    UNSTABLE,
    ZERO_LOSS,
    Assessment,
)
from lfkit.reporting.trends import EVAL_RISING, STILL_DECREASING


def _speed(f: RunFacts) -> float | None:
    value = f.samples_per_second.value
    return float(value) if value is not None else None


def busy_caution(a: RunFacts, b: RunFacts) -> str:
    """A warning when either run's machine was oversubscribed at train end (load above its cores).

    The lfkit run record stores the 1-minute load average and core count; on a shared
    machine other processes take CPU time from the run, so its speed says little.
    """
    loads = []
    for f in (a, b):
        record = f.run.record
        load, cores = (record.load_average_1m_at_end, record.cpu_count) if record else (None, None)
        if isinstance(load, (int, float)) and isinstance(cores, int) and cores > 0:
            loads.append((f.run.label, load, cores))
    if not any(load > cores for _, load, cores in loads):
        return ""
    detail = ", ".join(f"{label} {load:g} on {cores} cores" for label, load, cores in loads)
    return f" Caution: the machine was busy (1-minute load average at train end: {detail}); unfair timing."


def _stage(f: RunFacts) -> str:
    """The run's comparison group (see :func:`lfkit.reporting.stages.comparison_keys`)."""
    return f.group or (f.stage.key if f.stage is not None else "unknown")


def _stage_note(f: RunFacts) -> str:
    return f", {f.stage.name}" if f.stage is not None and _stage(f) != "sft" else ""


def hardware_ratios(rows: list[RunFacts]) -> list[str]:
    """Same model, stage, method and quantization on different hardware: samples/s vs the slowest."""
    groups: dict[tuple, list[RunFacts]] = defaultdict(list)
    for f in rows:
        if f.model.known and f.hardware.known and _speed(f):
            groups[(f.model.value, _stage(f), f.method.value, f.quantization.value)].append(f)
    out = []
    for (model, _, method, quant), members in groups.items():
        if len({m.hardware.value for m in members}) < 2:
            continue
        members = sorted(members, key=_speed)
        base = members[0]
        for other in members[1:]:
            if other.hardware.value == base.hardware.value:
                continue
            out.append(
                f"{short_model_name(str(model))} ({method}{_stage_note(base)}, quantization {quant}): "
                f"{other.hardware.value} "
                f"trains at {_speed(other):.3g} samples/s vs {_speed(base):.3g} on {base.hardware.value}, "
                f"**{_speed(other) / _speed(base):.2f}x** ({other.run.label} vs {base.run.label})."
                + busy_caution(other, base)
            )
    return out


def model_size_ratios(rows: list[RunFacts]) -> list[str]:
    """Different models with the same stage and method on one hardware: samples/s relative to the fastest."""
    groups: dict[tuple, list[RunFacts]] = defaultdict(list)
    for f in rows:
        if f.model.known and f.hardware.known and _speed(f):
            groups[(f.hardware.value, _stage(f), f.method.value)].append(f)
    out = []
    for (hardware, _, method), members in groups.items():
        if len({m.model.value for m in members}) < 2:
            continue
        members = sorted(members, key=_speed, reverse=True)
        fastest = members[0]
        for other in members[1:]:
            if other.model.value == fastest.model.value:
                continue
            ratio = _speed(fastest) / _speed(other)
            out.append(
                f"On {hardware} ({method}{_stage_note(fastest)}): {_model_with_size(other)} trains at "
                f"{_speed(other):.3g} "
                f"samples/s, {_model_with_size(fastest)} at {_speed(fastest):.3g}: the first is "
                f"**{ratio:.2f}x slower** ({other.run.label} vs {fastest.run.label})."
                + busy_caution(other, fastest)
            )
    return out


def _model_with_size(f: RunFacts) -> str:
    name = short_model_name(str(f.model.value))
    params = f.parameters.value
    return f"{name} ({human_count(params)} parameters)" if isinstance(params, (int, float)) else name


def human_count(n: float) -> str:
    """1234 -> "1.23K", 7e9 -> "7B": parameter counts at a glance."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


def _final_train_ce(f: RunFacts) -> tuple[float, bool]:
    """The run's final training cross-entropy, and whether it came from a logged ``ce_loss``.

    With lfkit's KL loss the logged ``loss`` is ``ce_loss + kl_beta * kl_loss``; ranking it
    against other runs' plain cross-entropy would penalise the KL run for its regulariser, so
    its ``ce_loss`` part is used where it was logged.
    """
    ce = f.components.get("ce_loss")
    if ce is not None and ce.known:
        return float(ce.value), True
    return float(f.final_loss.value), False


COMPARABLE = (HEALTHY, UNSTABLE)
"""Health states whose final loss may be ranked (an unstable run's high loss is a fair result)."""


def best_method(rows: list[RunFacts], assessments: dict[str, Assessment] | None = None) -> list[str]:
    """For each model and stage trained with two or more methods: which reached the lowest final loss.

    Final eval loss decides when every compared run has one (it measures generalisation, and
    evaluation never adds the KL term); otherwise the final training cross-entropy does (a KL
    run's ``ce_loss``, see :func:`_final_train_ce`), and the finding says which was used.
    Diverged and unfinished runs are left out, and named.
    """
    assessments = assessments or {}
    groups: dict[tuple, list[RunFacts]] = defaultdict(list)
    left_out: dict[tuple, list[str]] = defaultdict(list)
    for f in rows:
        if f.model.known and f.method.known and f.final_loss.known:
            key = (f.model.value, _stage(f))
            state = assessments.get(f.run.label)
            if state is not None and state.health.state not in COMPARABLE:
                left_out[key].append(f"{f.run.label} ({state.health.label})")
            else:
                groups[key].append(f)
    out = []
    for key, members in groups.items():
        if len({m.method.value for m in members}) < 2:
            continue
        model = key[0]
        same_sets = len({tuple(m.eval_losses) for m in members}) == 1
        use_eval = same_sets and all(m.final_eval_loss.known for m in members)
        if use_eval:
            scored = [(float(m.final_eval_loss.value), False, m) for m in members]
            by = "final eval loss"
        else:
            scored = [(*_final_train_ce(m), m) for m in members]
            by = "final training loss (not every run evaluated on the same eval sets)"
            if any(from_ce for _, from_ce, _ in scored):
                by = (
                    "final training cross-entropy (not every run evaluated on the same eval sets; for KL "
                    "runs their ce_loss, since their loss adds kl_beta * kl_loss)"
                )
        scored.sort(key=lambda s: s[0])
        listing = ", ".join(
            f"{m.method.value} {value:.4f} ({m.run.label}{', ce_loss' if from_ce else ''})"
            for value, from_ce, m in scored
        )
        best = scored[0][2].method.value
        excluded = f" Left out: {', '.join(left_out[key])}." if left_out.get(key) else ""
        out.append(
            f"{short_model_name(str(model))}{_stage_note(members[0])}: **{best}** converged best by {by}: "
            f"{listing}.{excluded}"
        )
    return out


def health_findings(rows: list[RunFacts], assessments: dict[str, Assessment]) -> list[str]:
    """A line per run that diverged, became unstable, logs a suspicious 0.0 loss or has not finished."""
    out = []
    for f in rows:
        state = assessments.get(f.run.label)
        if state is None:
            continue
        health = state.health
        if health.state == DIVERGED:
            out.append(f"**Diverged** at step {health.step}: {f.run.label} ({health.detail}).")
        elif health.state == UNSTABLE:
            out.append(f"**Unstable**: {f.run.label} ({health.detail}).")
        elif health.state == ZERO_LOSS:
            out.append(f"**{health.label}**: {f.run.label} ({health.detail}).")
        elif health.state in (IN_PROGRESS, UNFINISHED):
            out.append(f"**Not finished** ({health.label}): {f.run.label}; its numbers are not final.")
    return out


def trend_summary(rows: list[RunFacts], assessments: dict[str, Assessment]) -> list[str]:
    """Which finished, healthy runs would profit from more steps and which started to overfit."""
    by: dict[str, list[str]] = defaultdict(list)
    for f in rows:
        state = assessments.get(f.run.label)
        if state is not None and state.health.state == HEALTHY and state.trend is not None:
            by[state.trend.verdict].append(f.run.label)
    out = []
    if by.get(STILL_DECREASING):
        out.append(
            f"Loss still decreasing at the end (more steps may help): {', '.join(by[STILL_DECREASING])}."
        )
    if by.get(EVAL_RISING):
        runs = ", ".join(by[EVAL_RISING])
        out.append(f"Eval loss rising (overfitting; prefer an earlier checkpoint): {runs}.")
    return out


def key_findings(
    rows: list[RunFacts], assessments: dict[str, Assessment], *, compare: bool = True
) -> list[str]:
    """All findings; with ``compare``, a line for each comparison that had nothing to compare."""
    out = health_findings(rows, assessments)
    if compare:
        hw = hardware_ratios(rows)
        out += hw or [
            "Hardware speed ratio: no model was trained with the same stage and method on two different "
            "hardware setups."
        ]
        sizes = model_size_ratios(rows)
        out += sizes or [
            "Model-size speed ratio: no two different models were trained with one stage and method on one "
            "hardware."
        ]
        best = best_method(rows, assessments)
        out += best or ["Best method: no model was trained with two different methods in one stage."]
    out += trend_summary(rows, assessments)
    return out
