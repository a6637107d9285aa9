"""Datasets written by ``lfkit data convert`` train with plain ``llamafactory-cli train``.

Three real training runs (the budget of this module), each on a converted dataset found only
through ``dataset_dir``/``dataset_info.json``: the bundled sample with its ``NAME_val`` split
as the evaluation set; a one-file-per-character directory (one file gzipped) resampled over 3
virtual epochs and trained with ``num_train_epochs: 1``; PIPPA records with ``mask_history``.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import tiny_recipe
from dialogue_helpers import SAMPLE, chat, read_jsonl, run_cli, write_jsonl

pytestmark = pytest.mark.train


def trainer_log(run) -> list[dict]:
    return [json.loads(x) for x in (run.output_dir / "trainer_log.jsonl").read_text().splitlines()]


def test_sample_dataset_and_its_val_split_train_and_evaluate(tmp_path, tiny_model, run_train):
    data = tmp_path / "data"
    result = run_cli(
        "convert", SAMPLE, "--out", data, "--name", "roleplay", "--role-key", "user_id",
        "--max-per-role", "4", "--val-ratio", "0.2", "--seed", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    recipe = tiny_recipe(
        tiny_model, data, "roleplay", tmp_path / "run",
        eval_dataset="roleplay_val", eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=2,
    )  # fmt: skip
    run = run_train(recipe).check()
    logs = trainer_log(run)
    assert logs[-1]["current_steps"] == 4
    assert "eval_loss" in json.loads((run.output_dir / "all_results.json").read_text())


def test_resampled_per_character_collection_trains_one_epoch(tmp_path, tiny_model, run_train):
    chars = tmp_path / "chars"
    for name, n in (("captain", 9), ("bard", 5), ("witch", 1)):
        records = [{"messages": chat(name, 1 + i % 2, tag=str(i))["messages"]} for i in range(n)]
        write_jsonl(chars / f"{name}.jsonl{'.gz' if name == 'bard' else ''}", records, gz=name == "bard")
    data = tmp_path / "data"
    result = run_cli(
        "convert", chars, "--out", data, "--name", "chars", "--max-per-role", "2", "--resample-epochs", "3"
    )
    assert result.exit_code == 0, result.output
    samples = len(read_jsonl(data / "chars.jsonl"))
    assert samples == 3 * (2 + 2 + 1)
    recipe = tiny_recipe(tiny_model, data, "chars", tmp_path / "run", max_steps=None, num_train_epochs=1)
    run = run_train(recipe).check()
    logs = trainer_log(run)
    assert logs[-1]["total_steps"] == math.ceil(samples / 2)  # one pass over all 3 virtual epochs
    assert logs[-1]["current_steps"] == logs[-1]["total_steps"]


def test_pippa_dataset_trains_with_mask_history(tmp_path, tiny_model, run_train):
    records = []
    for i in range(6):
        records.append(
            {
                "bot_id": f"bot{i % 2}",
                "bot_name": "Ayla",
                "bot_description": "A cheerful ranger who loves the forest.",
                "bot_definitions": "{{char}}: Let's go!",
                "conversation": [
                    {"message": "Welcome, traveller!", "is_human": False},
                    {"message": f"Hello there {i}", "is_human": True},
                    {"message": "Ready for the forest?", "is_human": False},
                    {"message": "Yes, lead the way.", "is_human": True},
                    {"message": f"Follow me, story {i}.", "is_human": False},
                ],
            }
        )
    src = write_jsonl(tmp_path / "pippa.jsonl", records)
    data = tmp_path / "data"
    result = run_cli("convert", src, "--out", data, "--name", "pippa", "--mask-history", "--strict")
    assert result.exit_code == 0, result.output
    entry = json.loads((data / "dataset_info.json").read_text())["pippa"]
    assert entry["lfkit"]["recipe_keys"] == {"mask_history": True}
    recipe = tiny_recipe(tiny_model, data, "pippa", tmp_path / "run", **entry["lfkit"]["recipe_keys"])
    run = run_train(recipe).check()
    assert trainer_log(run)[-1]["current_steps"] == 4
