"""ShareGPT layout: ``{"conversations": [{"from", "value"}], "system"?, "tools"?, "images"?}``.

Speakers ``human`` / ``gpt`` / ``system``, and for tool use LlamaFactory's ``function_call``
(the call as JSON) and ``observation`` (the tool's result) with the tool schemas in
``tools`` (LlamaFactory's ``glaive_toolcall_en_demo`` layout, see :mod:`.tools`). Turns
written with ``role`` / ``content`` keys are read too.
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.dialogue.build import build_conversation
from lfkit.data_tools.dialogue.layouts import multimodal, tools
from lfkit.data_tools.dialogue.layouts.common import Context, read_turns, role_of, text_field, turn_list
from lfkit.data_tools.dialogue.model import Conversation

KEY = "conversations"


def transform(record: dict[str, Any], ctx: Context) -> Conversation:
    """One ShareGPT-layout record as a :class:`Conversation`, or a RecordError."""
    raw = turn_list(record[KEY], KEY)
    role = role_of(record, ctx)
    system = text_field(record, "system")
    parts_media = multimodal.PartsMedia()
    turns = read_turns(raw, KEY, "from", "value", ctx, parts_media)
    return build_conversation(
        role=role,
        system=[system],
        turns=turns,
        key=KEY,
        policy=ctx.policy,
        character=ctx.character,
        substitute=ctx.character is not None,
        character_field="file name",
        tools_json=tools.tools_json(record.get("tools")),
        media=multimodal.media_columns(record, ctx.base_dir, parts_media),
    )
