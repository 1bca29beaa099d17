"""Baseline positions on the same bars: buy-and-hold, flat, momentum, turnover-matched random.

Positions are per bar, as multiples of capital, and follow the backtest's timing: the value at
bar k is held over bar k and may use only what is known when bar k starts (closes of bars
before k). The random baseline gives a p-value for a strategy's Sharpe: the share of random
signals, with the strategy's turnover and mean exposure, whose Sharpe is at least as high.
"""

from __future__ import annotations

import numpy as np


def buy_and_hold(n_bars: int) -> np.ndarray:
    """Return +1 on every bar."""
    return np.ones(n_bars)


def flat(n_bars: int) -> np.ndarray:
    """Return 0 on every bar."""
    return np.zeros(n_bars)


def momentum(close: np.ndarray) -> np.ndarray:
    """Return the sign of the last completed bar's return: ``sign(close[k-1] - close[k-2])``."""
    close = np.asarray(close, float)
    position = np.zeros(len(close))
    if len(close) > 2:
        position[2:] = np.sign(close[1:-1] - close[:-2])
    return position


def random_matched(position: np.ndarray, *, n_seeds: int, seed: int = 0) -> np.ndarray:
    """Return ``n_seeds`` random long/short paths with ``position``'s turnover and exposure.

    Each path is ``m * x_k`` with ``m = mean |position|`` and ``x`` a two-state (+1/-1)
    Markov chain that flips with probability ``s = turnover / (2 m)``, where turnover is the
    mean ``|position[k] - position[k-1]|`` per bar, so that both match in expectation.

    Returns
    -------
    numpy.ndarray
        Shape (n_bars, n_seeds).
    """
    position = np.asarray(position, float)
    n = len(position)
    exposure = float(np.abs(position).mean()) if n else 0.0
    if n == 0 or exposure == 0.0:
        return np.zeros((n, n_seeds))
    steps = np.abs(np.diff(np.concatenate([[0.0], position])))
    flip_prob = float(np.clip(steps.mean() / (2.0 * exposure), 0.0, 1.0))
    rng = np.random.default_rng(seed)
    flips = rng.random((n, n_seeds)) < flip_prob
    flips[0] = rng.random(n_seeds) < 0.5  # random initial side
    parity = np.cumsum(flips, axis=0) % 2
    return exposure * np.where(parity == 1, 1.0, -1.0)


def random_pvalue(strategy_sharpe: float, random_sharpes: np.ndarray) -> float:
    """Return ``(1 + #{random >= strategy}) / (1 + n)``, the one-sided permutation p-value."""
    random_sharpes = np.asarray(random_sharpes, float)
    random_sharpes = random_sharpes[np.isfinite(random_sharpes)]
    if not np.isfinite(strategy_sharpe):
        return float("nan")
    return float((1 + (random_sharpes >= strategy_sharpe).sum()) / (1 + len(random_sharpes)))
