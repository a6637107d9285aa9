"""Planner arithmetic on cases whose answer is known independently of the planner."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from lfkit.planning.gpus import GpuSpecError, lookup_gpu, parse_gpu_spec
from lfkit.planning.memory import (
    GIB,
    DeepSpeedSetup,
    TrainingSetup,
    estimate_memory,
    fits,
    steps_per_epoch,
    trainable_params,
)
from lfkit.planning.models import KNOWN_MODELS, ModelShapeError, by_size, resolve_model

QWEN25_14B = KNOWN_MODELS["qwen2.5-14b"]
CHATTS_14B = KNOWN_MODELS["chatts-14b"]


def _setup(**kw) -> TrainingSetup:
    base = dict(method="lora", lora_rank=16, fp16=True, compute_bytes=2, batch_size=1, cutoff_len=1024)
    base.update(kw)
    return TrainingSetup(**base)


@pytest.mark.parametrize(
    ("name", "published_billions"),
    # Parameter counts from the models' own model cards.
    [
        ("qwen2.5-1.5b", 1.54),
        ("qwen2.5-3b", 3.09),
        ("qwen2.5-7b", 7.61),
        ("qwen2.5-14b", 14.7),
        ("qwen3-8b", 8.2),
        ("qwen3-14b", 14.8),
        ("qwen3-30b-a3b", 30.5),
    ],
)
def test_known_shapes_match_published_parameter_counts(name, published_billions):
    total = KNOWN_MODELS[name].total_params / 1e9
    assert abs(total - published_billions) / published_billions < 0.01


def test_config_json_of_a_local_model_gives_its_exact_parameter_count(tiny_model):
    from transformers import AutoModelForCausalLM

    shape = resolve_model(str(tiny_model))
    assert shape.source == str(tiny_model / "config.json")
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    config = json.loads((tiny_model / "config.json").read_text())
    assert (shape.hidden_size, shape.num_layers, shape.vocab_size) == (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["vocab_size"],
    )


def test_unknown_model_and_broken_config_are_clear_errors(tmp_path):
    with pytest.raises(ModelShapeError, match="--model-size"):
        resolve_model("someone/unknown-model")
    (tmp_path / "config.json").write_text('{"hidden_size": 64,\n "num_hidden_layers": }')
    with pytest.raises(ModelShapeError, match=r"config.json:2"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text('{"hidden_size": 64}')
    with pytest.raises(ModelShapeError, match="num_hidden_layers"):
        resolve_model(str(tmp_path))


def test_model_size_prefers_the_recipe_family():
    assert by_size("14B", prefer_family="ChatTS-8B").name == "ChatTS-14B"
    assert by_size("14B", prefer_family="Qwen3-8B").name == "Qwen3-14B"
    assert by_size("8B").name in ("Qwen3-8B", "ChatTS-8B")
    with pytest.raises(ModelShapeError):
        by_size("13B")


def test_14b_fp16_weights_are_28_gb_and_do_not_fit_24_gb_without_sharding_or_4bit():
    weights = QWEN25_14B.total_params * 2
    assert 27 < weights / GIB < 28 and 29 < weights / 1e9 < 30  # "28 GB" either way
    turing = lookup_gpu("quadro-rtx-6000")
    lora = estimate_memory(QWEN25_14B, _setup(), n_gpus=2)
    assert lora.components["weights"] >= weights
    assert not fits(lora, turing.memory_gib)
    z3_offload = _setup(deepspeed=DeepSpeedSetup(stage=3, offload_optimizer=True, offload_param=True))
    assert fits(estimate_memory(QWEN25_14B, z3_offload, n_gpus=2), turing.memory_gib)
    qlora = _setup(quantization_bit=4)
    assert fits(estimate_memory(QWEN25_14B, qlora, n_gpus=2), turing.memory_gib)


def test_4bit_is_halves_of_halves_on_the_linear_layers():
    fp16 = estimate_memory(QWEN25_14B, _setup(), 1).components["weights"]
    nf4 = estimate_memory(QWEN25_14B, _setup(quantization_bit=4), 1).components["weights"]
    lora_fp32 = trainable_params(QWEN25_14B, _setup()) * 4
    linear16 = QWEN25_14B.quantizable_params * 2
    linear4 = (nf4 - lora_fp32) - (fp16 - lora_fp32 - linear16)
    # 16 bits -> 8 -> 4, plus bitsandbytes' block scales (~3% with double quantisation).
    assert linear16 / 4 <= linear4 <= linear16 / 4 * 1.04
    # The 16-bit embedding and lm_head stay: the whole model shrinks by less than 4x.
    assert fp16 / nf4 < 4


def test_zero3_divides_weight_shards_by_gpu_count_and_zero2_does_not():
    full = _setup(method="full", deepspeed=DeepSpeedSetup(stage=3))
    w2 = estimate_memory(QWEN25_14B, full, 2).components
    w4 = estimate_memory(QWEN25_14B, full, 4).components
    working = estimate_memory(QWEN25_14B, full, 10**9).components["weights"]  # shard -> 0, working set left
    assert math.isclose(w2["weights"] - working, 2 * (w4["weights"] - working), rel_tol=1e-6)
    assert math.isclose(w2["optimizer"], 2 * w4["optimizer"], rel_tol=1e-9)
    assert math.isclose(w2["gradients"], 2 * w4["gradients"], rel_tol=1e-9)
    z2 = replace(full, deepspeed=DeepSpeedSetup(stage=2))
    assert (
        estimate_memory(QWEN25_14B, z2, 2).components["weights"]
        == estimate_memory(QWEN25_14B, z2, 4).components["weights"]
    )
    # Mixed-precision full fine-tuning state: 2 (weights) + 2 (grads) + 12 (fp32 master + Adam) bytes/param.
    per_param = (w2["weights"] - working + w2["gradients"] + w2["optimizer"]) * 2 / QWEN25_14B.total_params
    assert math.isclose(per_param, 16, rel_tol=1e-6)


def test_offload_moves_optimizer_and_weights_off_the_gpu():
    z3 = _setup(method="full", deepspeed=DeepSpeedSetup(stage=3))
    off = replace(z3, deepspeed=DeepSpeedSetup(stage=3, offload_optimizer=True, offload_param=True))
    a, b = estimate_memory(QWEN25_14B, z3, 2), estimate_memory(QWEN25_14B, off, 2)
    assert b.components["optimizer"] == 0 and b.components["weights"] < a.components["weights"]


def test_gradient_checkpointing_cuts_activations():
    on = estimate_memory(QWEN25_14B, _setup(cutoff_len=2048), 1).components["activations"]
    off = estimate_memory(QWEN25_14B, _setup(cutoff_len=2048, gradient_checkpointing=False), 1)
    assert off.components["activations"] > 5 * on


def test_lora_and_dora_parameter_counts():
    shape = KNOWN_MODELS["qwen2.5-7b"]
    # PEFT's published count for Qwen2.5-7B, r16 on all linear layers: 40,370,176.
    assert shape.lora_params(["all"], 16) == 40_370_176
    dora = shape.lora_params(["all"], 16, dora=True)
    out_features = sum(o for _, o in shape.linear_shapes().values()) * shape.num_layers
    assert dora - shape.lora_params(["all"], 16) == out_features
    assert shape.lora_params(["q_proj", "v_proj"], 8) < shape.lora_params(["all"], 8)


def test_moe_lora_all_adapts_attention_only_and_4bit_leaves_experts():
    moe = KNOWN_MODELS["qwen3-30b-a3b"]
    assert set(moe.linear_shapes()) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert moe.quantizable_params < 0.1 * moe.total_params
    assert moe.active_params_per_token < 0.15 * moe.total_params


def test_steps_per_epoch_follows_the_trainer():
    # 417 samples on 2 GPUs, batch 2 x accumulation 8: 209 per rank, 105 micro-batches, 14 steps
    # (the last partial accumulation counts in transformers 5; the team's older stack made 13).
    assert steps_per_epoch(417, 2, 2, 8) == 14
    assert steps_per_epoch(32, 1, 4, 4) == 2
    assert steps_per_epoch(3, 1, 4, 4) == 1


@pytest.mark.parametrize(
    ("spec", "key", "count"),
    [
        ("2080tix2", "2080ti", 2),
        ("h100x8", "h100", 8),
        ("rtx4090", "4090", 1),
        ("RTX 6000 Ada x2", "rtx-6000-ada", 2),
    ],
)
def test_gpu_specs(spec, key, count):
    gpu, n = parse_gpu_spec(spec)
    assert (gpu.key, n) == (key, count)


def test_gpu_table_and_ambiguous_names():
    assert not lookup_gpu("2080ti").bf16 and lookup_gpu("2080ti").memory_gib == 11
    assert lookup_gpu("h200").memory_gib == 141 and lookup_gpu("a100-40").memory_gib == 40
    with pytest.raises(GpuSpecError, match="ambiguous"):
        parse_gpu_spec("rtx6000x2")
    with pytest.raises(GpuSpecError, match="known"):
        parse_gpu_spec("v100")


def test_chatts_encoder_counts_from_config(tmp_path):
    config = {
        "model_type": "qwen2",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "tie_word_embeddings": True,
        "ts": {"patch_size": 8, "num_layers": 3, "hidden_size": 64, "use_position_idx": True},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = resolve_model(str(tmp_path))
    # Linear(2*8 -> 64) + 2 x Linear(64 -> 64), with biases.
    assert shape.ts_encoder_params == (16 * 64 + 64) + 2 * (64 * 64 + 64)


def test_kl_reference_copy_is_sharded_only_by_zero3():
    ref = QWEN25_14B.total_params * 2  # frozen reference in the 16-bit compute dtype
    full_z2 = _setup(method="full", kl_beta=0.1, deepspeed=DeepSpeedSetup(stage=2))
    assert estimate_memory(QWEN25_14B, full_z2, 4).components["kl_reference"] == ref
    full_z3 = replace(full_z2, deepspeed=DeepSpeedSetup(stage=3))
    assert estimate_memory(QWEN25_14B, full_z3, 4).components["kl_reference"] == ref / 4
    off = replace(full_z2, deepspeed=DeepSpeedSetup(stage=3, offload_param=True))
    assert estimate_memory(QWEN25_14B, off, 4).components["kl_reference"] == 0
    # LoRA disables its adapters for the reference: no copy, unless kl_ref_model names another model.
    lora = _setup(kl_beta=0.1)
    assert "kl_reference" not in estimate_memory(QWEN25_14B, lora, 1).components
    other = replace(lora, kl_ref_model="Qwen/Qwen2.5-14B-Instruct")
    assert estimate_memory(QWEN25_14B, other, 1).components["kl_reference"] == ref
    assert "kl_reference" not in estimate_memory(QWEN25_14B, replace(full_z2, kl_beta=0.0), 4).components


def test_recipe_kl_keys_are_read():
    setup = TrainingSetup.from_recipe({"finetuning_type": "freeze", "kl_beta": 0.05})
    assert setup.kl_beta == 0.05 and setup.kl_reference_copy
    assert not TrainingSetup.from_recipe({"finetuning_type": "lora", "kl_beta": 0.05}).kl_reference_copy


def test_the_6gb_card():
    gpu = lookup_gpu("rtx-3050-6gb")
    assert gpu.memory_gib == 6 and gpu.bf16 and gpu.arch == "ampere"
    # 18 SMs x 1024 dense fp16 FLOPs/clock x 1.47 GHz, halved for fp32 accumulation on GeForce.
    assert gpu.tflops_16bit == pytest.approx(18 * 1024 * 1.47e9 / 2 / 1e12, abs=0.1)
    assert parse_gpu_spec("rtx-3050-6gbx2") == (gpu, 2)
    with pytest.raises(GpuSpecError, match="ambiguous"):
        lookup_gpu("rtx3050")
