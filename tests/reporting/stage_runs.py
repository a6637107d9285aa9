"""Real LlamaFactory runs of every stage the CPU can train, made once per test session.

Each run is a plain ``llamafactory-cli train`` of the tiny model with the installed lfkit
plugin, on datasets in LlamaFactory's own layouts (``data/dataset_info.json`` of
LlamaFactory 0.9.5: a sharegpt ``messages`` set for SFT, a ``ranking: true`` set with
``conversations``/``chosen``/``rejected`` like ``dpo_en_demo.json`` for DPO, ORPO and RM, and a
``kto_tag`` set like ``kto_en_demo.json`` for KTO). Independent runs go two at a time.

=========  =====================================================================================
``lora``   SFT LoRA, 2 epochs, eval every step (``val_size``), checkpoints at steps 5 and 10,
           token counts; the source of the ``predict`` run's adapter
``full``   SFT full, 2 epochs, two named eval sets (``eval_on_each_dataset``), per-epoch eval,
           token counts, ``lfkit_run_record: false`` (the report falls back to LlamaFactory's files)
``dpo``    DPO (sigmoid), LoRA, 6 steps, eval every 3
``orpo``   ORPO (``stage: dpo``, ``pref_loss: orpo``); its ``lfkit_plots`` is a file beforehand, so
           the plugin's summary must fail as a warning, never failing the run
``kto``    KTO, ``lfkit_summary: false``
``rm``     reward model (``stage: rm``)
``nan``    SFT full with an absurd learning rate: a real divergence (loss NaN, logged as 0.0
           with grad_norm NaN by Transformers' default filter; eval loss NaN)
``predict``  ``do_predict`` + ``predict_with_generate`` with the ``lora`` adapter (BLEU/ROUGE)
=========  =====================================================================================

A module-level cache makes every test module that imports :func:`stage_runs` share one set.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import llamafactory_cli, tiny_recipe, train_env

_CACHE: dict[str, StageRuns] = {}

GREETINGS = 12
PAIRS = 12


PREDICT_PACKAGES = ("jieba", "nltk", "rouge_chinese")
"""What LlamaFactory's predict_with_generate metrics import (the ``lfkit[predict]`` extra)."""


def predict_metrics_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in PREDICT_PACKAGES)


@dataclass(frozen=True)
class StageRuns:
    saves: Path
    logs: dict[str, str]
    """Each run's combined stdout and stderr."""

    def __getitem__(self, name: str) -> Path:
        if name not in self.logs:
            pytest.skip(f"no {name} run: predict_with_generate needs {', '.join(PREDICT_PACKAGES)}")
        return self.saves / name


