"""Options of one ``--kind`` are refused with the other, never silently ignored.

"Given" means given on the command line (click's parameter source), so an option repeated with
its default value is refused too; options left out are fine whatever their defaults.
"""

from __future__ import annotations

import json

import pytest
from dialogue_helpers import chat, run_cli, write_jsonl

TS_RECORD = {"input": "Series: <ts><ts/>. Describe it.", "output": "Flat.", "timeseries": [[1.0, 2.5, -3.0]]}


def flat(text: str) -> str:
    """The CLI output with rich's panel borders and line wraps removed."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def inputs(tmp_path):
    return {
        "dialogue": write_jsonl(tmp_path / "chat.jsonl", [chat("a"), chat("b")]),
        "timeseries": write_jsonl(tmp_path / "ts.jsonl", [TS_RECORD]),
    }


@pytest.mark.parametrize(
    ("command", "kind", "options", "named"),
    [
        ("convert", "timeseries", ["--val-ratio", "0.2"], "--val-ratio applies to --kind dialogue only"),
        ("convert", "timeseries", ["--seed", "0"], "--seed applies"),  # the default value, still refused
        (
            "convert",
            "timeseries",
            ["--role-key", "user_id", "--max-per-role", "2"],
            "--role-key, --max-per-role apply",
        ),
        ("convert", "timeseries", ["--context-only"], "--context-only applies"),
        ("convert", "timeseries", ["--mask-history"], "--mask-history applies"),
        ("convert", "timeseries", ["--resample-epochs", "2"], "--resample-epochs applies"),
        ("convert", "timeseries", ["--workers", "1"], "--workers applies"),
        ("convert", "timeseries", ["--role-from-filename"], "--role-from-filename applies"),
        ("convert", "dialogue", ["--patch-size", "16"], "--patch-size applies to --kind timeseries only"),
        ("convert", "dialogue", ["--ts-format", "text"], "--ts-format applies"),
        (
            "convert",
            "dialogue",
            ["--max-series-length", "9", "--cutoff-len", "99"],
            "--max-series-length, --cutoff-len",
        ),
        ("convert", "dialogue", ["--ts-decimals", "3"], "--ts-decimals applies"),
        ("convert", "dialogue", ["--template", "qwen"], "--template applies"),
        ("convert", "dialogue", ["--tokenizer", "some/tokenizer"], "--tokenizer applies"),
        ("stats", "timeseries", ["--batch-size", "4"], "--batch-size applies to --kind dialogue only"),
        ("stats", "timeseries", ["--max-per-role", "1,all"], "--max-per-role applies"),
        ("stats", "timeseries", ["--epochs", "2", "--seconds-per-step", "1"], "--seconds-per-step, --epochs"),
        ("stats", "timeseries", ["--val-ratio", "0.1", "--context-only"], "--val-ratio, --context-only"),
        ("stats", "dialogue", ["--cutoff-len", "512"], "--cutoff-len applies to --kind timeseries only"),
        ("stats", "dialogue", ["--patch-size", "8", "--template", "qwen"], "--patch-size, --template apply"),
    ],
)
def test_options_of_the_other_kind_are_usage_errors(tmp_path, inputs, command, kind, options, named):
    out = tmp_path / "out"
    target = ["--out", out, "--name", "rp"] if command == "convert" else []
    result = run_cli(command, inputs[kind], *target, "--kind", kind, *options)
    assert result.exit_code == 2, result.output
    assert named in flat(result.output)
    assert not out.exists()  # refused before anything ran


def test_options_of_the_chosen_kind_are_accepted(tmp_path, inputs):
    ts = run_cli(
        "convert", inputs["timeseries"], "--out", tmp_path / "ts", "--name", "ts", "--kind", "timeseries",
        "--ts-format", "text", "--patch-size", "8", "--cutoff-len", "4096", "--ts-decimals", "1",
    )  # fmt: skip
    assert ts.exit_code == 0, ts.output
    entry = json.loads((tmp_path / "ts" / "dataset_info.json").read_text())["ts"]["lfkit"]
    assert (entry["ts_format"], entry["patch_size"], entry["ts_decimals"]) == ("text", 8, 1)
    dialogue = run_cli(
        "convert", inputs["dialogue"], "--out", tmp_path / "d", "--name", "d", "--role-key", "user_id",
        "--seed", "3", "--workers", "1",
    )  # fmt: skip
    assert dialogue.exit_code == 0, dialogue.output
    stats = run_cli("stats", inputs["timeseries"], "--kind", "timeseries", "--cutoff-len", "64")
    assert stats.exit_code == 0, stats.output


@pytest.mark.parametrize("command", ["convert", "stats"])
def test_help_groups_options_by_kind_and_takes_hub_ids(command):
    result = run_cli(command, "--help")
    assert result.exit_code == 0
    text = flat(result.output)
    assert "Dialogue (--kind dialogue)" in text and "Time series (--kind timeseries)" in text
    assert "Tokenizer directory or hub id" in text
    assert "Local tokenizer directory" not in text
