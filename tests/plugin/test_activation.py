"""The plugin activates without a fork, stays out of the way, and keeps LlamaFactory's parser strict."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_recipe, train_env


def _write_sharegpt(dataset_dir, name="smoke"):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are Bob."},
                {"role": "user", "content": f"Hello {i}, how are you?"},
                {"role": "assistant", "content": f"I am fine, thank you {i}."},
            ]
        }
        for i in range(8)
    ]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / f"{name}.json").write_text(json.dumps(rows))
    tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    entry = {
        "file_name": f"{name}.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": tags,
    }
    (dataset_dir / "dataset_info.json").write_text(json.dumps({name: entry}))


def _losses(output_dir):
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [(r["step"], r["loss"]) for r in state["log_history"] if "loss" in r]


def test_hook_imports_nothing_heavy_until_llamafactory_is_imported():
    code = (
        "import sys; print(sorted(m for m in ('torch', 'transformers', 'llamafactory') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = (
        "import sys, lfkit.plugin.activate as a; "
        "print(any(type(f).__name__ == '_PostImportFinder' for f in sys.meta_path))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_the_wheel_puts_the_hook_in_site_packages():
    """The mechanism every torchrun rank relies on: lfkit_plugin.pth in this environment's site dirs."""
    from lfkit.plugin.activate import hook_installed

    assert hook_installed()


@pytest.mark.train
def test_recipe_without_plugin_keys_trains_exactly_as_stock_llamafactory(tiny_model, run_train, tmp_path):
    _write_sharegpt(tmp_path / "data")
    with_plugin = run_train(tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "lfkit")).check()
    stock = run_train(
        tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "stock"),
        env={"LFKIT_DISABLE_PLUGIN": "1"},
    ).check()
    assert [s for s, _ in _losses(with_plugin.output_dir)] == [1, 2, 3, 4]
    assert _losses(with_plugin.output_dir) == _losses(stock.output_dir)
    # the stock run really ran without lfkit: it wrote no lfkit record
    assert not list(stock.output_dir.glob("lfkit_*.json"))


def test_misspelt_key_is_still_rejected_by_llamafactorys_parser(tiny_model, tmp_path):
    """The parser itself stays strict with lfkit's keys added (``llamafactory-cli train`` refuses such a
    recipe earlier, in lfkit's pre-flight check: tests/plugin/test_preflight.py)."""
    from llamafactory.hparams import get_train_args

    _write_sharegpt(tmp_path / "data")
    with pytest.raises(ValueError, match="not used by the HfArgumentParser: \\['kl_betta'\\]"):
        get_train_args(tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "out", kl_betta=0.1))


@pytest.mark.train
def test_plugin_key_is_rejected_with_the_plugin_disabled(tiny_model, run_train, tmp_path):
    """Proves the keys come from lfkit: stock LlamaFactory refuses them (fails at parse, no training)."""
    _write_sharegpt(tmp_path / "data")
    recipe = tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "out", kl_beta=0.1)
    run = run_train(recipe, env={"LFKIT_DISABLE_PLUGIN": "1"})
    assert run.returncode != 0
    assert "kl_beta" in run.log


@pytest.mark.train
def test_lfkit_train_is_the_explicit_equivalent(tiny_model, tmp_path):
    _write_sharegpt(tmp_path / "data")
    recipe = tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "out", max_steps=2)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    lfkit = [sys.executable, "-m", "lfkit.cli", "train", str(path), "learning_rate=5e-4"]
    proc = subprocess.run(lfkit, env=train_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    lrs = [r["learning_rate"] for r in state["log_history"] if "learning_rate" in r]
    assert lrs and max(lrs) <= 5e-4  # the KEY=VALUE override reached LlamaFactory
