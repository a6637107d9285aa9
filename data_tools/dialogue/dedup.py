"""Duplicate conversations: exact ones (whitespace aside) always, near ones on request.

**Exact.** Scraped role-play logs repeat conversations, and a repeated conversation can land
in both the training and the validation split, or twice in one. A conversation whose content
(system text, turns, tools, media; not its role) equals another's after normalising
whitespace (runs of spaces, tabs and line breaks are one space, ends stripped) is the same
conversation. Which records are compared depends on the conversion
(:mod:`lfkit.data_tools.dialogue.sampling`): the picks of the draw, each batch against
everything kept before it, in input order within a batch (:class:`ExactDedup`). A batch is
bucketed by a 64-bit key of two whitespace-free samples of each conversation
(:func:`lfkit.data_tools.dialogue.render.duplicate_key`) with a numpy sort, and only records
whose keys collide are compared on their normalised text, read back from the spools: what is
dropped is exact.

**Near.** The same conversation with small edits is common too (regenerated replies, fixed
typos). With ``--dedup near`` each conversation gets a MinHash signature of its turns' word
3-grams (datasketch, :data:`NUM_PERM` permutations; the persona is left out, since every
conversation of a role shares it), and within each role a MinHash LSH index finds earlier
conversations whose estimated Jaccard similarity is at least the threshold; those are
dropped as ``near_duplicate``. Why datasketch: a well-kept implementation of exactly this
(MinHash, LeanMinHash, LSH with the banding chosen for a threshold), rather than hand-written
hashing. ``lfkit data stats dialogue --dedup near`` reports the counts without dropping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from lfkit.data_tools.dialogue.model import Conversation

NUM_PERM = 64
SHINGLE_WORDS = 3
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"  # datasketch 2's default, named so signatures and LSH agree
DEFAULT_NEAR_THRESHOLD = 0.8
_WS_RUN = re.compile(r"[ \t\r\n]+")


@dataclass(frozen=True)
class Duplicate:
    """Conversation ``index`` repeats conversation ``of`` (both positions in the index)."""

    index: int
    of: int
    similarity: float = 1.0  # 1.0 for exact duplicates, the Jaccard estimate for near ones


def normalised(value: Any) -> Any:
    """``value`` with whitespace normalised in every string (the definition of "the same")."""
    if isinstance(value, str):
        return _WS_RUN.sub(" ", value).strip(" ")
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    return value


def row_content(rows: bytes) -> Any:
    """The content of a conversation's rendered rows (one row, or its context-only samples)."""
    samples = [orjson.loads(line) for line in rows.splitlines()]
    for sample in samples:
        sample.pop("role_id", None)
    if len(samples) == 1:
        return samples[0]
    merged = dict(samples[0])
    merged["messages"] = [m for s in samples for m in s["messages"]]
    for kind in ("images", "videos", "audios"):
        if kind in merged:
            merged[kind] = [p for s in samples for p in s.get(kind, [])]
    return merged


