"""Per-epoch loss analysis: group a run's log events by the epoch they fall in.

LlamaFactory logs a fractional ``epoch`` with every event (0.2, 0.4, ... 1.0, 1.2, ...).
An event at fractional epoch ``e`` belongs to epoch ``ceil(e)`` (the one in progress when
it was logged), so the event logged exactly at 1.0 closes epoch 1 rather than opening epoch 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lfkit.reporting.runs import LogPoint

EPOCH_ROUNDING = 1e-6
"""Fractional epochs within this of an integer count as that integer (1.0000001 closes epoch 1)."""


@dataclass(frozen=True)
class EpochStats:
    """One epoch of a run: how many loss events it holds and their summaries."""

    epoch: int
    train_points: int
    mean_train_loss: float | None
    last_eval_loss: float | None
    mean_components: dict[str, float]


def epoch_of(fractional_epoch: float) -> int:
    """The 1-based epoch a log event at ``fractional_epoch`` belongs to."""
    return max(1, math.ceil(fractional_epoch - EPOCH_ROUNDING))


def per_epoch(train_log: list[LogPoint], eval_log: list[LogPoint], components: list[str]) -> list[EpochStats]:
    """Mean training loss (and mean of each component loss) per epoch, plus the last eval loss in it.

    The eval loss is the last evaluation inside the epoch, not a mean: evaluations within an
    epoch see a model that keeps changing, and the one at the epoch's end is what a
    checkpoint saved there would score. Events without an epoch value are left out.
    """
    train_by: dict[int, list[LogPoint]] = {}
    for point in train_log:
        if point.epoch is not None:
            train_by.setdefault(epoch_of(point.epoch), []).append(point)
    eval_by: dict[int, list[LogPoint]] = {}
    for point in eval_log:
        if point.epoch is not None:
            eval_by.setdefault(epoch_of(point.epoch), []).append(point)
    stats = []
    for epoch in sorted(set(train_by) | set(eval_by)):
        points = train_by.get(epoch, [])
        losses = [p.values["loss"] for p in points]
        means = {}
        for key in components:
            values = [p.values[key] for p in points if key in p.values]
            if values:
                means[key] = sum(values) / len(values)
        evals = eval_by.get(epoch, [])
        stats.append(
            EpochStats(
                epoch=epoch,
                train_points=len(points),
                mean_train_loss=sum(losses) / len(losses) if losses else None,
                last_eval_loss=max(evals, key=lambda p: p.step).eval_loss if evals else None,
                mean_components=means,
            )
        )
    return stats
