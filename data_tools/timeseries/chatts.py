"""What ChatTS's processor and model do with a series, as the data tools need it for budgets.

The arithmetic itself (placeholder, normalisation, patch count) is the plugin's
(:mod:`lfkit.plugin.timeseries.encoding`), so the converter's budget and the training-time
expansion cannot drift apart. This module adds what only the data tools need:

* the scaling text of both processor generations. Paper-era ChatTS-14B writes
  ``[Value Offset: {-mean:.4f}|Value Scaling: {scale:.4f}]`` (``sp_encoding`` in
  NetManAIOps/ChatTS ``chatts/utils/encoding_utils.py``, and the plugin's fallback). The
  ChatTS-14B 0801 checkpoint's processor writes
  ``[offset=..|scaling=..|length=..|max=..|min=..|left=..|right=..]``, as printed in
  NetManAIOps/ChatTS ``demo/demo_lora.ipynb`` (the tests reproduce its two series exactly).
  The budget counts the longer, current form by default.
* :func:`check_markers`, which turns the plugin's placeholder check into a reject reason.

Why ``ceil(length / patch_size) - 2``: the model replaces the two placeholder tokens
``<ts>`` ``<ts/>`` by one embedding per patch (``patch_cnt = (valid_lengths + patch_size - 1)
// patch_size`` and the replacement of ``[placeholder, placeholder + 1]`` in NetManAIOps/ChatTS
``chatts/vllm/chatts_vllm.py``); a series no longer than one patch therefore *saves* a position.
"""

from __future__ import annotations

from collections.abc import Sequence

from lfkit.data_tools.core.records import RecordError
from lfkit.plugin.timeseries.encoding import (
    END_TOKEN,
    PLACEHOLDER,
    START_TOKEN,
    count_placeholders,
    normalise,
    patch_count,
    prompt_text,
)

__all__ = ["END_TOKEN", "PLACEHOLDER", "START_TOKEN", "patch_count"]

# ChatTS-14B's config ``ts.patch_size``; use --patch-size for a model configured otherwise.
DEFAULT_PATCH_SIZE = 16
SCALING_STYLES = ("0801", "paper")


def check_markers(text: str, field: str) -> int:
    """Number of ``<ts><ts/>`` pairs in ``text``; a ``<ts>``/``<ts/>`` outside a bare pair is a reject.

    Inline-value forms such as ``<ts>[1, 2]<ts/>`` would be mis-split by the processor.
    """
    try:
        return count_placeholders(text, field)
    except ValueError:
        raise RecordError(
            "ts_stray_marker",
            f"a {START_TOKEN} or {END_TOKEN} is not part of a bare {PLACEHOLDER} placeholder "
            "(values belong in the timeseries list, not in the text)",
            field,
        ) from None


def series_extra_positions(length: int, patch_size: int = DEFAULT_PATCH_SIZE) -> int:
    """Positions ONE series adds on top of its two placeholder tokens (-1 for a series of one patch).

    The plugin's ``encoding.extra_positions(lengths, patch_size)`` is the sum of this over a
    sample's series; the distinct name keeps the two signatures from being confused.
    """
    return patch_count(length, patch_size) - 2


def processor_text(series: Sequence[float], style: str = "0801") -> str:
    """What the ChatTS processor puts where the bare ``<ts><ts/>`` of ``series`` was."""
    if style == "paper":
        return prompt_text(series)
    if style != "0801":
        raise ValueError(f"unknown scaling style {style!r}; choose from {SCALING_STYLES}")
    _, offset, scale = normalise(series)
    return (
        f"[offset={offset:.4f}|scaling={scale:.4f}|length={len(series)}|max={max(series):.4f}"
        f"|min={min(series):.4f}|left={series[0]:.4f}|right={series[-1]:.4f}]{PLACEHOLDER}"
    )
