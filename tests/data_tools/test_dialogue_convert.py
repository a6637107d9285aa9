"""Per-role sampling, determinism, validation split, resampled epochs, inputs and registration."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pytest
from dialogue_helpers import SAMPLE, chat, per_role, read_jsonl, run_cli, uneven_corpus, write_jsonl
from lfkit.data_tools.dialogue import convert as dialogue_convert
from lfkit.data_tools.dialogue.convert import ConvertOptions, convert_dialogue
from lfkit.data_tools.dialogue.sampling import val_quotas

COUNTS = {"ann": 9, "bob": 5, "cy": 3, "dee": 2, "eve": 1}


def convert(tmp_path, src, out_name="out", *extra):
    out = tmp_path / out_name
    result = run_cli("convert", src, "--out", out, "--name", "rp", "--role-key", "user_id", *extra)
    assert result.exit_code == 0, result.output
    return out, result


def test_bundled_sample_converts_as_the_sample_job_runs_it(tmp_path):
    out = tmp_path / "sample"
    args = ["--role-key", "user_id", "--max-per-role", "4", "--val-ratio", "0.2", "--seed", "0"]
    result = run_cli("convert", SAMPLE, "--out", out, "--name", "roleplay", *args)
    assert result.exit_code == 0, result.output
    # only the drawn records are converted: the rest are counted as not sampled
    assert "converted 37 + rejected 7 + not sampled 48 = read 92" in result.output
    train, val = read_jsonl(out / "roleplay.jsonl"), read_jsonl(out / "roleplay_val.jsonl")
    assert len(train) + len(val) == 37
    assert max((per_role(train) + per_role(val)).values()) == 4
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"roleplay", "roleplay_val"}
    assert len(read_jsonl(out / "roleplay.rejects.jsonl")) == 7
    # --validate-all converts every record: all 8 rejects are written, the dataset is the same
    every = tmp_path / "every"
    result = run_cli("convert", SAMPLE, "--out", every, "--name", "roleplay", *args, "--validate-all")
    assert "converted 37 + rejected 8 + not sampled 47 = read 92" in result.output
    assert len(read_jsonl(every / "roleplay.rejects.jsonl")) == 8
    for name in ("roleplay.jsonl", "roleplay_val.jsonl"):
        assert (every / name).read_bytes() == (out / name).read_bytes()


def test_per_role_limit_keeps_min_of_n_and_count(tmp_path):
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    out, _ = convert(tmp_path, src, "out", "--max-per-role", "3")
    got = per_role(read_jsonl(out / "rp.jsonl"))
    assert got == {role: min(3, n) for role, n in COUNTS.items()}
    out_all, _ = convert(tmp_path, src, "all")
    assert per_role(read_jsonl(out_all / "rp.jsonl")) == COUNTS


def test_same_inputs_and_seed_give_byte_identical_outputs(tmp_path):
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    args = ("--max-per-role", "3", "--val-ratio", "0.3", "--seed", "7", "--resample-epochs", "2")
    a, _ = convert(tmp_path, src, "a", *args)
    b, _ = convert(tmp_path, src, "b", *args)
    for name in ("rp.jsonl", "rp_val.jsonl", "rp.rejects.jsonl", "dataset_info.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c, _ = convert(tmp_path, src, "c", "--max-per-role", "3", "--val-ratio", "0.3", "--seed", "8")
    assert (a / "rp.jsonl").read_bytes() != (c / "rp.jsonl").read_bytes()


def test_parallel_chunked_scan_gives_the_same_bytes(tmp_path, monkeypatch):
    """Worker processes over line-aligned chunks change nothing in the output, rejects included."""
    records = []
    for k in range(300):
        records.append(chat(f"role{k % 37}", 1 + k % 3, tag=f"#{k}"))
        if k % 50 == 7:
            records.append(b"{broken json")
    src = write_jsonl(tmp_path / "big.jsonl", records)
    monkeypatch.setattr(dialogue_convert, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(dialogue_convert, "MIN_CHUNK_BYTES", 4096)
    outs = {}
    for workers in (1, 3):
        opts = ConvertOptions(
            out_dir=tmp_path / f"w{workers}", name="rp", role_key="user_id", max_per_role=4,
            val_ratio=0.25, seed=3, workers=workers,
        )  # fmt: skip
        result = convert_dialogue([src], opts)
        assert result.chunks > 3 or workers == 1  # really chunked (one process reads the file whole)
        outs[workers] = opts.out_dir
    for name in ("rp.jsonl", "rp_val.jsonl", "rp.rejects.jsonl"):
        assert (outs[1] / name).read_bytes() == (outs[3] / name).read_bytes(), name
    rejects = read_jsonl(outs[3] / "rp.rejects.jsonl")
    assert [r["line"] for r in rejects] == [9 + 51 * i for i in range(6)]  # true line numbers
    assert all(r["reason"] == "malformed_json" for r in rejects)


def test_val_split_is_role_stratified_after_sampling(tmp_path):
    counts = {f"r{i}": 2 + i % 7 for i in range(30)}
    counts["solo"] = 1
    src = uneven_corpus(tmp_path / "in.jsonl", counts)
    out, _ = convert(tmp_path, src, "out", "--max-per-role", "5", "--val-ratio", "0.25", "--seed", "1")
    train, val = read_jsonl(out / "rp.jsonl"), read_jsonl(out / "rp_val.jsonl")
    sampled = {role: min(5, n) for role, n in counts.items()}
    assert len(val) == round(0.25 * sum(sampled.values()))
    assert per_role(train) + per_role(val) == Counter(sampled)
    assert "solo" not in per_role(val)
    assert all(per_role(train)[role] >= 1 for role in counts)  # every role keeps training data
    assert len(per_role(val)) > 10  # spread over many roles, not taken from a few
    as_text = {json.dumps(r, sort_keys=True) for r in train}
    assert not any(json.dumps(r, sort_keys=True) in as_text for r in val)


def test_val_quotas_share_by_largest_remainder():
    tiebreak = np.arange(5, dtype=np.uint64)
    quotas = val_quotas(np.array([10, 5, 1, 2, 3]), 0.2, tiebreak)
    assert quotas.sum() == round(0.2 * 21)
    assert quotas[0] == 2 and quotas[1] == 1 and quotas[2] == 0
    assert val_quotas(np.array([1, 1, 1]), 0.5, None).tolist() == [0, 0, 0]
    assert val_quotas(np.array([2, 2]), 0.9, None).tolist() == [1, 1]  # every role keeps one for training
    # 1.5 each, round(4.5) = 4 in all: the one left goes to the lowest tie-break
    assert val_quotas(np.array([5, 5, 5]), 0.3, np.array([3, 1, 2], dtype=np.uint64)).tolist() == [1, 2, 1]


def test_resample_epochs_draws_each_role_anew_per_epoch(tmp_path):
    counts = {"ann": 40, "bob": 12, "cy": 2}
    src = uneven_corpus(tmp_path / "in.jsonl", counts)
    one, _ = convert(tmp_path, src, "one", "--max-per-role", "4", "--val-ratio", "0.2", "--seed", "5")
    three, result = convert(
        tmp_path,
        src,
        "three",
        "--max-per-role",
        "4",
        "--val-ratio",
        "0.2",
        "--seed",
        "5",
        "--resample-epochs",
        "3",
    )
    single = (one / "rp.jsonl").read_bytes().splitlines()
    lines = (three / "rp.jsonl").read_bytes().splitlines()
    assert len(lines) == 3 * len(single)
    epochs = [lines[i * len(single) : (i + 1) * len(single)] for i in range(3)]
    assert epochs[0] == single  # epoch 0 is exactly the plain draw
    for epoch in epochs:  # every virtual epoch has the same per-role sizes
        assert per_role([json.loads(x) for x in epoch]) == per_role([json.loads(x) for x in single])
    ann = [{x for x in epoch if b'"role_id":"ann"' in x} for epoch in epochs]
    assert ann[0] != ann[1] and ann[1] != ann[2]  # 40 conversations: different draws per epoch
    assert (one / "rp_val.jsonl").read_bytes() == (three / "rp_val.jsonl").read_bytes()
    val = set((three / "rp_val.jsonl").read_bytes().splitlines())
    assert not val & set(lines)  # validation conversations never train, in any epoch
    entry = json.loads((three / "dataset_info.json").read_text())["rp"]
    assert entry["lfkit"]["resample_epochs"] == 3
    assert entry["lfkit"]["recipe_keys"] == {"num_train_epochs": 1}
    assert "num_train_epochs: 1" in result.output


def test_context_only_gives_one_sample_per_assistant_turn(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a", 3, system="P"), chat("b", 1)])
    out, result = convert(tmp_path, src, "out", "--context-only")
    samples = read_jsonl(out / "rp.jsonl")
    assert len(samples) == 4
    assert all(len(s["messages"]) == 2 for s in samples)
    assert [s["messages"][1]["content"] for s in samples if s["role_id"] == "a"] == [
        "answer 0 from a ", "answer 1 from a ", "answer 2 from a ",
    ]  # fmt: skip
    assert all(s["system"] == "P" for s in samples if s["role_id"] == "a")
    note = json.loads((out / "dataset_info.json").read_text())["rp"]["lfkit"]
    assert note["prompt"] == "context_only" and note["mask_history"].startswith("not applicable")
    assert (
        run_cli("convert", src, "--out", out, "--name", "x", "--context-only", "--mask-history").exit_code
        != 0
    )  # mask_history means nothing for one-turn samples


def test_mask_history_is_noted_in_the_dataset_entry(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a", 3)])
    out, _ = convert(tmp_path, src, "out", "--mask-history")
    note = json.loads((out / "dataset_info.json").read_text())["rp"]["lfkit"]
    assert note["prompt"] == "history"
    assert note["recipe_keys"] == {"mask_history": True}
    assert note["mask_history"].startswith("requested")


def test_gzip_input_gives_the_same_dataset(tmp_path):
    records = [chat(f"r{i % 4}", 2, tag=str(i)) for i in range(20)] + [b"{bad"]
    plain = write_jsonl(tmp_path / "in.jsonl", records)
    packed = write_jsonl(tmp_path / "in.jsonl.gz", records, gz=True)
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    a, _ = convert(tmp_path, plain, "a", "--max-per-role", "3", "--seed", "2")
    b, _ = convert(tmp_path, packed, "b", "--max-per-role", "3", "--seed", "2")
    assert (a / "rp.jsonl").read_bytes() == (b / "rp.jsonl").read_bytes()
    (reject,) = read_jsonl(b / "rp.rejects.jsonl")
    assert (reject["file"], reject["line"]) == (str(packed), 21)


def test_one_file_per_character_directory_takes_role_from_file_name(tmp_path):
    chars = tmp_path / "chars"
    write_jsonl(chars / "alice.jsonl", [{"messages": chat("x", 1, tag=str(i))["messages"]} for i in range(5)])
    write_jsonl(chars / "bob.jsonl.gz", [{"messages": chat("x", 2)["messages"]}, b"not json"], gz=True)
    (chars / "notes.txt").write_text("ignored: not a JSONL file")
    out = tmp_path / "out"
    result = run_cli("convert", chars, "--out", out, "--name", "rp", "--max-per-role", "3")
    assert result.exit_code == 0, result.output
    assert per_role(read_jsonl(out / "rp.jsonl")) == {"alice": 3, "bob": 1}
    (reject,) = read_jsonl(out / "rp.rejects.jsonl")
    assert reject["file"].endswith("bob.jsonl.gz") and reject["line"] == 2


def test_pippa_records_convert_with_bot_id_roles(tmp_path):
    def pippa(bot, i):
        return {
            "bot_id": bot,
            "bot_description": f"{bot} is a character.",
            "bot_definitions": "",
            "conversation": [
                {"message": f"Greetings from {bot}", "is_human": False},
                {"message": f"hi {i}", "is_human": True},
                {"message": f"reply {i}", "is_human": False},
            ],
        }

    src = write_jsonl(tmp_path / "pippa.jsonl", [pippa("b1", i) for i in range(4)] + [pippa("b2", 9)])
    out = tmp_path / "out"
    result = run_cli("convert", src, "--out", out, "--name", "rp", "--max-per-role", "2")
    assert result.exit_code == 0, result.output
    samples = read_jsonl(out / "rp.jsonl")
    assert per_role(samples) == {"b1": 2, "b2": 1}
    assert samples[0]["system"].endswith("Opening message:\nGreetings from " + samples[0]["role_id"])
    assert "assistant greetings moved into the system text" in result.output


def test_stats_table_matches_what_convert_writes(tmp_path):
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    result = run_cli(
        "stats", src, "--role-key", "user_id", "--max-per-role", "2,all", "--batch-size", "4",
        "--seconds-per-step", "3600", "--seed", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "conversations per role (min / median / max)" in result.output
    assert "1 / 3.0 / 9" in result.output
    two = sum(min(2, n) for n in COUNTS.values())  # 9 samples -> 3 steps -> 3.00 hours
    rows = [line for line in result.output.splitlines() if line.strip().startswith(("│", "|"))]
    assert any(line.split()[1:9:2] == ["2", str(two), str(two), "3"] for line in rows), rows
    assert any("all" in line and "20" in line and "5" in line and "5.00" in line for line in rows), rows
    out, _ = convert(tmp_path, src, "out", "--max-per-role", "2")
    assert len(read_jsonl(out / "rp.jsonl")) == two


def test_stats_with_tokenizer_reports_token_lengths(tmp_path, tiny_model):
    result = run_cli("stats", SAMPLE, "--role-key", "user_id", "--tokenizer", tiny_model)
    assert result.exit_code == 0, result.output
    assert "tokens per conversation (no template)" in result.output


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_invalid_options_are_usage_errors(tmp_path, bad):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a")])
    result = run_cli("convert", src, "--out", tmp_path / "o", "--name", "rp", "--max-per-role", bad)
    assert result.exit_code == 2


def test_convert_summary_gives_steps_and_hours_of_the_written_set(tmp_path):
    """The "samples -> steps -> hours" rows for what convert actually wrote (issue 2's summary)."""
    out = tmp_path / "out"
    args = ["--role-key", "user_id", "--max-per-role", "4", "--resample-epochs", "2"]
    plan = ["--batch-size", "4", "--seconds-per-step", "90"]
    result = run_cli("convert", SAMPLE, "--out", out, "--name", "rp", *args, *plan)
    assert result.exit_code == 0, result.output
    steps = -(-len(read_jsonl(out / "rp.jsonl")) // 4)

    def cell(label: str) -> str:
        line = next(x for x in result.output.splitlines() if label in x)
        return line.strip(" │").split("│")[-1].strip()

    assert cell("optimizer steps (2 virtual epochs, effective batch 4)") == f"{steps:,}"
    assert cell("hours at 90 s/step") == f"{steps * 90 / 3600:,.2f}"
