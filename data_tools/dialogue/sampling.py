"""Per-role sampling: a vectorised draw, picks converted and redrawn in rounds, validation, epochs.

**The draw.** Every record gets a seeded 64-bit hash of its place in the inputs
(:func:`draw_keys`: the file's number among the inputs and the record's byte offset in it, or
its element index in a JSON array; splitmix64, in numpy). A role's *draw order* is its records
sorted by that hash (ties, which need a 64-bit collision, by file and position), and
``--max-per-role N`` keeps the first N records of each role's draw order that convert and are
not duplicates. The same inputs and seed give the same draw on every machine and with any
number of workers or Ray nodes; adding or removing records of one role does not change what
the other roles draw. One sort per draw serves every role: no random generator per role.

**Rounds.** The picks are converted (parsed, validated, rendered) only after they are drawn,
so some turn out to be rejects or duplicates; their roles then draw the next records of their
order. Precisely, round 1 takes, for every role, the first ``N`` records of its draw order;
each later round takes, for every role still short of ``N``, as many of its next records as it
is short. After a round is converted (:meth:`Records.resolve`), its valid records are compared
with every record kept so far and with each other, in input order: one whose content equals
a kept record's (whitespace aside) is a ``duplicate`` of it, and of several equal new ones the
first in input order is kept. Whatever engine runs the rounds (one machine, or Ray), the picks
are the same.

**Validation split** (after the draw of epoch 0). ``val_by="conversation"``: each role gives the
last ``q`` of its picks in draw order, ``q`` shared out by largest remainder
(:func:`val_quotas`) so that every role with two or more picks keeps one for training.
``val_by="role"``: whole roles are held out (:func:`val_roles`), so no persona of the validation
set is trained on.

**Virtual epochs** (``epochs`` > 1, ``--resample-epochs``). Epoch ``e`` draws again with seed
``S+e`` from each role's records minus the validation ones, as many as the role trains on in
epoch 0, with the same rounds (a record already kept is taken again as it is; a new duplicate
of a kept record is skipped, so no validation row can appear in any epoch); epoch 0 is exactly
the plain draw. The trade-off: the Hugging Face Trainer iterates over one fixed dataset, so
"another draw of each role every epoch" can only be written out as E draws one after another,
trained with ``num_train_epochs: 1``; the file is E times larger, the learning-rate schedule
and ``save_steps`` / ``eval_steps`` span all virtual epochs, roles with at most N conversations
repeat them in every one, and the trainer shuffles the whole set (each epoch is written
shuffled, so ``disable_shuffling: true`` keeps them in order).

**Output order.** Each epoch's training picks are ordered by another seeded hash of their place
(so roles are mixed), the validation picks in input order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

UNKNOWN, VALID, KEPT, REJECTED, DUPLICATE = 0, 1, 2, 3, 4  # what is known of a drawn record
NO_ROLE = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
SHUFFLE_SALT = 0x5EED5EED5EED5EED  # the output order's hash differs from the draw's
VAL_SALT = 0x7A17A17A17A17A1


def _mix(x: int) -> int:
    """splitmix64 of one integer (the seed's part of the hash)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def _mix_array(x: np.ndarray) -> np.ndarray:
    """splitmix64 of every value (uint64, wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def draw_keys(file_ids: np.ndarray, positions: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """The seeded 64-bit hash of each record's place (file number, position): its draw key."""
    with np.errstate(over="ignore"):
        s = _mix((seed ^ salt) & MASK64)
        x = _mix_array(positions.astype(np.uint64) ^ np.uint64(s))
        return _mix_array(
            x ^ (file_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(_mix(s)))
        )


def name_keys(names: Sequence[str], seed: int, salt: int) -> np.ndarray:
    """A seeded 64-bit hash of each role name (tie-breaks and role orders that follow names)."""
    import xxhash

    s = _mix((seed ^ salt) & MASK64)
    return np.fromiter(
        (xxhash.xxh3_64_intdigest(n.encode(), s) for n in names), dtype=np.uint64, count=len(names)
    )


def draw_order(
    role_ids: np.ndarray, keys: np.ndarray, file_ids: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Indices sorted by (role, key, file, position): every role's draw order, roles in id order."""
    order = np.lexsort((keys, role_ids))
    r, k = role_ids[order], keys[order]
    if len(order) > 1 and np.any((r[1:] == r[:-1]) & (k[1:] == k[:-1])):  # a 64-bit collision
        order = np.lexsort((positions, file_ids, keys, role_ids))
    return order


def ranks(sorted_roles: np.ndarray) -> np.ndarray:
    """The position of each element within its run of equal roles (``sorted_roles`` is sorted)."""
    n = len(sorted_roles)
    if not n:
        return np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.concatenate(([True], sorted_roles[1:] != sorted_roles[:-1])))
    lengths = np.diff(np.append(first, n))
    return np.arange(n) - np.repeat(first, lengths)


def reachable(
    role_ids: np.ndarray, file_ids: np.ndarray, positions: np.ndarray, seed: int, epochs: int, keep: int
) -> np.ndarray:
    """Mask of the records among the first ``keep`` of their role's draw order in some epoch.

    Records without a role (:data:`NO_ROLE`) are not reachable. A role with at most ``keep``
    records is kept whole without sorting.
    """
    has_role = role_ids != NO_ROLE
    counts = np.bincount(role_ids[has_role]) if has_role.any() else np.zeros(0, dtype=np.int64)
    out = np.zeros(len(role_ids), dtype=bool)
    small = has_role.copy()
    small[has_role] = counts[role_ids[has_role]] <= keep
    out |= small
    big = np.flatnonzero(has_role & ~small)
    if not len(big):
        return out
    roles, files, pos = role_ids[big], file_ids[big], positions[big]
    for epoch in range(epochs):
        order = draw_order(roles, draw_keys(files, pos, seed + epoch), files, pos)
        out[big[order[ranks(roles[order]) < keep]]] = True
    return out


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])``, vectorised."""
    total = int(counts.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)


class Records(ABC):
    """The drawable records and what is known of them; the engine subclasses it.

    Columns (one value per record, growing when a role is re-read): ``role_ids``, ``file_ids``,
    ``positions``, ``state`` (:data:`UNKNOWN` ... :data:`DUPLICATE`) and ``drawable`` (records
    that take part in the draw at all). ``complete[r]``: every record of role ``r`` is here;
    for an incomplete role, each epoch's first ``keep`` records of the draw order are.
    """

    role_ids: np.ndarray
    file_ids: np.ndarray
    positions: np.ndarray
    state: np.ndarray
    drawable: np.ndarray
    complete: np.ndarray
    role_names: list[str]
    keep: int | None

    @abstractmethod
    def resolve(self, ids: np.ndarray) -> None:
        """Convert the records ``ids`` not converted yet and deduplicate the new valid ones, so
        each ends KEPT, REJECTED or DUPLICATE (see the module docstring)."""

    @abstractmethod
    def refill(self, roles: np.ndarray) -> None:
        """Read every record of ``roles`` (their draw ran past what was kept); marks them complete."""


@dataclass(frozen=True)
class SamplingOptions:
    """What the draw is told (the options of ``lfkit data convert dialogue`` it uses)."""

    max_per_role: int | None = None  # None: every record
    seed: int = 0
    val_ratio: float = 0.0
    epochs: int = 1
    val_by: str = "conversation"  # or "role"


@dataclass
class SamplingPlan:
    """The picks (record ids): one training list per (virtual) epoch in output order, validation."""

    train_epochs: list[np.ndarray]
    val: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.concatenate(self.train_epochs) if self.train_epochs else np.zeros(0, dtype=np.int64)

    def used(self) -> np.ndarray:
        """Every record written, once (sorted ids)."""
        return np.unique(np.concatenate([*self.train_epochs, self.val]))


def plan_sampling(records: Records, opts: SamplingOptions) -> SamplingPlan:
    """Draw epoch 0, split validation off, draw the other epochs (see the module docstring)."""
    if opts.max_per_role is not None and opts.max_per_role < 1:
        raise ValueError(f"max per role must be at least 1, got {opts.max_per_role}")
    if opts.epochs < 1:
        raise ValueError(f"resample epochs must be at least 1, got {opts.epochs}")
    if opts.val_by not in ("conversation", "role"):
        raise ValueError(f"val_by must be 'conversation' or 'role', got {opts.val_by!r}")
    n_roles = len(records.role_names)
    cap = np.iinfo(np.int64).max if opts.max_per_role is None else opts.max_per_role
    picks, pick_ranks = _draw(records, opts.seed, np.full(n_roles, cap, dtype=np.int64), None)
    roles = records.role_ids[picks]
    sizes = np.bincount(roles, minlength=n_roles)
    if opts.val_by == "role":
        held = val_roles(sizes, records.role_names, opts.val_ratio, opts.seed)
        is_val = held[roles]
    else:
        tiebreak = name_keys(records.role_names, opts.seed, VAL_SALT) if opts.val_ratio > 0 else None
        quotas = val_quotas(sizes, opts.val_ratio, tiebreak)
        order = np.lexsort((pick_ranks, roles))  # each role's picks in draw order
        within = np.empty(len(picks), dtype=np.int64)
        within[order] = ranks(roles[order])
        is_val = within >= (sizes - quotas)[roles]
    val, train = picks[is_val], picks[~is_val]
    epochs = [train]
    if opts.epochs > 1:
        targets = np.bincount(records.role_ids[train], minlength=n_roles)
        for epoch in range(1, opts.epochs):
            epochs.append(_draw(records, opts.seed + epoch, targets, val)[0])
    train_epochs = [_shuffled(records, ids, opts.seed + e) for e, ids in enumerate(epochs)]
    val = val[np.lexsort((records.positions[val], records.file_ids[val]))]
    return SamplingPlan(train_epochs, val)


def _shuffled(records: Records, ids: np.ndarray, seed: int) -> np.ndarray:
    keys = draw_keys(records.file_ids[ids], records.positions[ids], seed, SHUFFLE_SALT)
    return ids[np.argsort(keys, kind="stable")]


def _draw(
    records: Records, seed: int, targets: np.ndarray, excluded: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's draw in rounds: up to ``targets[r]`` kept records per role.

    Returns the picked ids and their rank in their role's draw order. ``excluded`` ids take
    no part (the validation picks, for epochs after the first).
    """
    n_roles = len(targets)
    got = np.zeros(n_roles, dtype=np.int64)
    cursor = np.zeros(n_roles, dtype=np.int64)
    picked: list[np.ndarray] = []
    picked_ranks: list[np.ndarray] = []
    order = None
    while True:
        if order is None:
            order, starts, trusted = _order(records, seed, excluded, n_roles)
        need = np.maximum(targets - got, 0)
        left = trusted - cursor
        short = (need > left) & ~records.complete
        if short.any():  # the role's draw runs past the records pass 1 kept: read all of them
            records.refill(np.flatnonzero(short))
            order = None
            continue
        take = np.minimum(need, left)
        roles = np.flatnonzero(take)
        if not len(roles):
            break
        positions = _ranges(cursor[roles], take[roles])
        batch = order[np.repeat(starts[roles], take[roles]) + positions]
        cursor[roles] += take[roles]
        records.resolve(batch)
        good = records.state[batch] == KEPT
        kept = batch[good]
        got += np.bincount(records.role_ids[kept], minlength=n_roles)
        picked.append(kept)
        picked_ranks.append(positions[good])
    if not picked:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(picked), np.concatenate(picked_ranks)


