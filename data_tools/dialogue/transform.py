"""From a raw record to lfkit's conversation: the registry of dialogue layouts.

:func:`to_conversation` is what the conversion engine calls for every parsed record. The
layout is picked by the record's turn list (``messages``, ``conversations``,
``conversation``) or Alpaca's ``instruction``, after preference and KTO records are refused
(:mod:`.layouts.preference`); the per-character layout is a property of the file (its
:class:`~.layouts.common.Context`), and tool use and media are read inside each layout.
Adding a layout: one module in :mod:`.layouts` with a ``transform(record, ctx)`` and a line in
:data:`LAYOUTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lfkit.data_tools.core.records import RecordError, SourceLine, parse_record
from lfkit.data_tools.dialogue.fastpath import fast_conversation
from lfkit.data_tools.dialogue.layouts import alpaca, openai, pippa, preference, sharegpt
from lfkit.data_tools.dialogue.layouts.common import Context
from lfkit.data_tools.dialogue.model import Conversation
from lfkit.data_tools.dialogue.render import render


@dataclass(frozen=True)
class Layout:
    """A record layout: the key of its turn list and its transform."""

    name: str
    key: str
    transform: Callable[[dict[str, Any], Context], Conversation]


LAYOUTS = (
    Layout("openai", openai.KEY, openai.transform),
    Layout("sharegpt", sharegpt.KEY, sharegpt.transform),
    Layout("pippa", pippa.KEY, pippa.transform),
    Layout("alpaca", alpaca.KEY, alpaca.transform),
)


def layout_of(record: dict[str, Any]) -> Layout:
    """The layout of a record (the first whose key it has), or the reject that says why none.

    Preference and KTO records are refused here (:mod:`.layouts.preference`), whatever layout
    their turns are in.
    """
    preference.refuse(record)
    for layout in LAYOUTS:
        if layout.key in record:
            return layout
    hint = ""
    if isinstance(record.get("text"), str):
        hint = " ('text' alone is pretraining text: LlamaFactory's stage pt reads such a file as it is)"
    elif ("mes" in record and "is_user" in record) or "chat_metadata" in record:
        hint = (
            " (a line of a SillyTavern chat file, one message per line and one chat per file: not read"
            " yet; write each chat as one record of 'messages')"
        )
    raise RecordError(
        "missing_messages",
        "record has no 'messages' (OpenAI), 'conversations' (ShareGPT), 'conversation' (PIPPA) list"
        f" or 'instruction' (Alpaca){hint}",
        "messages",
    )


def to_conversation(record: dict[str, Any], ctx: Context, raw: bytes | None = None) -> Conversation:
    """The record as a :class:`Conversation`, or a :class:`RecordError` saying why not.

    ``raw``, the record's JSON text when the caller has it, lets the fast path skip checks.
    """
    fast = fast_conversation(record, ctx, raw)
    if fast is not None:
        return fast
    return layout_of(record).transform(record, ctx)


def full_conversation(record: dict[str, Any], ctx: Context) -> Conversation:
    """The same without the fast path (what the fast path must agree with)."""
    return layout_of(record).transform(record, ctx)


def convert_line(line: SourceLine, ctx: Context, context_only: bool) -> tuple[Conversation, bytes, int]:
    """One input record all the way: parsed, transformed, rendered; or a :class:`RecordError`.

    Returns the conversation, its output rows (JSON Lines bytes) and its duplicate key
    (:func:`~lfkit.data_tools.dialogue.render.duplicate_key`). The second pass over picked
    records (on this machine or in a Ray task) goes through here; the full pass, which parses
    each record anyway to read its role, calls :func:`to_conversation` and ``render`` itself.
    """
    conv = to_conversation(parse_record(line), ctx, line.raw)
    rows, key = render(conv, context_only)
    return conv, rows, key
