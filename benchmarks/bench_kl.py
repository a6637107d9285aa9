"""Benchmark memory and step time of ``kl_beta``, stock SFT and LlamaFactory's ``use_asft_loss`` (not a test).

Run: ``.venv/bin/python benchmarks/bench_kl.py [--steps 8] [--repeat 2]``

It builds, in a temporary directory, a tiny-but-wide Qwen2 (2 layers, hidden 64, a 32,000-token
vocabulary, so that the logits dominate memory as they do for real models) and a sharegpt dataset
whose rows fill ``cutoff_len`` 512, then runs real ``llamafactory-cli train`` subprocesses on the
CPU, one after the other under the same conditions (batch 4, float32, ``--steps`` optimizer steps):

1. full tuning, stock SFT (plugin disabled: LlamaFactory as it ships);
2. full tuning, ``kl_beta: 0.1`` (lfkit; reference: a frozen copy of the model);
3. full tuning, ``use_asft_loss: true`` (``asft_alpha: 0.1``; LlamaFactory's own reference copy);
4. LoRA, stock SFT (plugin disabled) and 5. LoRA, ``kl_beta: 0.1`` (reference: adapters disabled);
6. LoRA, ``use_asft_loss: true``: only to show how it ends (its reference is None under LoRA).

For each it prints the peak RSS of the training process (``ru_maxrss`` from ``os.wait4``) and of
its process tree (sampled), the step time (``train_runtime / steps`` from LlamaFactory's
``train_results.json``), each method's extra over the stock run of the same tuning method, and
the ratios kl_beta / ASFT of those extras (target: memory at most 1/5, step time at most 1).
On a shared machine the times are noisy: ``--repeat`` runs each contender again (fastest step time,
largest memory reported) and the contenders are interleaved so that load affects all alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import run_child  # noqa: E402  (the same measuring of a child process)

VOCAB, HIDDEN, CUTOFF, BATCH, BETA = 32_000, 64, 512, 4, 0.1
WORDS = (  # noqa: SIM905 (a word list reads better as text)
    "the quick brown fox jumps over lazy dog while cat watches from window hello how are you today "
    "I am fine thank what would like to talk about time series values rise fall spike stay flat "
    "describe trend anomaly answer question briefly politely role persona character story scene"
).split()


def build_model(out: Path) -> Path:
    """The tiny tokenizer with a wide random Qwen2: logits of [batch, 512, 32000] dominate memory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lfkit.tiny_model import train_tokenizer

    tokenizer = train_tokenizer(WORDS * 4)
    tokenizer.save_pretrained(out)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


def write_data(out: Path, rows: int) -> Path:
    """Rows longer than the cutoff (a quarter prompt, three quarters response), so every batch is full."""
    rng = random.Random(0)
    data = [
        {
            "messages": [
                {"role": "user", "content": " ".join(rng.choices(WORDS, k=200))},
                {"role": "assistant", "content": " ".join(rng.choices(WORDS, k=600))},
            ]
        }
        for _ in range(rows)
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(data))
    info = {"file_name": "bench.json", "formatting": "sharegpt", "columns": {"messages": "messages"}}
    info["tags"] = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
    }
    (out / "dataset_info.json").write_text(json.dumps({"bench": info}))
    return out


def recipe(model: Path, data: Path, out: Path, steps: int, **keys) -> dict:
    base = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "dataset": "bench",
        "dataset_dir": str(data),
        "template": "qwen",
        "cutoff_len": CUTOFF,
        "output_dir": str(out),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": BATCH,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-4,
        "max_steps": steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_shuffling": True,
    }
    base.update(keys)
    return base


def environment(plugin: bool) -> dict[str, str]:
    from lfkit.train_env import offline_train_env

    env = offline_train_env(cpu_only=True, LLAMAFACTORY_VERBOSITY="WARN")
    if not plugin:
        env["LFKIT_DISABLE_PLUGIN"] = "1"
    return env


