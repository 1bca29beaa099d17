"""Baselines: momentum uses only the past; random signals match turnover and exposure."""

from __future__ import annotations

import numpy as np

from strategies import baselines


def test_momentum_is_the_sign_of_the_last_completed_bar():
    close = np.array([1.0, 1.1, 1.05, 1.05, 1.2])
    assert baselines.momentum(close).tolist() == [0.0, 0.0, 1.0, -1.0, 0.0]


def _turnover(paths: np.ndarray) -> float:
    return float(np.abs(np.diff(paths, axis=0, prepend=0.0)).mean())


def test_random_signals_match_turnover_time_in_market_and_size():
    rng = np.random.default_rng(0)
    blocks = np.where(rng.random(1000) < 0.7, 0.0, 0.5) * np.sign(rng.normal(size=1000))
    position = np.repeat(blocks, 5)  # flat 70% of the time, held five bars at a time
    paths = baselines.random_matched(position, n_seeds=200, seed=1)
    assert paths.shape == (5000, 200)
    target = _turnover(position[:, None])
    assert abs(_turnover(paths) - target) / target < 0.05
    assert abs((paths != 0).mean() - (position != 0).mean()) < 0.02
    assert np.allclose(np.abs(paths[paths != 0]), 0.5)


def test_random_signals_for_an_always_invested_strategy_flip_at_the_same_rate():
    rng = np.random.default_rng(2)
    position = np.repeat(np.sign(rng.normal(size=500)), 4)
    paths = baselines.random_matched(position, n_seeds=100, seed=3)
    assert np.all(np.abs(paths) == 1.0)
    target = _turnover(position[:, None])
    assert abs(_turnover(paths) - target) / target < 0.05


def test_random_pvalue_counts_random_sharpes_at_least_as_high():
    assert baselines.random_pvalue(1.0, np.array([0.0, 2.0, 0.5, 1.0])) == (1 + 2) / 5
    assert baselines.random_pvalue(0.0, np.array([])) == 1.0
