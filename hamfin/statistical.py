"""Statistical baselines, fit on the training part of each walk-forward fold only.

- ``random_walk``: zero expected return (the martingale forecast), direction probability 0.5,
  volatility ``sqrt(h)·σ`` from the training returns.
- ``ar``: AR(p) on one-bar log returns (statsmodels ``AutoReg``), iterated h steps ahead;
  direction probability ``Φ(μ̂ / (σ̂ √h))``.
- ``har``: HAR-RV (Corsi, 2009) on bar scale: the forward realized variance regressed (OLS,
  statsmodels) on mean squared returns over the last bar, day and week.
- ``garch``: GARCH(1,1) with Gaussian quasi-likelihood (fit with SciPy; no ``arch`` dependency),
  h-step variance ``Σ_k σ²_{t+k|t}``.

Row alignment: row ``t`` of every array is the instant ``ts_event`` of the FEATURES row, i.e. a
bar's close. ``returns[t]`` is the log return of the bar that closed at ``t`` (known at ``t``);
labels look forward from ``t``. A forecast for row ``t`` uses ``returns[: t + 1]`` only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal, stats
from statsmodels.regression.linear_model import OLS
from statsmodels.tsa.ar_model import AutoReg

BASELINES = ("random_walk", "ar", "har", "garch")
_VAR_FLOOR = 1e-18


@dataclass(frozen=True)
class BaselineForecast:
    """Forecasts of one baseline on the test rows of one fold; arrays of shape (n_test,)."""

    name: str
    predicted_return: np.ndarray
    direction_prob: np.ndarray
    predicted_volatility: np.ndarray


def _lags(x: np.ndarray, rows: np.ndarray, p: int) -> np.ndarray:
    """Return ``x[rows − j]`` for j = 0..p−1 as (len(rows), p); indices below 0 read 0."""
    idx = rows[:, None] - np.arange(p)[None, :]
    return np.where(idx >= 0, x[np.clip(idx, 0, None)], 0.0)


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Return the mean of ``x[t − window + 1 .. t]`` (shorter at the start), shape like x."""
    csum = np.concatenate([[0.0], np.cumsum(x)])
    t = np.arange(x.size)
    lo = np.maximum(t + 1 - window, 0)
    return (csum[t + 1] - csum[lo]) / (t + 1 - lo)


def random_walk(
    returns: np.ndarray, train: np.ndarray, test: np.ndarray, *, horizon: int
) -> BaselineForecast:
    """Forecast a zero return and the training volatility scaled by ``sqrt(horizon)``."""
    sigma = float(np.std(returns[train]))
    n = test.size
    return BaselineForecast(
        "random_walk", np.zeros(n), np.full(n, 0.5), np.full(n, sigma * np.sqrt(horizon))
    )


def ar(
    returns: np.ndarray, train: np.ndarray, test: np.ndarray, *, horizon: int, lags: int = 5
) -> BaselineForecast:
    """Fit AR(``lags``) on the training returns and iterate it ``horizon`` steps per test row."""
    fit = AutoReg(returns[train], lags=lags, trend="c").fit()
    const, phi = float(fit.params[0]), np.asarray(fit.params[1:], np.float64)
    sigma = float(np.sqrt(fit.sigma2))
    window = _lags(returns, test, lags)  # (n, p): r_t, r_{t-1}, ...
    total = np.zeros(test.size)
    for _ in range(horizon):
        step = const + window @ phi
        total += step
        window = np.concatenate([step[:, None], window[:, :-1]], axis=1)
    scale = sigma * np.sqrt(horizon)
    prob = stats.norm.cdf(total / scale)
    return BaselineForecast("ar", total, prob, np.full(test.size, scale))


