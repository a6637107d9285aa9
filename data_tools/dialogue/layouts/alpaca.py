"""Alpaca layout, LlamaFactory's default format (its ``alpaca_en_demo`` and ``identity`` files).

``{"instruction", "input"?, "output", "system"?, "history"?: [[prompt, response], ...]}``, plus
the optional ``tools`` and media columns of the other layouts. Read exactly as LlamaFactory's
``AlpacaDatasetConverter`` reads it (``data/converter.py``): the ``history`` pairs come first as
user/assistant turns, then one user turn of the ``instruction`` and the ``input`` joined by a
newline (an empty one left out), then the ``output``. An ``output`` that is not text (a list of
responses) is a preference record (:mod:`.preference`), refused before this transform runs.
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.layouts import multimodal
from lfkit.data_tools.dialogue.layouts.common import Context, record_conversation, role_of, text_field
from lfkit.data_tools.dialogue.model import ASSISTANT, USER, Conversation, RawTurn

KEY = "instruction"


def transform(record: dict[str, Any], ctx: Context) -> Conversation:
    """One Alpaca-layout record as a :class:`Conversation`, or a RecordError."""
    role = role_of(record, ctx)
    system = text_field(record, "system")
    parts_media = multimodal.PartsMedia()
    turns = _history(record.get("history"), ctx, parts_media)
    query = [text_field(record, KEY), text_field(record, "input")]
    prompt = "\n".join(q for q in query if q)
    if not prompt.strip():
        raise RecordError("empty_turn", "'instruction' and 'input' are both empty", KEY)
    turns.append(RawTurn(USER, prompt, KEY))
    if record.get("output") is None:
        raise RecordError("no_assistant_turn", "record has no 'output' to learn from", "output")
    output = multimodal.content_text(record["output"], "output", ctx.base_dir, parts_media)
    if not output.strip():
        raise RecordError("empty_turn", "'output' is empty", "output")
    turns.append(RawTurn(ASSISTANT, output, "output"))
    return record_conversation(record, ctx, KEY, role, system, turns, parts_media)


def _history(value: Any, ctx: Context, parts_media: multimodal.PartsMedia) -> list[RawTurn]:
    """The ``history`` pairs as turns (LlamaFactory skips a history that is not a list)."""
    if value is None or value == []:
        return []
    if not isinstance(value, list):
        raise RecordError(
            "invalid_turn",
            f"'history' must be a list of [prompt, response] pairs, got {type(value).__name__}",
            "history",
        )
    turns = []
    for i, pair in enumerate(value):
        where = f"history[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise RecordError("invalid_turn", "a history entry must be a [prompt, response] pair", where)
        for speaker, text, j in ((USER, pair[0], 0), (ASSISTANT, pair[1], 1)):
            field = f"{where}[{j}]"
            content = multimodal.content_text(text, field, ctx.base_dir, parts_media)
            if not content.strip():
                raise RecordError("empty_turn", "turn content is empty", field)
            turns.append(RawTurn(speaker, content, field))
    return turns
