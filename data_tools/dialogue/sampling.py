"""Per-role sampling, the role-stratified validation split, and per-epoch resampling.

All functions work on conversation *indices* (positions in input order) grouped by role, so
the converter can pick samples without holding or re-parsing any text.

Determinism and independence: each role draws from its own ``random.Random`` seeded with the
string ``"{seed}\\x00{role}"`` (string seeds are hashed with SHA-512 by Python, so they do not
depend on ``PYTHONHASHSEED``). The same inputs and seed therefore give the same draw on every
machine, and adding or removing one role does not change what the other roles draw.

Per-epoch resampling (``epochs`` > 1), the trade-off:
the Hugging Face Trainer iterates over one fixed dataset, so "a different draw of each role in
every epoch" cannot happen inside training. Instead the converter materialises E draws, epoch
``e`` using seed ``S+e``, one after another as a single training set meant for
``num_train_epochs: 1``. Epoch 0 is exactly the plain (non-resampled) draw. What it costs and
changes: the dataset file is about E times larger on disk; the learning-rate schedule and
``save_steps``/``eval_steps`` count steps over all virtual epochs together (as E real epochs
would); roles with at most N conversations repeat the same conversations in every virtual epoch
(as in real epochs); and the trainer shuffles the whole set, so virtual epochs are interleaved
rather than sequential unless the recipe sets ``disable_shuffling: true`` (each virtual epoch is
written already shuffled, so that keeps them in order). The validation split is drawn once, from
epoch 0's draw, and kept out of every epoch's training draw.

Two validation splits (``val_by``): ``"conversation"`` (the default) takes a share of each
role's sampled conversations (:func:`val_quotas`), so every role with two or more is in both
splits; ``"role"`` holds out whole roles (:func:`val_roles`), so no persona of the validation
set is ever trained on, which measures how the model does on characters it has not seen.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass


def role_rng(seed: int, role: str, purpose: str = "") -> random.Random:
    """The private random generator of ``role`` for ``seed`` (and an optional purpose tag)."""
    return random.Random(f"{seed}\x00{role}\x00{purpose}")


def group_by_role(role_ids: Sequence[int], n_roles: int, keep: Sequence[bool] | None = None) -> list[array]:
    """Conversation indices of each role id, in input order (4-byte arrays: memory stays small).

    ``keep`` (a mask) leaves out conversations that were dropped (duplicates).
    """
    groups = [array("I") for _ in range(n_roles)]
    if keep is None:
        for index, role_id in enumerate(role_ids):
            groups[role_id].append(index)
    else:
        for index, (role_id, kept) in enumerate(zip(role_ids, keep, strict=True)):
            if kept:
                groups[role_id].append(index)
    return groups


def draw(pool: Sequence[int], n: int | None, rng: random.Random) -> array:
    """At most ``n`` indices of ``pool`` drawn without replacement (all of it when n is None or larger).

    The result is sorted (input order), so it is a *set* drawn by ``rng``.
    """
    if n is None or n >= len(pool):
        return array("I", pool)
    return array("I", sorted(rng.sample(pool, n)))


def val_quotas(sizes: Sequence[int], ratio: float, rng: random.Random) -> list[int]:
    """How many of each role's sampled conversations go to validation.

    The total is ``round(ratio * sum(sizes))``, shared out by largest remainder (ties broken by
    ``rng``), with roles of one conversation kept whole in training and every other role keeping
    at least one training conversation. So every role with two or more samples can appear in
    both splits, and the split follows each role's share.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"val ratio must be in [0, 1), got {ratio}")
    caps = [max(size - 1, 0) for size in sizes]
    target = min(round(ratio * sum(sizes)), sum(caps))
    exact = [size * ratio for size in sizes]
    quotas = [min(math.floor(x), cap) for x, cap in zip(exact, caps, strict=True)]
    left = target - sum(quotas)
    if left > 0:
        tiebreak = list(range(len(sizes)))
        rng.shuffle(tiebreak)
        order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - math.floor(exact[i])), tiebreak[i]))
        while left > 0:  # more than one round is needed only when caps bind
            progressed = False
            for i in order:
                if left == 0:
                    break
                if quotas[i] < caps[i]:
                    quotas[i] += 1
                    left -= 1
                    progressed = True
            if not progressed:
                break
    return quotas


