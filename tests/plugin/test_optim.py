"""Encoder parameter groups on a real torch optimizer and transformers scheduler."""

from __future__ import annotations

import json

import pytest
import torch
from lfkit.plugin.optim import (
    PARAM_GROUPS_FILE,
    apply_timeseries_lr,
    check_timeseries_lr_supported,
    decay_ids,
    describe_groups,
    write_param_groups,
)
from torch import nn
from transformers import get_scheduler


class Args:
    def __init__(self, timeseries_sft_lr=None, use_badam=False):
        self.timeseries_sft_lr = timeseries_sft_lr
        self.use_badam = use_badam
        self.train_timeseries_modules = True


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.ts_encoder = nn.Sequential(nn.Linear(2, 4), nn.GELU(), nn.Linear(4, 4))


def build(model, wd=0.1, lr=1e-3):
    """The two groups transformers' Trainer builds: weights decayed, biases not."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    names = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    return optimizer, decay_ids(model, names)


def test_encoder_groups_keep_the_decay_split_and_follow_the_scheduler_from_their_own_lr():
    model = Toy()
    optimizer, decay = build(model)
    moved = apply_timeseries_lr(optimizer, model, Args(timeseries_sft_lr=5e-3), decay, 1e-3)
    assert moved == 4
    rows = {r["group"]: r for r in describe_groups(optimizer, decay)}
    assert rows["decay"] == {
        "group": "decay",
        "tensors": 1,
        "parameters": 16,
        "lr": 1e-3,
        "weight_decay": 0.1,
    }
    assert rows["no_decay"]["tensors"] == 1 and rows["no_decay"]["weight_decay"] == 0.0
    assert rows["timeseries_decay"] == {
        "group": "timeseries_decay",
        "tensors": 2,
        "parameters": 8 + 16,
        "lr": 5e-3,
        "weight_decay": 0.1,
    }
    assert rows["timeseries_no_decay"]["tensors"] == 2 and rows["timeseries_no_decay"]["weight_decay"] == 0.0

    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=2, num_training_steps=10)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for lrs in seen:  # every group scaled by the same factor: the encoder's lr is always 5x the global one
        assert lrs[2] == pytest.approx(5 * lrs[0]) and lrs[3] == pytest.approx(5 * lrs[1])
    assert seen[0][0] == 0.0 and seen[2][0] == pytest.approx(1e-3) and seen[2][2] == pytest.approx(5e-3)
    assert seen[5][2] == pytest.approx(5e-3 * 5 / 8)


def test_unset_lr_changes_nothing_and_frozen_encoder_is_not_grouped():
    model = Toy()
    optimizer, decay = build(model)
    before = [list(g["params"]) for g in optimizer.param_groups]
    assert apply_timeseries_lr(optimizer, model, Args(), decay, 1e-3) == 0
    assert [list(g["params"]) for g in optimizer.param_groups] == before

    frozen = Toy()
    for p in frozen.ts_encoder.parameters():
        p.requires_grad_(False)
    decay_params = [p for n, p in frozen.named_parameters() if p.requires_grad and n.endswith("weight")]
    optimizer = torch.optim.AdamW([{"params": decay_params, "weight_decay": 0.1}], lr=1e-3)
    assert apply_timeseries_lr(optimizer, frozen, Args(timeseries_sft_lr=5e-3), set(), 1e-3) == 0


def test_badam_is_refused():
    model = Toy()
    optimizer, decay = build(model)
    with pytest.raises(ValueError, match="use_badam"):
        apply_timeseries_lr(optimizer, model, Args(timeseries_sft_lr=5e-3, use_badam=True), decay, 1e-3)


def test_param_groups_file_is_written_atomically(tmp_path):
    model = Toy()
    optimizer, decay = build(model)
    apply_timeseries_lr(optimizer, model, Args(timeseries_sft_lr=5e-3), decay, 1e-3)
    path = write_param_groups(tmp_path, optimizer, Args(timeseries_sft_lr=5e-3), 1e-3, decay)
    assert path == tmp_path / PARAM_GROUPS_FILE
    payload = json.loads(path.read_text())
    assert payload["optimizer"] == "AdamW" and payload["timeseries_sft_lr"] == 5e-3
    assert [g["group"] for g in payload["groups"]] == [
        "decay",
        "no_decay",
        "timeseries_decay",
        "timeseries_no_decay",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [PARAM_GROUPS_FILE]


def test_group_parameter_counts_include_zero3_partitioned_parameters():
    model = Toy()
    optimizer, decay = build(model)
    model.proj.weight.data = torch.empty(0)  # ZeRO-3 keeps an empty placeholder and the real size
    model.proj.weight.ds_numel = 16
    rows = {r["group"]: r for r in describe_groups(optimizer, decay)}
    assert rows["decay"]["parameters"] == 16 + 8 + 16


def test_loraplus_ratios_are_kept_for_encoder_parameters():
    """LoRA+ puts lora_B at ratio * lr; the encoder's share keeps that ratio at ratio * timeseries_sft_lr."""
    model = Toy()
    lora_a = [model.proj.weight, model.ts_encoder[0].weight]
    lora_b = [model.proj.bias, model.ts_encoder[0].bias, model.ts_encoder[2].weight, model.ts_encoder[2].bias]
    ratio, lr, ts_lr = 16.0, 1e-4, 5e-4
    optimizer = torch.optim.AdamW(
        [
            {"params": lora_a, "lr": lr, "weight_decay": 0.1},
            {"params": lora_b, "lr": lr * ratio, "weight_decay": 0.1},
        ],
        lr=lr,
    )
    decay = {id(p) for p in lora_a + lora_b}
    assert apply_timeseries_lr(optimizer, model, Args(timeseries_sft_lr=ts_lr), decay, lr) == 4
    by_params = {tuple(id(p) for p in g["params"]): g["lr"] for g in optimizer.param_groups}
    assert by_params[(id(model.proj.weight),)] == pytest.approx(lr)
    assert by_params[(id(model.proj.bias),)] == pytest.approx(lr * ratio)
    assert by_params[(id(model.ts_encoder[0].weight),)] == pytest.approx(ts_lr)
    encoder_b = tuple(id(p) for p in lora_b[1:])
    assert by_params[encoder_b] == pytest.approx(ts_lr * ratio)  # was ts_lr: the ratio was lost


