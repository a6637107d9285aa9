"""Build a tiny Qwen2 chat model and BPE tokenizer locally, with no model hub.

Tests and the bundled sample job train real LlamaFactory runs on it: a byte-level BPE
tokenizer trained with ``tokenizers`` on a small corpus (plus Qwen's ChatML special
tokens, so LlamaFactory's ``qwen`` template works unchanged) and a 2-layer Qwen2 with
random weights. A LoRA run of a few steps takes seconds on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_DEFAULT_CORPUS = [
    "You are a helpful assistant. Answer the question briefly and politely.",
    "The quick brown fox jumps over the lazy dog while the cat watches from the window.",
    "Time series: the values rise, fall, spike and stay flat; describe the trend and the anomaly.",
    "Hello! How are you today? I am fine, thank you. What would you like to talk about?",
    "system user assistant role persona character story scene dialogue reply question answer",
    "0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ' \" ( ) [ ] { } - + * / = < > _ # @ % & ^ ~ | \\ $",
]


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE tokenizer and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tokenizer and a random-weight Qwen2 causal LM to ``out_dir`` and return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(corpus or []) + _DEFAULT_CORPUS, vocab_size=vocab_size)
    tokenizer.save_pretrained(out)

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    (out / "lfkit_tiny_model.json").write_text(
        json.dumps({"seed": seed, "built_by": "lfkit.tiny_model"}) + "\n"
    )
    return out
