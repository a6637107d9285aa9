"""PIPPA layout (PygmalionAI's role-play logs).

``{"bot_id", "bot_name", "bot_greeting", "bot_description", "bot_definitions", "categories",
"submission_timestamp", "conversation": [{"message", "is_human"}]}``. The persona is
``bot_description`` then ``bot_definitions``, with ``{{char}}`` replaced by ``bot_name`` and
``{{user}}`` by ``--user-name`` (default ``User``) there and in the messages (a record that
uses ``{{char}}`` without a ``bot_name`` is rejected: ``missing_character_name``). The role is
``bot_id``, needed only when sampling needs roles. The conversation opens with the bot's
greeting, which moves into the system text (see :mod:`lfkit.data_tools.dialogue.build`).
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.build import build_conversation
from lfkit.data_tools.dialogue.layouts import multimodal
from lfkit.data_tools.dialogue.layouts.common import Context, role_of, text_field, turn_list
from lfkit.data_tools.dialogue.model import ASSISTANT, USER, Conversation, RawTurn

KEY = "conversation"
ROLE_KEY = "bot_id"  # the role when no --role-key is given


def transform(record: dict[str, Any], ctx: Context) -> Conversation:
    """One PIPPA record as a :class:`Conversation`, or a RecordError."""
    raw = turn_list(record[KEY], KEY)
    role = role_of(record, ctx, default_key=ROLE_KEY)
    persona = [text_field(record, "bot_description"), text_field(record, "bot_definitions")]
    name = text_field(record, "bot_name").strip() or ctx.character
    turns = [_turn(t, i, ctx) for i, t in enumerate(raw)]
    return build_conversation(
        role=role,
        system=persona,
        turns=turns,
        key=KEY,
        policy=ctx.policy,
        character=name,
        substitute=True,
        character_field="bot_name",
    )


def _turn(turn: Any, i: int, ctx: Context) -> RawTurn:
    where = f"{KEY}[{i}]"
    if not isinstance(turn, dict):
        raise RecordError("invalid_turn", f"turn must be an object, got {type(turn).__name__}", where)
    is_human = turn.get("is_human")
    if not isinstance(is_human, bool):
        raise RecordError(
            "unknown_speaker_role", f"'is_human' must be true or false, got {is_human!r}", f"{where}.is_human"
        )
    if "message" not in turn:
        raise RecordError("missing_content", "turn has no 'message' field", f"{where}.message")
    field = f"{where}.message"
    text = multimodal.content_text(turn["message"], field, ctx.base_dir, multimodal.PartsMedia())
    if not text.strip():
        raise RecordError("empty_turn", "turn content is empty", field)
    return RawTurn(USER if is_human else ASSISTANT, text, where)
