"""The sequence budget with a real tokenizer and LlamaFactory's own template, against a simulation.

The simulation does what ChatTS's model does to the token ids: each ``<ts>`` ``<ts/>`` pair is
replaced by ``ceil(length / patch_size)`` patch positions. The budget must equal the length of
the expanded sequence for every patch size, including series shorter than one patch.
"""

from __future__ import annotations

import json
import math

import pytest
from lfkit.data_tools.core.records import SourceLine
from lfkit.data_tools.timeseries import chatts as timeseries_chatts
from lfkit.data_tools.timeseries.budget import TemplateTokens, sample_budget, with_scaling_text
from lfkit.data_tools.timeseries.records import validate_record
from lfkit.data_tools.timeseries.text import render_text
from lfkit.plugin.timeseries import encoding
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def counter(tiny_model):
    return TemplateTokens(str(tiny_model), "qwen")


def make_sample(lengths: list[int]):
    series = [[math.sin(i / 3) * 10 + k for i in range(n)] for k, n in enumerate(lengths)]
    text = "Compare " + ", ".join("<ts><ts/>" for _ in lengths) + "."
    rec = {
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "They differ."},
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "Different offsets."},
        ],
        "timeseries": series,
    }
    line = SourceLine("mem.jsonl", 1, json.dumps(rec).encode())
    return validate_record(rec, line)


def expanded_length(counter: TemplateTokens, sample, patch_size: int) -> int:
    """Encode as ChatTS would see it, then splice patches in place of each <ts> <ts/> pair."""
    tok = counter.tokenizer
    start, end = tok.convert_tokens_to_ids("<ts>"), tok.convert_tokens_to_ids("<ts/>")
    pairs = counter.template.encode_multiturn(tok, with_scaling_text(sample), None, None)
    ids = [i for source, target in pairs for i in source + target]
    lengths = iter(len(s) for s in sample.timeseries)
    out, i = [], 0
    while i < len(ids):
        if ids[i] == start:
            assert ids[i + 1] == end, "placeholder must stay a <ts> <ts/> token pair"
            out.extend([-1] * math.ceil(next(lengths) / patch_size))
            i += 2
        else:
            out.append(ids[i])
            i += 1
    assert next(lengths, None) is None, "every series must have met its placeholder"
    return len(out)


@pytest.mark.parametrize("patch_size", [1, 8, 16, 64])
def test_budget_equals_expanded_sequence(counter, patch_size):
    sample = make_sample([1, 16, 17, 100, 256])
    budget = sample_budget(sample, counter, patch_size=patch_size)
    assert budget.total == expanded_length(counter, sample, patch_size)
    assert budget.series_positions == sum(math.ceil(n / patch_size) - 2 for n in (1, 16, 17, 100, 256))


def test_placeholders_are_single_tokens_and_scaling_text_is_counted(counter):
    sample = make_sample([40])
    tok = counter.tokenizer
    assert len(tok.encode("<ts>", add_special_tokens=False)) == 1
    with_text = sample_budget(sample, counter).text_tokens
    bare = sum(
        len(s) + len(t) for s, t in counter.template.encode_multiturn(tok, sample.messages, None, None)
    )
    assert with_text > bare  # the processor's "[offset=...]" text costs tokens too


def test_text_form_budget_is_the_template_encoding(counter):
    sample = make_sample([5, 30])
    budget = sample_budget(sample, counter, ts_format="text")
    messages = render_text(sample.messages, sample.timeseries)
    ids = counter.template.encode_multiturn(counter.tokenizer, messages, None, None)
    assert budget.total == budget.text_tokens == sum(len(s) + len(t) for s, t in ids)
    assert budget.series_positions == 0


def test_cli_stats_with_tokenizer_and_convert_over_cutoff(tmp_path, tiny_model):
    from lfkit.cli import app

    rows = [
        {"input": "Short: <ts><ts/>", "output": "ok", "timeseries": [[1.0] * 20]},
        {"input": "Long: <ts><ts/>", "output": "ok", "timeseries": [[float(i) for i in range(4000)]]},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    common = ["--kind", "timeseries", "--tokenizer", str(tiny_model), "--cutoff-len", "200"]
    res = runner.invoke(app, ["data", "stats", str(src), *common])
    assert res.exit_code == 0, res.output
    assert "over cutoff_len 200" in res.output and "estimate" not in res.output
    res = runner.invoke(
        app, ["data", "convert", str(src), "--out", str(tmp_path / "o"), "--name", "t", *common]
    )
    assert res.exit_code == 0, res.output
    assert "converted 1 + rejected 1 = read 2" in res.output
    (entry,) = [json.loads(x) for x in (tmp_path / "o" / "t.rejects.jsonl").read_text().splitlines()]
    assert (
        entry["reason"] == "over_cutoff" and entry["line"] == 2 and "248 series positions" in entry["message"]
    )
    res = runner.invoke(
        app, ["data", "convert", str(src), "--out", str(tmp_path / "s"), "--name", "t", *common, "--strict"]
    )
    assert res.exit_code == 1 and not (tmp_path / "s" / "t.jsonl").exists()


@pytest.mark.parametrize(("length", "patch_size"), [(1, 16), (16, 16), (17, 16), (100, 7), (256, 1)])
def test_series_extra_positions_is_the_per_series_term_of_the_plugin_sum(length, patch_size):
    """One series (data tools) vs a list of series (plugin): distinct names for distinct signatures."""
    one = timeseries_chatts.series_extra_positions(length, patch_size)
    assert one == math.ceil(length / patch_size) - 2
    assert encoding.extra_positions([length, length], patch_size) == 2 * one
    assert not hasattr(timeseries_chatts, "extra_positions")  # no look-alike of the plugin's function
