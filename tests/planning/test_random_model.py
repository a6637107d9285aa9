"""The planner's parameter arithmetic against real transformers and PEFT modules, no hub needed.

Small models of each supported family are built from the planner's own shapes; their real
parameter counts, the modules LlamaFactory's ``lora_target: all`` finds in them, and the
adapter size PEFT creates must all equal what the planner computes.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lfkit.cli import app
from lfkit.planning.models import ModelShape, ModelShapeError, resolve_model
from lfkit.planning.random_model import hf_config_kwargs, write_random_model

SHAPES = [
    ModelShape("mini-qwen2", "qwen2", 64, 2, 128, 4, 2, 16, 600, True, True),
    ModelShape("mini-qwen3", "qwen3", 64, 2, 128, 4, 2, 32, 600, False, False, qk_norm=True),
    ModelShape(
        "mini-qwen3-moe",
        "qwen3_moe",
        64,
        2,
        192,
        4,
        2,
        16,
        600,
        False,
        False,
        qk_norm=True,
        num_experts=4,
        experts_per_token=2,
        moe_intermediate_size=32,
    ),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_built_model_has_the_planned_parameter_count(shape, tmp_path):
    from transformers import AutoModelForCausalLM

    out = write_random_model(shape, tmp_path / shape.name, dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == shape.total_params
    assert resolve_model(str(out)).total_params == shape.total_params  # read back from its config.json


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_lora_all_matches_llamafactory_and_peft(shape):
    import torch
    from llamafactory.model.model_utils.misc import find_all_linear_modules
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(shape.model_type, **hf_config_kwargs(shape))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    targets = find_all_linear_modules(model, freeze_vision_tower=True)
    assert set(targets) == set(shape.linear_shapes())  # MoE: attention only, experts are fused tensors
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=targets, use_dora=True))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == shape.lora_params(["all"], 8, dora=True)


def test_cli_and_unsupported_shapes(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["recipe", "random-model", "ChatTS-14B", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "remote code" in bad.output
    with pytest.raises(ModelShapeError):
        write_random_model("no-such-model", tmp_path / "y")
