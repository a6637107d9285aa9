"""Build a tiny ChatTS-compatible model locally (no model hub), for tests and CPU trials.

It is lfkit's own code, not a copy of ChatTS: a 2-layer Qwen2 plus ``ts_encoder``, a patch-MLP
time-series encoder, with ChatTS's interface: the config fields ``ts`` (``patch_size``,
``num_features``, ``hidden_size``, ``num_layers``), ``ts_token_start_index`` and
``ts_token_end_index``; a forward that takes the ``[series, 2*max_len, 1]`` value+mask tensor
as ``timeseries`` and splices ``ceil(valid_length / patch_size)`` embeddings per ``<ts><ts/>``
pair; and a processor with ``encode_timeseries``. Like a real ChatTS checkpoint the directory
carries its modeling/processing code (``lfkit/tiny_chatts_remote/``) and an ``auto_map``, so it
loads only with ``trust_remote_code: true``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

REMOTE_CODE_DIR = Path(__file__).parent / "tiny_chatts_remote"
REMOTE_FILES = ("configuration_qwen2.py", "modeling_qwen2.py", "processing_qwen2_ts.py")
AUTO_MAP = {
    "AutoConfig": "configuration_qwen2.Qwen2TSConfig",
    "AutoModelForCausalLM": "modeling_qwen2.Qwen2TSForCausalLM",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_qwen2_ts.Qwen2TSProcessor"}
TS_TOKENS = ["<ts>", "<ts/>"]


def build_tiny_chatts(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    patch_size: int = 4,
    encoder_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write tokenizer, random-weight model, remote code and processor config to ``out_dir``."""
    import importlib
    import importlib.util
    import sys

    import torch

    from lfkit.tiny_model import train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(list(corpus or []), vocab_size=vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", *TS_TOKENS]})
    tokenizer.save_pretrained(out)
    start_id, end_id = tokenizer.convert_tokens_to_ids(TS_TOKENS)

    for name in REMOTE_FILES:
        shutil.copyfile(REMOTE_CODE_DIR / name, out / name)

    # Import the remote code from out_dir exactly as transformers will (a package of these files).
    package = f"_lfkit_tiny_chatts_{abs(hash(str(out.resolve())))}"
    spec = importlib.util.spec_from_file_location(
        package, out / "__init__.py", submodule_search_locations=[str(out)]
    )
    (out / "__init__.py").write_text("")
    pkg = importlib.util.module_from_spec(spec)
    sys.modules[package] = pkg
    try:
        config_mod = importlib.import_module(f"{package}.configuration_qwen2")
        model_mod = importlib.import_module(f"{package}.modeling_qwen2")
    finally:
        (out / "__init__.py").unlink()

    config = config_mod.Qwen2TSConfig(
        ts={
            "patch_size": patch_size,
            "num_features": 2,
            "hidden_size": hidden_size,
            "num_layers": encoder_layers,
        },
        ts_token_start_index=start_id,
        ts_token_end_index=end_id,
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["Qwen2TSForCausalLM"],
        auto_map=AUTO_MAP,
    )
    torch.manual_seed(seed)
    model = model_mod.Qwen2TSForCausalLM(config)
    model.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["auto_map"] = AUTO_MAP
    cfg["architectures"] = ["Qwen2TSForCausalLM"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "processor_config.json").write_text(
        json.dumps(
            {"processor_class": "Qwen2TSProcessor", "auto_map": PROCESSOR_AUTO_MAP, "patch_size": patch_size}
        )
        + "\n"
    )
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["processor_class"] = "Qwen2TSProcessor"
    tok_cfg["auto_map"] = PROCESSOR_AUTO_MAP
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (out / "lfkit_tiny_model.json").write_text(
        json.dumps({"seed": seed, "built_by": "lfkit.tiny_chatts", "patch_size": patch_size}) + "\n"
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
