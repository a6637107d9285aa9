"""ChatTS's series arithmetic: normalisation, prompt text, patch count and the padded tensor.

These are the rules of ChatTS's original processor (``sp_encoding`` in NetManAIOps/ChatTS
``chatts/utils/encoding_utils.py``): each series is shifted by its mean and, when some value
lies 3 or more away from it, divided by ``max|x - mean| / 3``; the offset and scaling are
written as ``[Value Offset: ..|Value Scaling: ..]`` right before the series' ``<ts><ts/>`` pair
(the current ChatTS-14B checkpoint's processor writes a longer
``[offset=..|scaling=..|length=..|max=..|min=..|left=..|right=..]`` text instead, see
:mod:`lfkit.data_tools.timeseries.chatts`); the encoder sees ``[value, 1]`` pairs flattened to
one column, zero-padded to the longest series of the batch, i.e. a ``[series, 2*max_len, 1]``
tensor whose odd rows are the mask; and a series of ``n`` values becomes
``ceil(n / patch_size)`` embeddings in place of its two placeholder tokens.

The plugin always prefers the checkpoint's own processor (loaded with trust_remote_code), so
real ChatTS checkpoints get the text they were trained with; these functions are the fallback
for a model that ships no processor, and the reference the tests hold the tiny model's
processor to. Pure numpy/torch, no LlamaFactory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PLACEHOLDER = "<ts><ts/>"
START_TOKEN = "<ts>"
END_TOKEN = "<ts/>"


def normalise(values: Sequence[float]) -> tuple[np.ndarray, float, float]:
    """Return ``(scaled, offset, scale)`` with ``scaled = (values + offset) / scale``."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(x))
    scaled = x - mean
    scale = 1.0
    if np.any(np.abs(scaled) >= 3.0):
        scale = float(np.max(np.abs(scaled)) / 3.0)
        scaled = scaled / scale
    return scaled, -mean, scale


def prompt_text(values: Sequence[float]) -> str:
    """What replaces a bare ``<ts><ts/>``: the original processor's offset/scaling prefix and the pair."""
    _, offset, scale = normalise(values)
    return f"[Value Offset: {offset:.4f}|Value Scaling: {scale:.4f}]{PLACEHOLDER}"


def patch_count(length: int, patch_size: int) -> int:
    """Number of encoder embeddings a series of ``length`` values becomes."""
    return math.ceil(length / patch_size)


def extra_positions(lengths: Sequence[int], patch_size: int) -> int:
    """How many positions the model's forward adds to the token sequence for these series.

    Each ``<ts><ts/>`` pair (2 tokens) becomes ``patch_count`` embeddings.
    """
    return sum(patch_count(n, patch_size) - 2 for n in lengths)


def encode_batch(series: Sequence[Sequence[float]]):
    """The ``[series, 2*max_len, 1]`` float32 value+mask tensor for ``series`` (normalised here)."""
    import torch

    if not series:
        raise ValueError("encode_batch needs at least one series.")
    max_len = max(len(s) for s in series)
    out = np.zeros((len(series), max_len, 2), dtype=np.float32)
    for i, s in enumerate(series):
        scaled, _, _ = normalise(s)
        out[i, : len(s), 0] = scaled
        out[i, : len(s), 1] = 1.0
    return torch.from_numpy(out.reshape(len(series), 2 * max_len, 1))


def validate_series(value, where: str) -> list[list[float]]:
    """Check a row's ``timeseries`` value and return it as a list of float lists.

    ``None`` or ``[]`` means the row has no series. Anything else must be a list of
    non-empty lists of finite numbers; the error names ``where``, the series and the index.
    """
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: field 'timeseries' must be a list of series, got {type(value).__name__}.")
    result = []
    for i, s in enumerate(value):
        if not isinstance(s, (list, tuple)):
            raise ValueError(
                f"{where}: field 'timeseries' series {i} must be a list of numbers, got {type(s).__name__}."
            )
        if len(s) == 0:
            raise ValueError(f"{where}: field 'timeseries' series {i} is empty.")
        floats = []
        for j, v in enumerate(s):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{where}: field 'timeseries' series {i} index {j} is not a number: {v!r}.")
            if not math.isfinite(v):
                raise ValueError(f"{where}: field 'timeseries' series {i} index {j} is not finite: {v!r}.")
            floats.append(float(v))
        result.append(floats)
    return result


def count_placeholders(text: str, where: str) -> int:
    """Count ``<ts><ts/>`` pairs in ``text``; a lone ``<ts>`` or ``<ts/>`` is an error."""
    pairs = text.count(PLACEHOLDER)
    rest = text.replace(PLACEHOLDER, "")
    if START_TOKEN in rest or END_TOKEN in rest:
        raise ValueError(
            f"{where}: a '{START_TOKEN}' or '{END_TOKEN}' appears outside a '{PLACEHOLDER}' pair."
        )
    return pairs
