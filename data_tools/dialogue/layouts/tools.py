"""Tool use: tool schemas, tool calls and tool results, written as LlamaFactory trains on them.

LlamaFactory's sharegpt layout (its ``glaive_toolcall_en_demo``) has a ``tools`` column with
a JSON list of tool schemas, ``function_call`` turns whose content is the call as JSON
(``{"name": ..., "arguments": {...}}``, or a list of them for parallel calls) and
``observation`` turns with the tool's result. The template's ``FunctionFormatter``
(``data/formatter.py``) ``json.loads`` that content and ``json.dumps`` each call's
``arguments``, so arguments must be a JSON *object*, not OpenAI's JSON-encoded string (it
would be encoded twice); :func:`call_json` decodes such strings. Text the assistant says along
with its calls is kept in front of the calls wrapped in ``<tool_call>...</tool_call>``: the
formatter then keeps the text and formats the calls (the tool-call words of every 0.9.5
template except lfm2's). Consecutive tool results are joined as LlamaFactory's own OpenAI
converter joins them (``converter.py``), into one observation of several ``<tool_response>``
blocks.

Inputs understood:

* ShareGPT ``function_call`` / ``observation`` turns and a ``tools`` field (a JSON string, or
  the list itself);
* OpenAI assistant messages with ``tool_calls`` (``[{"id", "type": "function", "function":
  {"name", "arguments": "<JSON>"}}]``) or the legacy ``function_call``, and ``tool`` /
  ``function`` messages with the results; ``tools`` as OpenAI's ``[{"type": "function",
  "function": {...}}]`` or plain schemas (LlamaFactory's tool formatters accept both).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from lfkit.data_tools.core.records import RecordError

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
RESULTS_SEPARATOR = "\n</tool_response>\n<tool_response>\n"  # LlamaFactory's OpenAI converter


def tools_json(value: Any, field: str = "tools") -> str:
    """The ``tools`` column: a compact JSON list of tool schemas, ``""`` for none."""
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise RecordError("invalid_tools", f"'{field}' is not valid JSON: {err}", field) from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) and _tool_name(t) for t in value):
        raise RecordError(
            "invalid_tools",
            f"'{field}' must be a list of tool schemas, each with a name (or OpenAI's "
            '{"type": "function", "function": {"name": ...}})',
            field,
        )
    _check_finite(value, field)
    return orjson.dumps(value).decode() if value else ""


def _tool_name(tool: dict[str, Any]) -> Any:
    function = tool.get("function")
    if tool.get("type") == "function" and isinstance(function, dict):
        return isinstance(function.get("name"), str) and function["name"]
    return isinstance(tool.get("name"), str) and tool["name"]


def call_json(value: Any, field: str) -> str:
    """One ``function_call`` turn's content from a call or list of calls (parsed or JSON text)."""
    calls, is_list = read_calls(value, field)
    return calls_json(calls if is_list else calls[0])


def read_calls(value: Any, field: str) -> tuple[list[dict[str, Any]], bool]:
    """The ``{name, arguments}`` calls in a call or list of calls (parsed or JSON text), and
    whether it was a list (a JSON list stays a list in the output, even of one call)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise RecordError("invalid_tool_call", f"tool call is not valid JSON: {err}", field) from None
    is_list = isinstance(value, list)
    calls = value if is_list else [value]
    if not calls:
        raise RecordError("invalid_tool_call", "tool call list is empty", field)
    return [_call(call, f"{field}[{i}]" if is_list else field) for i, call in enumerate(calls)], is_list


def calls_json(calls: dict[str, Any] | list[dict[str, Any]]) -> str:
    """A ``function_call`` turn's content: one call, or a list of parallel calls, as JSON."""
    return orjson.dumps(calls).decode()


def _call(call: Any, field: str) -> dict[str, Any]:
    if isinstance(call, dict) and call.get("type") == "function" and isinstance(call.get("function"), dict):
        call = call["function"]  # an OpenAI tool_calls entry
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise RecordError("invalid_tool_call", "a tool call needs a 'name' and 'arguments'", field)
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI encodes the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as err:
            raise RecordError(
                "invalid_tool_call", f"the arguments of tool call {call['name']!r} are not JSON: {err}", field
            ) from None
    if not isinstance(arguments, dict):
        raise RecordError(
            "invalid_tool_call", f"the arguments of tool call {call['name']!r} must be an object", field
        )
    _check_finite(arguments, field)
    return {"name": call["name"], "arguments": arguments}


def openai_calls(message: dict[str, Any], field: str) -> str | None:
    """The calls of an OpenAI assistant message (``tool_calls`` or ``function_call``), else None."""
    calls = message.get("tool_calls")
    if calls:
        if not isinstance(calls, list):
            raise RecordError("invalid_tool_call", "'tool_calls' must be a list", f"{field}.tool_calls")
        return call_json(calls if len(calls) > 1 else calls[0], f"{field}.tool_calls")
    legacy = message.get("function_call")
    if legacy:
        return call_json(legacy, f"{field}.function_call")
    return None


def with_text(text: str, calls: str) -> str:
    """Calls preceded by what the assistant said with them (see the module docstring)."""
    return f"{text}{TOOL_CALL_OPEN}{calls}{TOOL_CALL_CLOSE}" if text.strip() else calls


def merge_calls(first: str, second: str) -> str:
    """Two consecutive ``function_call`` contents as one (parallel calls: a JSON list)."""
    text, calls = _split_text(first)
    more_text, more = _split_text(second)
    merged = _as_list(calls) + _as_list(more)
    return with_text(text + more_text, calls_json(merged))


def _split_text(content: str) -> tuple[str, str]:
    if content.endswith(TOOL_CALL_CLOSE) and TOOL_CALL_OPEN in content:
        text, _, calls = content[: -len(TOOL_CALL_CLOSE)].rpartition(TOOL_CALL_OPEN)
        return text, calls
    return "", content


def _as_list(calls: str) -> list[Any]:
    value = json.loads(calls)
    return value if isinstance(value, list) else [value]


def merge_results(first: str, second: str) -> str:
    """Two consecutive tool results as one observation (LlamaFactory's OpenAI converter's join)."""
    return f"{first}{RESULTS_SEPARATOR}{second}"


def _check_finite(value: Any, field: str) -> None:
    """NaN or Infinity in a tool schema or call would be written as invalid JSON: reject it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise RecordError("non_finite_number", f"{item} in a tool schema or call is not JSON", field)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def result_text(result: Any) -> str:
    """A structured tool result (an object) as the JSON text an observation turn holds."""
    _check_finite(result, "tool result")
    return orjson.dumps(result).decode()
