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

:func:`duplicate_key` is the bucket key of exact-duplicate detection, computed for every
converted conversation, so it must cost little next to parsing one: a 64-bit hash of the number of
messages and of two short samples of the messages taken with all whitespace removed: their
first and their last :data:`SAMPLE_BYTES` bytes. Conversations that differ only in whitespace
therefore share a key; conversations that share a key are only *candidates*: ``"a b"`` and
``"ab"``, two conversations that differ only in the middle or only in the system text, collide
too.
:mod:`lfkit.data_tools.dialogue.dedup` confirms each group on the whitespace-normalised
content, so what is dropped is exact. (Hashing all of the content without its whitespace
would cost a full extra pass over every record, about as much as parsing it.)
"""

from __future__ import annotations

import re

import orjson
import xxhash
from lfkit.data_tools.dialogue.layouts.multimodal import KINDS, PLACEHOLDERS
from lfkit.data_tools.dialogue.model import TOOLS, USER, Conversation

_ROLE_SUFFIX = b',"role_id":'
_SYSTEM_KEY = b'],"system":'
SAMPLE_BYTES = 128
_WINDOW = SAMPLE_BYTES * 3 // 2  # raw bytes that hold SAMPLE_BYTES non-space ones in most text
_SHORT = 4 * _WINDOW  # messages up to this size are sampled whole
_BACKSLASH = ord("\\")
_ESCAPED_WHITESPACE = re.compile(rb"\\[nrt]")


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


def render(conv: Conversation, context_only: bool) -> tuple[bytes, int]:
    """The output rows (one or more lines) and the conversation's duplicate key."""
    if context_only:
        role = orjson.dumps(conv.role)
        rows = [orjson.dumps(s)[:-1] + _ROLE_SUFFIX + role + b"}\n" for s in samples(conv)]
        return b"".join(rows), duplicate_key(orjson.dumps(content(conv)), len(conv.messages))
    if conv.features:
        row = content(conv)
        row["role_id"] = conv.role
    else:  # the common case: one dict, one dumps
        row = {"messages": conv.messages, "system": conv.system, "role_id": conv.role}
    data = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
    return data, duplicate_key(data, len(conv.messages), role_suffix=True)


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


def duplicate_key(body: bytes, turns: int, role_suffix: bool = False) -> int:
    """A 64-bit integer: the bucket key of a rendered conversation (see the module docstring).

    ``body`` is the JSON of the content (``content(conv)``), or with ``role_suffix`` a
    rendered row whose final ``role_id`` is left out; ``turns`` is its number of messages.
    A short conversation is sampled whole (its first and last SAMPLE_BYTES); a long one takes
    one fixed window per sample and one pass over both; :func:`_sample` handles the rest
    (mostly blank texts, an escape cut by a window's edge) and gives the same samples.
    """
    end = body.rfind(_ROLE_SUFFIX) if role_suffix else len(body) - 1
    middle = body.rfind(_SYSTEM_KEY, 0, end)
    w = _WINDOW
    if middle <= _SHORT:
        part = body[:middle]
        if b"\\" in part:
            part = _ESCAPED_WHITESPACE.sub(b"", part)
        kept = part.translate(None, b" ")
        return _key(turns, kept[:SAMPLE_BYTES], kept[-SAMPLE_BYTES:])
    if body[w - 1] != _BACKSLASH and body[w - 1] != _BACKSLASH and body[middle - w - 1] != _BACKSLASH:
        raw = body[:w] + b"\x00" + body[middle - w : middle]
        if b"\\" in raw:
            raw = _ESCAPED_WHITESPACE.sub(b"", raw)
        head, _, tail = raw.translate(None, b" ").partition(b"\x00")
        if len(head) >= SAMPLE_BYTES and len(tail) >= SAMPLE_BYTES:
            return _key(turns, head[:SAMPLE_BYTES], tail[-SAMPLE_BYTES:])
    return _key(turns, _sample(body, 0, middle, front=True), _sample(body, 0, middle, front=False))


def _key(turns: int, head: bytes, tail: bytes) -> int:
    return xxhash.xxh3_64_intdigest(b"%d\x00%b\x00%b" % (turns, head, tail))


def _sample(data: bytes, start: int, end: int, front: bool) -> bytes:
    """The first (or last) SAMPLE_BYTES bytes of ``data[start:end]`` without whitespace.

    Whitespace is every space and the ``\\n`` / ``\\r`` / ``\\t`` escapes (orjson writes no raw
    tab or line break); a window never ends inside an escape, so the sample is the same
    whatever the whitespace of the text.
    """
    window = _WINDOW
    while True:
        if front:
            stop = min(end, start + window)
            if stop < end and data[stop - 1] == _BACKSLASH:
                stop += 1
            part = data[start:stop]
        else:
            first = max(start, end - window)
            if first > start and data[first - 1] == _BACKSLASH:
                first -= 1
            part = data[first:end]
        if b"\\" in part:
            part = _ESCAPED_WHITESPACE.sub(b"", part)
        kept = part.translate(None, b" ")
        if len(kept) >= SAMPLE_BYTES or window >= end - start:
            return kept[:SAMPLE_BYTES] if front else kept[-SAMPLE_BYTES:]
        window *= 4