def val_roles(sizes: Sequence[int], names: Sequence[str], ratio: float, seed: int) -> set[int]:
    """Role ids held out whole for validation: about ``ratio`` of the sampled conversations.

    Roles are taken in a seeded random order (of their names, so the choice does not depend on
    input order) while the held-out total stays at or under the target, and at least one role
    with conversations is kept for training. Empty when there is only one such role.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"val ratio must be in [0, 1), got {ratio}")
    present = [r for r, size in enumerate(sizes) if size]
    target = round(ratio * sum(sizes))
    if len(present) < 2 or target == 0:
        return set()
    order = sorted(present, key=lambda r: names[r])
    random.Random(f"{seed}\x00val-roles").shuffle(order)
    chosen: set[int] = set()
    total = 0
    for r in order[:-1]:  # the last role in the order always trains
        if total + sizes[r] <= target:
            chosen.add(r)
            total += sizes[r]
        if total == target:
            break
    if not chosen:  # every role is larger than the target: hold out the smallest one
        chosen.add(min(order[:-1], key=lambda r: (sizes[r], names[r])))
    return chosen


@dataclass
class SamplingPlan:
    """The chosen conversation indices: one training list per (virtual) epoch, and validation."""

    train_epochs: list[array]
    val: array

    @property
    def train(self) -> array:
        return array("I", b"".join(epoch.tobytes() for epoch in self.train_epochs))


def plan_sampling(
    groups: Sequence[Sequence[int]],
    role_names: Sequence[str],
    max_per_role: int | None,
    seed: int,
    val_ratio: float = 0.0,
    epochs: int = 1,
    val_by: str = "conversation",
) -> SamplingPlan:
    """Draw per role, split validation (after sampling, see ``val_by``), resample epochs.

    Each training epoch list is shuffled with ``random.Random(seed + e)`` so the roles are mixed;
    the validation list is in input order.
    """
    if max_per_role is not None and max_per_role < 1:
        raise ValueError(f"max per role must be at least 1, got {max_per_role}")
    if epochs < 1:
        raise ValueError(f"resample epochs must be at least 1, got {epochs}")
    named = list(zip(groups, role_names, strict=True))
    first = [draw(pool, max_per_role, role_rng(seed, name)) for pool, name in named]
    if val_by == "role":
        held = val_roles([len(d) for d in first], role_names, val_ratio, seed)
        val_sets = [set(d) if r in held else set() for r, d in enumerate(first)]
        excluded = [set(pool) if r in held else set() for r, (pool, _) in enumerate(named)]
    elif val_by == "conversation":
        quotas = val_quotas([len(d) for d in first], val_ratio, random.Random(f"{seed}\x00val-quotas"))
        val_sets = [
            set(role_rng(seed, name, "val").sample(d, q)) if q else set()
            for d, q, name in zip(first, quotas, role_names, strict=True)
        ]
        excluded = val_sets
    else:
        raise ValueError(f"val_by must be 'conversation' or 'role', got {val_by!r}")
    kept = [
        array("I", (i for i in d if i not in v)) if v else d for d, v in zip(first, val_sets, strict=True)
    ]
    train_epochs: list[array] = []
    for e in range(epochs):
        epoch = array("I")
        for r, (pool, name) in enumerate(named):
            if e == 0:
                epoch.extend(kept[r])
            else:
                rest = array("I", (i for i in pool if i not in excluded[r])) if excluded[r] else pool
                epoch.extend(draw(rest, len(kept[r]), role_rng(seed + e, name)))
        random.Random(seed + e).shuffle(epoch)
        train_epochs.append(epoch)
    val = array("I", sorted(i for s in val_sets for i in s))
    return SamplingPlan(train_epochs, val)
