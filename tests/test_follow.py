"""``lfkit follow``: progress and outcome read from a run's trainer_log.jsonl, as LlamaFactory writes it."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from lfkit.follow import follow, process_running, read_log, summary_lines, vocab_size

RUN = Path(__file__).resolve().parent.parent / "results" / "runs" / "cpu" / "tiny-lora"  # a recorded real run


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]


def test_summary_of_a_recorded_run_matches_its_log():
    rows = _rows(RUN)
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    lines = summary_lines(RUN)
    assert (
        lines[0].strip()
        == f"{rows[-1]['current_steps']} of {rows[-1]['total_steps']} steps in {rows[-1]['elapsed_time']}"
    )
    assert f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}" in lines[1]
    assert f"eval loss  {evals[0]:.3f} -> {evals[-1]:.3f} ({len(evals)} evaluations)" in lines[2]


def test_a_half_written_last_line_is_skipped(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    text = (RUN / "trainer_log.jsonl").read_text().splitlines()
    (run / "trainer_log.jsonl").write_text("\n".join(text[:3]) + "\n" + text[3][:20])
    state = read_log(run)
    assert state.step == json.loads(text[2])["current_steps"]
    assert read_log(tmp_path) is None


def test_chance_level_comes_from_the_base_model_of_an_adapter(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"vocab_size": 512}))
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    assert vocab_size(run) == 512
    assert f"ln 512 = {math.log(512):.2f}" in summary_lines(run)[-1]


def _replay(run: Path) -> subprocess.Popen:
    """A writer that appends the recorded log a few lines at a time, as a training process does."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "rows = open(sys.argv[1]).read().splitlines()\n"
            "with open(sys.argv[2], 'a') as out:\n"
            "    for i, row in enumerate(rows):\n"
            "        out.write(row + '\\n'); out.flush()\n"
            "        time.sleep(0.01)\n",
            str(RUN / "trainer_log.jsonl"),
            str(run / "trainer_log.jsonl"),
        ],
    )


def test_one_progress_line_per_tenth_of_the_steps(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    writer = _replay(run)
    printed: list[str] = []
    follow(run, running=process_running(writer.pid), every=math.inf, echo=printed.append, poll=0.001)
    writer.wait()
    progress = [line for line in printed if line.startswith("  step ")]
    assert 5 <= len(progress) <= 11  # one per tenth reached while it was looking, and the last step
    quiet: list[str] = []
    follow(run, running=None, every=0, echo=quiet.append, quiet=True)
    assert quiet == summary_lines(run)


def test_follow_waits_for_the_process_then_summarises(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = (RUN / "trainer_log.jsonl").read_text().splitlines()
    writer = _replay(run)
    printed: list[str] = []
    follow(run, running=process_running(writer.pid), every=0, echo=printed.append, poll=0.02)
    writer.wait()
    last = json.loads(rows[-1])
    assert any(line.startswith("  step ") for line in printed)
    summary = f"{last['current_steps']} of {last['total_steps']} steps in {last['elapsed_time']}"
    assert summary in [line.strip() for line in printed]
