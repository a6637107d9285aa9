"""Planner arithmetic on cases whose answer is known independently of the planner."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from lfkit.planning.gpus import GPUS, Cluster, GpuSpecError, gpu_from_device_name, lookup_gpu, parse_gpu_spec
from lfkit.planning.memory import estimate_memory, steps_per_epoch, trainable_params
from lfkit.planning.models import KNOWN_MODELS, ModelShapeError, by_size, resolve_model
from lfkit.planning.training_setup import CATALOG_DEEPSPEED, DeepSpeedSetup, TrainingSetup
from lfkit.planning.units import GIB

REPO = Path(__file__).resolve().parents[2]
QWEN25_14B = KNOWN_MODELS["qwen2.5-14b"]
CHATTS_14B = KNOWN_MODELS["chatts-14b"]


def fits(estimate, gpu) -> bool:
    return estimate.peak_gib <= gpu.memory_gib


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
    lora = estimate_memory(QWEN25_14B, _setup(), 2)
    assert lora.get("weights") >= weights
    assert not fits(lora, turing)
    z3_offload = _setup(deepspeed=DeepSpeedSetup(stage=3, offload_optimizer=True, offload_param=True))
    assert fits(estimate_memory(QWEN25_14B, z3_offload, 2), turing)
    qlora = _setup(quantization_bit=4)
    assert fits(estimate_memory(QWEN25_14B, qlora, 2), turing)


def test_4bit_is_halves_of_halves_on_the_linear_layers():
    fp16 = estimate_memory(QWEN25_14B, _setup(), 1).get("weights")
    nf4 = estimate_memory(QWEN25_14B, _setup(quantization_bit=4), 1).get("weights")
    lora_fp32 = trainable_params(QWEN25_14B, _setup()) * 4
    linear16 = QWEN25_14B.quantizable_params * 2
    linear4 = (nf4 - lora_fp32) - (fp16 - lora_fp32 - linear16)
    # 16 bits -> 8 -> 4, plus bitsandbytes' block scales (~3% with double quantisation).
    assert linear16 / 4 <= linear4 <= linear16 / 4 * 1.04
    # The 16-bit embedding and lm_head stay: the whole model shrinks by less than 4x.
    assert fp16 / nf4 < 4


def test_zero3_divides_weight_shards_by_gpu_count_and_zero2_does_not():
    full = _setup(method="full", deepspeed=DeepSpeedSetup(stage=3))
    w2 = estimate_memory(QWEN25_14B, full, 2)
    w4 = estimate_memory(QWEN25_14B, full, 4)
    assert math.isclose(w2.get("weights"), 2 * w4.get("weights"), rel_tol=1e-9)
    assert math.isclose(w2.get("optimizer"), 2 * w4.get("optimizer"), rel_tol=1e-9)
    assert w2.get("zero3_gathered") == w4.get("zero3_gathered") > 0  # the working set does not shrink
    z2 = replace(full, deepspeed=DeepSpeedSetup(stage=2))
    assert estimate_memory(QWEN25_14B, z2, 2).get("weights") == estimate_memory(QWEN25_14B, z2, 4).get(
        "weights"
    )
    # Mixed-precision full fine-tuning state under ZeRO-3: 2 (weights) + 16 (fp32 master, fp32
    # gradient partition, Adam m and v) bytes per parameter, sharded: DeepSpeed's 18.
    per_param = (w2.get("weights") + w2.get("optimizer")) * 2 / QWEN25_14B.total_params
    assert math.isclose(per_param, 18, rel_tol=1e-6)


def test_world_size_spans_nodes():
    # 2 nodes x 8 GPUs shard ZeRO-3 state 16 ways, as 16 GPUs on one node would.
    full = _setup(method="full", deepspeed=DeepSpeedSetup(stage=3))
    cluster = Cluster.of(lookup_gpu("h100"), 8, nodes=2)
    assert cluster.world_size == 16
    assert estimate_memory(QWEN25_14B, full, cluster.world_size).get("optimizer") == pytest.approx(
        QWEN25_14B.total_params * 16 / 16
    )


def test_offload_moves_optimizer_and_weights_off_the_gpu():
    z3 = _setup(method="full", deepspeed=DeepSpeedSetup(stage=3))
    off = replace(z3, deepspeed=DeepSpeedSetup(stage=3, offload_optimizer=True, offload_param=True))
    a, b = estimate_memory(QWEN25_14B, z3, 2), estimate_memory(QWEN25_14B, off, 2)
    assert b.get("optimizer") == 0 and b.get("weights") == 0 and a.get("weights") > 0
    assert b.get("zero3_gathered") == a.get("zero3_gathered")


def test_gradient_checkpointing_cuts_activations():
    on = estimate_memory(QWEN25_14B, _setup(cutoff_len=2048), 1).get("activations")
    off = estimate_memory(QWEN25_14B, _setup(cutoff_len=2048, gradient_checkpointing=False), 1)
    assert off.get("activations") > 5 * on


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
        ("rtx5090x4", "5090", 4),
        ("l40sx2", "l40s", 2),
        ("a10gx4", "a10g", 4),
        ("h200x8", "h200", 8),
    ],
)
def test_gpu_specs(spec, key, count):
    gpu, n = parse_gpu_spec(spec)
    assert (gpu.key, n) == (key, count)


def test_gpu_table_and_ambiguous_names():
    assert not lookup_gpu("2080ti").bf16 and lookup_gpu("2080ti").memory_gib == 11
    # nvidia-smi's totals: H200 143771 MiB, H100 81559 MiB; the names' "GB" are labels.
    assert lookup_gpu("h200").label_gb == 141 and lookup_gpu("h200").memory_gib == pytest.approx(
        143771 / 1024, abs=0.01
    )
    assert lookup_gpu("h100").memory_gib == pytest.approx(81559 / 1024, abs=0.01)
    assert lookup_gpu("a100-40").memory_gib == 40
    with pytest.raises(GpuSpecError, match="ambiguous"):
        parse_gpu_spec("rtx6000x2")
    with pytest.raises(GpuSpecError, match="known"):
        parse_gpu_spec("v100")
    with pytest.raises(GpuSpecError, match="a10g"):
        lookup_gpu("A10")  # the A10 is another card (125 dense TFLOPS); only AWS's A10G is known


@pytest.mark.parametrize(
    ("key", "memory_gib", "bf16", "tflops", "bandwidth"),
    # Datasheet figures (module docstring of lfkit.planning.gpus): dense 16-bit tensor TFLOPS with
    # fp32 accumulation, memory bandwidth in GB/s.
    [
        ("h200", 140.4, True, 989.0, 4800),
        ("l40s", 44.99, True, 362.05, 864),
        ("a10g", 22.49, True, 70.0, 600),
        ("4090", 23.99, True, 165.2, 1008),
        ("5090", 31.84, True, 209.5, 1792),
    ],
)
def test_the_new_gpus(key, memory_gib, bf16, tflops, bandwidth):
    gpu = GPUS[key]
    assert (gpu.memory_gib, gpu.bf16, gpu.tflops_16bit, gpu.memory_bandwidth_gbs) == (
        memory_gib,
        bf16,
        tflops,
        bandwidth,
    )


def test_every_gpu_in_the_table_is_complete_and_named_by_its_cuda_device_name():
    names = {
        "NVIDIA GeForce RTX 2080 Ti": "2080ti",
        "Quadro RTX 6000": "quadro-rtx-6000",
        "NVIDIA RTX A6000": "rtx-a6000",
        "NVIDIA RTX 6000 Ada Generation": "rtx-6000-ada",
        "NVIDIA GeForce RTX 3050": "rtx-3050-6gb",
        "NVIDIA GeForce RTX 3090": "3090",
        "NVIDIA GeForce RTX 4090": "4090",
        "NVIDIA GeForce RTX 5090": "5090",
        "NVIDIA L40S": "l40s",
        "NVIDIA A10G": "a10g",
        "NVIDIA A100-SXM4-40GB": "a100-40",
        "NVIDIA A100-SXM4-80GB": "a100-80",
        "NVIDIA A100 80GB PCIe": "a100-80-pcie",
        "NVIDIA H100 80GB HBM3": "h100",
        "NVIDIA H200": "h200",
    }
    assert set(names.values()) == set(GPUS)
    for name, key in names.items():
        assert gpu_from_device_name(name) is GPUS[key], name
    assert gpu_from_device_name("Tesla V100-SXM2-32GB") is None
    for gpu in GPUS.values():
        assert gpu.memory_gib > 0 and gpu.tflops_16bit > 0 and gpu.peer_gbs > 0 and gpu.host_gbs > 0
        assert gpu.utilisation_class in ("turing", "ampere-ada", "datacenter")
        assert gpu.bf16 == (gpu.arch != "turing")


def test_default_and_given_inter_node_bandwidth():
    sxm = Cluster.of(lookup_gpu("h100"), 8, nodes=2)
    assert sxm.inter_node_gbit == 8 * 200 and sxm.inter_node_assumed
    pcie = Cluster.of(lookup_gpu("rtx-6000-ada"), 2, nodes=2)
    assert pcie.inter_node_gbit == 100 and pcie.inter_node_gbs == 12.5
    given = Cluster.of(lookup_gpu("h100"), 8, nodes=2, inter_node_gbit=400)
    assert given.inter_node_gbit == 400 and not given.inter_node_assumed
    assert "inter-node 400 Gbit/s = 50 GB/s per node (given)" in given.describe()
    with pytest.raises(GpuSpecError):
        Cluster.of(lookup_gpu("h100"), 8, nodes=0)


def test_catalog_deepspeed_table_matches_the_shipped_configs():
    # Suggestions name these configs without reading them; they must say what the files say.
    for path, setup in CATALOG_DEEPSPEED.items():
        assert DeepSpeedSetup.from_file(REPO / path) == replace(setup, path=str(REPO / path))


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
    assert estimate_memory(QWEN25_14B, full_z2, 4).get("kl_reference") == ref
    full_z3 = replace(full_z2, deepspeed=DeepSpeedSetup(stage=3))
    assert estimate_memory(QWEN25_14B, full_z3, 4).get("kl_reference") == ref / 4
    off = replace(full_z2, deepspeed=DeepSpeedSetup(stage=3, offload_param=True))
    assert estimate_memory(QWEN25_14B, off, 4).get("kl_reference") == 0

    def names(est):
        return {c.name for c in est.components}

    # LoRA disables its adapters for the reference: no copy, unless kl_ref_model names another model.
    lora = _setup(kl_beta=0.1)
    assert "kl_reference" not in names(estimate_memory(QWEN25_14B, lora, 1))
    other = replace(lora, kl_ref_model="Qwen/Qwen2.5-14B-Instruct")
    assert estimate_memory(QWEN25_14B, other, 1).get("kl_reference") == ref
    assert "kl_reference" not in names(estimate_memory(QWEN25_14B, replace(full_z2, kl_beta=0.0), 4))


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
