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

from lfkit.data_tools.dialogue.layouts.common import Context, chat_transform
from lfkit.data_tools.dialogue.model import Conversation

KEY = "messages"


def transform(record: dict[str, Any], ctx: Context) -> Conversation:
    """One OpenAI-layout record as a :class:`Conversation`, or a RecordError."""
    return chat_transform(record, ctx, KEY, "role", "content")
