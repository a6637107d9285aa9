"""Which encoder weights are upcast to float32, and when not (DeepSpeed ZeRO-3, pure bf16, BAdam).

DeepSpeed is not installed on the CPU test machine, so ZeRO-3 is exercised through the switch
transformers itself reads (``is_deepspeed_zero3_enabled``) and a partitioned placeholder
(``numel() == 0``, its real size in ``ds_numel``) standing in for a ZeRO-3 parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from lfkit.plugin.timeseries.adapter import cast_to_fp32, set_encoder_trainable
from torch import nn


@dataclass
class Finetuning:
    finetuning_type: str = "freeze"
    pure_bf16: bool = False
    use_badam: bool = False
    train_timeseries_modules: bool = True
    additional_target: list | None = None


@dataclass
class Model:
    quantization_bit: int | None = None


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.ts_encoder = nn.Sequential(nn.Linear(2, 4), nn.GELU(), nn.Linear(4, 4))
        self.half()


@pytest.mark.parametrize(
    ("finetuning", "model", "zero3", "cast"),
    [
        (Finetuning(), Model(), False, True),
        (Finetuning(), Model(), True, False),  # ZeRO-3 keeps fp32 master weights of its own shards
        (Finetuning(), Model(quantization_bit=4), True, True),  # LlamaFactory's rule: QLoRA + ZeRO-3 casts
        (Finetuning(pure_bf16=True), Model(), False, False),
        (Finetuning(use_badam=True), Model(), False, False),
    ],
)
def test_the_cast_follows_llamafactorys_rule(finetuning, model, zero3, cast):
    assert cast_to_fp32(model, finetuning, zero3=zero3) is cast


def test_zero3_is_read_from_transformers_switch(monkeypatch):
    import transformers.integrations

    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: True)
    assert cast_to_fp32(Model(), Finetuning()) is False
    monkeypatch.setattr(transformers.integrations, "is_deepspeed_zero3_enabled", lambda: False)
    assert cast_to_fp32(Model(), Finetuning()) is True


def test_under_zero3_the_partitioned_encoder_is_left_in_its_dtype():
    model = Toy()
    for p in model.ts_encoder.parameters():  # what ZeRO-3 leaves on a module: an empty placeholder
        p.ds_numel = p.numel()
        p.data = torch.empty(0, dtype=torch.float16)
    args = Finetuning()
    summary = set_encoder_trainable(model, args, cast=cast_to_fp32(Model(), args, zero3=True))
    assert "kept in the loaded dtype" in summary
    for p in model.ts_encoder.parameters():
        assert p.requires_grad and p.dtype == torch.float16 and p.numel() == 0


def test_without_zero3_the_encoder_trains_in_float32():
    model = Toy()
    args = Finetuning(finetuning_type="full")
    set_encoder_trainable(model, args, cast=cast_to_fp32(Model(), args, zero3=False))
    assert {p.dtype for p in model.ts_encoder.parameters()} == {torch.float32}
    assert model.proj.weight.dtype == torch.float16  # only the encoder is lfkit's to cast
