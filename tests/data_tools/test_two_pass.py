"""The sampled conversion's two passes give what converting every record gives.

With ``--max-per-role`` only the drawn records are converted (pass 1 reads roles and places,
pass 2 the picks). These tests hold it to the full pass on messy inputs: the same records and
roles in both indexes, malformed lines rejected either way, byte-identical datasets with and
without ``--validate-all``, with any number of workers and chunks, through redraws and
re-reads, and no conversation twice in the output.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from dialogue_helpers import chat, read_jsonl, run_cli, write_jsonl
from layout_fixtures import glaive_record, mllm_record, pippa_record, write_json_array
from lfkit.data_tools.core.inputs import Chunk
from lfkit.data_tools.dialogue import convert as dialogue_convert
from lfkit.data_tools.dialogue import index as dialogue_index
from lfkit.data_tools.dialogue import pool as dialogue_pool
from lfkit.data_tools.dialogue.convert import ConvertOptions, convert_dialogue
from lfkit.data_tools.dialogue.dedup import normalised
from lfkit.data_tools.dialogue.index import NO_ROLE, IndexSettings, index_chunk
from lfkit.data_tools.dialogue.layouts.common import LayoutSettings
from lfkit.data_tools.dialogue.scan import ScanSettings, scan_chunk


def messy_lines() -> list[bytes]:
    """Role-play records for 12 roles (one with 40), duplicates, rejects and odd lines."""
    lines: list[bytes] = []
    for k in range(150):
        role = "big" if k % 3 == 0 else f"r{k % 11}"
        record = chat(role, 1 + k % 3, tag=f"#{k}", system=f"You are {role}.")
        lines.append(json.dumps(record).encode())
        if k % 17 == 5:  # the same conversation again, in another role and spacing: a duplicate
            twin = json.loads(json.dumps(record))
            twin["user_id"] = "big" if role != "big" else "r1"
            twin["messages"][0]["content"] = "  " + twin["messages"][0]["content"].replace(" ", "\n ", 1)
            lines.append(json.dumps(twin).encode())
    odd = [
        b"{broken json",
        b"[1, 2]",
        b"   ",
        b"",
        json.dumps({"user_id": "r2", "messages": [{"role": "narrator", "content": "x"}]}).encode(),
        json.dumps({"user_id": "r3", "messages": []}).encode(),
        json.dumps({"messages": chat("x")["messages"]}).encode(),  # no role
        json.dumps({"user_id": ["a"], "messages": chat("x")["messages"]}).encode(),  # a list as role
        json.dumps({"user_id": True, "messages": chat("x")["messages"]}).encode(),
        json.dumps({"user_id": 7, **chat("x", tag="seven")}).encode().replace(b'"user_id": "x", ', b""),
        b'{"user_id": "big", "score": NaN, "messages": [{"role": "user", "content": "nan q"}, '
        b'{"role": "assistant", "content": "nan a"}]}',
        b'{"user_id": "r4", "note": "\xff\xfe", "messages": [{"role": "user", "content": "q"}, '
        b'{"role": "assistant", "content": "a"}]}',  # invalid UTF-8 in an unused field
        b'{"user_id": "r5", "messages": null, "conversations": [{"from": "human", "value": "hi"}, '
        b'{"from": "gpt", "value": "yo"}]}',
        json.dumps(chat("r6", tag="a")).encode() + b" " + json.dumps(chat("r6", tag="b")).encode(),
        json.dumps({**glaive_record("Paris", "sunny"), "user_id": "tools"}).encode(),
        json.dumps({**mllm_record(["nowhere.png"]), "user_id": "r7"}).encode(),
        json.dumps({**pippa_record("b1", "Mira", 1), "user_id": "r8"}).encode(),
        json.dumps({**chat("q", tag="spaced"), "user_id": " big "}).encode(),  # the role "big", spelt apart
    ]  # fmt: skip
    for i, line in enumerate(odd):
        lines.insert(7 + 9 * i, line)
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    lines[3] = lines[3] + b"\r"  # a CRLF line
    return lines


def write_lines(path: Path, lines: list[bytes], gz: bool = False) -> Path:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.fixture
def small_pieces(monkeypatch):
    """Many chunks, blocks and pass-2 batches on small inputs, as large inputs get them."""
    monkeypatch.setattr(dialogue_convert, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(dialogue_convert, "MIN_CHUNK_BYTES", 2048)
    monkeypatch.setattr(dialogue_index, "BLOCK_BYTES", 1500)
    monkeypatch.setattr(dialogue_pool, "PARALLEL_MIN_PICKS", 0)
    monkeypatch.setattr(dialogue_pool, "PICKS_PER_BATCH", 7)


SETTINGS = [LayoutSettings(role_key="user_id", roles_needed=True), LayoutSettings(roles_needed=True)]


@pytest.mark.parametrize("settings", SETTINGS, ids=["role_key", "pippa_default"])
def test_pass_one_indexes_what_the_full_pass_reads(tmp_path, settings, monkeypatch):
    """Same records, positions, lines and roles; the same malformed lines rejected, same reasons."""
    monkeypatch.setattr(dialogue_index, "BLOCK_BYTES", 1500)  # blocks read both ways
    lines = messy_lines() + [json.dumps(pippa_record(None, "Nox", 2)).encode()]
    src = write_lines(tmp_path / "in.jsonl", lines)
    work = tempfile.mkdtemp(dir=tmp_path)
    fast = index_chunk((Chunk(str(src)), 0, IndexSettings(settings, work)))
    full = scan_chunk((Chunk(str(src)), ScanSettings(settings, False, work))).index
    for column in ("positions", "lines", "lengths"):
        assert getattr(fast, column).tolist() == getattr(full, column).tolist(), column
    assert [fast.role_names[r] if r != NO_ROLE else None for r in fast.role_ids.tolist()] == [
        full.role_names[r] if r != NO_ROLE else None for r in full.role_ids.tolist()
    ]
    assert (fast.read, fast.rejected, fast.line_count) == (full.read, full.rejected, full.line_count)
    assert fast.role_spellings == full.role_spellings
    malformed = [json.loads(x) for x in Path(fast.rejects_file).read_bytes().splitlines()]
    everything = [json.loads(x) for x in Path(full.rejects_file).read_bytes().splitlines()]
    # the full pass also rejects what the rules refuse; the malformed lines are the same
    assert malformed == [e for e in everything if e["line"] not in set(full.lines.tolist())]
    assert {e["reason"] for e in malformed} == {"malformed_json", "not_an_object", "invalid_utf8"}


CASES = [
    {"max_per_role": 2},
    {"max_per_role": 1, "val_ratio": 0.3, "seed": 4},
    {"max_per_role": 3, "val_ratio": 0.25, "resample_epochs": 3, "seed": 1},
    {"max_per_role": 2, "val_ratio": 0.3, "val_by": "role", "seed": 2},
    {"max_per_role": 5, "context_only": True, "val_ratio": 0.2},
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("form", ["jsonl", "gz", "array"])
def test_two_passes_equal_the_full_pass_with_any_workers(tmp_path, small_pieces, case, form):
    lines = messy_lines()
    if form == "array":  # JSON arrays hold only elements: keep the well-formed records
        records = [json.loads(x) for x in lines if _is_object(x)]
        src = write_json_array(tmp_path / "in.json", records, bom=True)
    else:
        src = write_lines(tmp_path / ("in.jsonl.gz" if form == "gz" else "in.jsonl"), lines, gz=form == "gz")
    outs = {}
    for label, workers, every in (("one", 1, False), ("three", 3, False), ("all", 2, True)):
        opts = ConvertOptions(
            tmp_path / label, "rp", role_key="user_id", workers=workers, validate_all=every, **case
        )
        result = convert_dialogue([src], opts)
        result.counts.check()
        outs[label] = (opts.out_dir, result)
    for name in ("rp.jsonl", "rp_val.jsonl", "dataset_info.json"):
        if (outs["one"][0] / name).exists() or name == "rp.jsonl":
            base = (outs["one"][0] / name).read_bytes()
            assert base == (outs["three"][0] / name).read_bytes(), name
            assert base == (outs["all"][0] / name).read_bytes(), name
    two_pass = read_jsonl(outs["one"][0] / "rp.rejects.jsonl")
    assert two_pass == read_jsonl(outs["three"][0] / "rp.rejects.jsonl")
    every = read_jsonl(outs["all"][0] / "rp.rejects.jsonl")
    assert all(entry in every for entry in two_pass)  # --validate-all rejects a superset
    order = [(r["file"], r["line"]) for r in every]
    assert order == sorted(order)  # in input order
    one, full = outs["one"][1].counts, outs["all"][1].counts
    assert one.converted == full.converted and one.read == full.read == len(_records(lines, form))
    assert one.not_sampled > full.not_sampled > 0


def test_no_conversation_twice_and_no_validation_row_trains(tmp_path):
    out = tmp_path / "out"
    src = write_lines(tmp_path / "in.jsonl", messy_lines())
    result = run_cli(
        "convert", src, "--out", out, "--name", "rp", "--role-key", "user_id", "--max-per-role", "40",
        "--val-ratio", "0.3", "--resample-epochs", "2", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    train, val = read_jsonl(out / "rp.jsonl"), read_jsonl(out / "rp_val.jsonl")
    half = len(train) // 2
    for rows in (train[:half], train[half:], val):  # each virtual epoch, and validation
        contents = [_content(r) for r in rows]
        assert len(contents) == len(set(contents))
    assert not {_content(r) for r in val} & {_content(r) for r in train}
    dups = [r for r in read_jsonl(out / "rp.rejects.jsonl") if r["reason"] == "duplicate"]
    assert dups and all(d["duplicate_of"]["line"] != d["line"] for d in dups)
    match = re.search(r"converted (\d+) \+ rejected (\d+) \+ not sampled (\d+) = read (\d+)", result.output)
    converted, rejected, unsampled, read = map(int, match.groups())
    assert converted + rejected + unsampled == read == len(_records(messy_lines(), "jsonl"))
    assert rejected == len(read_jsonl(out / "rp.rejects.jsonl"))


def test_a_draw_past_what_pass_one_kept_reads_the_role_again(tmp_path, monkeypatch):
    """Pass 1 keeps a few records per role beyond the cap; when rejects and duplicates use them
    up, the role is read again in full, and the picks are still those of the full pass."""
    monkeypatch.setattr(dialogue_convert, "SPARE_PER_ROLE", 0)
    refills: list[list[str]] = []
    real = dialogue_pool.Candidates.refill

    def counted(self, roles):
        refills.append([self.role_names[r] for r in roles.tolist()])
        return real(self, roles)

    monkeypatch.setattr(dialogue_pool.Candidates, "refill", counted)
    bad = {"user_id": "flaky", "messages": [{"role": "narrator", "content": "x"}]}
    records = [dict(bad, n=i) for i in range(30)] + [chat("flaky", tag=str(i)) for i in range(4)]
    records += [chat("steady", tag=str(i)) for i in range(9)]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    picks = {}
    for every in (False, True):
        opts = ConvertOptions(
            tmp_path / str(every), "rp", role_key="user_id", max_per_role=3, validate_all=every
        )
        convert_dialogue([src], opts)
        picks[every] = (opts.out_dir / "rp.jsonl").read_bytes()
    assert refills and "flaky" in refills[0]
    assert picks[False] == picks[True]
    assert Counter(r["role_id"] for r in read_jsonl(tmp_path / "False" / "rp.jsonl")) == {
        "flaky": 3,
        "steady": 3,
    }


def test_unpicked_malformed_lines_are_still_rejected_with_their_line(tmp_path):
    records = [chat("a", tag=str(i)) for i in range(50)]
    records.insert(30, b'{"user_id": "a", "messages": [')
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out"
    result = run_cli(
        "convert", src, "--out", out, "--name", "rp", "--role-key", "user_id", "--max-per-role", "1"
    )
    assert "converted 1 + rejected 1 + not sampled 49 = read 51" in result.output
    (reject,) = read_jsonl(out / "rp.rejects.jsonl")
    assert (reject["line"], reject["reason"]) == (31, "malformed_json")


def _is_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.removeprefix(b"\xef\xbb\xbf")), dict)
    except ValueError:
        return False


def _records(lines: list[bytes], form: str) -> list[bytes]:
    if form == "array":
        return [x for x in lines if _is_object(x)]
    return [x for x in lines if x.strip() and x.strip() != b"\xef\xbb\xbf"]


def _content(row: dict) -> str:
    return json.dumps(normalised({k: v for k, v in row.items() if k != "role_id"}), sort_keys=True)


def test_a_file_given_twice_is_a_usage_error(tmp_path):
    src = write_jsonl(tmp_path / "chars" / "a.jsonl", [chat("a")])
    result = run_cli("convert", tmp_path / "chars", src, "--out", tmp_path / "out", "--name", "rp")
    assert result.exit_code == 2 and "is given twice" in result.output
