"""A tiny LLaVA (CLIP vision tower + 2-layer Qwen2) with its processor, built locally for tests.

Why LLaVA and not Qwen2-VL: LlamaFactory 0.9.5 refuses to load any model with a ``Conv3d``
module under torch 2.9.x (``model/loader.py``: "Unsupported torch version detected: torch 2.9.x
with Conv3D", pytorch issue 166122), and Qwen2-VL / Qwen2.5-VL embed image patches with a
``Conv3d``; this project's stack is torch 2.9.1, so they cannot train here. LLaVA's CLIP tower
uses ``Conv2d`` and LlamaFactory's ``llava`` template and plugin expand each ``<image>`` into
``(size / patch)^2`` image tokens: with 28-pixel images and 14-pixel patches, 4 per image.
Random weights, no model hub.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH = 28, 14
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # the "default" strategy drops the CLS token


def build_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """Write the tokenizer, processor and random-weight model to ``out_dir`` and return it."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )

    from lfkit.tiny_model import _DEFAULT_CORPUS, train_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(_DEFAULT_CORPUS, vocab_size=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", IMAGE_TOKEN]})
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )
    processor.save_pretrained(out_dir)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=32,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(out_dir)
    return out_dir
