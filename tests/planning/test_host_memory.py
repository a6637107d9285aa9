"""Host RAM for CPU offload, against DeepSpeed's own estimator arithmetic.

DeepSpeed is a GPU-only extra (it needs CUDA to import fully), so its estimators are re-derived here
from their source and lfkit's figures are checked against that arithmetic:
microsoft/DeepSpeed at commit 38327e07f6cd39b63418f60cedd1651b0be3e7c3,
``deepspeed/runtime/zero/stage3.py: estimate_zero3_model_states_mem_needs`` and
``deepspeed/runtime/zero/stage_1_and_2.py: estimate_zero2_model_states_mem_needs`` (what their
``..._all_live`` wrappers call with the model's parameter counts).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from lfkit.planning.host_memory import BUFFER_FACTOR, estimate_host_memory, offloaded_model_states
from lfkit.planning.memory import estimate_memory, trainable_params
from lfkit.planning.models import KNOWN_MODELS
from lfkit.planning.training_setup import DeepSpeedSetup, TrainingSetup

QWEN32B = KNOWN_MODELS["qwen2.5-32b"]  # the 32B of the LlamaFactory host-OOM report in issue 12
QWEN7B = KNOWN_MODELS["qwen2.5-7b"]


def ds_zero3(total, largest, gpus_per_node, nodes, cpu_offload, cpu_offload_params, zero_init, factor=1.5):
    """DeepSpeed's estimate_zero3_model_states_mem_needs, re-derived: (cpu bytes, gpu bytes)."""
    total_gpus = nodes * gpus_per_node
    gpus_factor = 1 / nodes
    largest_layer_memory = 4 * largest
    if cpu_offload:
        if cpu_offload_params:
            gpu = largest_layer_memory
            cpu = (
                total * (18 * gpus_factor if zero_init else max(4 * gpus_per_node, 18 * gpus_factor)) * factor
            )
        else:
            gpu = largest_layer_memory + int(2 * total / total_gpus)
            cpu = (
                total * (16 * gpus_factor if zero_init else max(4 * gpus_per_node, 16 * gpus_factor)) * factor
            )
    else:
        gpu = largest_layer_memory + int(18 * total / total_gpus)
        cpu = largest * 4 * gpus_per_node * factor if zero_init else total * 4 * gpus_per_node * factor
    return int(cpu), int(gpu)


def ds_zero2(total, gpus_per_node, nodes, cpu_offload, factor=1.5):
    """DeepSpeed's estimate_zero2_model_states_mem_needs, re-derived: (cpu bytes, gpu bytes)."""
    total_gpus = nodes * gpus_per_node
    if cpu_offload:
        return int(total * max(4 * total_gpus, 16) * factor), int(2 * total)
    return int(total * 4 * gpus_per_node * factor), int(2 * total + int(18 * total / total_gpus))


def _full(**ds) -> TrainingSetup:
    return TrainingSetup(method="full", bf16=True, deepspeed=DeepSpeedSetup(**ds))


@pytest.mark.parametrize(("gpus", "nodes"), [(1, 1), (2, 1), (8, 1), (8, 2), (4, 4)])
@pytest.mark.parametrize("offload_param", [False, True])
def test_zero3_offload_host_states_equal_deepspeeds_arithmetic(gpus, nodes, offload_param):
    # Full fine-tuning (every parameter trains, DeepSpeed's assumption); transformers loads
    # ZeRO-3 models through zero.Init (DeepSpeed's zero_init=True).
    setup = _full(stage=3, offload_optimizer=True, offload_param=offload_param)
    total = QWEN32B.total_params
    ours = offloaded_model_states(total, total, setup, gpus, nodes)
    theirs, _ = ds_zero3(total, QWEN32B.embedding_params, gpus, nodes, True, offload_param, True)
    assert ours == pytest.approx(theirs, abs=1)


@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_zero2_offload_host_states_equal_deepspeeds_arithmetic_with_its_fp32_rank_copies(gpus):
    setup = _full(stage=2, offload_optimizer=True)
    total = QWEN7B.total_params
    theirs, _ = ds_zero2(total, gpus, 1, True)
    # DeepSpeed's estimator counts an fp32 CPU copy of the model per rank (4 bytes per parameter);
    # with that assumption lfkit reproduces it exactly.
    assert offloaded_model_states(total, total, setup, gpus, 1, rank_copy_bytes=4) == pytest.approx(
        theirs, abs=1
    )
    # LlamaFactory loads onto the GPUs (device_map), so lfkit's own figure keeps only the states.
    assert offloaded_model_states(total, total, setup, gpus, 1) == total * 16 * BUFFER_FACTOR


@pytest.mark.parametrize("gpus", [2, 8])
def test_gpu_model_states_match_deepspeeds_split(gpus):
    total = QWEN7B.total_params
    # ZeRO-2: 16-bit weights everywhere + 18 bytes per parameter sharded (16-bit and fp32 gradients,
    # fp32 master weights, Adam m and v).
    z2 = estimate_memory(QWEN7B, _full(stage=2), gpus)
    _, gpu2 = ds_zero2(total, gpus, 1, False)
    assert z2.get("weights") + z2.get("gradients") + z2.get("optimizer") == pytest.approx(gpu2, rel=1e-6)
    # ZeRO-3: 18 bytes per parameter sharded, plus a gathered working set at least as large as the
    # 4 bytes per parameter of the largest module DeepSpeed adds (lfkit counts both the embedding and
    # the lm_head, a layer and the prefetch).
    z3 = estimate_memory(QWEN7B, _full(stage=3), gpus)
    _, gpu3 = ds_zero3(total, QWEN7B.embedding_params, gpus, 1, False, False, True)
    sharded = gpu3 - 4 * QWEN7B.embedding_params
    assert z3.get("weights") + z3.get("optimizer") == pytest.approx(sharded, abs=gpus)
    assert z3.get("zero3_gathered") >= 4 * QWEN7B.embedding_params


def test_lora_offload_needs_far_less_host_ram_than_deepspeeds_full_model_estimate():
    lora = TrainingSetup(
        method="lora",
        lora_rank=16,
        bf16=True,
        deepspeed=DeepSpeedSetup(stage=3, offload_optimizer=True, offload_param=True),
    )
    t = trainable_params(QWEN32B, lora)
    ours = estimate_host_memory(QWEN32B, lora, 8, 1)
    states = dict((c.name, c.bytes) for c in ours.components)["offloaded_states"]
    assert states == pytest.approx((QWEN32B.total_params * 2 + t * 16) * BUFFER_FACTOR)
    theirs, _ = ds_zero3(QWEN32B.total_params, QWEN32B.embedding_params, 8, 1, True, True, True)
    assert states < theirs / 5
    # A 32B model's 16-bit shards alone need ~90 GiB of host RAM with the buffers: the host OOM users hit.
    assert 85 < states / 2**30 < 100
    no_offload = replace(lora, deepspeed=DeepSpeedSetup(stage=3))
    assert not estimate_host_memory(QWEN32B, no_offload, 8, 1).offload
