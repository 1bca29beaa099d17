"""Baselines: momentum uses only the past; random signals match turnover and exposure."""

from __future__ import annotations

import numpy as np

from strategies import baselines


def test_momentum_is_the_sign_of_the_last_completed_bar():
    close = np.array([1.0, 1.1, 1.05, 1.05, 1.2])
    assert baselines.momentum(close).tolist() == [0.0, 0.0, 1.0, -1.0, 0.0]


def test_random_signals_match_the_strategy_turnover_and_exposure():
    rng = np.random.default_rng(0)
    position = np.where(rng.random(5000) < 0.1, 0.0, 0.5) * np.sign(rng.normal(size=5000))
    position = np.repeat(position[:1000], 5)  # held five bars at a time
    paths = baselines.random_matched(position, n_seeds=200, seed=1)
    assert paths.shape == (5000, 200)
    turnover = np.abs(np.diff(np.vstack([np.zeros((1, 200)), paths]), axis=0)).mean()
    target = np.abs(np.diff(np.concatenate([[0.0], position]))).mean()
    assert abs(turnover - target) / target < 0.05
    assert np.allclose(np.abs(paths).mean(), np.abs(position).mean())


def test_random_pvalue_counts_random_sharpes_at_least_as_high():
    assert baselines.random_pvalue(1.0, np.array([0.0, 2.0, 0.5, 1.0])) == (1 + 2) / 5
    assert baselines.random_pvalue(0.0, np.array([])) == 1.0
