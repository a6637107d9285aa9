"""``lfkit plan`` from the command line, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lfkit.cli import app
from lfkit.planning.catalog import estimate_line

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


def test_bf16_recipe_on_turing_fits_but_does_not_run():
    turing = _plan("recipes/style_1.5b_quick.yaml", "--gpu", "2080ti")
    assert turing["fits"] is True and turing["runs"] is False
    assert any("no bf16" in b for b in turing["blocking"])
    line = estimate_line(turing)
    assert ": fits but cannot run: bf16: true but GeForce RTX 2080 Ti" in line and "\n" not in line
    # The same recipe on its own 6 GB Ampere card runs; neither verdict is hidden in the human form.
    ampere = _plan("recipes/style_1.5b_quick.yaml", "--gpu", "rtx-3050-6gb")
    assert ampere["fits"] is True and ampere["runs"] is True and ampere["blocking"] == []
    assert "cannot run" not in estimate_line(ampere)
    human = runner.invoke(app, ["plan", "recipes/style_1.5b_quick.yaml", "--gpu", "2080ti"])
    text = " ".join(human.output.split())
    assert human.exit_code == 0 and "usable: fits" in text
    assert "runs: no (fits, but 1 blocking problem(s) below)" in text
    # A recipe that does not fit does not run either, blocked or not.
    small = _plan("recipes/14b_rtx6000.yaml", "--gpu", "quadro-rtx-6000x2")
    assert small["fits"] is False and small["runs"] is False
    assert "does NOT fit;" in estimate_line(small)


def test_kl_beta_is_labelled_as_not_modelled_and_lora_needs_no_reference_copy():
    plan = _plan("recipes/style_7b_standard.yaml", "--gpu", "3090")
    kl = [n for n in plan["notes"] if n.startswith("kl_beta 0.1 NOT MODELLED")]
    assert len(kl) == 1 and "no weight copy" in kl[0] and "[response tokens x vocabulary]" in kl[0]
    assert "kl_reference" not in plan["memory_gb"]
    assert estimate_line(plan).endswith("uncalibrated; kl_beta's extra forward and KL tensors not modelled)")
    human = runner.invoke(app, ["plan", "recipes/style_7b_standard.yaml", "--gpu", "3090"])
    assert "[response tokens x vocabulary]" in " ".join(human.output.split())  # not eaten as rich markup
    without = _plan("recipes/h100_lora.yaml", "--gpu", "h100")
    assert not any("kl_beta" in n for n in without["notes"])


def test_kl_beta_with_freeze_counts_a_frozen_reference_copy(tmp_path):
    recipe = yaml.safe_load((REPO / "recipes/h100_freeze.yaml").read_text())
    path = tmp_path / "freeze.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plain = _plan(str(path), "--gpu", "h100")
    recipe["kl_beta"] = 0.1
    path.write_text(yaml.safe_dump(recipe))
    kl = _plan(str(path), "--gpu", "h100")
    copy_gib = kl["model"]["total_params"] * 2 / 1024**3  # bf16: 2 bytes per parameter
    assert kl["memory_gb"]["kl_reference"] == pytest.approx(copy_gib, abs=1e-3)
    assert kl["peak_memory_gb"] == pytest.approx(plain["peak_memory_gb"] + copy_gib, abs=0.02)
    assert any("weights are counted (kl_reference)" in n for n in kl["notes"])
