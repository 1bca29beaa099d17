"""Baseline positions on the same bars: buy-and-hold, flat, momentum, turnover-matched random.

Positions are per bar, as multiples of capital, and follow the backtest's timing: the value at
bar k is held over bar k and may use only what is known when bar k starts (closes of bars
before k). The random baseline gives a p-value for a strategy's Sharpe: the share of random
signals, with the strategy's turnover, time in the market and size, whose Sharpe is at least
as high.
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
    """Return ``n_seeds`` random signals with ``position``'s turnover and exposure profile.

    A random path is flat for the same share ``f`` of bars as the strategy and, in the market,
    long or short (a fair coin per holding period) at the strategy's mean in-market size ``s``.
    Flat and holding periods are geometric with entry probability ``a`` and exit probability
    ``b`` chosen so that the share in the market is ``f = a / (a + b)`` and the expected
    turnover ``2 s a (1 - f)`` per bar equals the strategy's mean ``|position[k] -
    position[k-1]|``. A strategy that is (almost) always in the market gets a long/short path
    that flips with probability ``turnover / (2 s)``. Probabilities are clipped to [0, 1], so
    a turnover no such path can reach is matched as closely as possible.

    Returns
    -------
    numpy.ndarray
        Shape (n_bars, n_seeds).
    """
    position = np.asarray(position, float)
    n = len(position)
    in_market = position != 0
    if n == 0 or not in_market.any():
        return np.zeros((n, n_seeds))
    share = float(in_market.mean())
    size = float(np.abs(position[in_market]).mean())
    turnover = float(np.abs(np.diff(np.concatenate([[0.0], position]))).mean())
    rng = np.random.default_rng(seed)
    entry = turnover / (2.0 * size * (1.0 - share)) if share < 1.0 else np.inf
    if share >= 0.99 or entry > 1.0:
        flip_prob = float(np.clip(turnover / (2.0 * size), 0.0, 1.0))
        flips = rng.random((n, n_seeds)) < flip_prob
        flips[0] = rng.random(n_seeds) < 0.5  # random initial side
        parity = np.cumsum(flips, axis=0) % 2
        return size * np.where(parity == 1, 1.0, -1.0)
    exit_ = float(np.clip(entry * (1.0 - share) / share, 1e-12, 1.0))
    entry = float(np.clip(entry, 1e-12, 1.0))
    out = np.empty((n, n_seeds))
    for j in range(n_seeds):
        out[:, j] = _flat_or_held(rng, n, entry, exit_, share, size)
    return out


def _flat_or_held(
    rng: np.random.Generator, n: int, entry: float, exit_: float, share: float, size: float
) -> np.ndarray:
    """One path alternating geometric flat and holding periods, a random side per holding."""
    mean_cycle = 1.0 / entry + 1.0 / exit_
    n_cycles = int(n / mean_cycle * 1.5) + 10
    flat = rng.geometric(entry, n_cycles)
    held = rng.geometric(exit_, n_cycles)
    lengths = np.empty(2 * n_cycles, dtype=np.int64)
    values = np.zeros(2 * n_cycles)
    start_held = rng.random() < share
    first, second = (1, 0) if start_held else (0, 1)
    lengths[first::2], lengths[second::2] = held, flat
    values[first::2] = size * rng.choice([-1.0, 1.0], n_cycles)
    path = np.repeat(values, lengths)
    while len(path) < n:  # rare: draw more cycles
        path = np.concatenate([path, _flat_or_held(rng, n - len(path), entry, exit_, share, size)])
    return path[:n]


def random_pvalue(strategy_sharpe: float, random_sharpes: np.ndarray) -> float:
    """Return ``(1 + #{random >= strategy}) / (1 + n)``, the one-sided permutation p-value."""
    random_sharpes = np.asarray(random_sharpes, float)
    random_sharpes = random_sharpes[np.isfinite(random_sharpes)]
    if not np.isfinite(strategy_sharpe):
        return float("nan")
    return float((1 + (random_sharpes >= strategy_sharpe).sum()) / (1 + len(random_sharpes)))
