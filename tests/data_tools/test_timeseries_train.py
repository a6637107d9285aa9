"""One real run: the ``--ts-format text`` dataset trains a plain LLM with stock LlamaFactory.

The plugin is switched off (``LFKIT_DISABLE_PLUGIN=1``) so this proves the text form needs no
lfkit code at training time; the run's own printout of its first tokenised example must have
exactly the length the converter's budget computed for that sample (the budget is not a guess).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import tiny_recipe
from lfkit.data_tools.core.records import SourceLine
from lfkit.data_tools.timeseries.budget import TemplateTokens, sample_budget
from lfkit.data_tools.timeseries.convert import TsOptions, convert_timeseries
from lfkit.data_tools.timeseries.records import validate_record

SAMPLE = Path(__file__).resolve().parents[2] / "data_tools" / "samples" / "chatts_sample.jsonl"
CUTOFF = 1024


@pytest.mark.train
def test_text_form_trains_on_stock_llamafactory(tmp_path, tiny_model, run_train):
    counter = TemplateTokens(str(tiny_model), "qwen")
    opts = TsOptions(ts_format="text", cutoff_len=CUTOFF, counter=counter)
    res = convert_timeseries([SAMPLE], tmp_path / "data", "chatts_text", opts)
    assert res.rejects.by_reason["over_cutoff"] > 0 and res.scan.counts.converted >= 4
    first = json.loads(res.dataset.read_text().splitlines()[0])
    assert "timeseries" not in first and "<ts>" not in json.dumps(first)

    recipe = tiny_recipe(
        tiny_model, tmp_path / "data", "chatts_text", tmp_path / "run", cutoff_len=CUTOFF, max_steps=3
    )
    run = run_train(recipe, env={"LFKIT_DISABLE_PLUGIN": "1"}).check()
    steps = [json.loads(x) for x in (run.output_dir / "trainer_log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses), steps

    printed = re.search(r"input_ids:\n\[([0-9, ]+)\]", run.log)
    assert printed, "LlamaFactory prints its first tokenised example"
    n_ids = len(printed.group(1).split(","))
    # The first converted sample is the first valid, short-enough line of the sample file.
    line = _first_converted_line(res.rejects.path)
    sample = validate_record(json.loads(line.raw), line)
    assert sample_budget(sample, counter, ts_format="text").total == n_ids


def _first_converted_line(rejects_path: Path) -> SourceLine:
    rejected = {json.loads(x)["line"] for x in rejects_path.read_text().splitlines()}
    for lineno, raw in enumerate(SAMPLE.read_bytes().splitlines(), 1):
        if lineno not in rejected:
            return SourceLine(str(SAMPLE), lineno, raw)
    raise AssertionError("no converted line")
