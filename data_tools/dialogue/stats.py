"""Dialogue statistics and the "N per role -> samples -> steps -> hours" planning table.

Users size role-play fine-tunes by hand: how many conversations each role has, how long they
are, and how many optimizer steps (and hours) a given per-role cap produces. The statistics
read every record with the converter's full pass (:mod:`lfkit.data_tools.dialogue.scan`) and
describe the conversations left after dropping the duplicates of the whole inputs; the
planning table runs the converter's own draw (:func:`~lfkit.data_tools.dialogue.sampling.plan_sampling`)
for each cap with the given seed, so its numbers are exactly what ``lfkit data convert
dialogue`` with the same options writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lfkit.data_tools.core.summary import Accounting

if TYPE_CHECKING:
    import numpy as np
    from lfkit.data_tools.core.inputs import InputSet
    from lfkit.data_tools.core.rejects import RejectTally
    from lfkit.data_tools.dialogue.convert import ConvertOptions
    from rich.table import Table


def describe(values: Any) -> tuple[int, float, int]:
    """(min, median, max) of a non-empty sequence or array."""
    import numpy as np

    data = np.asarray(values)
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


def distribution_rows(
    role_counts: np.ndarray,
    turns: np.ndarray,
    chars: np.ndarray,
    tokens: np.ndarray | None = None,
    inputs: bool = False,
) -> list[tuple[str, str]]:
    """(label, "min / median / max") rows: conversations per role, turns, characters, tokens.

    ``role_counts`` are conversations per role (roles without any are left out); ``turns``,
    ``chars`` and ``tokens`` one value per conversation described. ``inputs``: the role counts
    are of the records read (a sampled conversion), the rest of the converted ones.
    """
    present = role_counts[role_counts > 0]
    if not len(present):
        return []
    where = " in the inputs" if inputs else ""
    rows = [(f"roles{where}", f"{len(present):,}")]
    series = [(f"conversations per role{where}", present)]
    if len(turns):
        what = " (converted)" if inputs else ""
        series += [(f"turns per conversation{what}", turns), (f"characters per conversation{what}", chars)]
        if tokens is not None:
            series.append(("tokens per conversation (no template)", tokens))
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


@dataclass
class DialogueStats:
    """What ``lfkit data stats dialogue`` found: counts and columns of the kept conversations."""

    counts: Accounting
    rejects: RejectTally
    role_names: list[str]
    role_counts: np.ndarray  # kept conversations per role
    turns: np.ndarray
    chars: np.ndarray
    tokens: np.ndarray | None
    notes: tuple[int, int, int]  # trimmed user turns, moved greetings, merged turns
    role_spellings: set[str]
    duplicates: int
    near_duplicates: int
    steps: list[StepsRow] = field(default_factory=list)


def dialogue_stats(
    inputs: InputSet,
    opts: ConvertOptions,
    caps: Sequence[int | None],
    batch_size: int,
    seconds_per_step: float | None,
    epochs: float,
    rejects: RejectTally,
    tokenizer: Any = None,
    on_progress: Callable[[int], None] | None = None,
) -> DialogueStats:
    """Read every record (the full pass), drop duplicates, describe the rest, plan each cap.

    Duplicates are those of the whole inputs (exact, the first in input order kept; with
    ``--dedup near`` near ones within a role too); the planning table draws each cap exactly
    as ``lfkit data convert dialogue`` with these options does.
    """
    import tempfile
    from dataclasses import replace

    import numpy as np
    from lfkit.data_tools.core.workdir import work_folder
    from lfkit.data_tools.dialogue.convert import _drop_duplicates, distinct_inputs, read_pool
    from lfkit.data_tools.dialogue.pool import Candidates
    from lfkit.data_tools.dialogue.sampling import DUPLICATE, KEPT, REJECTED, VALID, plan_sampling

    if batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    full = replace(opts, max_per_role=None, validate_all=True)
    with work_folder(tempfile.gettempdir(), "lfkit-stats") as work:
        candidates, _ = read_pool(distinct_inputs(inputs), full, str(work.path), on_progress, tokenizer)
        try:
            near = _drop_duplicates(candidates, full) if opts.dedup == "near" else 0
            valid = np.flatnonzero(candidates.state == VALID)
            for dup in candidates.dedup.check(valid, candidates.keys[valid]):
                candidates.drop(dup)
            candidates.write_rejects(rejects)
            state, pool = candidates.state, candidates.pool
            kept = np.flatnonzero((state == VALID) | (state == KEPT))
            counts = Accounting(
                pool.read, len(kept), pool.malformed + int(np.count_nonzero(state >= REJECTED))
            )
            counts.check()
            tokens = pool.tokens[kept] if pool.tokens is not None else None
            per_role = np.bincount(candidates.role_ids[kept], minlength=len(pool.role_names))
            stats = DialogueStats(
                counts, rejects, pool.role_names, per_role,
                candidates.turns[kept], candidates.chars[kept], tokens, candidates.note_counts(kept),
                pool.role_spellings, int(np.count_nonzero(state == DUPLICATE)) - near, near,
            )  # fmt: skip
            if len(kept):
                for cap in caps:
                    draw = Candidates(pool, None, candidates.settings)
                    if opts.dedup == "near":
                        _drop_duplicates(draw, full)
                    plan = plan_sampling(draw, replace(opts, max_per_role=cap).sampling())
                    samples = int(draw.samples[plan.train].sum())
                    steps = math.ceil(math.ceil(samples / batch_size) * epochs)
                    hours = steps * seconds_per_step / 3600 if seconds_per_step is not None else None
                    stats.steps.append(StepsRow(cap, len(plan.train), samples, steps, hours))
                    draw.close()
        finally:
            candidates.close()
    return stats


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
    from rich.table import Table

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
