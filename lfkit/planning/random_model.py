"""Random-weight models of the planner's known shapes, for measuring recipes without the hub.

Calibrating ``lfkit plan`` needs real runs at the real shapes (Qwen2.5-7B, Qwen3-30B-A3B...)
on a GPU machine that cannot download checkpoints. Memory and speed do not depend on the
weights' values, so a model built from the shape's config with random weights measures the
same as the real one. The tokenizer is lfkit's tiny BPE tokenizer (its ids are a subset of the
real vocabulary; the embedding keeps the real vocabulary size, so logits memory is real).

Only shapes transformers can build without remote code (qwen2, qwen3, qwen3_moe) are
supported; ChatTS needs its own modelling code (see the plugin's tiny ChatTS model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lfkit.planning.models import ModelShape, ModelShapeError, lookup_known

SUPPORTED = ("qwen2", "qwen3", "qwen3_moe")


def hf_config_kwargs(shape: ModelShape) -> dict[str, Any]:
    """The transformers config fields that reproduce ``shape``."""
    if shape.model_type not in SUPPORTED or shape.ts_encoder_params:
        raise ModelShapeError(
            f"{shape.name}: only {', '.join(SUPPORTED)} shapes without a time-series encoder can be built "
            "without remote code"
        )
    kwargs: dict[str, Any] = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        tie_word_embeddings=shape.tie_embeddings,
        max_position_embeddings=32768,
    )
    if shape.model_type != "qwen2":
        kwargs["head_dim"] = shape.head_dim
        kwargs["attention_bias"] = shape.attention_bias
    if shape.num_experts:
        kwargs.update(
            num_experts=shape.num_experts,
            num_experts_per_tok=shape.experts_per_token,
            moe_intermediate_size=shape.moe_intermediate_size,
        )
    return kwargs


def write_random_model(
    shape: ModelShape | str,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    device: str = "cpu",
    seed: int = 0,
) -> Path:
    """Build ``shape`` with random weights on ``device`` and save it (atomically) to ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lfkit.tiny_model import train_tokenizer

    if isinstance(shape, str):
        known = lookup_known(shape)
        if known is None:
            raise ModelShapeError(f"unknown model '{shape}'")
        shape = known
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another directory")
    tokenizer = train_tokenizer([])
    config = AutoConfig.for_model(
        shape.model_type,
        **hf_config_kwargs(shape),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    from lfkit.atomic import atomic_dir

    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        marker = {
            "shape": shape.name,
            "built_by": "lfkit.planning.random_model",
            "seed": seed,
            "dtype": dtype,
        }
        (tmp / "lfkit_random_model.json").write_text(json.dumps(marker) + "\n")
    return out