class ExactDedup:
    """Exact duplicates among the records converted so far, checked a batch at a time.

    :meth:`check` takes newly converted records in input order: one whose key and
    whitespace-normalised content equal a record kept earlier (in an earlier batch, or earlier
    in this one) is a duplicate of it; every other one is kept. The keys of the kept records
    stay in a sorted numpy array (8 bytes each); the content of a record is read (``rows``)
    only when its key collides with another's.
    """

    def __init__(self, rows: Callable[[int], bytes]) -> None:
        self._rows = rows
        self._keys = np.zeros(0, dtype=np.uint64)  # sorted
        self._ids = np.zeros(0, dtype=np.int64)  # the kept record of each key, in the same order
        self._texts: dict[int, str] = {}

    def check(self, ids: np.ndarray, keys: np.ndarray) -> list[Duplicate]:
        """Duplicates among ``ids`` (records in input order, ``keys`` their duplicate keys)."""
        if not len(ids):
            return []
        keys = keys.astype(np.uint64)
        at = np.searchsorted(self._keys, keys)
        if len(self._keys):
            seen = (at < len(self._keys)) & (self._keys[np.minimum(at, len(self._keys) - 1)] == keys)
        else:
            seen = np.zeros(len(keys), dtype=bool)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        repeated = np.zeros(len(ids), dtype=bool)
        same = ordered[1:] == ordered[:-1]
        repeated[order[1:][same]] = True
        repeated[order[:-1][same]] = True
        found: list[Duplicate] = []
        suspects = np.flatnonzero(seen | repeated)
        if len(suspects):
            kept_by_key: dict[int, list[int]] = {}
            for j in suspects.tolist():  # rare: only records whose key collides
                key = int(keys[j])
                if seen[j] and key not in kept_by_key:
                    lo = int(at[j])
                    hi = int(np.searchsorted(self._keys, keys[j], side="right"))
                    kept_by_key[key] = self._ids[lo:hi].tolist()
                earlier = kept_by_key.setdefault(key, [])
                record = int(ids[j])
                text = self._text(record)
                match = next((k for k in earlier if self._text(k) == text), None)
                if match is not None:
                    found.append(Duplicate(record, match))
                else:
                    earlier.append(record)
        dropped = {d.index for d in found}
        new = (
            np.array([i not in dropped for i in ids.tolist()], dtype=bool)
            if dropped
            else np.ones(len(ids), bool)
        )
        merged_keys = np.concatenate((self._keys, keys[new]))
        merged_ids = np.concatenate((self._ids, ids[new].astype(np.int64)))
        order = np.argsort(merged_keys, kind="stable")
        self._keys, self._ids = merged_keys[order], merged_ids[order]
        return found

    def _text(self, record: int) -> str:
        text = self._texts.get(record)
        if text is None:
            text = orjson.dumps(
                normalised(row_content(self._rows(record))), option=orjson.OPT_SORT_KEYS
            ).decode()
            self._texts[record] = text
        return text


def signature(conv: Conversation) -> bytes:
    """The conversation's MinHash signature (``NUM_PERM`` uint64 values) of its turns' word 3-grams."""
    from datasketch import MinHash

    words = " ".join(m["content"] for m in conv.messages).lower().split()
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    minhash = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, scheme=MINHASH_SCHEME)
    minhash.update_batch([s.encode("utf-8") for s in sorted(shingles)])
    return minhash.hashvalues.astype("<u8").tobytes()


def near_duplicates(
    roles: np.ndarray, signatures: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """Records nearly equal to an earlier one of the same role (positions in the given order).

    ``roles`` and ``signatures`` (one MinHash row each) describe the candidate records in input
    order; returns ``(record, earlier record, estimated similarity)`` for each near duplicate,
    comparing each record with the earlier ones of its role that were not dropped.
    """
    from datasketch import LeanMinHash, MinHashLSH

    found: list[tuple[int, int, float]] = []
    if not len(roles):
        return found
    order = np.argsort(roles, kind="stable")
    bounds = np.flatnonzero(np.concatenate(([True], roles[order][1:] != roles[order][:-1], [True])))
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = order[start:stop]
        if len(members) < 2:
            continue
        lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        hashes: dict[int, LeanMinHash] = {}
        for i in members.tolist():
            minhash = LeanMinHash(seed=MINHASH_SEED, hashvalues=signatures[i], scheme=MINHASH_SCHEME)
            best = None
            for j in sorted(lsh.query(minhash)):
                similarity = minhash.jaccard(hashes[j])
                if similarity >= threshold:
                    best = (i, j, round(float(similarity), 3))
                    break
            if best is not None:
                found.append(best)
                continue
            lsh.insert(i, minhash)
            hashes[i] = minhash
    return sorted(found)


def read_signatures(paths: list[str], work_dir: str) -> np.ndarray:
    """The MinHash signatures spooled in ``paths`` (in order) as one memory-mapped array."""
    path = os.path.join(work_dir, "minhash.all")
    with open(path, "wb") as out:
        for name in paths:
            with open(name, "rb") as fh:
                while block := fh.read(1 << 20):
                    out.write(block)
    rows = os.path.getsize(path) // (8 * NUM_PERM)
    if not rows:
        return np.zeros((0, NUM_PERM), dtype="<u8")
    return np.memmap(path, dtype="<u8", mode="r", shape=(rows, NUM_PERM))
