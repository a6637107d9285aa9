"""What the plugin needs to know about a ChatTS checkpoint, read from its own config.

The ``<ts>`` / ``<ts/>`` token ids differ between ChatTS-14B and ChatTS-8B, so they are never
hard-coded: they come from ``ts_token_start_index`` / ``ts_token_end_index`` in the
checkpoint's ``config.json`` and are checked against the tokenizer. The patch size comes from
``config.ts.patch_size``. The config is read as JSON (no remote code runs for this).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from lfkit.plugin.timeseries.encoding import END_TOKEN, START_TOKEN

ENCODER_ATTR = "ts_encoder"


@dataclass(frozen=True)
class TimeSeriesSpec:
    start_id: int
    end_id: int
    patch_size: int
    max_length: int | None = None
    """Longest series the encoder can place: ``ts.max_sequence_length`` (``ts.max_length`` in older
    configs) when the encoder has a position embedding, which has no row beyond it; None otherwise."""


@lru_cache(maxsize=8)
def _read_config(name_or_path: str) -> dict | None:
    from transformers.utils import cached_file

    try:
        path = cached_file(name_or_path, "config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def spec_from_config(config: dict | object, where: str) -> TimeSeriesSpec:
    """Build the spec from a config (dict or PretrainedConfig); errors name ``where``."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    start, end, ts = get("ts_token_start_index"), get("ts_token_end_index"), get("ts") or {}
    if start is None or end is None or "patch_size" not in ts:
        raise ValueError(
            f"{where}: not a ChatTS model: its config lacks ts_token_start_index, ts_token_end_index "
            "or ts.patch_size, so time series cannot be placed (use a ChatTS checkpoint)."
        )
    limit = ts.get("max_sequence_length", ts.get("max_length"))
    positional = bool(ts.get("use_position_embedding", False))
    max_length = int(limit) if positional and limit is not None else None
    return TimeSeriesSpec(int(start), int(end), int(ts["patch_size"]), max_length)


def spec_for_tokenizer(tokenizer) -> TimeSeriesSpec:
    """The spec of the model the tokenizer was loaded from, checked against the tokenizer."""
    name = tokenizer.name_or_path
    config = _read_config(name)
    if config is None:
        raise ValueError(f"{name}: cannot read config.json to find the time-series token ids.")
    spec = spec_from_config(config, f"{name}/config.json")
    ids = tokenizer.convert_tokens_to_ids([START_TOKEN, END_TOKEN])
    if ids != [spec.start_id, spec.end_id]:
        raise ValueError(
            f"{name}: tokenizer maps {START_TOKEN} {END_TOKEN} to {ids} but config.json says "
            f"ts_token_start_index={spec.start_id}, ts_token_end_index={spec.end_id}."
        )
    return spec


def is_timeseries_model(model) -> bool:
    """Whether ``model`` (possibly PEFT-wrapped) is a ChatTS-style model with a ts encoder."""
    config = getattr(model, "config", None)
    return getattr(config, "ts_token_start_index", None) is not None and any(
        name.split(".")[-1] == ENCODER_ATTR for name, _ in model.named_modules()
    )


def is_encoder_param(name: str) -> bool:
    """Whether a parameter name (plain, PEFT or modules_to_save form) belongs to the ts encoder."""
    return ENCODER_ATTR in name.split(".")
