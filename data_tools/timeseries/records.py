"""Validate one ChatTS-style record and turn it into a conversation plus its raw series.

Two input layouts are accepted:

* ChatTS single turn: ``{"input": str, "output": str, "timeseries": [[float, ...], ...]}``
  with an optional ``"system"`` string (the layout of ChatTS's and the training fork's data);
* multi turn: ``{"messages": [{"role", "content"}, ...], "system"?: str, "timeseries": [...]}``
  (or any other layout :func:`lfkit.data_tools.dialogue.transform.to_conversation` reads), where the
  series list covers the whole conversation in the order of the ``<ts><ts/>`` placeholders
  across the turns. Turn structure is checked by the dialogue converter's own validator, so
  both converters reject the same conversation faults with the same reasons.

Every problem raises :class:`~lfkit.data_tools.core.records.RecordError` with a stable ``reason`` and
the exact ``field`` (``timeseries[2][17]``, ``messages[3].content``), so the rejects file says
which series and which value are at fault. Values are checked here once; the writers trust a
:class:`TsSample`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from lfkit.data_tools.core.records import RecordError, SourceLine
from lfkit.data_tools.dialogue.build import STRICT
from lfkit.data_tools.dialogue.layouts.common import Context, LayoutSettings
from lfkit.data_tools.dialogue.model import ASSISTANT, USER
from lfkit.data_tools.dialogue.transform import to_conversation
from lfkit.data_tools.timeseries.chatts import PLACEHOLDER, check_markers

# Reasons specific to series, in the order they are checked.
TS_REASONS = (
    "ts_not_a_list",
    "ts_stray_marker",
    "ts_placeholder_outside_user_turn",
    "ts_placeholder_mismatch",
    "ts_ragged",
    "ts_empty_series",
    "ts_non_numeric",
    "ts_non_finite",
    "ts_series_too_long",
)


# Time-series records follow the plain rules: no merged turns, no greeting moved, one series list
_SETTINGS = LayoutSettings(policy=STRICT)


@dataclass(frozen=True)
class TsSample:
    """A valid record: system text, alternating user/assistant messages, and float series."""

    system: str
    messages: list[dict[str, str]]
    timeseries: list[list[float]]

    @property
    def turns(self) -> int:
        """Number of user/assistant exchanges."""
        return len(self.messages) // 2


def validate_record(
    record: dict[str, Any], line: SourceLine, max_series_length: int | None = None
) -> TsSample:
    """Check ``record`` (read from ``line``) and return its :class:`TsSample`, or raise RecordError."""
    system, messages, fields, dropped = _conversation(record, line)
    series = record.get("timeseries")
    if series is None:
        series = []
    if not isinstance(series, list):
        raise RecordError(
            "ts_not_a_list",
            f"timeseries must be a list of series (lists of numbers), got {_kind(series)}",
            "timeseries",
        )
    texts = [
        ("system", system, "system"),
        *((m["role"], m["content"], f) for m, f in zip(messages, fields, strict=True)),
    ]
    placeholders = 0
    for role, text, field in texts:
        found = check_markers(text, field)
        if role != USER and found:
            raise RecordError(
                "ts_placeholder_outside_user_turn",
                f"the {role} text contains {PLACEHOLDER}; series can only be given in user turns",
                field,
            )
        placeholders += found
    if placeholders + dropped != len(series):
        raise RecordError(
            "ts_placeholder_mismatch",
            f"{placeholders + dropped} {PLACEHOLDER} placeholder(s) in the text but {len(series)} series",
            "timeseries",
        )
    kept = series[:placeholders]
    values = [_series(s, i, max_series_length) for i, s in enumerate(kept)]
    return TsSample(system, messages, values)


def _series(raw: Any, i: int, max_len: int | None) -> list[float]:
    field = f"timeseries[{i}]"
    if not isinstance(raw, list):
        raise RecordError(
            "ts_ragged",
            f"series {i} is {_kind(raw)}, not a list: timeseries must be a list of series "
            "(one series is written [[v1, v2, ...]])",
            field,
        )
    if not raw:
        raise RecordError("ts_empty_series", f"series {i} is empty", field)
    out: list[float] = []
    for j, value in enumerate(raw):
        if isinstance(value, list):
            raise RecordError(
                "ts_ragged",
                f"series {i}, index {j} is a nested list; each series must be a flat list of numbers",
                f"{field}[{j}]",
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(
                "ts_non_numeric", f"series {i}, index {j}: {_show(value)} is not a number", f"{field}[{j}]"
            )
        number = float(value)
        if not math.isfinite(number):
            raise RecordError("ts_non_finite", f"series {i}, index {j} is {number}", f"{field}[{j}]")
        out.append(number)
    if max_len is not None and len(out) > max_len:
        raise RecordError(
            "ts_series_too_long",
            f"series {i} has {len(out)} values, more than --max-series-length {max_len}",
            field,
        )
    return out


def _conversation(
    record: dict[str, Any], line: SourceLine
) -> tuple[str, list[dict[str, str]], list[str], int]:
    """System text, messages, the input field of each message, and placeholders in trimmed turns."""
    if "input" in record or "output" in record:
        texts = []
        for key in ("input", "output"):
            value = record.get(key)
            if value is None:
                raise RecordError("missing_content", f"single-turn record has no '{key}'", key)
            if not isinstance(value, str):
                raise RecordError("non_text_content", f"'{key}' must be a string, got {_kind(value)}", key)
            if not value.strip():
                raise RecordError("empty_turn", f"'{key}' is empty", key)
            texts.append(value)
        system = record.get("system") or ""
        if not isinstance(system, str):
            raise RecordError("non_text_content", f"'system' must be a string, got {_kind(system)}", "system")
        messages = [{"role": USER, "content": texts[0]}, {"role": ASSISTANT, "content": texts[1]}]
        return system, messages, ["input", "output"], 0
    ctx = Context(line.path, "", None, _SETTINGS)
    try:
        conv = to_conversation(record, ctx)
    except RecordError as err:
        if err.reason == "missing_messages" and err.field == "messages" and "messages" not in record:
            raise RecordError(
                "missing_messages",
                "record has neither 'input'/'output' (ChatTS single turn) nor a 'messages' list",
                "messages",
            ) from None
        raise
    if conv.features:
        raise RecordError(
            "unsupported_turn",
            "time-series records take plain user/assistant turns (no tool calls, tools or media)",
            "messages",
        )
    messages = conv.messages
    key = (
        "messages"
        if "messages" in record
        else "conversations"
        if "conversations" in record
        else "conversation"
    )
    raw = record[key]
    # to_conversation drops leading system turns; map each kept turn back to its input index.
    trimmed = conv.notes.trimmed_user_turns
    first = len(raw) - len(messages) - trimmed
    fields = [f"{key}[{first + i}]" for i in range(len(messages))]
    dropped = 0
    if trimmed:  # a trailing user turn was trimmed: its series go with it
        dropped = json.dumps(raw[-1], ensure_ascii=False).count(PLACEHOLDER)
    return conv.system, messages, fields, dropped


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, float) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
