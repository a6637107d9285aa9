"""Series longer than the encoder's position embedding reaches are refused before training.

A ChatTS encoder with ``ts.use_position_embedding`` has one embedding row per point up to
``ts.max_sequence_length``: a longer series used to stop the run at its first batch with an
``IndexError`` inside the remote code (seen in a Ray run of the bundled 256-point sample on a model
with ``max_sequence_length`` 64). Now every such row is named at once, after tokenising.
"""

from __future__ import annotations

import pytest
from lfkit.plugin.timeseries.dataset import encode_payload
from lfkit.plugin.timeseries.processing import check_series_lengths
from lfkit.plugin.timeseries.spec import TimeSeriesSpec, spec_from_config


def _payload(lengths, source):
    return encode_payload([[0.5] * n for n in lengths], source)  # the tokenised rows' own form


def test_the_limit_comes_from_the_config_only_with_a_position_embedding():
    base = {"ts_token_start_index": 5, "ts_token_end_index": 6}
    ts = {"patch_size": 16, "max_sequence_length": 4096, "use_position_embedding": True}
    positional = {**base, "ts": ts}
    assert spec_from_config(positional, "cfg").max_length == 4096
    older = {**base, "ts": {"patch_size": 16, "max_length": 2048, "use_position_embedding": True}}
    assert spec_from_config(older, "cfg").max_length == 2048
    plain = {**base, "ts": {"patch_size": 16, "max_sequence_length": 4096}}
    assert spec_from_config(plain, "cfg").max_length is None  # an MLP alone takes any length


def test_every_too_long_row_is_named_at_once_with_the_fix():
    spec = TimeSeriesSpec(5, 6, patch_size=4, max_length=64)
    payloads = [
        _payload([10], "a.jsonl:1"),
        "",  # a text-only row
        _payload([64, 65], "a.jsonl:3"),
        _payload([300], "a.jsonl:4"),
    ]
    with pytest.raises(ValueError) as err:
        check_series_lengths(payloads, spec, "training")
    message = str(err.value)
    assert message.startswith("2 of 4 ChatTS training rows have a series longer than")
    assert "a.jsonl:3 (65 points)" in message and "a.jsonl:4 (300 points)" in message
    assert "a.jsonl:1" not in message and "--max-series-length 64" in message


def test_rows_within_the_limit_or_without_one_pass():
    check_series_lengths([_payload([64], "a.jsonl:1")], TimeSeriesSpec(5, 6, 4, 64), "training")
    check_series_lengths([_payload([5000], "a.jsonl:1")], TimeSeriesSpec(5, 6, 4, None), "training")
