"""Outputs are registered without clobbering others and replaced atomically, or not at all."""

from __future__ import annotations

import json
import os

import pytest
from dialogue_helpers import chat, read_jsonl, run_cli, uneven_corpus, write_jsonl
from lfkit.data_tools.core.registry import RegistryError, read_dataset_info, register_datasets
from lfkit.data_tools.dialogue import convert as dialogue_convert
from lfkit.data_tools.dialogue import render as dialogue_render
from lfkit.data_tools.dialogue.convert import ConvertOptions, RoleRequiredError, convert_dialogue

from lfkit import atomic
from lfkit.atomic import AtomicGroup, atomic_write

COUNTS = {"ann": 6, "bob": 4, "cy": 1}


def snapshot(directory) -> dict[str, bytes]:
    """Every file in the directory (hidden temporaries included) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_merges_into_existing_dataset_info_without_clobbering(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    existing = {
        "alpaca_en": {"file_name": "alpaca.json"},
        "rp": {"file_name": "old.jsonl"},
        "other_val": {"file_name": "x.jsonl", "formatting": "sharegpt"},
    }
    (out / "dataset_info.json").write_text(json.dumps(existing))
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    result = run_cli(
        "convert", src, "--out", out, "--name", "rp", "--role-key", "user_id", "--val-ratio", "0.3"
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "dataset_info.json").read_text())
    assert list(info) == ["alpaca_en", "rp", "other_val", "rp_val"]  # order kept, new names appended
    assert info["alpaca_en"] == existing["alpaca_en"] and info["other_val"] == existing["other_val"]
    assert info["rp"]["file_name"] == "rp.jsonl" and info["rp_val"]["file_name"] == "rp_val.jsonl"
    assert info["rp"]["formatting"] == "sharegpt"
    assert info["rp"]["tags"]["user_tag"] == "user"


def test_broken_dataset_info_is_an_error_and_nothing_is_written(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "dataset_info.json").write_text('{"a": {"file_name": "a.json"},\n  oops}')
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    before = snapshot(out)
    result = run_cli("convert", src, "--out", out, "--name", "rp", "--role-key", "user_id")
    assert result.exit_code == 1
    assert "dataset_info.json:2:3: not valid JSON" in result.output
    assert snapshot(out) == before
    (out / "dataset_info.json").write_text("[1, 2]")
    with pytest.raises(RegistryError, match="expected a JSON object"):
        read_dataset_info(out)


def test_register_datasets_replaces_only_given_names(tmp_path):
    register_datasets(tmp_path, {"a": {"file_name": "a1"}, "b": {"file_name": "b1"}})
    register_datasets(tmp_path, {"b": {"file_name": "b2"}, "c": {"file_name": "c1"}})
    assert read_dataset_info(tmp_path) == {
        "a": {"file_name": "a1"}, "b": {"file_name": "b2"}, "c": {"file_name": "c1"},
    }  # fmt: skip


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half of the new cont")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # the temporary file is gone
    with atomic_write(target, "w") as fh:
        fh.write("new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's mode is kept


def first_good_run(tmp_path):
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    write_jsonl(tmp_path / "bad.jsonl", [b"{nope"])
    opts = ConvertOptions(out_dir=tmp_path / "out", name="rp", role_key="user_id", val_ratio=0.3, seed=1)
    convert_dialogue([src, tmp_path / "bad.jsonl"], opts)
    return src, opts, snapshot(opts.out_dir)


def test_failure_while_writing_the_dataset_leaves_previous_outputs_intact(tmp_path, monkeypatch):
    src, opts, before = first_good_run(tmp_path)
    assert set(before) == {"dataset_info.json", "rp.jsonl", "rp_val.jsonl", "rp.rejects.jsonl"}
    real_copy = dialogue_convert.copy_rows
    calls = []

    def copy_then_fail(read, samples, picks, writer, skip=None, collect=None):
        calls.append(len(picks))
        if len(calls) == 2:  # the training file is fully written, the validation file half
            writer.write(b'{"messages": [')
            raise OSError("No space left on device")
        return real_copy(read, samples, picks, writer, skip, collect)

    monkeypatch.setattr(dialogue_convert, "copy_rows", copy_then_fail)
    opts.seed = 2  # a different draw, so a partial replacement would show
    with pytest.raises(OSError, match="No space left"):
        convert_dialogue([src], opts)
    assert len(calls) == 2
    assert snapshot(opts.out_dir) == before  # same files, same bytes, no temporaries left


def test_failure_while_reading_leaves_previous_outputs_intact(tmp_path, monkeypatch):
    src, opts, before = first_good_run(tmp_path)
    real = dialogue_render.render
    seen = []

    def render_then_fail(conv, context_only):
        seen.append(conv.role)
        if len(seen) == 5:
            raise KeyboardInterrupt  # an interrupted run
        return real(conv, context_only)

    monkeypatch.setattr("lfkit.data_tools.dialogue.scan.render", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        convert_dialogue([src], opts)
    assert snapshot(opts.out_dir) == before


def test_cli_reports_the_accounting_and_where_outputs_went(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), b"[]", chat("b")])
    out = tmp_path / "out"
    result = run_cli("convert", src, "--out", out, "--name", "rp", "--role-key", "user_id")
    assert result.exit_code == 0, result.output
    assert "converted 2 + rejected 1 = read 3" in result.output
    assert f"registered in {out / 'dataset_info.json'}" in result.output
    assert "not_an_object" in result.output
    assert len(read_jsonl(out / "rp.jsonl")) == 2


def test_all_rejected_exits_non_zero_and_writes_only_rejects(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [b"{", b"[]"])
    out = tmp_path / "out"
    result = run_cli("convert", src, "--out", out, "--name", "rp")
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["rp.rejects.jsonl"]


def test_missing_input_is_a_usage_error(tmp_path):
    result = run_cli("convert", tmp_path / "nope.jsonl", "--out", tmp_path / "o", "--name", "rp")
    assert result.exit_code == 2
    # click's error box wraps a long path at the terminal width (80 columns without a terminal)
    assert "nope.jsonl" in "".join(result.output.replace("│", "").split())


def test_atomic_group_publishes_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    with pytest.raises(RuntimeError), AtomicGroup() as group:
        group.open(a, "w").write("new a")
        group.open(b, "w").write("new b")
        raise RuntimeError("late failure")
    assert snapshot(tmp_path) == {"a.txt": b"old a"}  # nothing published, no temporaries left
    with AtomicGroup() as group:
        group.open(a, "w").write("new a")
        group.open(b, "w").write("new b")
        group.discard(b)
    assert snapshot(tmp_path) == {"a.txt": b"new a"}


def test_a_staged_folder_replaces_a_folder_or_a_file_and_a_failure_keeps_the_old_one(tmp_path):
    """The Ray engine's Parquet shards: a folder published with the run's other outputs."""
    shards, work = tmp_path / "rp", tmp_path / "work"
    work.mkdir()
    shards.mkdir()
    (shards / "part-00000.parquet").write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicGroup(tmp_dir=work) as group:
        (group.stage_dir(shards) / "part-00000.parquet").write_bytes(b"new")
        raise RuntimeError("late failure")
    assert (shards / "part-00000.parquet").read_bytes() == b"old" and not list(work.iterdir())
    with AtomicGroup(tmp_dir=work) as group:
        folder = group.stage_dir(shards)
        (folder / "part-00000.parquet").write_bytes(b"new")
        (folder / "part-00001.parquet").write_bytes(b"new too")
        group.open(tmp_path / "dataset_info.json", "w").write("{}")
    assert sorted(p.name for p in shards.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert not list(work.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == [
        "dataset_info.json",
        "rp",
        "work",
    ]
    shards_file = tmp_path / "rp_val"
    shards_file.write_text("a file of the same name")
    with AtomicGroup(tmp_dir=work) as group:
        (group.stage_dir(shards_file) / "part-00000.parquet").write_bytes(b"val")
    assert (shards_file / "part-00000.parquet").read_bytes() == b"val"
    assert shards.stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_outputs_are_published_together_train_val_rejects_then_dataset_info(tmp_path, monkeypatch):
    """A failure while publishing the training file leaves the validation file untouched too.

    Before, the validation file was renamed into place inside the training file's write, so it
    was already replaced when the training file failed.
    """
    src, opts, before = first_good_run(tmp_path)
    real_replace = os.replace
    renamed = []

    def replace(src_name, dst):
        renamed.append(os.path.basename(dst))
        if os.path.basename(dst) == "rp.jsonl" and fail:
            raise OSError("Input/output error")
        return real_replace(src_name, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    fail = True
    opts.seed = 2  # a different draw, so a partial replacement would show
    with pytest.raises(OSError, match="Input/output error"):
        convert_dialogue([src, tmp_path / "bad.jsonl"], opts)
    assert snapshot(opts.out_dir) == before
    fail = False
    renamed.clear()
    convert_dialogue([src, tmp_path / "bad.jsonl"], opts)
    assert renamed == ["rp.jsonl", "rp_val.jsonl", "rp.rejects.jsonl", "dataset_info.json"]


def test_run_without_val_ratio_retires_lfkit_validation_split(tmp_path):
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    out = tmp_path / "out"
    base = ("convert", src, "--out", out, "--name", "rp", "--role-key", "user_id")
    assert run_cli(*base, "--val-ratio", "0.3").exit_code == 0
    assert (out / "rp_val.jsonl").exists()
    result = run_cli(*base)
    assert result.exit_code == 0, result.output
    assert "removed the earlier validation split rp_val" in " ".join(result.output.split())
    assert not (out / "rp_val.jsonl").exists()
    info = read_dataset_info(out)
    assert list(info) == ["rp"]
    assert len(read_jsonl(out / "rp.jsonl")) == sum(COUNTS.values())  # everything is training now


def test_validation_entry_lfkit_did_not_write_is_kept_with_a_warning(tmp_path):
    src = uneven_corpus(tmp_path / "in.jsonl", COUNTS)
    out = tmp_path / "out"
    out.mkdir()
    mine = {"rp_val": {"file_name": "rp_val.jsonl", "formatting": "sharegpt"}}
    (out / "dataset_info.json").write_text(json.dumps(mine))
    write_jsonl(out / "rp_val.jsonl", [chat("hand-made")])
    result = run_cli("convert", src, "--out", out, "--name", "rp", "--role-key", "user_id")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: dataset_info.json has an entry rp_val that lfkit did not write; left alone" in text
    assert read_dataset_info(out)["rp_val"] == mine["rp_val"]
    assert read_jsonl(out / "rp_val.jsonl") == [chat("hand-made")]


def test_max_per_role_without_any_role_is_a_usage_error(tmp_path):
    src, opts, before = first_good_run(tmp_path)  # previous outputs must survive the refusal
    result = run_cli("convert", src, "--out", opts.out_dir, "--name", "rp", "--max-per-role", "2")
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "--max-per-role needs a role for every conversation" in text
    assert f"{sum(COUNTS.values())} of {sum(COUNTS.values())} have none" in text
    assert snapshot(opts.out_dir) == before
    with pytest.raises(RoleRequiredError):  # the library refuses it the same way
        convert_dialogue([src], ConvertOptions(out_dir=tmp_path / "lib", name="rp", max_per_role=2))
    assert not (tmp_path / "lib" / "rp.jsonl").exists()
