"""``--kind timeseries`` conversion: every reject reason, both output forms, multi-turn, registration.

Real files in, real files out; the budget arithmetic is checked against an explicit
simulation of ChatTS's placeholder expansion in test_timeseries_budget.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from lfkit.data_tools.core.records import RecordError, SourceLine, parse_record
from lfkit.data_tools.timeseries.budget import CharEstimate
from lfkit.data_tools.timeseries.chatts import PLACEHOLDER, patch_count, processor_text
from lfkit.data_tools.timeseries.convert import TsOptions, convert_timeseries, timeseries_stats
from lfkit.data_tools.timeseries.records import TS_REASONS, validate_record
from lfkit.data_tools.timeseries.text import format_value, series_as_text

SAMPLE = Path(__file__).resolve().parents[2] / "data_tools" / "samples" / "chatts_sample.jsonl"


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def one(inp: str, ts, out: str = "An answer.") -> dict:
    return {"input": inp, "output": out, "timeseries": ts}


GOOD = one("Series: <ts><ts/>. Describe it.", [[1, 2.5, -3.0]])

# (input line, reason, field) for every series-specific reason plus the generic ones.
BAD = [
    (one("Two: <ts><ts/> <ts><ts/>", [[1.0]]), "ts_placeholder_mismatch", "timeseries"),
    (one("None here.", [[1.0]]), "ts_placeholder_mismatch", "timeseries"),
    (one("S: <ts><ts/>", []), "ts_placeholder_mismatch", "timeseries"),
    (one("S: <ts><ts/>", [[]]), "ts_empty_series", "timeseries[0]"),
    (one("S: <ts><ts/> <ts><ts/>", [[1.0], [2.0, "x"]]), "ts_non_numeric", "timeseries[1][1]"),
    (one("S: <ts><ts/>", [[1.0, None]]), "ts_non_numeric", "timeseries[0][1]"),
    (one("S: <ts><ts/>", [[True, 1.0]]), "ts_non_numeric", "timeseries[0][0]"),
    (
        '{"input": "S: <ts><ts/>", "output": "o", "timeseries": [[1.0, 2.0, NaN]]}',
        "ts_non_finite",
        "timeseries[0][2]",
    ),
    (
        '{"input": "S: <ts><ts/>", "output": "o", "timeseries": [[-Infinity]]}',
        "ts_non_finite",
        "timeseries[0][0]",
    ),
    (
        '{"input": "S: <ts><ts/>", "output": "o", "timeseries": [[1.0, 1e400]]}',
        "ts_non_finite",
        "timeseries[0][1]",
    ),
    (one("S: <ts><ts/>", [[1.0, [2.0, 3.0]]]), "ts_ragged", "timeseries[0][1]"),
    (one("S: <ts><ts/>", [1.0]), "ts_ragged", "timeseries[0]"),
    (one("S: <ts><ts/>", {"a": [1.0]}), "ts_not_a_list", "timeseries"),
    (one("S: <ts>[1, 2]<ts/>", [[1.0, 2.0]]), "ts_stray_marker", "input"),
    (one("S: <ts><ts/> and <ts>", [[1.0]]), "ts_stray_marker", "input"),
    (one("S: <ts><ts/>", [[1.0]], out="See <ts><ts/>"), "ts_placeholder_outside_user_turn", "output"),
    (one("S: <ts><ts/>", [list(range(9))]), "ts_series_too_long", "timeseries[0]"),
    ({"output": "o", "timeseries": []}, "missing_content", "input"),
    (one("   ", []), "empty_turn", "input"),
    ({"input": 3, "output": "o"}, "non_text_content", "input"),
    ({"timeseries": [[1.0]]}, "missing_messages", "messages"),
    ("[1, 2]", "not_an_object", None),
    ('{"input": "S", ', "malformed_json", None),
    (
        {"messages": [{"role": "assistant", "content": "hi"}], "timeseries": []},
        "assistant_first",
        "messages[0]",
    ),
]


def test_every_series_reason_is_exercised():
    assert {reason for _, reason, _ in BAD} >= set(TS_REASONS)


@pytest.mark.parametrize(
    ("line", "reason", "field"), BAD, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD)]
)
def test_reject_reason_file_line_field(tmp_path, line, reason, field):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, line, GOOD])
    res = convert_timeseries([src], tmp_path / "out", "ts", TsOptions(max_series_length=8))
    assert res.scan.counts.equation() == "converted 2 + rejected 1 = read 3"
    (entry,) = read_jsonl(tmp_path / "out" / "ts.rejects.jsonl")
    assert (entry["file"], entry["line"], entry["reason"], entry["field"]) == (str(src), 2, reason, field)
    assert entry["message"]


def test_non_finite_message_names_series_and_index():
    line = SourceLine(
        "f.jsonl", 7, b'{"input": "a <ts><ts/> b <ts><ts/>", "output": "o", "timeseries": [[1], [2, NaN]]}'
    )
    with pytest.raises(RecordError) as err:
        validate_record(parse_record(line), line)
    assert err.value.message == "series 1, index 1 is nan"


def test_sample_file_converts_with_its_bad_records_rejected(tmp_path):
    res = convert_timeseries([SAMPLE], tmp_path, "chatts", TsOptions())
    counts = res.scan.counts
    assert counts.converted + counts.rejected == counts.read
    assert 20 <= counts.read <= 40 and counts.rejected >= 5 and res.scan.multi_turn >= 3
    assert SAMPLE.stat().st_size < 150_000
    lengths = set(res.scan.series_lengths)
    assert len(lengths) >= 4, "the sample must have series of different lengths"


def test_encoder_form_keeps_raw_values_and_bare_placeholders(tmp_path):
    rec = one("Load <ts><ts/> vs disk <ts><ts/>.", [[100, 250.5, -3], [7.25]], out="Load is higher.")
    rec["system"] = "Be brief."
    src = write_lines(tmp_path / "in.jsonl", [rec])
    convert_timeseries([src], tmp_path / "out", "ts", TsOptions())
    (row,) = read_jsonl(tmp_path / "out" / "ts.jsonl")
    assert row == {
        "messages": [
            {"role": "user", "content": "Load <ts><ts/> vs disk <ts><ts/>."},
            {"role": "assistant", "content": "Load is higher."},
        ],
        "system": "Be brief.",
        "timeseries": [[100.0, 250.5, -3.0], [7.25]],
    }
    raw = (tmp_path / "out" / "ts.jsonl").read_text()
    assert "Offset" not in raw and "offset=" not in raw and "scaling" not in raw.lower()


def test_multi_turn_series_follow_placeholders_across_turns(tmp_path):
    rec = {
        "messages": [
            {"role": "system", "content": "You analyse metrics."},
            {"role": "user", "content": "CPU: <ts><ts/>"},
            {"role": "assistant", "content": "Rising."},
            {"role": "user", "content": "Memory <ts><ts/> and disk <ts><ts/>?"},
            {"role": "assistant", "content": "Flat and spiky."},
        ],
        "timeseries": [[1, 2, 3], [5, 5], [0, 9, 0]],
    }
    src = write_lines(tmp_path / "in.jsonl", [rec])
    convert_timeseries([src], tmp_path / "out", "ts", TsOptions())
    (row,) = read_jsonl(tmp_path / "out" / "ts.jsonl")
    assert row["system"] == "You analyse metrics."
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["timeseries"] == [[1.0, 2.0, 3.0], [5.0, 5.0], [0.0, 9.0, 0.0]]
    convert_timeseries([src], tmp_path / "text", "ts", TsOptions(ts_format="text"))
    (text_row,) = read_jsonl(tmp_path / "text" / "ts.jsonl")
    assert text_row["messages"][1]["content"] == "Rising."
    assert text_row["messages"][2]["content"] == "Memory 5,5 and disk 0,9,0?"
    assert text_row["messages"][0]["content"] == "CPU: 1,2,3"


def test_multi_turn_placeholder_in_assistant_turn_is_rejected(tmp_path):
    rec = {
        "messages": [
            {"role": "user", "content": "CPU: <ts><ts/>"},
            {"role": "assistant", "content": "Like this: <ts><ts/>"},
        ],
        "timeseries": [[1.0], [2.0]],
    }
    src = write_lines(tmp_path / "in.jsonl", [rec])
    res = convert_timeseries([src], tmp_path, "ts", TsOptions())
    (entry,) = read_jsonl(res.rejects.path)
    assert (entry["reason"], entry["field"]) == ("ts_placeholder_outside_user_turn", "messages[1]")


def test_text_form_is_compact_and_registers_no_timeseries_column(tmp_path):
    assert [format_value(v) for v in (1.5, 2.0, -0.001, 3.14159, -2.5)] == ["1.5", "2", "0", "3.14", "-2.5"]
    assert series_as_text([1.0, 2.25, 100.0], decimals=1) == "1,2.2,100"
    src = write_lines(tmp_path / "in.jsonl", [one("Series: <ts><ts/>.", [[1, 2.5, -3.0]])])
    res = convert_timeseries([src], tmp_path, "tt", TsOptions(ts_format="text"))
    (row,) = read_jsonl(res.dataset)
    assert row == {
        "messages": [
            {"role": "user", "content": "Series: 1,2.5,-3."},
            {"role": "assistant", "content": "An answer."},
        ],
        "system": "",
    }
    entry = json.loads((tmp_path / "dataset_info.json").read_text())["tt"]
    assert "timeseries" not in entry["columns"] and entry["lfkit"]["ts_format"] == "text"


def test_registration_merges_and_declares_the_timeseries_column(tmp_path):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "x.json"}}))
    src = write_lines(tmp_path / "in.jsonl", [GOOD])
    convert_timeseries([src], tmp_path, "ts", TsOptions(patch_size=8))
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["other"] == {"file_name": "x.json"}
    entry = info["ts"]
    assert entry["file_name"] == "ts.jsonl" and entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "system": "system", "timeseries": "timeseries"}
    assert entry["tags"]["role_tag"] == "role" and entry["lfkit"]["patch_size"] == 8


def test_strict_publishes_only_rejects_and_keeps_previous_dataset(tmp_path):
    src = write_lines(tmp_path / "in.jsonl", [GOOD])
    convert_timeseries([src], tmp_path / "out", "ts", TsOptions())
    before = (tmp_path / "out" / "ts.jsonl").read_bytes()
    bad = write_lines(tmp_path / "bad.jsonl", [GOOD, one("S: <ts><ts/>", [[]])])
    res = convert_timeseries([bad], tmp_path / "out", "ts", TsOptions(), strict=True)
    assert res.dataset is None and res.dataset_info is None and res.rejects.count == 1
    assert (tmp_path / "out" / "ts.jsonl").read_bytes() == before
    assert read_jsonl(tmp_path / "out" / "ts.rejects.jsonl")[0]["reason"] == "ts_empty_series"
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_over_cutoff_is_rejected_never_cut(tmp_path):
    short = one("S: <ts><ts/>", [[1.0] * 16], out="ok")
    long = one("S: <ts><ts/>", [[1.0] * 1600], out="ok")
    src = write_lines(tmp_path / "in.jsonl", [short, long])
    opts = TsOptions(cutoff_len=60, counter=CharEstimate(4.0))
    res = convert_timeseries([src], tmp_path, "ts", opts)
    assert res.scan.counts.equation() == "converted 1 + rejected 1 = read 2"
    (entry,) = read_jsonl(res.rejects.path)
    assert entry["reason"] == "over_cutoff" and entry["line"] == 2
    assert "(estimated)" in entry["message"] and "98 series positions" in entry["message"]
    (row,) = read_jsonl(res.dataset)
    assert len(row["timeseries"][0]) == 16
    stats, tally = timeseries_stats([src], opts)
    assert tally.count == 0 and stats.counts.converted == 2  # stats counts, convert rejects


def test_char_estimate_budget_numbers(tmp_path):
    """ceil(chars/4) + 2 markers per series + sum(ceil(len/16) - 2), with the scaling text included."""
    series = [[float(i) for i in range(40)], [3.0] * 5]
    rec = one("A <ts><ts/> B <ts><ts/>", series, out="xy")
    src = write_lines(tmp_path / "in.jsonl", [rec])
    stats, _ = timeseries_stats([src], TsOptions(counter=CharEstimate(4.0)))
    text = ("A " + processor_text(series[0]) + " B " + processor_text(series[1]) + "xy").replace(
        PLACEHOLDER, ""
    )
    expected_text = math.ceil(len(text) / 4) + 4
    assert list(stats.text_tokens) == [expected_text]
    assert list(stats.totals) == [expected_text + (3 - 2) + (1 - 2)]


def test_chatts_processor_facts():
    # The two series of ChatTS's demo/demo_lora.ipynb and the scaling text its processor printed.
    ts1 = [math.sin(x / 10) * 5.0 - (10.0 if x >= 100 else 0.0) for x in range(256)]
    assert processor_text(ts1) == (
        "[offset=6.0772|scaling=3.6917|length=256|max=4.9979|min=-15.0000|left=0.0000|right=-8.2047]<ts><ts/>"
    )
    ts2 = [x * 0.05 for x in range(256)]
    ts2[103] += 10.0
    assert processor_text(ts2) == (
        "[offset=-6.4141|scaling=2.9120|length=256|max=15.1500|min=0.0000|left=0.0000|right=12.7500]<ts><ts/>"
    )
    paper = processor_text([float(x) for x in range(8)], "paper")
    assert paper == "[Value Offset: -3.5000|Value Scaling: 1.1667]<ts><ts/>"
    assert processor_text([1.0, 2.0], "paper") == "[Value Offset: -1.5000|Value Scaling: 1.0000]<ts><ts/>"
    assert [patch_count(n, 16) for n in (1, 16, 17, 32, 33, 256)] == [1, 1, 2, 2, 3, 16]


def test_trimmed_trailing_user_turn_takes_its_series_along(tmp_path):
    rec = {
        "messages": [
            {"role": "user", "content": "A: <ts><ts/>"},
            {"role": "assistant", "content": "Flat."},
            {"role": "user", "content": "And B: <ts><ts/>?"},
        ],
        "timeseries": [[1.0, 1.0], [2.0, 5.0]],
    }
    src = write_lines(tmp_path / "in.jsonl", [rec])
    res = convert_timeseries([src], tmp_path, "ts", TsOptions())
    assert res.scan.counts.equation() == "converted 1 + rejected 0 = read 1"
    (row,) = read_jsonl(res.dataset)
    assert len(row["messages"]) == 2 and row["timeseries"] == [[1.0, 1.0]]
