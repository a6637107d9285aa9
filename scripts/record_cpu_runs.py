"""Train the tiny models for a few recipes on this machine and regenerate results/ from the runs.

results/ holds the project's own measured runs, never typed by hand. This script makes
them: it converts the bundled role-play sample, derives a preference (DPO) set from it,
builds two tiny random-weight Qwen2 models (different sizes, for the model-size
comparison), trains each recipe below with plain ``llamafactory-cli train`` (the lfkit
plugin writes ``lfkit_run.json``), copies every run's
small text outputs (logs, results, run record; no weights) into ``results/runs/<label>/``
and writes ``results/README.md`` and ``results/plots/`` with ``lfkit results report`` over
all of ``results/runs/``, so runs recorded earlier on other hardware (a GPU machine, with
``--label``) stay in the report and its speed comparisons.

Usage (from the repository root)::

    .venv/bin/python scripts/record_cpu_runs.py               # CPU runs -> results/runs/cpu/
    .venv/bin/python scripts/record_cpu_runs.py --gpu --label h100   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data_tools" / "samples" / "roleplay_sample.jsonl"
KEPT_FILES = (
    "trainer_state.json",
    "trainer_log.jsonl",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "lfkit_run.json",
    "adapter_config.json",
    "README.md",
)
"""The run files the report reads; weights and tokenizers are left in the scratch dir."""

MODELS = {
    # name: (hidden_size, num_layers)
    "tiny-h64-l2": (64, 2),
    "tiny-h128-l4": (128, 4),
}

COMMON = {
    "stage": "sft",
    "do_train": True,
    "dataset": "roleplay",
    "eval_dataset": "roleplay_val",
    "template": "qwen",
    "cutoff_len": 256,
    "overwrite_output_dir": True,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "per_device_eval_batch_size": 4,
    "num_train_epochs": 3,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "logging_steps": 1,
    "eval_strategy": "steps",
    "eval_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "seed": 0,
    "dataloader_num_workers": 0,
    "include_num_input_tokens_seen": True,
}

RUNS = {
    # run name: (model, recipe keys on top of COMMON)
    "tiny-lora": (
        "tiny-h64-l2",
        {"finetuning_type": "lora", "lora_target": "all", "lora_rank": 8, "learning_rate": 1.0e-3},
    ),
    "tiny-full": ("tiny-h64-l2", {"finetuning_type": "full", "learning_rate": 1.0e-3}),
    "tiny-lora-kl": (
        "tiny-h64-l2",
        {
            "finetuning_type": "lora",
            "lora_target": "all",
            "lora_rank": 8,
            "learning_rate": 1.0e-3,
            "kl_beta": 0.1,
        },
    ),
    "small-lora": (
        "tiny-h128-l4",
        {"finetuning_type": "lora", "lora_target": "all", "lora_rank": 8, "learning_rate": 1.0e-3},
    ),
    # A second stage, so the report shows stage-aware labels and metrics (DPO's reward accuracy).
    "tiny-dpo": (
        "tiny-h64-l2",
        {
            "stage": "dpo",
            "dataset": "roleplay_pref",
            "eval_dataset": "roleplay_pref_val",
            "finetuning_type": "lora",
            "lora_target": "all",
            "lora_rank": 8,
            "learning_rate": 1.0e-3,
            "pref_beta": 0.1,
            "pref_loss": "sigmoid",
        },
    ),
}
PREFERENCE_SETS = {"roleplay_pref": "roleplay.jsonl", "roleplay_pref_val": "roleplay_val.jsonl"}
"""The DPO sets derived from the converted role-play sets (see :func:`write_preference_sets`)."""


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def prepare(work: Path) -> tuple[Path, dict[str, Path]]:
    """Convert the bundled sample and build the tiny models (reused when already there)."""
    from lfkit.tiny_model import build_tiny_model

    data = work / "data"
    if not (data / "dataset_info.json").exists():
        subprocess.run(
            [
                _bin("lfkit"),
                "data",
                "convert",
                str(SAMPLE),
                "--out",
                str(data),
                "--name",
                "roleplay",
                "--role-key",
                "user_id",
                "--val-ratio",
                "0.2",
                "--seed",
                "0",
            ],
            check=True,
        )
    write_preference_sets(data)
    # The tokenizer learns from the converted dataset (the raw sample holds deliberately bad lines).
    corpus = (data / "roleplay.jsonl").read_text(encoding="utf-8").splitlines()
    models = {}
    for name, (hidden, layers) in MODELS.items():
        path = work / "models" / name
        if not (path / "config.json").exists():
            build_tiny_model(path, corpus, hidden_size=hidden, num_layers=layers, seed=0)
        models[name] = path
    return data, models


def write_preference_sets(data: Path) -> None:
    """DPO pairs from the converted role-play sets, in LlamaFactory's sharegpt ranking layout.

    Each conversation gives one pair: its turns up to the last user turn are the prompt, its
    real last reply is ``chosen``, and the last reply of the next conversation of another role
    (another character's voice) is ``rejected``. The sets are registered in ``dataset_info.json``
    beside the role-play sets, with the same tags.
    """
    from lfkit.atomic import write_text

    info_path = data / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    for name, source in PREFERENCE_SETS.items():
        rows = [json.loads(line) for line in (data / source).read_text(encoding="utf-8").splitlines()]
        pairs = []
        for index, row in enumerate(rows):
            other = next(
                (o for o in rows[index + 1 :] + rows[:index] if o["role_id"] != row["role_id"]), None
            )
            if other is None or row["messages"][-1]["role"] != "assistant":
                continue
            pairs.append(
                {
                    "messages": row["messages"][:-1],
                    "chosen": row["messages"][-1],
                    "rejected": other["messages"][-1],
                    "system": row["system"],
                }
            )
        write_text(data / f"{name}.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
        base = info[source.removesuffix(".jsonl")]
        info[name] = {
            "file_name": f"{name}.jsonl",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {**base["columns"], "chosen": "chosen", "rejected": "rejected"},
            "tags": base["tags"],
        }
    write_text(info_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")


def gpu_runs_sentence(runs: Path) -> str:
    """Which recorded runs ran on a GPU, and from which recipe, read from their lfkit_run.json."""
    from lfkit.plugin.run_record_schema import RUN_RECORD_FILE, read_run_record

    found = []
    for path in sorted(runs.glob(f"*/*/{RUN_RECORD_FILE}")):
        record = read_run_record(path)
        if record.gpu_count > 0:
            recipe = record.recipe_path or "no recipe file"
            found.append(f"`{path.parent.relative_to(runs)}` ({record.hardware_summary}, {recipe})")
    if not found:
        return (
            "No run below was made on a GPU, and no recipe of the catalog in `recipes/` has been run on "
            "a GPU yet: all runs here are CPU runs of the tiny models."
        )
    return "Runs made on a GPU: " + "; ".join(found) + "."


def train(name: str, recipe: dict, work: Path, gpu: bool) -> Path:
    from lfkit.train_env import offline_train_env

    """Run one recipe with llamafactory-cli; stop the script with the log tail if it fails."""
    recipe_path = work / "recipes" / f"{name}.yaml"
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    log_path = work / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.run(
            [_bin("llamafactory-cli"), "train", str(recipe_path)],
            env=offline_train_env(cpu_only=not gpu),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"training {name} failed ({proc.returncode}); log {log_path}:\n{tail}")
    return Path(recipe["output_dir"])


def keep(run_dir: Path, dest: Path) -> None:
    """Copy the run's small text outputs into results/runs (replacing an older copy)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEPT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "outputs" / "recorded_runs",
        help="scratch dir for data, models and run outputs (default: outputs/recorded_runs)",
    )
    parser.add_argument("--results", type=Path, default=REPO / "results", help="results dir to regenerate")
    parser.add_argument("--label", default="cpu", help="hardware label: runs go to RESULTS/runs/LABEL/")
    parser.add_argument("--gpu", action="store_true", help="let training see the GPUs (default: CPU only)")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="train only these runs")
    parser.add_argument("--report-only", action="store_true", help="skip training; rebuild the report")
    args = parser.parse_args()

    from rich.progress import Progress

    from lfkit.reporting.report import build_report

    if not args.report_only:
        work = args.work.resolve()
        data, models = prepare(work)
        names = args.only or list(RUNS)
        with Progress() as progress:
            task = progress.add_task("training", total=len(names))
            for name in names:
                progress.update(task, description=f"training {name}")
                model, keys = RUNS[name]
                recipe = {
                    "model_name_or_path": str(models[model]),
                    **COMMON,
                    **keys,
                    "dataset_dir": str(data),
                    "output_dir": str(work / "saves" / args.label / name),
                }
                started = time.monotonic()
                run_dir = train(name, recipe, work, args.gpu)
                progress.console.print(f"{name}: trained in {time.monotonic() - started:.0f} s")
                keep(run_dir, args.results / "runs" / args.label / name)
                progress.advance(task)

    intro = (
        "Every number below is read from the run files in [`runs/`](runs/) (copied from the output "
        "directories of real `llamafactory-cli train` runs by `scripts/record_cpu_runs.py`; weights left "
        "out). The models are tiny random-weight Qwen2s built locally (`lfkit tiny-model`) trained on "
        "the bundled role-play sample (SFT) and on preference pairs made from it (DPO: each "
        "conversation's real reply chosen, another character's reply rejected), so the losses only show "
        "that the chain works, not model quality. "
        "CPU timings come from a small shared machine and are noisy. Regenerate with "
        "`.venv/bin/python scripts/record_cpu_runs.py` (or `--report-only`). "
        + gpu_runs_sentence(args.results / "runs")
    )
    out = args.results / "README.md"
    plots = args.results / "plots"
    if plots.exists():
        shutil.rmtree(plots)
    report = build_report([args.results / "runs"], out, plots, title="lfkit measured runs", intro=intro)
    print(f"{out}: {len(report.runs)} runs, {len(report.plots)} plots")


if __name__ == "__main__":
    main()
