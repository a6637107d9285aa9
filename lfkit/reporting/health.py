"""Health verdicts that a broken run cannot pass: diverged, unstable, unfinished, in progress.

The trend rules (:mod:`lfkit.reporting.trends`) describe a healthy curve; they are only
asked once a run has passed these checks, in this order (first match wins):

1. **diverged at step N** -- a loss (training, any eval set, a loss term) or PPO's reward was
   logged as NaN or infinite, or the loss was logged as exactly ``0.0`` in the same event as
   a non-finite ``grad_norm``. The second is how a NaN loss looks with Transformers' default
   ``logging_nan_inf_filter: true``: the filter drops the NaN step from the logging window,
   and a window of nothing but NaN steps is logged as ``0.0`` (seen in a real run trained
   with an absurd learning rate: loss 0.0, grad_norm NaN, eval loss NaN from the first
   evaluation on). N is the first step with such evidence.
2. **loss 0.0 from step N** -- the loss drops to exactly ``0.0`` and stays there, and the files
   hold no ``grad_norm`` to tell a NaN hidden by that filter from a perfect fit
   (``trainer_log.jsonl`` does not carry it). Said as unknown, not as diverged.
3. **in progress, N of M steps** -- LlamaFactory's end-of-training files are missing and
   ``trainer_log.jsonl`` (else the latest checkpoint) stops at step N of M: the run is still
   going or was stopped, which the files cannot tell apart; both are said. When N = M it is
   **unfinished**: every step was logged but the end-of-training files were not written.
4. **unstable** -- the training loss jumped to at least :data:`SPIKE_RATIO` times its level
   over the :data:`BASELINE_WINDOW` logged steps before (by at least :data:`SPIKE_MIN_RISE`
   of the starting loss) and did not come back: the median of the last
   :data:`BASELINE_WINDOW` losses stays more than :data:`RECOVERY` of the way up the jump.
   A spike that recovers is mentioned, not a verdict.

Otherwise the run is **healthy** and its verdict is its trend.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from lfkit.reporting import trends
from lfkit.reporting.runs import LogPoint, Run, eval_key, eval_set_label

DIVERGED = "diverged"
ZERO_LOSS = "loss exactly 0"
IN_PROGRESS = "in progress"
UNFINISHED = "unfinished"
UNSTABLE = "unstable"
HEALTHY = "healthy"
NO_LOSS = "no loss logged"

SPIKE_RATIO = 2.0
"""A loss at least this many times its recent level is a spike."""
SPIKE_MIN_RISE = 0.1
"""...and at least this fraction of the starting loss above it (so tiny DPO losses near 0 are no spikes)."""
BASELINE_WINDOW = 5
"""Logged steps that make the recent level (median) before a spike, and the level at the end after it."""
RECOVERY = 0.5
"""A spike has recovered when the final level is back at least this fraction of the way down."""
DIVERGENCE_KEYS = ("reward",)
"""Besides every ``*loss`` key: metrics whose non-finite value means the run diverged."""


@dataclass(frozen=True)
class Health:
    """A health state, the text the table shows, the step it refers to, and the evidence."""

    state: str
    label: str
    step: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Assessment:
    """A run's health, and the trend of its (finite) losses where that means something."""

    health: Health
    trend: trends.Verdict | None = None
    eval_set: str | None = None
    """The eval set whose losses the trend's eval rule followed."""

    @property
    def verdict(self) -> str:
        """What the runs table says: the health problem, else the trend."""
        if self.health.state != HEALTHY:
            return self.health.label
        return self.trend.verdict if self.trend else NO_LOSS


def assess(run: Run) -> Assessment:
    """The verdict of a run: the health rules of the module docstring, then the trend rules."""
    train = run.train_log
    if not train and not run.eval_sets():
        return Assessment(Health(NO_LOSS, NO_LOSS, detail="no loss was logged"))
    health = divergence(run) or zero_loss(train) or progress(run) or instability(train)
    finite = [p.values["loss"] for p in train if math.isfinite(p.values["loss"])]
    trend, followed = None, None
    if health is None or health.state in (IN_PROGRESS, UNFINISHED, UNSTABLE):
        trend, followed = _trend(run, finite)
    if health is None:
        health = Health(HEALTHY, HEALTHY, detail=_recovered_spikes(train))
    return Assessment(health, trend, followed)


def _trend(run: Run, losses: list[float]) -> tuple[trends.Verdict | None, str | None]:
    """The trend verdict; with several eval sets the first whose eval loss rises decides."""
    sets = run.eval_sets() or [None]
    first = None
    for name in sets:
        evals = [(s, v) for s, _, v in run.eval_series(name)] if name is not None else []
        evals = [(s, v) for s, v in evals if math.isfinite(v)]
        if not losses and not evals:
            continue
        verdict = trends.judge(losses, evals)
        if verdict.verdict == trends.EVAL_RISING:
            return verdict, name
        first = first or (verdict, name)
    return first or (None, None)


