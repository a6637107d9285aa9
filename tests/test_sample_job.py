"""The README's main job (scripts/sample_job.sh, which scripts/run_sample.sh runs after set-up) works,
and says what it did in one screen."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from conftest import train_env

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.train
def test_sample_job_converts_trains_and_reports(tmp_path):
    out = tmp_path / "sample"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "sample_job.sh"), str(out)],
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    # at most 4 per role are drawn and converted; the rest is counted, not converted
    assert "converted 37 + rejected 7 + not sampled 48 = read 92" in proc.stdout
    info = json.loads((out / "data" / "dataset_info.json").read_text())
    assert {"roleplay", "roleplay_val"} <= set(info)
    assert len((out / "data" / "roleplay.rejects.jsonl").read_text().splitlines()) == 7
    run = out / "saves" / "roleplay-lora"
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 30
    evals = [r["eval_loss"] for r in state["log_history"] if "eval_loss" in r]
    assert len(evals) == 6 and evals[-1] < evals[0]  # the tiny model does learn the sample
    assert (run / "adapter_model.safetensors").is_file()
    report = (out / "report.md").read_text()
    assert "roleplay-lora" in report
    assert list((out / "plots").glob("*.png"))
    assert f"dataset + dataset_info.json   {out}/data/" in proc.stdout

    # Quiet by default: one screen of summary, each step's full output kept in OUT/logs.
    lines = proc.stdout.splitlines()
    assert len(lines) <= 40, proc.stdout
    assert "max_position_embeddings" not in proc.stdout and "input_ids" not in proc.stdout
    logs = out / "logs"
    assert "max_position_embeddings" in (logs / "3-train.log").read_text()  # LlamaFactory's own log, kept
    assert {p.name for p in logs.iterdir()} == {
        "1-convert.log",
        "2-tiny-model.log",
        "3-train.log",
        "4-report.log",
    }
    steps = [r for r in state["log_history"] if "loss" in r]
    assert f"train loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}" in proc.stdout
    assert f"eval loss  {evals[0]:.3f} -> {evals[-1]:.3f}" in proc.stdout
    vocab = json.loads((out / "tiny-model" / "config.json").read_text())["vocab_size"]
    assert f"ln {vocab} = {math.log(vocab):.2f}" in proc.stdout  # what a random model's loss sits near
