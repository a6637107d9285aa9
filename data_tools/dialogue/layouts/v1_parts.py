"""LlamaFactory v1's assistant content parts: ``reasoning`` and ``tool_call``.

LlamaFactory 0.9.5 ships an experimental v1 data engine (``USE_V1=1``) whose demo files
(``data/v1_sft_demo.jsonl``, ``data/reason_tool_use_demo_50.jsonl``) are OpenAI-style
``messages`` whose content is a list of ``{"type", "value"}`` parts (``types.py`` in
``llamafactory/v1/utils``): ``text``, media (``image_url`` ...; :mod:`.multimodal`), and in
assistant turns ``reasoning`` and ``tool_call`` (one call as JSON text). The trainer lfkit's
datasets feed reads sharegpt text, so an assistant turn is written the way v1's own Qwen3
template renders it: the reasoning as ``<think>\\n...\\n</think>\\n\\n`` in front of the text
(what 0.9.5's reasoning templates read back as the thought), and its calls as the turn's tool
calls (:mod:`.tools`), the text and reasoning kept in front of them.
"""

from __future__ import annotations

from typing import Any

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.layouts import multimodal, tools

REASONING, TOOL_CALL = "reasoning", "tool_call"
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n\n"


def has_parts(content: Any) -> bool:
    """Whether an assistant turn's content holds reasoning or tool-call parts."""
    return isinstance(content, list) and any(
        isinstance(p, dict) and p.get("type") in (REASONING, TOOL_CALL) for p in content
    )


def assistant_turn(
    content: list[Any], field: str, base_dir: str, parts_media: multimodal.PartsMedia
) -> tuple[str, str | None]:
    """The turn's text (reasoning in front) and its calls as ``function_call`` JSON (None: no call)."""
    reasoning, texts, calls = [], [], []
    for i, part in enumerate(content):
        where = f"{field}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == REASONING:
            value = part.get("value", part.get("text"))
            if not isinstance(value, str):
                raise RecordError("non_text_content", "a reasoning part needs a 'value' string", where)
            reasoning.append(value)
        elif kind == TOOL_CALL:
            calls.extend(tools.read_calls(part.get("value"), where)[0])
        else:
            texts.append(multimodal.part_text(part, where, base_dir, parts_media))
    text = "".join(texts)
    thought = "".join(reasoning).strip("\n")
    if thought.strip():
        text = THINK_OPEN + thought + THINK_CLOSE + text.lstrip("\n")
    if not calls:
        return text, None
    return text, tools.calls_json(calls if len(calls) > 1 else calls[0])
