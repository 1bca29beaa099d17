"""Scorecard statistics against hand formulas and scikit-learn; bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score

from strategies import metrics


def test_sharpe_is_mean_over_std_annualized_by_periods_per_year():
    r = np.array([0.01, -0.005, 0.02, 0.0, 0.003])
    expected = r.mean() / r.std(ddof=1) * math.sqrt(252)
    assert metrics.sharpe(r, 252) == pytest.approx(expected)
    assert metrics.sharpe(np.zeros(10), 252) == 0.0


def test_sortino_uses_downside_deviation():
    r = np.array([0.02, -0.01, 0.03, -0.02])
    down = math.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert metrics.sortino(r, 12) == pytest.approx(r.mean() / down * math.sqrt(12))


def test_max_drawdown_and_calmar_of_a_known_path():
    r = np.array([0.10, -0.055, -0.055, 0.2])  # equity 1.1, 1.045, 0.99, 1.19
    assert metrics.max_drawdown(r) == pytest.approx(0.99 / 1.1 - 1)
    assert metrics.calmar(r, 4) == pytest.approx(r.mean() * 4 / (1 - 0.99 / 1.1))


def test_turnover_and_hit_rate():
    position = np.array([0.0, 1.0, 1.0, -1.0, 0.0])
    assert metrics.turnover(position, 100) == pytest.approx((0 + 1 + 0 + 2 + 1) / 5 * 100)
    r = np.array([0.5, 0.1, -0.1, 0.2, 0.3])
    assert metrics.hit_rate(r, position) == pytest.approx(2 / 3)


def test_probabilistic_sharpe_matches_the_formula():
    rng = np.random.default_rng(0)
    r = rng.standard_t(5, size=500) * 0.01 + 0.001
    sr = r.mean() / r.std()
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    z = sr * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    assert metrics.probabilistic_sharpe(r) == pytest.approx(stats.norm.cdf(z), rel=1e-9)


def test_deflated_sharpe_falls_as_the_number_of_trials_grows():
    rng = np.random.default_rng(1)
    r = rng.normal(0.05, 1.0, 1000)
    values = [metrics.deflated_sharpe(r, n) for n in (1, 10, 100, 1000)]
    assert values[0] == pytest.approx(metrics.probabilistic_sharpe(r))
    assert all(a > b for a, b in zip(values, values[1:]))
    trials = rng.normal(0.0, 0.05, 50)
    assert metrics.deflated_sharpe(r, 50, trials) < metrics.probabilistic_sharpe(r)


def test_expected_max_sharpe_grows_with_trials():
    assert metrics.expected_max_sharpe(1, 1.0) == 0.0
    assert 0 < metrics.expected_max_sharpe(10, 1.0) < metrics.expected_max_sharpe(100, 1.0)


def test_direction_auc_and_f1_match_scikit_learn_with_ties():
    rng = np.random.default_rng(2)
    realized = rng.normal(size=300)
    prob = np.round(1 / (1 + np.exp(-(realized + rng.normal(size=300)))), 1)  # many ties
    label = realized > 0
    assert metrics.direction_auc(prob, realized) == pytest.approx(roc_auc_score(label, prob))
    assert metrics.direction_f1(prob, realized) == pytest.approx(f1_score(label, prob > 0.5))


def test_bootstrap_interval_brackets_the_point_and_covers_a_known_mean():
    rng = np.random.default_rng(3)
    r = rng.normal(0.001, 0.01, 2000)
    position = np.repeat(np.sign(rng.normal(size=200)), 10)
    card = metrics.scorecard(r, position, periods_per_year=252, n_boot=300, seed=4)
    for name in ("sharpe", "sortino", "max_drawdown", "hit_rate", "psr", "turnover"):
        assert card[f"{name}_ci_low"] <= card[name] <= card[f"{name}_ci_high"], name
    true_sharpe = 0.001 / 0.01 * math.sqrt(252)  # r are the strategy returns themselves
    assert card["sharpe_ci_low"] < true_sharpe < card["sharpe_ci_high"]
    assert math.isnan(card["auc"])


def test_block_bootstrap_keeps_blocks_of_consecutive_bars():
    x = np.arange(100.0)
    resampled = metrics.block_bootstrap(lambda a: a, (x,), n_boot=3, block=10, seed=0)
    rows = resampled.reshape(3, 100)
    steps = np.diff(rows, axis=1)
    # inside a block consecutive values differ by 1 (mod wrap-around)
    assert ((steps == 1) | (steps == -99)).mean() > 0.85
