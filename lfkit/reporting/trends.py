"""Trend verdicts: is a run's loss still falling, flat, noisy, or is eval loss turning up?

The rules work on the logged step series, not on per-epoch means, so they also judge
runs shorter than two epochs. They look at the **second half** of the logged training
losses and fit a straight line to it (least squares): its slope says where the loss is
heading now, the scatter around it says how noisy it is. Each verdict comes with the
numbers that decided it, so the report can show why. The thresholds are named constants.

Order of the rules (first match wins):

1. **eval loss rising** -- at least :data:`MIN_EVAL_POINTS` evaluations and the last eval
   loss is more than :data:`EVAL_RISE_TOLERANCE` (relative) above the lowest one, which
   came earlier: the model has started to overfit, whatever training loss does.
2. **still decreasing** -- over the second half the fitted line falls by at least
   :data:`MIN_RELATIVE_DROP` of the mean loss, and the slope is clearly negative (its
   t-statistic is below ``-MIN_T_STAT``, i.e. the fall is not an artefact of noise):
   more steps would still help.
3. **fluctuating** -- the scatter around the fitted line is at least
   :data:`FLUCTUATION_THRESHOLD` of the mean loss: the loss jumps around more than it
   moves (learning rate too high, batch too small, or mixed data).
4. **plateaued** -- none of the above: the loss has stopped moving.

Fewer than :data:`MIN_TRAIN_POINTS` logged training losses give **too few points**.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

STILL_DECREASING = "still decreasing"
PLATEAUED = "plateaued"
FLUCTUATING = "fluctuating"
EVAL_RISING = "eval loss rising"
TOO_FEW_POINTS = "too few points"

MIN_TRAIN_POINTS = 6
"""Fewest logged training losses a verdict is given for (a line through 3 points of the second half)."""
MIN_RELATIVE_DROP = 0.005
"""The fitted line falling 0.5% of the loss or more over the second half counts as still decreasing."""
MIN_T_STAT = 2.0
"""The slope must be at least this many standard errors below zero (about 95% confidence)."""
FLUCTUATION_THRESHOLD = 0.05
"""Scatter (residual standard deviation) of 5% of the loss or more around the line counts as fluctuating."""
MIN_EVAL_POINTS = 3
"""Fewest evaluations needed to call eval loss rising (one rise after a minimum)."""
EVAL_RISE_TOLERANCE = 0.01
"""Last eval loss more than 1% above the best one counts as rising."""


@dataclass(frozen=True)
class Verdict:
    """A trend verdict and the numbers behind it (``None`` where a number was not computable)."""

    verdict: str
    relative_drop: float | None = None
    t_stat: float | None = None
    noise: float | None = None
    eval_rise: float | None = None
    best_eval_step: int | None = None

    def explain(self) -> str:
        """One sentence with the deciding numbers, for the report."""
        parts = []
        if self.relative_drop is not None:
            moves = "falls" if self.relative_drop >= 0 else "rises"
            change = abs(self.relative_drop) * 100
            parts.append(f"second half {moves} {change:.2f}% (slope t = {self.t_stat:.1f})")
        if self.noise is not None:
            parts.append(f"scatter {self.noise * 100:.2f}%")
        if self.eval_rise == 0:
            parts.append("eval loss lowest at the last evaluation")
        elif self.eval_rise is not None:
            rise = f"{self.eval_rise * 100:+.2f}%"
            parts.append(f"last eval loss {rise} above its best (step {self.best_eval_step})")
        return ", ".join(parts)


@dataclass(frozen=True)
class LineFit:
    """Least-squares line through losses at x = 0, 1, 2, ...: slope, its t-statistic, relative scatter."""

    slope: float
    t_stat: float
    relative_drop: float
    noise: float


def fit_line(losses: list[float]) -> LineFit:
    """Fit ``loss = a + slope * i`` and summarise it relative to the mean loss (needs 3+ points)."""
    n = len(losses)
    if n < 3:
        raise ValueError(f"a line fit needs at least 3 points, got {n}")
    xs = range(n)
    slope, intercept = statistics.linear_regression(xs, losses)
    mean = statistics.fmean(losses)
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, losses, strict=True)]
    resid_sd = math.sqrt(sum(r * r for r in residuals) / (n - 2))
    x_mean = (n - 1) / 2
    se = resid_sd / math.sqrt(sum((x - x_mean) ** 2 for x in xs))
    # A perfect fit has no scatter: any non-zero slope is then certain.
    t_stat = slope / se if se > 0 else (math.copysign(math.inf, slope) if slope else 0.0)
    scale = abs(mean) or 1.0
    return LineFit(slope=slope, t_stat=t_stat, relative_drop=-slope * (n - 1) / scale, noise=resid_sd / scale)


def judge(train_losses: list[float], eval_losses: list[tuple[int, float]]) -> Verdict:
    """Apply the rules in the module docstring to losses in step order.

    ``eval_losses`` holds ``(step, eval_loss)`` pairs in step order.
    """
    eval_rise = best_step = None
    if len(eval_losses) >= MIN_EVAL_POINTS:
        best_step, best = min(eval_losses, key=lambda p: p[1])
        last_step, last = eval_losses[-1]
        eval_rise = (last - best) / abs(best) if best else None
        if eval_rise is not None and best_step < last_step and eval_rise > EVAL_RISE_TOLERANCE:
            return Verdict(EVAL_RISING, eval_rise=eval_rise, best_eval_step=best_step)

    if len(train_losses) < MIN_TRAIN_POINTS:
        return Verdict(TOO_FEW_POINTS, eval_rise=eval_rise, best_eval_step=best_step)
    fit = fit_line(train_losses[len(train_losses) // 2 :])
    common = {
        "relative_drop": fit.relative_drop,
        "t_stat": fit.t_stat,
        "noise": fit.noise,
        "eval_rise": eval_rise,
        "best_eval_step": best_step,
    }
    if fit.relative_drop >= MIN_RELATIVE_DROP and fit.t_stat <= -MIN_T_STAT:
        return Verdict(STILL_DECREASING, **common)
    if fit.noise >= FLUCTUATION_THRESHOLD:
        return Verdict(FLUCTUATING, **common)
    return Verdict(PLATEAUED, **common)
