"""``--engine ray`` on a real two-node Ray cluster (head and worker on 127.0.0.1).

The Ray engine must keep exactly the conversations the local engine keeps, write the same
rejects, account for every record, and write Parquet shards that ``llamafactory-cli train``
loads. The cluster is the session's ``ray_cluster`` fixture (``tests/local_ray.py``); its
nodes run the installed lfkit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import tiny_recipe
from dialogue_helpers import chat, run_cli, write_jsonl
from layout_fixtures import write_json_array
from test_two_pass import messy_lines, write_lines


def rows(path: Path) -> list[str]:
    """The rows of a Parquet file or folder of shards, as sorted canonical JSON."""
    return sorted(json.dumps(row, sort_keys=True) for row in pq.read_table(path).to_pylist())


def convert(tmp_path: Path, out: str, inputs: list[Path], *options: str) -> tuple[Path, str]:
    target = tmp_path / out
    result = run_cli("convert", *inputs, "--out", target, "--name", "rp", "--role-key", "user_id", *options)
    assert result.exit_code == 0, result.output
    return target, " ".join(result.output.replace("│", " ").split())


def inputs(tmp_path: Path) -> list[Path]:
    """A JSON Lines file, a .gz file and a JSON array: messy records, 13 roles."""
    lines = messy_lines()
    (tmp_path / "in").mkdir()
    plain = write_lines(tmp_path / "in" / "a.jsonl", lines[:120])
    packed = write_lines(tmp_path / "in" / "b.jsonl.gz", lines[120:], gz=True)
    array = write_json_array(
        tmp_path / "in" / "c.json", [chat(f"r{i % 5}", 2, tag=f"arr{i}") for i in range(30)]
    )
    return [plain, packed, array]


@pytest.mark.train
@pytest.mark.parametrize(
    "options",
    [
        ("--max-per-role", "3", "--val-ratio", "0.25", "--resample-epochs", "2", "--seed", "5"),
        ("--max-per-role", "2", "--val-ratio", "0.3", "--val-by", "role", "--validate-all"),
    ],
    ids=["sampled", "validate_all_by_role"],
)
def test_ray_engine_keeps_what_the_local_engine_keeps(ray_cluster, tmp_path, options):
    assert len(ray_cluster.alive_nodes()) == 2
    files = inputs(tmp_path)
    local, local_text = convert(tmp_path, "local", files, *options, "--format", "parquet")
    ray, ray_text = convert(
        tmp_path, "ray", files, *options, "--engine", "ray", "--ray-address", ray_cluster.address
    )
    assert rows(ray / "rp") == rows(local / "rp.parquet")
    assert rows(ray / "rp_val") == rows(local / "rp_val.parquet")
    assert (ray / "rp.rejects.jsonl").read_bytes() == (local / "rp.rejects.jsonl").read_bytes()
    equation = next(part for part in local_text.split("converted ")[1:] if "= read" in part).split("=")[0]
    assert f"converted {equation}" in ray_text  # the same accounting
    assert all(p.suffix == ".parquet" for p in (ray / "rp").iterdir())
    entry = json.loads((ray / "dataset_info.json").read_text())["rp"]
    assert entry["file_name"] == "rp" and entry["formatting"] == "sharegpt"


@pytest.mark.train
def test_ray_shards_train_with_llamafactory(ray_cluster, tmp_path, tiny_model, run_train):
    records = [chat(f"role{i % 6}", 2, tag=str(i), system=f"You are role{i % 6}.") for i in range(60)]
    src = write_jsonl(tmp_path / "chats.jsonl", records)
    out, text = convert(
        tmp_path, "data", [src], "--max-per-role", "4", "--val-ratio", "0.2", "--engine", "ray",
        "--ray-address", ray_cluster.address,
    )  # fmt: skip
    assert "converted 24 + rejected 0 + not sampled 36 = read 60" in text
    recipe = tiny_recipe(
        tiny_model, out, "rp", tmp_path / "run", eval_dataset="rp_val", eval_strategy="steps", eval_steps=2,
        per_device_eval_batch_size=2,
    )  # fmt: skip
    run = run_train(recipe).check()
    results = json.loads((run.output_dir / "all_results.json").read_text())
    assert "train_loss" in results and "eval_loss" in results
    # a later local run of the same name replaces the shard folders with files, and back
    local, _ = convert(tmp_path, "data", [src], "--max-per-role", "4", "--val-ratio", "0.2")
    assert (local / "rp.jsonl").is_file() and not (local / "rp").exists() and not (local / "rp_val").exists()
    assert json.loads((local / "dataset_info.json").read_text())["rp"]["file_name"] == "rp.jsonl"


def test_missing_ray_and_bad_engine_options_are_usage_errors(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a")])
    out = tmp_path / "out"
    common = ["convert", src, "--out", out, "--name", "rp"]
    result = run_cli(*common, "--ray-address", "127.0.0.1:1")
    assert result.exit_code == 2 and "--ray-address needs --engine ray" in result.output
    result = run_cli(*common, "--engine", "ray", "--format", "jsonl")
    assert result.exit_code == 2 and "Parquet shards" in result.output
    result = run_cli(*common, "--engine", "ray", "--dedup", "near")
    assert result.exit_code == 2 and "--dedup near" in result.output
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = run_cli(*common, "--engine", "ray")
    assert result.exit_code == 2 and "pip install 'lfkit[ray]'" in result.output
    assert not out.exists() or not any(out.iterdir())
