"""Shared fixtures: a tiny locally-built model and a runner for real LlamaFactory training.

No mocks of LlamaFactory: ``run_train`` starts ``llamafactory-cli train`` as a subprocess,
exactly as a user does, with the lfkit plugin loaded by the installed ``.pth`` hook.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random-weight Qwen2 and its BPE tokenizer, built once per test session."""
    from lfkit.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def llamafactory_cli() -> str:
    """The llamafactory-cli of the running interpreter's environment."""
    local = Path(sys.executable).parent / "llamafactory-cli"
    return str(local) if local.exists() else shutil.which("llamafactory-cli")


def train_env(**extra: str) -> dict[str, str]:
    """Environment for a CPU-only, offline training subprocess."""
    from lfkit.train_env import offline_train_env

    return offline_train_env(cpu_only=True, **extra)


def tiny_recipe(model_dir: Path, dataset_dir: Path, dataset: str, output_dir: Path, **overrides) -> dict:
    """A small sft LoRA recipe for the tiny model; keyword arguments override its keys."""
    recipe = {
        "model_name_or_path": str(model_dir),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_target": "all",
        "lora_rank": 4,
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": "qwen",
        "cutoff_len": 256,
        "output_dir": str(output_dir),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-3,
        "max_steps": 4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "preprocessing_num_workers": None,
        "dataloader_num_workers": 0,
    }
    recipe.update(overrides)
    return {k: v for k, v in recipe.items() if v is not None}


@dataclass
class TrainRun:
    returncode: int
    output_dir: Path
    log: str

    def check(self) -> TrainRun:
        assert self.returncode == 0, f"llamafactory-cli train failed ({self.returncode}):\n{self.log[-6000:]}"
        return self


@pytest.fixture
def run_train(tmp_path):
    """Run ``llamafactory-cli train`` on a recipe dict; returns a :class:`TrainRun`."""

    def _run(recipe: dict, *, env: dict[str, str] | None = None, timeout: int = 600) -> TrainRun:
        recipe_path = tmp_path / f"recipe_{len(list(tmp_path.glob('recipe_*.yaml')))}.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        proc = subprocess.run(
            [llamafactory_cli(), "train", str(recipe_path)],
            env=train_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return TrainRun(proc.returncode, Path(recipe["output_dir"]), proc.stdout + proc.stderr)

    return _run


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on this machine (:mod:`local_ray`): a head and one worker node,
    10 logical CPUs each, started from the repository root on first use and stopped when the
    session ends. Only that cluster's own processes are stopped; another Ray on the machine is not
    touched."""
    from local_ray import local_ray_cluster

    with local_ray_cluster(cwd=REPO) as cluster:
        yield cluster
