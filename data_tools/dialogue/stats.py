"""Dialogue statistics and the "N per role -> samples -> steps -> hours" planning table.

Users size role-play fine-tunes by hand: how many conversations each role has, how long they
are, and how many optimizer steps (and hours) a given per-role cap produces. These tables are
computed from the same :class:`~lfkit.data_tools.dialogue.scan.ConversationIndex` the converter
builds, after dropping the same duplicates, and the samples column uses the converter's own
sampling plan (:func:`~lfkit.data_tools.dialogue.sampling.plan_sampling`) with the given seed,
so the numbers are exactly what ``lfkit data convert dialogue`` with the same options writes.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from lfkit.data_tools.dialogue.sampling import group_by_role, plan_sampling
from lfkit.data_tools.dialogue.scan import ConversationIndex
from rich.table import Table


def describe(values: Sequence[int]) -> tuple[int, float, int]:
    """(min, median, max) of a non-empty sequence.

    numpy works on the arrays' buffers, so millions of values never become Python ints.
    """
    import numpy as np

    data = np.frombuffer(values, dtype=values.typecode) if isinstance(values, array) else np.asarray(values)
    return int(data.min()), float(np.median(data)), int(data.max())


def parse_caps(text: str) -> list[int | None]:
    """``"1,5,10,all"`` -> ``[1, 5, 10, None]`` (None = no per-role cap)."""
    caps: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in ("all", "none", "0"):
            caps.append(None)
            continue
        if not part.isdigit():
            raise ValueError(f"per-role cap {part!r} is not a positive integer or 'all'")
        caps.append(int(part))
    if not caps:
        raise ValueError("no per-role caps given")
    return caps


def distribution_rows(index: ConversationIndex, keep: Sequence[bool] | None = None) -> list[tuple[str, str]]:
    """(label, "min / median / max") rows: conversations per role, turns, chars, tokens.

    ``keep`` (a mask) leaves out dropped duplicates.
    """
    import numpy as np

    mask = np.ones(len(index), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if not mask.any():
        return []
    per_role = [n for n in index.per_role_counts(mask) if n]
    rows = [("roles", f"{len(per_role):,}")]

    def kept(values: array) -> np.ndarray:
        return np.frombuffer(values, dtype=values.typecode)[mask]

    series = [
        ("conversations per role", per_role),
        ("turns per conversation", kept(index.turns)),
        ("characters per conversation", kept(index.chars)),
    ]
    if index.tokens is not None:
        series.append(("tokens per conversation (no template)", kept(index.tokens)))
    for label, values in series:
        lo, mid, hi = describe(values)
        rows.append((f"{label} (min / median / max)", f"{lo:,} / {mid:,.1f} / {hi:,}"))
    return rows


@dataclass
class StepsRow:
    """One line of the planning table."""

    cap: int | None
    conversations: int
    samples: int
    steps: int
    hours: float | None


def steps_rows(
    index: ConversationIndex,
    caps: Sequence[int | None],
    batch_size: int,
    seconds_per_step: float | None,
    epochs: float = 1.0,
    seed: int = 0,
    val_ratio: float = 0.0,
    resample_epochs: int = 1,
    val_by: str = "conversation",
    keep: Sequence[bool] | None = None,
) -> list[StepsRow]:
    """Training samples, optimizer steps and hours for each per-role cap.

    ``batch_size`` is the effective batch (per-device x accumulation x devices); steps are
    ``ceil(samples / batch_size)`` per epoch, times ``epochs``, as the Trainer counts them.
    """
    if batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    groups = group_by_role(index.role_ids, len(index.role_names), keep)
    rows = []
    for cap in caps:
        plan = plan_sampling(groups, index.role_names, cap, seed, val_ratio, resample_epochs, val_by)
        train = plan.train
        samples = sum(index.samples[i] for i in train)
        steps = math.ceil(math.ceil(samples / batch_size) * epochs)
        hours = steps * seconds_per_step / 3600 if seconds_per_step is not None else None
        rows.append(StepsRow(cap, len(train), samples, steps, hours))
    return rows


def pass_rows(
    samples: int, batch_size: int, seconds_per_step: float | None, resample_epochs: int = 1
) -> list[tuple[str, str]]:
    """Summary rows for one pass (``num_train_epochs: 1``) over a written training set.

    With ``--resample-epochs E`` the file already holds E virtual epochs, so one pass is the
    whole planned run. Steps are ``ceil(samples / batch_size)``, as the Trainer counts them.
    """
    steps = math.ceil(samples / batch_size)
    what = f"{resample_epochs} virtual epochs" if resample_epochs > 1 else "1 epoch"
    rows = [(f"optimizer steps ({what}, effective batch {batch_size})", f"{steps:,}")]
    if seconds_per_step is not None:
        hours = steps * seconds_per_step / 3600
        rows.append((f"hours at {seconds_per_step:g} s/step", f"{hours:,.2f}"))
    return rows


def steps_table(rows: Sequence[StepsRow], batch_size: int, epochs: float) -> Table:
    """The rich "N per role -> conversations -> samples -> steps -> hours" table."""
    title = f"Training size (effective batch {batch_size}, {epochs:g} epoch(s))"
    table = Table(title=title, title_justify="left")
    for name in ("N per role", "conversations", "samples", "steps", "hours"):
        table.add_column(name, justify="right")
    for row in rows:
        hours = f"{row.hours:,.2f}" if row.hours is not None else "- (give --seconds-per-step)"
        table.add_row(
            "all" if row.cap is None else str(row.cap),
            f"{row.conversations:,}",
            f"{row.samples:,}",
            f"{row.steps:,}",
            hours,
        )
    return table
