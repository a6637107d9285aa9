"""A conversation as LlamaFactory sharegpt rows (JSON Lines bytes), and its duplicate key.

Each row is ``{"messages": [{"role", "content"}], "system": str, "tools"?: str,
"images"? / "videos"? / "audios"?: [path], "role_id": str}``; the optional keys appear only
when the conversation has them (the writer fills them in for the rest of a split that
registers them, see :mod:`lfkit.data_tools.core.output`). ``role_id`` is provenance:
LlamaFactory reads only the registered columns.

``context_only`` cuts a conversation into one sample per user turn: the persona and that
turn with everything the assistant does to answer it (its tool calls and their results
included), without the earlier turns. Each sample keeps the tools and exactly the media whose
placeholders it contains.

:func:`duplicate_key` is the candidate key of exact-duplicate detection: a 128-bit hash of
the content (everything but the role) with all ASCII whitespace removed, so conversations
that differ only in whitespace share it. Removing whitespace also merges texts that differ in
*where* they have whitespace (``"a b"`` / ``"ab"``), so equal keys are only candidates: see
:mod:`lfkit.data_tools.dialogue.dedup`, which confirms them on the whitespace-normalised text.
"""

from __future__ import annotations

import re

import orjson
import xxhash
from lfkit.data_tools.dialogue.layouts.multimodal import KINDS, PLACEHOLDERS
from lfkit.data_tools.dialogue.model import TOOLS, USER, Conversation

_ROLE_SUFFIX = b',"role_id":'
_ESCAPED_WHITESPACE = re.compile(rb"\\[nrt]")
_WHITESPACE = b" \t\r\n"


def content(conv: Conversation) -> dict:
    """The output columns of a whole conversation, without ``role_id``."""
    row: dict = {"messages": conv.messages, "system": conv.system}
    if conv.features:  # rare: tools or media
        if conv.features & TOOLS:
            row["tools"] = conv.tools
        for kind in KINDS:
            files = getattr(conv.media, kind)
            if files:
                row[kind] = list(files)
    return row


def render(conv: Conversation, context_only: bool) -> tuple[bytes, bytes]:
    """The output rows (one or more lines) and the conversation's duplicate key."""
    if conv.features:
        body = orjson.dumps(content(conv))
    else:
        body = orjson.dumps({"messages": conv.messages, "system": conv.system})
    key = duplicate_key(body)
    role = orjson.dumps(conv.role)
    if not context_only:
        return b"".join((body[:-1], _ROLE_SUFFIX, role, b"}\n")), key
    rows = []
    for sample in samples(conv):
        rows.append(orjson.dumps(sample)[:-1] + _ROLE_SUFFIX + role + b"}\n")
    return b"".join(rows), key


def samples(conv: Conversation) -> list[dict]:
    """The ``context_only`` samples of a conversation (see the module docstring)."""
    base = content(conv)
    cuts = [i for i, m in enumerate(conv.messages) if m["role"] == USER] + [len(conv.messages)]
    if cuts[0] != 0:  # starts with a tool result? cannot happen after build; keep it whole
        cuts.insert(0, 0)
    pending = {kind: list(base.get(kind, ())) for kind in KINDS}
    out = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        part = conv.messages[start:end]
        sample = {**base, "messages": part}
        for kind in KINDS:
            if kind in base:
                n = sum(m["content"].count(PLACEHOLDERS[kind]) for m in part)
                sample[kind], pending[kind] = pending[kind][:n], pending[kind][n:]
        out.append(sample)
    return out


def duplicate_key(body: bytes) -> bytes:
    """16 bytes: the hash of ``body`` (JSON of the content) without any ASCII whitespace."""
    if b"\\" in body:
        body = _ESCAPED_WHITESPACE.sub(b"", body)
    return xxhash.xxh3_128_digest(body.translate(None, _WHITESPACE))