def har(
    returns: np.ndarray,
    realized_volatility: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    horizon: int,
    bars_per_day: int,
) -> BaselineForecast:
    """Fit HAR-RV by OLS of the forward realized variance on bar/day/week mean squared returns.

    ``realized_volatility`` is the label (forward volatility over ``horizon`` bars); only its
    training rows are read.
    """
    squared = returns**2
    day = max(1, bars_per_day)
    design = np.column_stack(
        [
            np.ones(returns.size),
            squared,
            _trailing_mean(squared, day),
            _trailing_mean(squared, 5 * day),
        ]
    )
    target = realized_volatility[train] ** 2
    ok = np.isfinite(target)
    fit = OLS(target[ok], design[train][ok]).fit()
    variance = np.maximum(design[test] @ np.asarray(fit.params), _VAR_FLOOR)
    n = test.size
    return BaselineForecast("har", np.zeros(n), np.full(n, 0.5), np.sqrt(variance))


def _garch_filter(r: np.ndarray, omega: float, alpha: float, beta: float, init: float):
    """Return σ²_{t+1|t} for every t (the variance of the NEXT return), shape like r."""
    # var_t = ω + α r_t² + β var_{t−1}: a first-order IIR filter, var_{−1} = init.
    out, _ = signal.lfilter([1.0], [1.0, -beta], omega + alpha * r**2, zi=[beta * init])
    return out


def garch(
    returns: np.ndarray, train: np.ndarray, test: np.ndarray, *, horizon: int
) -> BaselineForecast:
    """Fit GARCH(1,1) by Gaussian QML on the training returns; forecast h-step variance."""
    scale = float(np.std(returns[train])) or 1.0
    r_all = (returns - float(np.mean(returns[train]))) / scale
    r = r_all[train]
    init = float(np.var(r))

    def negloglik(theta: np.ndarray) -> float:
        omega, alpha = np.exp(theta[0]), 1 / (1 + np.exp(-theta[1]))
        beta = (1 - alpha) / (1 + np.exp(-theta[2]))  # alpha + beta < 1 by construction
        prev = np.concatenate([[init], _garch_filter(r[:-1], omega, alpha, beta, init)])
        prev = np.maximum(prev, 1e-12)
        return float(0.5 * np.sum(np.log(prev) + r**2 / prev))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        best = optimize.minimize(
            negloglik,
            x0=np.array([np.log(0.05), -2.0, 2.0]),
            method="Nelder-Mead",
            options={"maxiter": 400, "xatol": 1e-4, "fatol": 1e-6},
        )
    omega = float(np.exp(best.x[0]))
    alpha = float(1 / (1 + np.exp(-best.x[1])))
    beta = float((1 - alpha) / (1 + np.exp(-best.x[2])))
    persistence = alpha + beta
    long_run = omega / max(1 - persistence, 1e-9)
    next_var = _garch_filter(r_all, omega, alpha, beta, init)[test]  # σ²_{t+1|t}
    k = np.arange(horizon)
    total = long_run * horizon + ((next_var - long_run)[:, None] * persistence**k).sum(axis=1)
    vol = np.sqrt(np.maximum(total, _VAR_FLOOR)) * scale
    n = test.size
    return BaselineForecast("garch", np.zeros(n), np.full(n, 0.5), vol)


def fit_baselines(
    returns: np.ndarray,
    realized_volatility: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    horizon: int,
    bars_per_day: int,
    ar_lags: int = 5,
) -> dict[str, BaselineForecast]:
    """Fit every baseline on ``train`` rows and forecast ``test`` rows.

    Parameters
    ----------
    returns : ndarray of shape (N,)
        One-bar log returns, row ``t`` known at ``t``.
    realized_volatility : ndarray of shape (N,)
        The forward realized-volatility label (read on training rows only).
    train, test : ndarray of int
        Row indices of the fold, in time order.

    Returns
    -------
    dict
        ``{name: BaselineForecast}`` for the names in ``BASELINES``.
    """
    returns = np.nan_to_num(np.asarray(returns, np.float64))
    return {
        "random_walk": random_walk(returns, train, test, horizon=horizon),
        "ar": ar(returns, train, test, horizon=horizon, lags=ar_lags),
        "har": har(
            returns, realized_volatility, train, test, horizon=horizon, bars_per_day=bars_per_day
        ),
        "garch": garch(returns, train, test, horizon=horizon),
    }
