"""End-to-end ``llamafactory-cli train`` runs of the tiny ChatTS model on ChatTS-format data.

Five real runs (full, freeze, LoRA with the encoder under LoRA, LoRA with the encoder fully
trained through ``additional_target``, and ``train_timeseries_modules: false``), each on
single-turn and multi-turn ChatTS data (text-only rows mixed in) that ``lfkit data convert
--kind timeseries`` turned into a LlamaFactory dataset. The learning-rate checks use one
optimizer step with a constant schedule: Adam's first step moves every parameter that got a
gradient by ``lr * |g| / (|g| + eps)``, i.e. by ``lr``, so the largest change in a tensor is its
group's learning rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from lfkit.tiny_chatts import build_tiny_chatts, write_chatts_sample

pytestmark = pytest.mark.train

LR, TS_LR = 1.0e-3, 5.0e-3
ENCODER = (
    "ts_encoder.mlp.0.weight",
    "ts_encoder.mlp.0.bias",
    "ts_encoder.mlp.2.weight",
    "ts_encoder.mlp.2.bias",
)


@pytest.fixture(scope="module")
def chatts(tmp_path_factory):
    """The tiny model, and ChatTS-format JSONL converted by ``lfkit data convert --kind timeseries``."""
    model = build_tiny_chatts(tmp_path_factory.mktemp("tiny_chatts"))
    raw = write_chatts_sample(tmp_path_factory.mktemp("chatts_raw"))
    data = tmp_path_factory.mktemp("chatts_data")
    lfkit = Path(sys.executable).parent / "lfkit"
    inputs = [str(raw / "chatts_single.jsonl"), str(raw / "chatts_multi.jsonl")]
    options = ["--out", str(data), "--name", "chatts", "--kind", "timeseries", "--patch-size", "4"]
    subprocess.run(
        [str(lfkit), "data", "convert", *inputs, *options], check=True, capture_output=True, text=True
    )
    assert "timeseries" in json.loads((data / "dataset_info.json").read_text())["chatts"]["columns"]
    return model, data, load_file(model / "model.safetensors")


def recipe(chatts, out, **overrides):
    model, data, _ = chatts
    base = dict(
        template="chatts",
        trust_remote_code=True,
        cutoff_len=512,
        max_steps=1,
        lr_scheduler_type="constant",
        weight_decay=0.01,
        learning_rate=LR,
    )
    base.update(overrides)
    return tiny_recipe(model, data, "chatts", out, **base)


def groups(out) -> dict:
    payload = json.loads((out / "lfkit_param_groups.json").read_text())
    return {g["group"]: g for g in payload["groups"]}


def max_change(before, after) -> float:
    return float((after.float() - before.float()).abs().max())


def assert_moved_by(before, after, lr):
    assert max_change(before, after) == pytest.approx(lr, rel=0.02)


def test_full_tuning_gives_the_encoder_its_own_lr_and_evaluates_with_series(chatts, run_train, tmp_path):
    out = tmp_path / "full"
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            timeseries_sft_lr=TS_LR,
            eval_dataset="chatts",
            do_eval=True,
            per_device_eval_batch_size=2,
        )
    ).check()
    g = groups(out)
    assert set(g) == {"decay", "no_decay", "timeseries_decay", "timeseries_no_decay"}
    assert g["timeseries_decay"]["lr"] == g["timeseries_no_decay"]["lr"] == TS_LR
    assert g["decay"]["lr"] == g["no_decay"]["lr"] == LR
    assert g["timeseries_decay"]["weight_decay"] == g["decay"]["weight_decay"] == 0.01
    assert g["timeseries_no_decay"]["weight_decay"] == g["no_decay"]["weight_decay"] == 0.0
    assert g["timeseries_decay"]["tensors"] == 2 and g["timeseries_no_decay"]["tensors"] == 2
    before, after = chatts[2], load_file(out / "model.safetensors")
    assert sum(x["tensors"] for x in g.values()) == len(before)
    for name in ENCODER:
        assert_moved_by(before[name], after[name], TS_LR)
    assert_moved_by(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"], LR
    )
    results = json.loads((out / "all_results.json").read_text())
    assert torch.isfinite(torch.tensor(results["eval_loss"])) and results["eval_loss"] > 0
    assert "lfkit: time-series encoder trained fully" in run.log


def test_freeze_tuning_trains_the_encoder_at_the_global_lr_when_unset(chatts, run_train, tmp_path):
    out = tmp_path / "freeze"
    run_train(
        recipe(
            chatts, out, finetuning_type="freeze", freeze_trainable_layers=1, lora_target=None, lora_rank=None
        )
    ).check()
    g = groups(out)
    assert not any(name.startswith("timeseries_") for name in g)
    assert {x["lr"] for x in g.values()} == {LR}
    before, after = chatts[2], load_file(out / "model.safetensors")
    for name in ENCODER:
        assert_moved_by(before[name], after[name], LR)
    frozen = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(before[frozen], after[frozen])
    assert_moved_by(
        before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"], LR
    )


def test_lora_puts_adapters_on_the_encoder_linears_at_their_own_lr(chatts, run_train, tmp_path):
    out = tmp_path / "lora"
    run = run_train(
        recipe(chatts, out, finetuning_type="lora", lora_target="all", timeseries_sft_lr=TS_LR)
    ).check()
    adapter = load_file(out / "adapter_model.safetensors")
    encoder_b = [k for k in adapter if "ts_encoder" in k and "lora_B" in k]
    assert sorted(k.split("ts_encoder.")[1].split(".lora")[0] for k in encoder_b) == ["mlp.0", "mlp.2"]
    for key in encoder_b:  # lora_B starts at zero: after one step its largest entry is the group's lr
        assert float(adapter[key].abs().max()) == pytest.approx(TS_LR, rel=0.02)
    q_b = next(k for k in adapter if "layers.0.self_attn.q_proj.lora_B" in k)
    assert float(adapter[q_b].abs().max()) == pytest.approx(LR, rel=0.02)
    g = groups(out)
    assert g["timeseries_decay"]["lr"] == TS_LR and g["timeseries_decay"]["tensors"] == 4
    assert "lfkit: time-series encoder trained with LoRA" in run.log


def test_lora_with_additional_target_trains_the_encoder_fully(chatts, run_train, tmp_path):
    out = tmp_path / "lora_full_encoder"
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="lora",
            lora_target="q_proj,v_proj",
            additional_target="ts_encoder",
            timeseries_sft_lr=TS_LR,
        )
    ).check()
    adapter = load_file(out / "adapter_model.safetensors")
    assert not any("ts_encoder" in k and "lora_" in k for k in adapter)
    before = chatts[2]
    for name in ENCODER:
        saved = next(k for k in adapter if k.endswith(name))
        assert_moved_by(before[name], adapter[saved], TS_LR)
    g = groups(out)
    assert g["timeseries_decay"]["tensors"] + g["timeseries_no_decay"]["tensors"] == 4
    assert "lfkit: time-series encoder trained fully via additional_target" in run.log


def test_train_timeseries_modules_false_keeps_the_encoder_bit_identical(chatts, run_train, tmp_path):
    out = tmp_path / "frozen_encoder"
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            train_timeseries_modules=False,
            timeseries_sft_lr=TS_LR,
            max_steps=3,
        )
    ).check()
    before, after = chatts[2], load_file(out / "model.safetensors")
    for name in ENCODER:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    g = groups(out)
    assert not any(name.startswith("timeseries_") for name in g)
    assert sum(x["tensors"] for x in g.values()) == len(before) - len(ENCODER)
    assert "lfkit: time-series encoder frozen" in run.log and "it has no effect" in run.log
