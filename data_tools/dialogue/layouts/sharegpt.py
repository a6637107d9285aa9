"""ShareGPT layout: ``{"conversations": [{"from", "value"}], "system"?, "tools"?, "images"?}``.

Speakers ``human`` / ``gpt`` / ``system``, and for tool use LlamaFactory's ``function_call``
(the call as JSON) and ``observation`` (the tool's result) with the tool schemas in
``tools`` (LlamaFactory's ``glaive_toolcall_en_demo`` layout, see :mod:`.tools`). Turns
written with ``role`` / ``content`` keys are read too.
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.dialogue.layouts.common import Context, chat_transform
from lfkit.data_tools.dialogue.model import Conversation

KEY = "conversations"


def transform(record: dict[str, Any], ctx: Context) -> Conversation:
    """One ShareGPT-layout record as a :class:`Conversation`, or a RecordError."""
    return chat_transform(record, ctx, KEY, "from", "value")
