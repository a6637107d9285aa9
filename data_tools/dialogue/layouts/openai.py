"""OpenAI chat layout: ``{"messages": [{"role", "content"}], "system"?, "tools"?, "images"?}``.

Roles ``system`` / ``developer`` (OpenAI's newer name for system), ``user``, ``assistant``
and ``tool`` / ``function`` (tool results); an assistant message with ``tool_calls`` (its
``content`` may be null) is a tool call (:mod:`.tools`). ``content`` is a string or a list of
content parts (:mod:`.multimodal`). This is also LlamaFactory's multimodal demo layout
(``mllm_demo``: ``messages`` plus ``images``) and the layout lfkit writes, so its own output
converts again unchanged.
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.dialogue.build import build_conversation
from lfkit.data_tools.dialogue.layouts import multimodal, tools
from lfkit.data_tools.dialogue.layouts.common import Context, read_turns, role_of, text_field, turn_list
from lfkit.data_tools.dialogue.model import Conversation

KEY = "messages"


def transform(record: dict[str, Any], ctx: Context) -> Conversation:
    """One OpenAI-layout record as a :class:`Conversation`, or a RecordError."""
    raw = turn_list(record[KEY], KEY)
    role = role_of(record, ctx)
    system = text_field(record, "system")
    parts_media = multimodal.PartsMedia()
    turns = read_turns(raw, KEY, "role", "content", ctx, parts_media)
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
