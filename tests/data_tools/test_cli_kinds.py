"""Each kind of data is its own sub-command with its own options; ``--kind`` still reaches them.

``lfkit data convert dialogue|timeseries`` and ``lfkit data stats dialogue|timeseries`` hold
only their kind's options, so an option of the other kind is click's "No such option" usage
error (with a hint naming the sub-command that has it), enforced by the structure rather than
a table. The older ``lfkit data convert FILES --kind K`` form dispatches to the same commands.
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
    ("command", "kind", "options", "owner"),
    [
        ("convert", "timeseries", ["--val-ratio", "0.2"], "dialogue"),
        ("convert", "timeseries", ["--seed", "0"], "dialogue"),
        ("convert", "timeseries", ["--role-key", "user_id"], "dialogue"),
        ("convert", "timeseries", ["--context-only"], "dialogue"),
        ("convert", "timeseries", ["--no-merge-consecutive"], "dialogue"),
        ("convert", "timeseries", ["--dedup", "near"], "dialogue"),
        ("convert", "dialogue", ["--patch-size", "16"], "timeseries"),
        ("convert", "dialogue", ["--ts-format", "text"], "timeseries"),
        ("convert", "dialogue", ["--tokenizer", "some/tokenizer"], "timeseries"),
        ("stats", "timeseries", ["--batch-size", "4"], "dialogue"),
        ("stats", "timeseries", ["--val-by", "role"], "dialogue"),
        ("stats", "dialogue", ["--cutoff-len", "512"], "timeseries"),
        ("stats", "dialogue", ["--template", "qwen"], "timeseries"),
    ],
)
@pytest.mark.parametrize("form", ["sub-command", "--kind"])
def test_options_of_the_other_kind_are_usage_errors(tmp_path, inputs, command, kind, options, owner, form):
    out = tmp_path / "out"
    target = ["--out", out, "--name", "rp"] if command == "convert" else []
    if form == "sub-command":
        args = [command, kind, inputs[kind], *target, *options]
    else:
        args = [command, inputs[kind], *target, "--kind", kind, *options]
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert f"{options[0]} is an option of `lfkit data {command} {owner}`" in text, text
    assert not out.exists()  # refused before anything ran


def test_kind_dispatch_and_sub_commands_write_the_same(tmp_path, inputs):
    for args in (
        ["convert", "timeseries", inputs["timeseries"]],
        ["convert", inputs["timeseries"], "--kind", "timeseries"],
        ["convert", "--kind=timeseries", inputs["timeseries"]],
    ):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        result = run_cli(*args, "--out", out, "--name", "ts", "--ts-format", "text", "--patch-size", "8")
        assert result.exit_code == 0, result.output
        assert json.loads((out / "dataset_info.json").read_text())["ts"]["lfkit"]["ts_format"] == "text"
    plain = run_cli(
        "convert", inputs["dialogue"], "--out", tmp_path / "d1", "--name", "d", "--role-key", "user_id"
    )
    named = run_cli("convert", "dialogue", inputs["dialogue"], "--out", tmp_path / "d2", "--name", "d",
                    "--role-key", "user_id")  # fmt: skip
    assert plain.exit_code == named.exit_code == 0, plain.output + named.output
    assert (tmp_path / "d1" / "d.jsonl").read_bytes() == (tmp_path / "d2" / "d.jsonl").read_bytes()
    assert run_cli("stats", inputs["timeseries"], "--kind", "timeseries", "--cutoff-len", "64").exit_code == 0
    assert run_cli("stats", "dialogue", inputs["dialogue"], "--role-key", "user_id").exit_code == 0


def test_bad_kind_and_kind_with_a_sub_command_are_usage_errors(tmp_path, inputs):
    bad = run_cli("convert", inputs["dialogue"], "--out", tmp_path / "o", "--name", "d", "--kind", "audio")
    assert bad.exit_code == 2 and "--kind must be one of dialogue, timeseries" in flat(bad.output)
    both = run_cli("convert", "dialogue", inputs["dialogue"], "--out", tmp_path / "o", "--name", "d",
                   "--kind", "dialogue")  # fmt: skip
    assert both.exit_code == 2 and "--kind cannot be combined" in flat(both.output)


@pytest.mark.parametrize("command", ["convert", "stats"])
def test_help_lists_the_kinds_and_each_kind_its_own_options(command):
    group = flat(run_cli(command, "--help").output)
    assert "dialogue" in group and "timeseries" in group and "--kind" in group
    dialogue = flat(run_cli(command, "dialogue", "--help").output)
    timeseries = flat(run_cli(command, "timeseries", "--help").output)
    assert "--user-name" in dialogue and "--patch-size" not in dialogue
    assert "--patch-size" in timeseries and "--user-name" not in timeseries
    assert "Tokenizer directory or hub id" in timeseries
