"""A truncated or corrupt ``.jsonl.gz`` fails the whole run with file and line, publishing nothing.

Before the fix, gzip's ``EOFError`` escaped the CLI's ``except OSError`` and click printed only
"Aborted!". The expected "last line read" is what zlib itself can recover from the damaged
bytes, so the number in the message is checked exactly.
"""

from __future__ import annotations

import pickle
import zlib

import pytest
from dialogue_helpers import chat, run_cli, write_jsonl
from lfkit.data_tools.core.inputs import CorruptInputError, iter_lines

TS_GOOD = {"input": "Series: <ts><ts/>. Describe it.", "output": "Flat.", "timeseries": [[1.0, 2.5, -3.0]]}


def ts_record(i: int) -> dict:
    return {**TS_GOOD, "output": f"Answer {i}.", "timeseries": [[float(i), 2.5, -3.0, i / 7]]}


def truncated(path, keep: float = 0.5):
    """Cut a gzip file to ``keep`` of its bytes; returns the intact lines zlib can still recover."""
    data = path.read_bytes()
    cut = data[: int(len(data) * keep)]
    path.write_bytes(cut)
    return zlib.decompressobj(31).decompress(cut).count(b"\n")


def snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def flat(text: str) -> str:
    """The CLI output with rich's panel borders and line wraps removed."""
    return " ".join(text.replace("│", " ").split())


def test_iter_lines_names_file_and_last_intact_line(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl.gz", [chat(f"r{i}", tag=str(i)) for i in range(3000)], gz=True)
    intact = truncated(src)
    assert 0 < intact < 3000
    seen = []
    with pytest.raises(CorruptInputError) as info:
        seen.extend(line.lineno for line in iter_lines([src]))
    assert seen[-1] == intact == info.value.last_line  # every intact line was handed over first
    assert f"{src}: compressed data is truncated or corrupt after line {intact}" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))  # crosses from scan worker processes unchanged
    assert str(again) == str(info.value)


def test_crc_damage_and_a_non_gzip_file_are_reported_too(tmp_path):
    src = write_jsonl(tmp_path / "crc.jsonl.gz", [chat("a", tag=str(i)) for i in range(50)], gz=True)
    data = bytearray(src.read_bytes())
    data[-6] ^= 0xFF  # the CRC32 in the trailer
    src.write_bytes(bytes(data))
    with pytest.raises(CorruptInputError, match="after line 50 .*CRC check failed"):
        list(iter_lines([src]))
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b'{"messages": []}\n')
    with pytest.raises(CorruptInputError, match="before its first line.*Not a gzipped file"):
        list(iter_lines([fake]))


def test_dialogue_convert_fails_cleanly_and_keeps_previous_outputs(tmp_path):
    records = [chat(f"r{i % 5}", tag=str(i)) for i in range(3000)]
    src = write_jsonl(tmp_path / "in.jsonl.gz", records, gz=True)
    out = tmp_path / "out"
    args = ("convert", src, "--out", out, "--name", "rp", "--role-key", "user_id", "--val-ratio", "0.2")
    assert run_cli(*args).exit_code == 0
    before = snapshot(out)
    assert set(before) == {"dataset_info.json", "rp.jsonl", "rp_val.jsonl", "rp.rejects.jsonl"}
    intact = truncated(src)
    result = run_cli(*args, "--seed", "3")
    assert result.exit_code == 1
    text = flat(result.output)
    assert f"error: {src}: compressed data is truncated or corrupt after line {intact}" in text
    assert "nothing was written, previous outputs are unchanged" in text
    assert "Aborted" not in text and "Traceback" not in text
    assert snapshot(out) == before  # no partial dataset from the lines read before the damage


def test_timeseries_convert_and_stats_fail_cleanly(tmp_path):
    src = write_jsonl(tmp_path / "ts.jsonl.gz", [ts_record(i) for i in range(3000)], gz=True)
    out = tmp_path / "out"
    args = ("convert", src, "--out", out, "--name", "ts", "--kind", "timeseries")
    assert run_cli(*args).exit_code == 0
    before = snapshot(out)
    assert set(before) == {"dataset_info.json", "ts.jsonl", "ts.rejects.jsonl"}
    intact = truncated(src, keep=0.7)
    result = run_cli(*args)
    assert result.exit_code == 1
    text = flat(result.output)
    assert f"error: {src}: compressed data is truncated or corrupt after line {intact}" in text
    assert "Aborted" not in text
    assert snapshot(out) == before
    stats = run_cli("stats", src, "--kind", "timeseries")
    assert stats.exit_code == 1
    assert f"after line {intact}" in flat(stats.output) and "Aborted" not in stats.output


def test_dialogue_stats_fails_cleanly(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl.gz", [chat("a", tag=str(i)) for i in range(3000)], gz=True)
    intact = truncated(src)
    result = run_cli("stats", src, "--role-key", "user_id")
    assert result.exit_code == 1
    assert f"{src}: compressed data is truncated or corrupt after line {intact}" in flat(result.output)
