"""Each CPU-trainable method of the catalog trains for real, with the recipe's own settings.

The recipe file is loaded as shipped and only the overrides in ``CPU_OVERRIDES`` (plus the
per-test ones named next to each run) are changed, each for a stated reason. The runs also
cross-check the planner against LlamaFactory: the trainable and total parameter counts
LlamaFactory logs must equal the planner's for the same recipe on the same model, and the
number of optimizer steps the Trainer makes must equal the planner's step count.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from lfkit.planning.memory import steps_per_epoch, trainable_params
from lfkit.planning.models import resolve_model
from lfkit.planning.recipe_yaml import load_values
from lfkit.planning.training_setup import TrainingSetup

REPO = Path(__file__).resolve().parents[2]

# What a CPU test run changes in a catalog recipe, and why:
CPU_OVERRIDES = {
    "bf16": False,  # no bf16/fp16 on the CPU: fp32
    "fp16": False,
    "pure_bf16": False,
    "preprocessing_num_workers": None,  # tokenise in-process (2-core CI)
    "dataloader_num_workers": 0,
    "plot_loss": False,  # the results tooling draws curves; not needed here
}


def _recipe(name: str, tiny_model: Path, output_dir: Path, **overrides) -> dict:
    recipe = load_values(REPO / "recipes" / name)  # as llamafactory-cli reads it
    assert "deepspeed" not in recipe  # CPU runs cannot use DeepSpeed; these recipes have none
    recipe.update(CPU_OVERRIDES)
    recipe["model_name_or_path"] = str(tiny_model)  # no model hub: the tiny local Qwen2
    recipe["dataset_dir"] = str(REPO / recipe["dataset_dir"])  # the recipe's own sample data
    recipe["output_dir"] = str(output_dir)
    recipe.update(overrides)
    return {k: v for k, v in recipe.items() if v is not None}


def _logged_params(log: str) -> tuple[int, int]:
    match = re.search(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+)", log)
    assert match, log[-3000:]
    return int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))


def _assert_planner_agrees(recipe: dict, log: str) -> None:
    shape = resolve_model(recipe["model_name_or_path"])
    trainable, total = _logged_params(log)
    assert trainable == trainable_params(shape, TrainingSetup.from_recipe(recipe))
    if recipe["finetuning_type"] == "lora":
        total -= trainable  # PEFT counts the adapters in "all params"
    assert total == shape.total_params


def _losses(output_dir: Path) -> list[float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [r["loss"] for r in state["log_history"] if "loss" in r]


@pytest.mark.train
def test_lora_unified_recipe_trains_evaluates_and_keeps_the_best(tiny_model, run_train, tmp_path):
    # Scaled down: one epoch instead of 5, evaluation and checkpoints every step instead of 100.
    recipe = _recipe(
        "qwen2.5_3b_unified_lora.yaml",
        tiny_model,
        tmp_path / "out",
        num_train_epochs=1.0,
        eval_steps=1,
        save_steps=1,
        logging_steps=1,
    )
    run = run_train(recipe).check()
    _assert_planner_agrees(recipe, run.log)
    samples = sum(1 for _ in (REPO / "recipes/data/unified_sample.jsonl").open())
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    expected = steps_per_epoch(
        samples, 1, recipe["per_device_train_batch_size"], recipe["gradient_accumulation_steps"]
    )
    assert state["global_step"] == expected
    assert state["best_model_checkpoint"] and any("eval_loss" in r for r in state["log_history"])
    assert all(math.isfinite(v) for v in _losses(run.output_dir))
    assert (run.output_dir / "adapter_model.safetensors").exists()


@pytest.mark.train
def test_dora_recipe_trains(tiny_model, run_train, tmp_path):
    recipe = _recipe("h100_dora.yaml", tiny_model, tmp_path / "out", max_steps=2, logging_steps=1)
    run = run_train(recipe).check()
    _assert_planner_agrees(recipe, run.log)
    assert len(_losses(run.output_dir)) == 2
    adapter = json.loads((run.output_dir / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True and adapter["r"] == 16


@pytest.mark.train
def test_freeze_recipe_trains_only_the_last_layer(tiny_model, run_train, tmp_path):
    # The tiny model has 2 layers; the recipe's 4 would train all of them.
    recipe = _recipe(
        "h100_freeze.yaml",
        tiny_model,
        tmp_path / "out",
        max_steps=2,
        logging_steps=1,
        freeze_trainable_layers=1,
    )
    run = run_train(recipe).check()
    _assert_planner_agrees(recipe, run.log)
    shape = resolve_model(str(tiny_model))
    assert _logged_params(run.log)[0] == shape.layer_params
    assert len(_losses(run.output_dir)) == 2


@pytest.mark.train
def test_full_recipe_trains(tiny_model, run_train, tmp_path):
    recipe = _recipe("h100_full.yaml", tiny_model, tmp_path / "out", max_steps=2, logging_steps=1)
    run = run_train(recipe).check()
    _assert_planner_agrees(recipe, run.log)
    assert len(_losses(run.output_dir)) == 2
    assert (run.output_dir / "model.safetensors").exists()
