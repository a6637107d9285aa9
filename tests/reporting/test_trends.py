"""The trend rules of lfkit.reporting.trends on loss series built to sit on each side of a threshold."""

from __future__ import annotations

import pytest

from lfkit.reporting import trends
from lfkit.reporting.epochs import epoch_ends, epoch_of, per_epoch
from lfkit.reporting.runs import LogPoint


def _wiggle(n: int, base: float, amplitude: float, slope: float = 0.0) -> list[float]:
    return [base + slope * i + amplitude * (-1) ** i for i in range(n)]


def test_steady_fall_is_still_decreasing():
    v = trends.judge([2.0 - 0.02 * i for i in range(20)], [])
    assert v.verdict == trends.STILL_DECREASING
    # second half: 10 points falling 0.02 each = 0.18 over a mean of 2.0 - 0.02 * 14.5
    assert v.relative_drop == pytest.approx(0.18 / (2.0 - 0.02 * 14.5))
    assert v.t_stat < -1e6 and v.noise == pytest.approx(0.0, abs=1e-12)  # a perfect line


def test_flat_loss_is_plateaued():
    v = trends.judge(_wiggle(20, 1.0, 0.001), [])
    assert v.verdict == trends.PLATEAUED
    assert abs(v.relative_drop) < trends.MIN_RELATIVE_DROP


def test_fall_below_min_relative_drop_is_plateaued():
    # second half falls 0.4% in total: under MIN_RELATIVE_DROP although perfectly steady
    per_step = 0.004 / 9
    v = trends.judge([1.0 - per_step * i for i in range(20)], [])
    assert v.relative_drop < trends.MIN_RELATIVE_DROP
    assert v.verdict == trends.PLATEAUED


def test_noisy_loss_is_fluctuating_even_with_a_small_fall():
    v = trends.judge(_wiggle(20, 1.0, 0.1, slope=-0.002), [])
    assert v.noise >= trends.FLUCTUATION_THRESHOLD
    assert v.t_stat > -trends.MIN_T_STAT
    assert v.verdict == trends.FLUCTUATING


def test_eval_loss_rising_wins_over_falling_train_loss():
    evals = [(1, 1.0), (2, 0.9), (3, 0.93)]
    v = trends.judge([2.0 - 0.02 * i for i in range(20)], evals)
    assert v.verdict == trends.EVAL_RISING
    assert v.best_eval_step == 2 and v.eval_rise == pytest.approx(0.03 / 0.9)


def test_eval_rise_within_tolerance_or_too_few_evals_is_not_rising():
    falling = [2.0 - 0.02 * i for i in range(20)]
    assert trends.judge(falling, [(1, 1.0), (2, 0.9), (3, 0.905)]).verdict == trends.STILL_DECREASING
    assert trends.judge(falling, [(1, 0.9), (2, 1.5)]).verdict == trends.STILL_DECREASING


def test_too_few_points():
    assert trends.judge([1.0] * (trends.MIN_TRAIN_POINTS - 1), []).verdict == trends.TOO_FEW_POINTS


def test_fit_line_needs_three_points():
    with pytest.raises(ValueError, match="at least 3 points"):
        trends.fit_line([1.0, 2.0])


def test_epoch_of_puts_the_boundary_event_in_the_epoch_it_closes():
    assert [epoch_of(e) for e in (0.2, 1.0, 1.0000000001, 1.2, 2.0)] == [1, 1, 1, 2, 2]


def test_per_epoch_means_and_last_eval():
    from pathlib import Path

    from lfkit.reporting.runs import Run

    train = [LogPoint(s, s / 2, {"loss": float(s), "kl_loss": 10.0 * s}) for s in range(1, 5)]
    evals = [LogPoint(1, 0.5, {"eval_loss": 9.0}), LogPoint(2, 1.0, {"eval_loss": 8.0})]
    run = Run(path=Path("r"), label="r", files=[], log=train + evals)
    stats = per_epoch(run, ["kl_loss"])
    assert [(s.epoch, s.train_points, s.mean_train_loss, s.last_eval) for s in stats] == [
        (1, 2, 1.5, {"": 8.0}),
        (2, 2, 3.5, {}),
    ]
    assert stats[1].means == {"kl_loss": 35.0}


def test_epoch_ends_sit_on_whole_logged_steps():
    """30 steps over 8 epochs (3.75 per epoch): each end is the last step the table counts in that epoch."""
    points = [LogPoint(s, s / 3.75, {"loss": 1.0}) for s in range(1, 31)]
    ends = epoch_ends(points)
    assert ends == [(1, 3), (2, 7), (3, 11), (4, 15), (5, 18), (6, 22), (7, 26), (8, 30)]
    assert all(epoch_of(points[step - 1].epoch) == epoch for epoch, step in ends)
    assert all(epoch_of(points[step].epoch) == epoch + 1 for epoch, step in ends[:-1])


def test_explain_words_the_direction_and_prints_the_size_without_sign():
    falling = trends.judge([2.0 - 0.02 * i for i in range(20)], [])
    drop = f"{falling.relative_drop * 100:.2f}"
    assert falling.explain().startswith(f"second half falls {drop}% (slope t = ")
    rising = trends.judge([1.0 + 0.01 * i + 0.05 * (-1) ** i for i in range(20)], [])
    assert rising.relative_drop < 0
    rise = f"{-rising.relative_drop * 100:.2f}"
    assert rising.explain().startswith(f"second half rises {rise}% (slope t = ")
    assert "+" not in falling.explain() + rising.explain() and "-" not in rise
