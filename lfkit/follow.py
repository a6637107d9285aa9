"""``lfkit follow RUN_DIR``: a training run's progress and outcome in a few lines.

LlamaFactory's own output is hundreds of lines (model configs, token ids, per-step dicts); a
run started with its output sent to a log file can be followed from what it writes into its
``output_dir`` instead: ``trainer_log.jsonl`` gets one JSON line per logging step (step, total
steps, loss, elapsed and remaining time) and per evaluation (``eval_loss``). While the run is
going, a line is printed for each further tenth of the steps done, and after ``--every``
seconds without one when a new step was logged;
when it ends (``--pid`` exited; without it, the log reached its last step or LlamaFactory
wrote ``all_results.json``), a summary:
steps, train and eval loss from first to last, and the chance level ``ln(vocab)``
when the vocabulary size can be read from the model's ``config.json``: a loss there means the
model predicts no better than uniformly at random.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LogState:
    """What ``trainer_log.jsonl`` says so far."""

    step: int
    total_steps: int
    losses: tuple[float, ...]
    eval_losses: tuple[float, ...]
    elapsed: str
    remaining: str


def read_log(run_dir: Path) -> LogState | None:
    """The run's progress, or None before its first logged step. A half-written last line is skipped."""
    path = run_dir / "trainer_log.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # the line LlamaFactory is writing right now
    if not rows:
        return None
    last = rows[-1]
    return LogState(
        step=int(last.get("current_steps", 0)),
        total_steps=int(last.get("total_steps", 0)),
        losses=tuple(float(r["loss"]) for r in rows if "loss" in r),
        eval_losses=tuple(float(r["eval_loss"]) for r in rows if "eval_loss" in r),
        elapsed=str(last.get("elapsed_time", "")),
        remaining=str(last.get("remaining_time", "")),
    )


def progress_line(state: LogState) -> str:
    parts = [f"step {state.step}/{state.total_steps}"]
    if state.losses:
        parts.append(f"loss {state.losses[-1]:.3f}")
    if state.eval_losses:
        parts.append(f"eval loss {state.eval_losses[-1]:.3f}")
    parts.append(f"{state.elapsed} elapsed, ~{state.remaining} left")
    return "  " + ", ".join(parts)


def vocab_size(run_dir: Path) -> int | None:
    """The trained model's vocabulary size: its own config.json, or its base model's (LoRA)."""
    candidates = [run_dir / "config.json"]
    adapter = run_dir / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base:
            candidates.append(Path(base) / "config.json")
    for config in candidates:
        if config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            size = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
            if size:
                return int(size)
    return None


def summary_lines(run_dir: Path) -> list[str]:
    """The outcome: steps, first and last train / eval loss, and the chance level if known."""
    state = read_log(run_dir)
    if state is None:
        return [f"  no trainer_log.jsonl in {run_dir}: the run logged no step"]
    lines = [f"  {state.step} of {state.total_steps} steps in {state.elapsed}"]
    if state.losses:
        lines.append(f"  train loss {state.losses[0]:.3f} -> {state.losses[-1]:.3f}")
    if state.eval_losses:
        lines.append(
            f"  eval loss  {state.eval_losses[0]:.3f} -> {state.eval_losses[-1]:.3f} "
            f"({len(state.eval_losses)} evaluations)"
        )
    size = vocab_size(run_dir)
    if size:
        lines.append(
            f"  chance level for a {size}-token vocabulary: ln {size} = {math.log(size):.2f} "
            "(a model predicting uniformly at random)"
        )
    return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A child that exited but was not yet reaped by its parent still answers: check for a zombie.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def follow(
    run_dir: Path,
    *,
    running: Callable[[], bool] | None,
    every: float,
    echo: Callable[[str], None],
    poll: float = 0.5,
    quiet: bool = False,
) -> None:
    """Print progress lines until the run ends, then its summary.

    ``running`` says whether the training is still going (e.g. its process is alive); without
    it the run has ended once the log reached its last step or ``all_results.json`` appeared.
    ``quiet`` prints the summary only (LlamaFactory's own progress is on screen).
    """
    printed_step = -1
    last_print = 0.0
    while True:
        going = running() if running is not None else True
        state = read_log(run_dir)
        finished = (run_dir / "all_results.json").is_file() or (
            state is not None and state.total_steps and state.step >= state.total_steps
        )
        now = time.monotonic()
        new_tenth = state is not None and _tenths(state.step, state) > _tenths(printed_step, state)
        if (
            not quiet
            and state is not None
            and state.step != printed_step
            and (not going or new_tenth or now - last_print >= every)
        ):
            echo(progress_line(state))
            printed_step, last_print = state.step, now
        if not going or (running is None and finished):
            break
        time.sleep(poll)
    for line in summary_lines(run_dir):
        echo(line)


def _tenths(step: int, state: LogState) -> int:
    """How many tenths of the run ``step`` completes (a progress line marks each new tenth)."""
    return 10 * max(step, 0) // state.total_steps if state.total_steps else 0


def process_running(pid: int) -> Callable[[], bool]:
    """``running`` for :func:`follow`: whether process ``pid`` is alive (a zombie is not)."""
    return lambda: _alive(pid)
