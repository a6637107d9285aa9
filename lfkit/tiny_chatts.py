"""Build tiny ChatTS-style models locally (no model hub), for tests and CPU trials.

They are lfkit's own code, not copies of ChatTS, written after reading the public ChatTS-14B
and ChatTS-8B remote code so that they behave like it, transformers-4-era patterns included
(``lfkit/tiny_chatts_remote/``; each modeling file's docstring lists the patterns):

* ``variant="14b"``: ChatTS-14B's layout: its own Qwen2 stack (``modeling_qwen2.Qwen2TSForCausalLM``,
  config ``model_type: chatts``), rotary caches as non-persistent buffers, the 4.x cache API;
* ``variant="8b"``: ChatTS-8B's layout: transformers' ``Qwen3Model`` plus a generation mixin
  (``modeling_qwen3_ts.Qwen3TSForCausalLM``).

Both carry ChatTS's interface: the config fields ``ts`` (``patch_size``, ``num_features``,
``hidden_size``, ``num_layers``, ``max_sequence_length``, ``use_position_embedding``,
``embedding_dim``), ``ts_token_start_index`` and ``ts_token_end_index``; ``ts_encoder`` (a
patch MLP with a position embedding); a forward that takes the ``[series, 2*max_len, 1]``
value+mask tensor as ``timeseries`` and splices ``ceil(valid_length / patch_size)`` embeddings
per ``<ts><ts/>`` pair; and a processor with ``encode_timeseries``. Like a real checkpoint the
directory carries its remote code and an ``auto_map``, so it loads only with
``trust_remote_code: true``, and its weights are written the way transformers 4 wrote them
(transformers 5 itself cannot save these classes until lfkit's plugin fixes them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REMOTE_CODE_DIR = Path(__file__).parent / "tiny_chatts_remote"
TS_TOKENS = ["<ts>", "<ts/>"]


@dataclass(frozen=True)
class Variant:
    """Which remote-code files and classes make up one tiny ChatTS layout."""

    config: str  # "module.Class", as in the checkpoint's auto_map
    model: str
    processor: str
    files: tuple[str, ...]  # what the checkpoint directory carries (relative imports included)


VARIANTS = {
    "14b": Variant(
        config="configuration_qwen2.Qwen2TSConfig",
        model="modeling_qwen2.Qwen2TSForCausalLM",
        processor="processing_qwen2_ts.Qwen2TSProcessor",
        files=(
            "chatts_timeseries.py",
            "configuration_qwen2.py",
            "modeling_qwen2.py",
            "processing_qwen2_ts.py",
        ),
    ),
    "8b": Variant(
        config="configuration_qwen3_ts.Qwen3TSConfig",
        model="modeling_qwen3_ts.Qwen3TSForCausalLM",
        processor="processing_qwen3_ts.Qwen3TSProcessor",
        files=(
            "chatts_timeseries.py",
            "configuration_qwen3_ts.py",
            "modeling_qwen3_ts.py",
            "processing_qwen2_ts.py",
            "processing_qwen3_ts.py",
        ),
    ),
}


def _import_remote(out: Path, dotted: str):
    """Import ``module.Class`` from ``out`` as transformers will (a package of the copied files)."""
    import importlib
    import importlib.util
    import sys

    package = f"_lfkit_tiny_chatts_{abs(hash(str(out.resolve())))}"
    if package not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            package, out / "__init__.py", submodule_search_locations=[str(out)]
        )
        sys.modules[package] = importlib.util.module_from_spec(spec)
    module, cls = dotted.split(".")
    return getattr(importlib.import_module(f"{package}.{module}"), cls)


def build_tiny_chatts(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    variant: str = "14b",
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    patch_size: int = 4,
    encoder_layers: int = 2,
    use_position_embedding: bool = True,
    max_sequence_length: int = 1024,
    seed: int = 0,
) -> Path:
    """Write tokenizer, random-weight model, remote code and processor config to ``out_dir``."""
    import torch
    from safetensors.torch import save_file

    from lfkit.tiny_model import train_tokenizer

    layout = VARIANTS[variant]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(corpus or []), vocab_size=vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *TS_TOKENS]})
    tokenizer.save_pretrained(out)
    start_id, end_id = tokenizer.convert_tokens_to_ids(TS_TOKENS)
    for name in layout.files:
        shutil.copyfile(REMOTE_CODE_DIR / name, out / name)

    config_cls = _import_remote(out, layout.config)
    model_cls = _import_remote(out, layout.model)
    heads = 4
    auto_map = {"AutoConfig": layout.config, "AutoModelForCausalLM": layout.model}
    config = config_cls(
        ts={
            "patch_size": patch_size,
            "num_features": 2,
            "hidden_size": hidden_size,
            "num_layers": encoder_layers,
            "max_sequence_length": max_sequence_length,
            "use_position_embedding": use_position_embedding,
            "embedding_dim": 4,
        },
        ts_token_start_index=start_id,
        ts_token_end_index=end_id,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        head_dim=hidden_size // heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=[layout.model.split(".")[1]],
        auto_map=auto_map,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    # The way transformers 4 wrote ChatTS checkpoints: weights only, no non-persistent buffers.
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        out / "model.safetensors",
        {"format": "pt"},
    )
    cfg = config.to_dict()
    cfg.update(auto_map=auto_map, architectures=[layout.model.split(".")[1]])
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    processor_map = {"AutoProcessor": layout.processor}
    processor_name = layout.processor.split(".")[1]
    (out / "processor_config.json").write_text(
        json.dumps({"processor_class": processor_name, "auto_map": processor_map}) + "\n"
    )
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["processor_class"] = processor_name
    tok_cfg["auto_map"] = processor_map
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (out / "lfkit_tiny_model.json").write_text(
        json.dumps(
            {"seed": seed, "built_by": "lfkit.tiny_chatts", "variant": variant, "patch_size": patch_size}
        )
        + "\n"
    )
    return out


def write_chatts_sample(dataset_dir: str | Path, *, rows: int = 8, seed: int = 0) -> Path:
    """Write a small ChatTS-format LlamaFactory dataset pair and register it in dataset_info.json.

    ``chatts_single`` (alpaca layout: ``input`` with bare ``<ts><ts/>``, ``output``, ``timeseries``)
    and ``chatts_multi`` (sharegpt layout, two user turns each with a series, the conversation's
    series in one ``timeseries`` list). Series lengths vary (some not a multiple of the patch
    size, some shorter than a patch) and every fourth single-turn row has no series at all.
    """
    import random

    rng = random.Random(seed)
    out = Path(dataset_dir)
    out.mkdir(parents=True, exist_ok=True)
    single, multi = [], []
    for i in range(rows):
        if i % 4 == 3:
            single.append({"input": "Say hello.", "output": "Hello! How are you today?", "timeseries": []})
            continue
        a = [round(rng.uniform(-40.0, 60.0), 3) for _ in range(rng.randint(3, 29))]
        b = [float(j % 5) for j in range(rng.randint(1, 11))]
        single.append(
            {
                "input": "Describe the trend of <ts><ts/> and compare it with <ts><ts/>.",
                "output": "The first series rises then falls; the second one stays flat.",
                "timeseries": [a, b],
            }
        )
    for _ in range(max(2, rows // 2)):
        a = [round(rng.gauss(0.0, 1.0), 4) for _ in range(rng.randint(5, 21))]
        b = [100.0 + j for j in range(rng.randint(2, 9))]
        multi.append(
            {
                "conversations": [
                    {"from": "human", "value": "Here is a metric: <ts><ts/>. Any anomaly?"},
                    {"from": "gpt", "value": "There is a spike near the middle."},
                    {"from": "human", "value": "And this one? <ts><ts/>"},
                    {"from": "gpt", "value": "It increases steadily."},
                ],
                "timeseries": [a, b],
            }
        )
    for name, data in (("chatts_single.jsonl", single), ("chatts_multi.jsonl", multi)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in data))
    info_path = out / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info["chatts_single"] = {
        "file_name": "chatts_single.jsonl",
        "columns": {"prompt": "input", "response": "output", "timeseries": "timeseries"},
    }
    info["chatts_multi"] = {
        "file_name": "chatts_multi.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "timeseries": "timeseries"},
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return out
