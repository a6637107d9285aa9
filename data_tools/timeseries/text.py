"""The ``--ts-format text`` form: each series written as compact text where its placeholder was.

This is how ChatTS's own evaluation feeds series to text-only LLMs
(``evaluation/evaluate_gpt_text_models.py``: the ``<ts><ts/>`` placeholder replaced by the
comma-joined values at two decimals), so a plain LLM fine-tuned on this form with stock
LlamaFactory is the fair text baseline for an encoder model trained on the same records.
Trailing zeros are dropped (``1.50`` -> ``1.5``) to save tokens; the values are not rescaled.
"""

from __future__ import annotations

from collections.abc import Sequence

from lfkit.data_tools.timeseries.chatts import PLACEHOLDER

DEFAULT_DECIMALS = 2


def format_value(value: float, decimals: int = DEFAULT_DECIMALS) -> str:
    """``value`` rounded to ``decimals`` places, without trailing zeros or a negative zero."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def series_as_text(series: Sequence[float], decimals: int = DEFAULT_DECIMALS) -> str:
    """A series as comma-joined compact numbers: ``1.5,2,-0.25``."""
    return ",".join(format_value(v, decimals) for v in series)


def render_text(
    messages: list[dict[str, str]], timeseries: list[list[float]], decimals: int = DEFAULT_DECIMALS
) -> list[dict[str, str]]:
    """Messages with the n-th ``<ts><ts/>`` (counted across all messages) replaced by series n.

    The caller has already checked that the placeholder count equals ``len(timeseries)``.
    """
    pending = iter(timeseries)
    out = []
    for message in messages:
        parts = message["content"].split(PLACEHOLDER)
        text = parts[0]
        for part in parts[1:]:
            text += series_as_text(next(pending), decimals) + part
        out.append({"role": message["role"], "content": text})
    return out
