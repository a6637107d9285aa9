"""The duplicate bucket key is the same for conversations that differ only in whitespace.

Exact-duplicate detection groups conversations by :func:`duplicate_key` and confirms each
group on the normalised text, so a key that differed between two whitespace variants would
silently miss a duplicate. Random texts (long and short, with escapes such as ``\\n`` near the
sample windows' edges) get random whitespace changes: runs widened, ends padded, spaces turned
into line breaks or tabs; the keys must match, and texts that differ otherwise must not.
"""

from __future__ import annotations

import random

import orjson
import pytest
from lfkit.data_tools.dialogue.dedup import normalised
from lfkit.data_tools.dialogue.render import duplicate_key

WORDS = ["alpha", "beta", "gamma", "delta", "lorem", "ipsum", "sword", "ship", "storm", "\\", "\\n", "x"]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def vary(rng: random.Random, value: str) -> str:
    out = []
    for char in value:
        if char == " ":
            out.append(rng.choice([" ", "  ", "\n", " \t ", "\r\n", " "]))
        else:
            out.append(char)
    return rng.choice(["", " ", "\n"]) + "".join(out) + rng.choice(["", "  ", "\n "])


def row(messages: list[str], system: str, role: str) -> bytes:
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(messages)]
    return orjson.dumps(
        {"messages": turns, "system": system, "role_id": role}, option=orjson.OPT_APPEND_NEWLINE
    )


@pytest.mark.parametrize("seed", range(40))
def test_whitespace_variants_share_the_key_and_other_texts_do_not(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([1, 5, 40, 200]) for _ in range(rng.choice([2, 4, 6]))]
    messages = [text(rng, n) for n in lengths]
    system = text(rng, rng.choice([0, 3, 60]))
    base = row(messages, system, "alice")
    variant = row([vary(rng, m) for m in messages], vary(rng, system), "bob")
    assert normalised(orjson.loads(base)["messages"]) == normalised(orjson.loads(variant)["messages"])
    assert duplicate_key(base, len(messages), role_suffix=True) == duplicate_key(variant, len(messages), True)
    changed = list(messages)
    changed[0] = "different start " + changed[0]
    assert duplicate_key(row(changed, system, "alice"), len(messages), True) != duplicate_key(
        base, len(messages), True
    )