def _order(
    records: Records, seed: int, excluded: np.ndarray | None, n_roles: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The drawable records in draw order, each role's start in it, and how many can be trusted.

    For an incomplete role only its first ``keep`` records in draw order (those pass 1 kept
    for this seed) are known to be the true head of the order; the rest of what it holds came
    from other epochs' draws and says nothing about what comes next.
    """
    ids = np.flatnonzero(records.drawable)
    roles = records.role_ids[ids]
    files, positions = records.file_ids[ids], records.positions[ids]
    order = draw_order(roles, draw_keys(files, positions, seed), files, positions)
    ids, roles = ids[order], roles[order]
    usable = np.ones(len(ids), dtype=bool)
    if records.keep is not None and not records.complete.all():
        usable = records.complete[roles] | (ranks(roles) < records.keep)
    if excluded is not None and len(excluded):
        usable &= ~np.isin(ids, excluded)
    ids, roles = ids[usable], roles[usable]
    starts = np.searchsorted(roles, np.arange(n_roles))
    trusted = np.bincount(roles, minlength=n_roles)
    return ids, starts, trusted


def val_quotas(sizes: np.ndarray, ratio: float, tiebreak: np.ndarray | None) -> np.ndarray:
    """How many of each role's picks go to validation.

    The total is ``round(ratio * sum(sizes))``, shared out by largest remainder (ties broken by
    ``tiebreak``, one value per role), with roles of one pick kept whole in training and every
    other role keeping at least one training pick. So every role with two or more picks can
    appear in both splits, and the split follows each role's share.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"val ratio must be in [0, 1), got {ratio}")
    sizes = np.asarray(sizes, dtype=np.int64)
    caps = np.maximum(sizes - 1, 0)
    target = min(round(ratio * int(sizes.sum())), int(caps.sum()))
    exact = sizes * ratio
    quotas = np.minimum(np.floor(exact).astype(np.int64), caps)
    left = target - int(quotas.sum())
    if left > 0:
        remainder = exact - np.floor(exact)
        tiebreak = np.zeros(len(sizes), dtype=np.uint64) if tiebreak is None else tiebreak
        order = np.lexsort((tiebreak, -remainder))
        while left > 0:  # more than one round only when caps bind
            room = order[quotas[order] < caps[order]]
            if not len(room):
                break
            give = room[:left]
            quotas[give] += 1
            left -= len(give)
    return quotas


def val_roles(sizes: np.ndarray, names: Sequence[str], ratio: float, seed: int) -> np.ndarray:
    """Mask of the roles held out whole for validation: about ``ratio`` of the picks.

    Roles are taken in a seeded order of their names while the held-out total stays at or under
    the target, and at least one role with picks is kept for training. None when there is only
    one such role.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"val ratio must be in [0, 1), got {ratio}")
    sizes = np.asarray(sizes, dtype=np.int64)
    held = np.zeros(len(sizes), dtype=bool)
    present = np.flatnonzero(sizes)
    target = round(ratio * int(sizes.sum()))
    if len(present) < 2 or target == 0:
        return held
    keys = name_keys([names[r] for r in present], seed, VAL_SALT ^ 1).tolist()
    order = [r for _, _, r in sorted(zip(keys, [names[r] for r in present], present.tolist(), strict=True))]
    total = 0
    for r in order[:-1]:  # the last role in the order always trains
        if total + sizes[r] <= target:
            held[r] = True
            total += int(sizes[r])
        if total == target:
            break
    if not held.any():  # every role is larger than the target: hold out the smallest one
        smallest = min(order[:-1], key=lambda r: (int(sizes[r]), names[r]))
        held[smallest] = True
    return held