def train(tmp: Path, name: str, keys: dict, plugin: bool, steps: int, model: Path, data: Path) -> dict:
    out = tmp / name
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe(model, data, out, steps, **keys)))
    cli = str(Path(sys.executable).parent / "llamafactory-cli")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment(plugin))
    try:
        result = run_child([cli, "train", str(path)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    runtime = json.loads((out / "train_results.json").read_text())["train_runtime"]
    result["step_s"] = runtime / steps
    return result


def _best(runs: list[dict]) -> dict:
    """The fastest step time and the largest peak memory seen over a contender's runs."""
    keys = ("rss_mb", "tree_rss_mb")
    return {"step_s": min(r["step_s"] for r in runs), **{k: max(r[k] for r in runs) for k in keys}}


def asft_with_lora(tmp: Path, model: Path, data: Path) -> str:
    """How ``use_asft_loss`` with LoRA ends: the last line of its error, or 'trains'."""
    path = tmp / "asft_lora.yaml"
    keys = {"finetuning_type": "lora", "lora_target": "all", "use_asft_loss": True}
    path.write_text(yaml.safe_dump(recipe(model, data, tmp / "asft_lora", 1, **keys)))
    cli = str(Path(sys.executable).parent / "llamafactory-cli")
    proc = subprocess.run([cli, "train", str(path)], env=environment(False), capture_output=True, text=True)
    if proc.returncode == 0:
        return "trains"
    errors = [line for line in proc.stderr.splitlines() if re.match(r"[A-Za-z_.]*(Error|Exception): ", line)]
    return f"fails: {errors[-1]}" if errors else f"fails with exit code {proc.returncode}"


CONTENDERS = {  # name -> (recipe keys, plugin active)
    "full: stock SFT": ({}, False),
    "full: kl_beta 0.1": ({"kl_beta": BETA}, True),
    "full: use_asft_loss": ({"use_asft_loss": True, "asft_alpha": BETA}, False),
    "lora: stock SFT": ({"finetuning_type": "lora", "lora_target": "all"}, False),
    "lora: kl_beta 0.1": ({"finetuning_type": "lora", "lora_target": "all", "kl_beta": BETA}, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--repeat", type=int, default=2, help="runs per contender (interleaved)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lfkit-bench-kl-") as tmp_name:
        tmp = Path(tmp_name)
        model = build_model(tmp / "model")
        data = write_data(tmp / "data", rows=BATCH * args.steps)
        print(
            f"model: Qwen2, 2 layers, hidden {HIDDEN}, vocab {VOCAB:,}; batch {BATCH} x {CUTOFF} tokens, "
            f"{args.steps} steps, float32 on the CPU; CPUs: {os.cpu_count()}, "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        for i in range(args.repeat):
            for name, (keys, plugin) in CONTENDERS.items():
                t0 = time.perf_counter()
                runs[name].append(train(tmp, f"{name.split(':')[0]}_{i}_{len(runs[name])}", keys, plugin,
                                        args.steps, model, data))  # fmt: skip
                print(f"  ran {name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        results = {name: _best(r) for name, r in runs.items()}
        ending = asft_with_lora(tmp, model, data)

    def extra(name: str, key: str) -> float:
        base = "full: stock SFT" if name.startswith("full") else "lora: stock SFT"
        return results[name][key] - results[base][key]

    header = f"{'peak RSS MB':>11} {'extra MB':>9} {'tree RSS MB':>11} {'s/step':>7} {'extra s':>8}"
    print(f"{'contender':22} {header}")
    for name, r in results.items():
        print(
            f"{name:22} {r['rss_mb']:11.0f} {extra(name, 'rss_mb'):9.0f} {r['tree_rss_mb']:11.0f} "
            f"{r['step_s']:7.3f} {extra(name, 'step_s'):8.3f}"
        )
    print(f"{'lora: use_asft_loss':22} {ending}")
    kl, asft = "full: kl_beta 0.1", "full: use_asft_loss"
    mem_ratio = extra(kl, "rss_mb") / extra(asft, "rss_mb")
    time_ratio = results[kl]["step_s"] / results[asft]["step_s"]
    print(f"kl_beta extra memory / use_asft_loss extra memory: {mem_ratio:.2f} (target <= 0.20)")
    print(f"kl_beta step time / use_asft_loss step time:       {time_ratio:.2f} (target <= 1.00)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine slows the step times)")


if __name__ == "__main__":
    main()
