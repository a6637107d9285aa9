"""From a raw record to lfkit's conversation: the registry of dialogue layouts.

:func:`to_conversation` is what the conversion engine calls for every parsed record. The
layout is picked by the record's turn list (``messages``, ``conversations``,
``conversation``); the per-character layout is a property of the file (its
:class:`~.layouts.common.Context`), and tool use and media are read inside each layout.
Adding a layout: one module in :mod:`.layouts` with a ``transform(record, ctx)`` and a line in
:data:`LAYOUTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.fastpath import fast_conversation
from lfkit.data_tools.dialogue.layouts import openai, pippa, sharegpt
from lfkit.data_tools.dialogue.layouts.common import Context
from lfkit.data_tools.dialogue.model import Conversation


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
)


def layout_of(record: dict[str, Any]) -> Layout:
    """The layout of a record (the first whose turn list it has), or a ``missing_messages`` reject."""
    for layout in LAYOUTS:
        if layout.key in record:
            return layout
    raise RecordError(
        "missing_messages",
        "record has no 'messages' (OpenAI), 'conversations' (ShareGPT) or 'conversation' (PIPPA) list",
        "messages",
    )


def to_conversation(record: dict[str, Any], ctx: Context) -> Conversation:
    """The record as a :class:`Conversation`, or a :class:`RecordError` saying why not."""
    fast = fast_conversation(record, ctx)
    if fast is not None:
        return fast
    return layout_of(record).transform(record, ctx)


def full_conversation(record: dict[str, Any], ctx: Context) -> Conversation:
    """The same without the fast path (what the fast path must agree with)."""
    return layout_of(record).transform(record, ctx)
