"""Per-epoch loss analysis: group a run's log events by the epoch they fall in.

LlamaFactory logs a fractional ``epoch`` with every event (0.2, 0.4, ... 1.0, 1.2, ...).
An event at fractional epoch ``e`` belongs to epoch ``ceil(e)`` (the one in progress when
it was logged), so the event logged exactly at 1.0 closes epoch 1 rather than opening epoch 2.
The plots draw each epoch's end at the last logged step the table counts in that epoch, so
the line and the table always agree (a fractional step such as 3.8 never appears).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lfkit.reporting.runs import LogPoint, Run

EPOCH_ROUNDING = 1e-6
"""Fractional epochs within this of an integer count as that integer (1.0000001 closes epoch 1)."""


@dataclass(frozen=True)
class EpochStats:
    """One epoch of a run: how many loss events it holds and their summaries."""

    epoch: int
    train_points: int
    mean_train_loss: float | None
    """Mean of the epoch's finite training losses (``None`` when it has none)."""
    non_finite: int
    """Training losses logged as NaN or infinite in this epoch."""
    last_eval: dict[str, float]
    """Eval set -> its last eval loss in this epoch."""
    means: dict[str, float]
    """Mean of each extra metric (loss terms, the stage's metrics) over the epoch's training events."""


def epoch_of(fractional_epoch: float) -> int:
    """The 1-based epoch a log event at ``fractional_epoch`` belongs to."""
    return max(1, math.ceil(fractional_epoch - EPOCH_ROUNDING))


def per_epoch(run: Run, keys: list[str]) -> list[EpochStats]:
    """Mean training loss (and mean of each of ``keys``) per epoch, plus each eval set's last eval loss.

    The eval loss is the last evaluation inside the epoch, not a mean: evaluations within an
    epoch see a model that keeps changing, and the one at the epoch's end is what a
    checkpoint saved there would score. Events without an epoch value are left out.
    """
    train_by: dict[int, list[LogPoint]] = {}
    for point in run.train_log:
        if point.epoch is not None:
            train_by.setdefault(epoch_of(point.epoch), []).append(point)
    eval_by: dict[int, dict[str, float]] = {}
    for name in run.eval_sets():
        for _, epoch, value in run.eval_series(name):
            if epoch is not None:
                eval_by.setdefault(epoch_of(epoch), {})[name] = value  # later events overwrite
    stats = []
    for epoch in sorted(set(train_by) | set(eval_by)):
        points = train_by.get(epoch, [])
        losses = [p.values["loss"] for p in points]
        finite = [v for v in losses if math.isfinite(v)]
        means = {}
        for key in keys:
            values = [p.values[key] for p in points if key in p.values and math.isfinite(p.values[key])]
            if values:
                means[key] = sum(values) / len(values)
        stats.append(
            EpochStats(
                epoch=epoch,
                train_points=len(points),
                mean_train_loss=sum(finite) / len(finite) if finite else None,
                non_finite=len(losses) - len(finite),
                last_eval=eval_by.get(epoch, {}),
                means=means,
            )
        )
    return stats


def epoch_ends(points: list[LogPoint]) -> list[tuple[int, int]]:
    """``(epoch, step)``: the last logged step of each completed epoch, as :func:`per_epoch` counts them.

    An epoch is complete when a later event belongs to the next epoch, or when the last event
    sits exactly on a whole epoch.
    """
    last_step: dict[int, int] = {}
    for point in points:
        if point.epoch is not None:
            epoch = epoch_of(point.epoch)
            last_step[epoch] = max(point.step, last_step.get(epoch, point.step))
    if not last_step:
        return []
    final = max(last_step)
    final_epoch = max(p.epoch for p in points if p.epoch is not None)
    ends = [(e, last_step[e]) for e in sorted(last_step) if e < final]
    if abs(final_epoch - round(final_epoch)) <= EPOCH_ROUNDING and round(final_epoch) == final:
        ends.append((final, last_step[final]))
    return ends