def test_a_deepspeed_optimizer_block_is_refused_with_what_to_change():
    config = {"zero_optimization": {"stage": 3}, "optimizer": {"type": "AdamW", "params": {"lr": "auto"}}}
    with pytest.raises(
        ValueError, match=r'ds_z3\.json has an "optimizer" block.*Remove the "optimizer" block'
    ):
        check_timeseries_lr_supported(5e-3, config, "the DeepSpeed config ds_z3.json")
    check_timeseries_lr_supported(None, config)  # the key unset: DeepSpeed's own optimizer is fine
    check_timeseries_lr_supported(5e-3, {"zero_optimization": {"stage": 3}})  # no block: lfkit's groups


def test_fsdp_flat_parameters_are_refused_with_what_to_change():
    with pytest.raises(ValueError, match=r"use_orig_params: false.*fsdp_config: \{use_orig_params: true\}"):
        check_timeseries_lr_supported(5e-3, None, fsdp_flat_params=True)
    check_timeseries_lr_supported(None, None, fsdp_flat_params=True)


class Flat(nn.Module):
    """What FSDP with use_orig_params: false hands the optimizer: one flat tensor per wrapped unit."""

    def __init__(self):
        super().__init__()
        self._fsdp_wrapped_module = nn.Module()
        self._fsdp_wrapped_module._flat_param = nn.Parameter(torch.zeros(64))


def test_flat_parameters_that_hide_the_encoder_are_refused_not_ignored():
    model = Flat()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="FSDP flat parameters"):
        apply_timeseries_lr(optimizer, model, Args(timeseries_sft_lr=5e-3), set(), 1e-3)


def _trainer(tmp_path, deepspeed=None, fsdp_plugin=None):
    """The attributes of a transformers Trainer that the check reads (DeepSpeed is not installed here)."""
    from types import SimpleNamespace

    state = SimpleNamespace(fsdp_plugin=fsdp_plugin)
    return SimpleNamespace(
        args=SimpleNamespace(deepspeed=deepspeed),
        finetuning_args=Args(timeseries_sft_lr=5e-3),
        is_fsdp_enabled=fsdp_plugin is not None,
        accelerator=SimpleNamespace(state=state),
    )


def test_the_trainer_check_reads_the_recipes_deepspeed_file_and_fsdp_plugin(tmp_path):
    from types import SimpleNamespace

    from lfkit.plugin.optim import check_trainer_supports_timeseries_lr

    ds = tmp_path / "ds_z3_offload.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}, "optimizer": {"type": "AdamW"}}))
    with pytest.raises(ValueError, match=r"ds_z3_offload\.json has an \"optimizer\" block"):
        check_trainer_supports_timeseries_lr(_trainer(tmp_path, deepspeed=str(ds)))
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    check_trainer_supports_timeseries_lr(_trainer(tmp_path, deepspeed=str(ds)))

    flat = SimpleNamespace(fsdp_version=1, use_orig_params=False)
    with pytest.raises(ValueError, match="use_orig_params: false"):
        check_trainer_supports_timeseries_lr(_trainer(tmp_path, fsdp_plugin=flat))
    for ok in (SimpleNamespace(fsdp_version=1, use_orig_params=True), SimpleNamespace(fsdp_version=2)):
        check_trainer_supports_timeseries_lr(_trainer(tmp_path, fsdp_plugin=ok))
