"""``lfkit recipe show``: the configuration LlamaFactory's own parser makes of a recipe + overrides."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfkit.cli import app
from lfkit.planning.show import RecipeShowError, parse, plugin_keys

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # recipes' relative paths resolve from where llamafactory-cli runs
    for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "USE_MODELSCOPE_HUB", "USE_OPENMIND_HUB"):
        monkeypatch.delenv(name, raising=False)


def _settings(config) -> dict[str, tuple[object, str]]:
    return {s.key: (s.value, s.source) for s in config.settings}


def test_recipe_overrides_and_defaults_are_told_apart():
    config = parse(Path("scripts/sample_cpu_lora.yaml"), ["learning_rate=2e-4", "max_steps=7"])
    got = _settings(config)
    assert got["learning_rate"] == (2e-4, "override")  # OmegaConf reads 2e-4 as a float, as llamafactory-cli
    assert got["max_steps"] == (7, "override")
    assert got["lora_rank"] == (8, "recipe")
    assert got["gradient_accumulation_steps"] == (2, "recipe")
    assert got["samples per optimizer step, per GPU"] == (4, "derived")
    from llamafactory.hparams.finetuning_args import FinetuningArguments

    declared = {f.name: f.default for f in fields(FinetuningArguments)}
    assert got["lora_dropout"] == (declared["lora_dropout"], "default")
    assert "freeze_trainable_layers" not in got  # a freeze key says nothing about a LoRA run


def test_llamafactorys_adjustments_are_shown_not_the_raw_yaml():
    """fp16 -> compute_dtype float16; the lr scheduler as LlamaFactory's enum value."""
    got = _settings(parse(Path("recipes/14b_rtx6000.yaml"), []))
    assert got["fp16"] == (True, "recipe")
    assert got["compute_dtype"] == ("float16", "derived")
    assert got["lr_scheduler_type"] == ("cosine", "recipe")
    assert got["timeseries_sft_lr"] == (1e-4, "recipe")  # a plugin key, parsed by the patched parser
    assert got["kl_beta"][1] == "default"


def test_plugin_keys_are_lfkits_own():
    keys = plugin_keys()
    assert {"kl_beta", "timeseries_sft_lr"} <= set(keys)
    from llamafactory.hparams.finetuning_args import FinetuningArguments

    assert not set(keys) & {f.name for f in fields(FinetuningArguments)}


def test_keys_the_parse_replaces_are_shown_as_written():
    got = _settings(parse(Path("recipes/8b_2080ti_lora_zero3.yaml"), []))
    assert got["deepspeed"][1] == "as written" and str(got["deepspeed"][0]).endswith(".json")
    assert got["output_dir"][1] == "as written" and "lfkit-recipe-show" not in str(got["output_dir"][0])


def test_a_misspelt_override_is_rejected_by_llamafactory():
    with pytest.raises(RecipeShowError, match="learning_rat"):
        parse(Path("scripts/sample_cpu_lora.yaml"), ["learning_rat=1e-4"])
    with pytest.raises(RecipeShowError, match="key=value"):
        parse(Path("scripts/sample_cpu_lora.yaml"), ["learning_rate"])


def test_model_source_follows_the_mirror_settings(monkeypatch):
    hub = parse(Path("recipes/14b_rtx6000.yaml"), [])
    assert hub.model_source.startswith("Hugging Face id") and "https://huggingface.co" in hub.model_source
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.com")
    assert "the mirror https://hf-mirror.com" in parse(Path("recipes/14b_rtx6000.yaml"), []).model_source
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert parse(Path("recipes/14b_rtx6000.yaml"), []).model_source.startswith("ModelScope id")


def test_show_command_json_and_table(tiny_model):
    result = runner.invoke(
        app, ["recipe", "show", "scripts/sample_cpu_lora.yaml", f"model_name_or_path={tiny_model}", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model_source"].startswith(f"local directory {tiny_model}")
    assert {s["section"] for s in data["settings"]} >= {
        "method",
        "precision",
        "batch",
        "schedule",
        "lfkit plugin",
    }
    table = runner.invoke(app, ["recipe", "show", "scripts/sample_cpu_lora.yaml", "cutoff_len=64"])
    assert table.exit_code == 0, table.output
    assert "cutoff_len" in table.output and "override" in table.output
    bad = runner.invoke(app, ["recipe", "show", "scripts/sample_cpu_lora.yaml", "cutoff_lenn=64"])
    assert bad.exit_code == 2 and "cutoff_lenn" in bad.output
