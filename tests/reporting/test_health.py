"""The health rules on logs built by hand: each rule, its order, and the spikes that do not count."""

from __future__ import annotations

import math
from pathlib import Path

from lfkit.reporting import health
from lfkit.reporting.runs import LogPoint, Progress, Run


def run_of(losses, *, grad=None, evals=None, finished=True, progress=None) -> Run:
    """A run whose log holds ``losses`` at steps 1.. (and ``grad_norm``/eval losses where given)."""
    log = []
    for i, loss in enumerate(losses):
        values = {"loss": loss, "learning_rate": 1e-3}
        if grad is not None:
            values["grad_norm"] = grad[i]
        log.append(LogPoint(step=i + 1, epoch=(i + 1) / len(losses), values=values))
    for step, value in evals or []:
        log.append(LogPoint(step=step, epoch=step / len(losses), values={"eval_loss": value}))
    files = ["trainer_state.json", "train_results.json"] if finished else ["trainer_log.jsonl"]
    run = Run(path=Path("r"), label="r", files=files, log=log, progress=progress)
    run.state = {"global_step": len(losses)} if finished else None
    return run


DECREASING = [3.0 - 0.1 * i for i in range(12)]


def test_healthy_run_gets_its_trend():
    a = health.assess(run_of(DECREASING))
    assert a.health.state == health.HEALTHY and a.verdict == "still decreasing"


def test_nan_loss_is_diverged_at_its_first_step_whatever_the_trend():
    losses = DECREASING[:5] + [math.nan] * 7
    a = health.assess(run_of(losses, evals=[(4, 2.8), (8, math.nan)]))
    assert a.verdict == "diverged at step 6"
    assert a.health.detail == "training loss NaN at step 6; eval loss NaN at step 8"


def test_infinite_eval_loss_alone_is_divergence():
    a = health.assess(run_of(DECREASING, evals=[(4, 2.8), (8, math.inf)]))
    assert a.verdict == "diverged at step 8" and "eval loss +inf at step 8" in a.health.detail


def test_nan_hidden_as_zero_by_the_logging_filter_is_divergence():
    """What a real run logs with logging_nan_inf_filter on: loss 0.0 beside a NaN grad norm."""
    losses = [6.2] + [0.0] * 11
    grads = [3.2] + [math.nan] * 11
    a = health.assess(run_of(losses, grad=grads))
    assert a.verdict == "diverged at step 2"
    assert "loss logged as 0.0 with grad_norm NaN at step 2" in a.health.detail


def test_zero_loss_without_grad_norm_is_said_as_unknown():
    a = health.assess(run_of([6.2, 5.0] + [0.0] * 10))
    assert a.verdict == "loss 0.0 from step 3"
    assert "no grad_norm" in a.health.detail
    # With finite grad norms the 0.0 is a real value: no health problem.
    grads = [1.0] * 12
    assert health.assess(run_of([6.2, 5.0] + [0.0] * 10, grad=grads)).health.state == health.HEALTHY


def test_unrecovered_spike_is_unstable_and_a_recovered_one_is_a_note():
    spiked = DECREASING[:6] + [v * 10 for v in DECREASING[6:]]
    a = health.assess(run_of(spiked))
    assert a.verdict == "unstable" and a.health.step == 7
    assert "jumped from 2.7 to 24 (x8.89) at step 7 and did not recover" in a.health.detail
    recovered = DECREASING[:6] + [20.0] + DECREASING[7:]
    b = health.assess(run_of(recovered))
    assert b.health.state == health.HEALTHY
    assert "loss spike x7.41 at step 7 (recovered" in b.health.detail


def test_small_wiggles_of_a_near_zero_preference_loss_are_no_spike():
    """A DPO loss near 0 doubles easily; the rise must also be 10% of the starting loss."""
    losses = [0.69, 0.5, 0.3, 0.1, 0.02, 0.01, 0.03, 0.02, 0.04, 0.03]
    assert health.spikes(run_of(losses).train_log) == []


def test_unfinished_runs_say_how_far_they_got_and_why_that_is_unknown():
    running = run_of(DECREASING[:7], finished=False, progress=Progress(7, 30, "trainer_log.jsonl"))
    a = health.assess(running)
    assert a.verdict == "in progress, 7 of 30 steps"
    assert "still going, or it was stopped; the files do not say which" in a.health.detail
    assert a.trend is not None  # the trend so far is still shown, just not as the verdict
    ended = run_of(DECREASING, finished=False, progress=Progress(12, 12, "trainer_log.jsonl"))
    assert health.assess(ended).verdict == "unfinished: 12 of 12 steps logged"
    # Divergence outranks being unfinished.
    diverging = run_of(
        DECREASING[:5] + [math.nan], finished=False, progress=Progress(6, 30, "trainer_log.jsonl")
    )
    assert health.assess(diverging).verdict == "diverged at step 6"
