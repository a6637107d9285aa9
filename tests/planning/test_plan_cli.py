"""``lfkit plan`` from the command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lfkit.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name their DeepSpeed configs relative to the repository


def _plan(*args: str) -> dict:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_14b_lora_ddp_fits_the_48gb_rtx6000_not_the_24gb_one():
    ada = _plan("recipes/14b_rtx6000.yaml", "--gpu", "rtx-6000-adax2", "--samples", "417")
    turing = _plan("recipes/14b_rtx6000.yaml", "--gpu", "quadro-rtx-6000x2")
    assert ada["fits"] is True and turing["fits"] is False
    assert ada["peak_memory_gb"] == turing["peak_memory_gb"] > 28
    assert ada["model"]["name"] == "ChatTS-14B" and ada["n_gpus"] == 2
    assert ada["time"]["total_steps"] == 70 and ada["time"]["effective_batch"] == 32
    assert ada["calibrated"] is False
    # The 24 GB plan lists re-estimated changes, and some of them fit.
    fitting = [a for a in turing["alternatives"] if a["fits"]]
    assert fitting and all(a["peak_memory_gb"] <= turing["usable_memory_gb"] for a in fitting)


def test_turing_has_no_bf16_and_small_cards_get_qlora_advice():
    plan = _plan("recipes/qwen2.5_3b_unified_lora.yaml", "--gpu", "2080ti")
    assert any("no bf16" in b for b in plan["blocking"])
    assert any("QLoRA" in r for r in plan["recommendation"])


def test_decision_tree_for_large_full_tuning():
    plan = _plan("recipes/qwen3_30b_roleplay_full_zero3.yaml", "--gpu", "a100-80x8")
    assert plan["model"]["total_params_b"] == 30.5
    assert any("LoRA is required" in r for r in plan["recommendation"])
    assert any("slow path" in r for r in plan["recommendation"])


def test_model_size_override_and_local_config(tmp_path, tiny_model):
    eight = _plan("recipes/14b_rtx6000.yaml", "--gpu", "rtx-6000-adax2", "--model-size", "8B")
    assert eight["model"]["name"] == "ChatTS-8B"
    recipe = yaml.safe_load((REPO / "recipes/h100_lora.yaml").read_text())
    recipe["model_name_or_path"] = str(tiny_model)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plan = _plan(str(path), "--gpu", "h100")
    assert plan["model"]["source"] == str(tiny_model / "config.json")
    assert plan["model"]["total_params"] < 1_000_000 and plan["fits"] is True


def test_human_output_and_errors():
    result = runner.invoke(app, ["plan", "recipes/14b_rtx6000.yaml", "--gpu", "quadro-rtx-6000x2"])
    assert result.exit_code == 0 and "does not fit" in result.output and "uncalibrated" in result.output
    bad = runner.invoke(app, ["plan", "recipes/14b_rtx6000.yaml", "--gpu", "rtx6000x2"])
    assert bad.exit_code == 2 and "ambiguous" in bad.output