def _non_finite(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return None


def bad_loss(point: LogPoint) -> bool:
    """A training loss logged as NaN/inf, or a NaN hidden as 0.0 beside a non-finite grad_norm."""
    loss = point.values.get("loss")
    if loss is None:
        return False
    grad = point.values.get("grad_norm")
    return not math.isfinite(loss) or (loss == 0.0 and grad is not None and not math.isfinite(grad))


def divergence(run: Run) -> Health | None:
    """Diverged: the first step with a non-finite loss (or reward), or a NaN hidden as loss 0.0."""
    evidence: list[tuple[int, str]] = []
    seen_kinds: set[str] = set()
    for point in run.log:
        for key, value in point.values.items():
            shown = _non_finite(value)
            if shown is None or not (key.endswith("loss") or key in DIVERGENCE_KEYS):
                continue
            kind = _describe_key(run, key)
            if kind not in seen_kinds:
                seen_kinds.add(kind)
                evidence.append((point.step, f"{kind} {shown} at step {point.step}"))
        grad = point.values.get("grad_norm")
        hidden = point.values.get("loss") == 0.0 and grad is not None and _non_finite(grad)
        if hidden and "hidden" not in seen_kinds:
            seen_kinds.add("hidden")
            evidence.append(
                (
                    point.step,
                    f"loss logged as 0.0 with grad_norm {_non_finite(grad)} at step {point.step} "
                    "(how Transformers' logging_nan_inf_filter, on by default, logs NaN losses)",
                )
            )
    if not evidence:
        return None
    evidence.sort(key=lambda e: e[0])
    step = evidence[0][0]
    return Health(DIVERGED, f"diverged at step {step}", step, "; ".join(text for _, text in evidence))


def _describe_key(run: Run, key: str) -> str:
    if key == "loss":
        return "training loss"
    for name in run.eval_sets():
        if key == eval_key(name):
            return f"{eval_set_label(name)} loss"
    return f"`{key}`"


def zero_loss(train: list[LogPoint]) -> Health | None:
    """The loss at exactly 0.0 to the end after a non-zero start, with no grad_norm to say why."""
    losses = [p.values["loss"] for p in train]
    if len(losses) < 2 or losses[-1] != 0.0 or losses[0] == 0.0:
        return None
    start = len(losses) - 1
    while start > 0 and losses[start - 1] == 0.0:
        start -= 1
    if any("grad_norm" in p.values for p in train[start:]):
        return None  # finite grad norms: a genuine 0.0 (divergence() has judged non-finite ones)
    step = train[start].step
    return Health(
        ZERO_LOSS,
        f"loss 0.0 from step {step}",
        step,
        f"the loss is exactly 0.0 from step {step} to the end. Transformers' logging_nan_inf_filter "
        "(on by default) logs NaN losses that way; these files hold no grad_norm to tell a diverged run "
        "from a perfect fit (trainer_state.json has it)",
    )


def progress(run: Run) -> Health | None:
    """In progress or unfinished: no end-of-training files, and how far the logs got."""
    if run.finished or run.is_predict_only or not run.has_losses:
        return None
    ending = "LlamaFactory's end-of-training files (trainer_state.json, train_results.json) are not there"
    p = run.progress
    if p is None:
        return Health(
            UNFINISHED, "unfinished (step count unknown)", None, f"{ending}; no file says how many steps"
        )
    if p.current < p.total:
        return Health(
            IN_PROGRESS,
            f"in progress, {p.current} of {p.total} steps",
            p.current,
            f"{p.source} ends at step {p.current} of {p.total} and {ending}: the run is still going, or it "
            "was stopped; the files do not say which",
        )
    return Health(
        UNFINISHED,
        f"unfinished: {p.current} of {p.total} steps logged",
        p.current,
        f"{p.source} logs all {p.total} steps but {ending}: the run stopped (or is still saving) after its "
        "last step",
    )


@dataclass(frozen=True)
class Spike:
    step: int
    before: float
    peak: float
    after: float
    recovered: bool


def spikes(train: list[LogPoint]) -> list[Spike]:
    """Every loss spike (see the module docstring) and whether the loss came back down after it."""
    pts = [(p.step, p.values["loss"]) for p in train if math.isfinite(p.values["loss"])]
    losses = [v for _, v in pts]
    if len(losses) < 2:
        return []
    scale = statistics.median(losses[:BASELINE_WINDOW])
    if scale <= 0:
        return []
    found = []
    i = 1
    while i < len(losses):
        before = statistics.median(losses[max(0, i - BASELINE_WINDOW) : i])
        peak = losses[i]
        if before > 0 and peak >= SPIKE_RATIO * before and peak - before >= SPIKE_MIN_RISE * scale:
            tail = losses[i + 1 :][-BASELINE_WINDOW:]
            after = statistics.median(tail) if tail else peak
            found.append(Spike(pts[i][0], before, peak, after, after <= before + RECOVERY * (peak - before)))
            if not found[-1].recovered:
                break
            i += BASELINE_WINDOW  # the same spike's following points are no new spikes
            continue
        i += 1
    return found


def instability(train: list[LogPoint]) -> Health | None:
    """Unstable: a loss spike that did not recover by the end of the log."""
    for spike in spikes(train):
        if not spike.recovered:
            return Health(
                UNSTABLE,
                "unstable",
                spike.step,
                f"the training loss jumped from {spike.before:.4g} to {spike.peak:.4g} "
                f"(x{spike.peak / spike.before:.3g}) at step {spike.step} and did not recover: "
                f"{spike.after:.4g} over the last logged steps",
            )
    return None


def _recovered_spikes(train: list[LogPoint]) -> str:
    done = [s for s in spikes(train) if s.recovered]
    return "; ".join(
        f"loss spike x{s.peak / s.before:.3g} at step {s.step} (recovered to {s.after:.4g})" for s in done
    )
