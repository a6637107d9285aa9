"""Duplicate conversations: exact ones (whitespace aside) always, near ones on request.

**Exact.** Scraped role-play logs repeat conversations, and a repeated conversation can land
in both the training and the validation split. Before sampling, every conversation whose
content (system text, turns, tools, media; not its role) equals an earlier one's after
normalising whitespace (runs of spaces, tabs and line breaks are one space, ends stripped) is
dropped and written to the rejects file as ``duplicate`` with the line it repeats. Detection
is a sort of the 128-bit candidate keys (:func:`lfkit.data_tools.dialogue.render.duplicate_key`,
whitespace removed) with numpy, then each group of equal keys is confirmed on the normalised
text read back from the spools, so the result is exact and the first occurrence in input
order is the one kept.

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
from lfkit.data_tools.dialogue.scan import KEY_BYTES, ConversationIndex

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


def exact_duplicates(index: ConversationIndex, read_rows: Callable[[int], bytes]) -> list[Duplicate]:
    """Every conversation that repeats an earlier one (see the module docstring), in input order."""
    n = len(index)
    if n < 2:
        return []
    keys = np.frombuffer(bytes(index.keys), dtype=np.dtype((np.void, KEY_BYTES)))
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return []
    found: list[Duplicate] = []
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], n)
    for start, end in zip(starts, ends, strict=True):
        if end - start < 2:
            continue
        first: dict[str, int] = {}
        for i in sorted(int(j) for j in order[start:end]):
            text = orjson.dumps(normalised(row_content(read_rows(i))), option=orjson.OPT_SORT_KEYS).decode()
            earlier = first.setdefault(text, i)
            if earlier != i:
                found.append(Duplicate(i, earlier))
    return sorted(found, key=lambda d: d.index)


def signature(conv: Conversation) -> bytes:
    """The conversation's MinHash signature (``NUM_PERM`` uint64 values) of its turns' word 3-grams."""
    from datasketch import MinHash

    words = " ".join(m["content"] for m in conv.messages).lower().split()
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(max(1, len(words) - SHINGLE_WORDS + 1))}
    minhash = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, scheme=MINHASH_SCHEME)
    minhash.update_batch([s.encode("utf-8") for s in sorted(shingles)])
    return minhash.hashvalues.astype("<u8").tobytes()


def near_duplicates(
    index: ConversationIndex, keep: np.ndarray, threshold: float, work_dir: str
) -> list[Duplicate]:
    """Conversations (among ``keep``) nearly equal to an earlier kept one of the same role."""
    from datasketch import LeanMinHash, MinHashLSH

    signatures = _signatures(index, work_dir)
    roles = np.frombuffer(index.role_ids, dtype=np.uint32)
    found: list[Duplicate] = []
    for rid in np.unique(roles[keep]) if len(index) else []:
        members = np.flatnonzero((roles == rid) & keep)
        if len(members) < 2:
            continue
        lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        hashes: dict[int, LeanMinHash] = {}
        for i in (int(j) for j in members):
            minhash = LeanMinHash(seed=MINHASH_SEED, hashvalues=signatures[i], scheme=MINHASH_SCHEME)
            best = None
            for j in sorted(lsh.query(minhash)):
                similarity = minhash.jaccard(hashes[j])
                if similarity >= threshold:
                    best = Duplicate(i, j, round(float(similarity), 3))
                    break
            if best is not None:
                found.append(best)
                continue
            lsh.insert(i, minhash)
            hashes[i] = minhash
    return sorted(found, key=lambda d: d.index)


def _signatures(index: ConversationIndex, work_dir: str) -> np.ndarray:
    """All signatures as one (conversations, NUM_PERM) array, memory-mapped from the spools."""
    path = os.path.join(work_dir, "minhash.all")
    with open(path, "wb") as out:
        for name in index.signature_files:
            with open(name, "rb") as fh:
                while block := fh.read(1 << 20):
                    out.write(block)
    if not len(index):
        return np.zeros((0, NUM_PERM), dtype="<u8")
    return np.memmap(path, dtype="<u8", mode="r", shape=(len(index), NUM_PERM))
