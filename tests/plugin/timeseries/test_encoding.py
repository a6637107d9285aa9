"""ChatTS's series arithmetic, and that the tiny model's processor follows the same contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lfkit.plugin.timeseries import encoding


def test_small_series_is_only_shifted_and_large_one_scaled_to_three():
    scaled, offset, scale = encoding.normalise([1.0, 2.0, 3.0])
    assert (offset, scale) == (-2.0, 1.0) and scaled.tolist() == [-1.0, 0.0, 1.0]
    scaled, offset, scale = encoding.normalise([0.0, 0.0, 0.0, 40.0])
    assert (
        offset == -10.0 and scale == pytest.approx(10.0) and float(np.abs(scaled).max()) == pytest.approx(3.0)
    )
    assert (
        encoding.prompt_text([0.0, 0.0, 0.0, 40.0])
        == "[Value Offset: -10.0000|Value Scaling: 10.0000]<ts><ts/>"
    )


@pytest.mark.parametrize("length", [1, 3, 4, 5, 16, 17])
def test_patch_count_and_extra_positions(length):
    assert encoding.patch_count(length, 4) == math.ceil(length / 4)
    assert encoding.extra_positions([length, 8], 4) == (math.ceil(length / 4) - 2) + 0


def test_encode_batch_interleaves_values_and_mask_and_zero_pads():
    out = encoding.encode_batch([[1.0, 2.0, 3.0], [5.0]])
    assert out.shape == (2, 6, 1) and out.dtype == torch.float32
    assert out[0, :, 0].tolist() == [-1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert out[1, :, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_tiny_processor_matches_chatts_rules(tmp_path):
    from lfkit.data_tools.timeseries.chatts import processor_text
    from transformers import AutoProcessor

    from lfkit.tiny_chatts import build_tiny_chatts

    model_dir = build_tiny_chatts(tmp_path / "m")
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    series = [[0.0, 0.0, 0.0, 40.0], [1.0, 2.0]]
    text = processor(text=["a <ts><ts/> b <ts><ts/>"], timeseries=series, tokenize=False)["text"][0]
    assert text == "a " + processor_text(series[0]) + " b " + processor_text(series[1])  # the 0801 form
    # ChatTS's processor hands the encoder float16 values
    assert torch.equal(processor.encode_timeseries(series), encoding.encode_batch(series).half())
    with pytest.raises(ValueError, match="Mismatch"):
        processor(text=["<ts><ts/><ts><ts/>"], timeseries=series[:1], tokenize=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,2,3", "must be a list of series"),
        ([[1.0], 5], "series 1 must be a list"),
        ([[1.0], []], "series 1 is empty"),
        ([[1.0, "x"]], "series 0 index 1 is not a number"),
        ([[1.0, float("nan")]], "series 0 index 1 is not finite"),
        ([[True]], "series 0 index 0 is not a number"),
    ],
)
def test_bad_series_are_refused_naming_where(value, message):
    with pytest.raises(ValueError, match=f"data.jsonl: row 4: field 'timeseries' {message}"):
        encoding.validate_series(value, "data.jsonl: row 4")


def test_lone_placeholder_token_is_refused():
    assert encoding.count_placeholders("a <ts><ts/> b <ts><ts/>", "x") == 2
    with pytest.raises(ValueError, match="outside a '<ts><ts/>' pair"):
        encoding.count_placeholders("a <ts> b <ts/>", "x")