def write_datasets(data: Path) -> None:
    """SFT, pairwise and KTO datasets in LlamaFactory's layouts, and their dataset_info.json."""
    data.mkdir(parents=True, exist_ok=True)
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    sharegpt = {
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {**tags, "system_tag": "system"},
    }
    info = {}
    greet = [
        {
            "messages": [
                {"role": "system", "content": "You are Bob."},
                {"role": "user", "content": f"Hello {i}, how are you today?"},
                {"role": "assistant", "content": f"I am fine, thank you {i}. The values rise and fall."},
            ]
        }
        for i in range(GREETINGS)
    ]
    for name, rows in (("greet", greet), ("greet_a", greet[:4]), ("greet_b", greet[4:8])):
        (data / f"{name}.json").write_text(json.dumps(rows))
        info[name] = {"file_name": f"{name}.json", **sharegpt}
    pairs = [
        {
            "conversations": [{"from": "human", "value": f"Say something kind about number {i}."}],
            "chosen": {"from": "gpt", "value": f"Number {i} is a fine and friendly number."},
            "rejected": {"from": "gpt", "value": f"No. {i} {i} {i}."},
        }
        for i in range(PAIRS)
    ]
    (data / "pairs.json").write_text(json.dumps(pairs))
    info["pairs"] = {
        "file_name": "pairs.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    }
    kto = [
        {
            "messages": [
                {"content": f"Say something kind about number {i}.", "role": "user"},
                {
                    "content": f"Number {i} is a fine number." if i % 2 == 0 else f"No. {i} {i}.",
                    "role": "assistant",
                },
            ],
            "label": i % 2 == 0,
        }
        for i in range(PAIRS)
    ]
    (data / "kto.json").write_text(json.dumps(kto))
    info["kto"] = {
        "file_name": "kto.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": tags,
    }
    (data / "dataset_info.json").write_text(json.dumps(info, indent=2))


def recipes(model: Path, data: Path, saves: Path) -> dict[str, dict]:
    """The recipe of every run (see the module docstring)."""
    sft = dict(
        max_steps=None, num_train_epochs=2, per_device_eval_batch_size=2, include_num_input_tokens_seen=True
    )
    short = dict(
        max_steps=6,
        val_size=0.25,
        eval_strategy="steps",
        eval_steps=3,
        per_device_eval_batch_size=2,
        cutoff_len=128,
    )
    return {
        "lora": tiny_recipe(
            model,
            data,
            "greet",
            saves / "lora",
            val_size=0.25,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=5,
            **sft,
        ),
        "full": tiny_recipe(
            model,
            data,
            "greet",
            saves / "full",
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            learning_rate=1e-4,
            eval_dataset="greet_a,greet_b",
            eval_on_each_dataset=True,
            eval_strategy="epoch",
            lfkit_run_record=False,
            **sft,
        ),
        "dpo": tiny_recipe(model, data, "pairs", saves / "dpo", stage="dpo", pref_beta=0.1, **short),
        "orpo": tiny_recipe(model, data, "pairs", saves / "orpo", stage="dpo", pref_loss="orpo", **short),
        "kto": tiny_recipe(model, data, "kto", saves / "kto", stage="kto", lfkit_summary=False, **short),
        "rm": tiny_recipe(model, data, "pairs", saves / "rm", stage="rm", **short),
        "nan": tiny_recipe(
            model,
            data,
            "greet",
            saves / "nan",
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            learning_rate=1e38,
            **short,
        ),
        "predict": tiny_recipe(
            model,
            data,
            None,
            saves / "predict",
            do_train=False,
            do_predict=True,
            predict_with_generate=True,
            adapter_name_or_path=str(saves / "lora"),
            eval_dataset="greet",
            max_samples=6,
            max_new_tokens=8,
            per_device_eval_batch_size=3,
            lora_target=None,
            lora_rank=None,
            learning_rate=None,
            max_steps=None,
        ),
    }


def _train(name: str, recipe: dict, work: Path) -> str:
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    proc = subprocess.run(
        [llamafactory_cli(), "train", str(path)],
        env=train_env(OMP_NUM_THREADS="1"),  # two runs at a time on two cores
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{log[-6000:]}"
    return log


@pytest.fixture(scope="session")
def stage_runs(tiny_model, tmp_path_factory) -> StageRuns:
    """Every run of the module docstring, trained once per session (see :data:`_CACHE`)."""
    if "runs" in _CACHE:
        return _CACHE["runs"]
    base = tmp_path_factory.mktemp("stage_runs")
    data, saves = base / "data", base / "saves"
    write_datasets(data)
    all_recipes = recipes(tiny_model, data, saves)
    (saves / "orpo").mkdir(parents=True)
    (saves / "orpo" / "lfkit_plots").write_text("a file where the plugin's plot folder would go\n")
    logs: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        first = {n: pool.submit(_train, n, all_recipes[n], base) for n in all_recipes if n != "predict"}
        logs["lora"] = first["lora"].result()
        later = None
        if predict_metrics_installed():  # else the predict tests skip, naming the packages
            later = pool.submit(_train, "predict", all_recipes["predict"], base)
        for name, future in first.items():
            logs[name] = future.result()
        if later is not None:
            logs["predict"] = later.result()
    _CACHE["runs"] = StageRuns(saves, logs)
    return _CACHE["runs"]
