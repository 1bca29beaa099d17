"""Scorecard statistics with circular block-bootstrap confidence intervals.

Returns are per bar, as a fraction of a constant capital (``pnl / capital``), so the equity
curve is ``1 + cumsum(returns)`` and statistics add up across bars.

- Sharpe ``mean / std * sqrt(P)`` with ``P = spec.periods_per_year(bar_seconds)``; Sortino uses
  the downside deviation ``sqrt(mean(min(r, 0)^2))``.
- Max drawdown ``min(equity / cummax(equity) - 1)``; Calmar ``mean * P / |max drawdown|``.
- Turnover ``sum |position[t] - position[t-1]| / n * P`` (capital traded per year; the
  bootstrap resamples the per-bar ``|position[t] - position[t-1]|``).
- Hit rate: share of in-market bars with a positive return.
- Probabilistic Sharpe ratio (Bailey & Lopez de Prado 2012), on the per-bar Sharpe ``s``::

      PSR(s*) = Phi((s - s*) sqrt(n - 1) / sqrt(1 - g3 s + (g4 - 1) / 4 s^2))

  with skewness ``g3`` and (raw) kurtosis ``g4``; ``psr`` is ``PSR(0)``.
- Deflated Sharpe ratio (Bailey & Lopez de Prado 2014): ``PSR(s0)`` with the expected maximum
  Sharpe of ``N`` trials under the null::

      s0 = sqrt(V) ((1 - e) Phi^-1(1 - 1/N) + e Phi^-1(1 - 1/(N exp(1))))

  ``e`` the Euler-Mascheroni constant, ``V`` the variance of the trials' per-bar Sharpe ratios
  when given, else the sampling variance of the Sharpe estimator.
- Direction AUC (Mann-Whitney, ties averaged) and F1 at probability 0.5.

Every statistic has a circular block-bootstrap interval: blocks of ``ceil(n^(1/3))`` bars
resampled with wrap-around, which keeps the serial dependence inside a block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import ndtr, ndtri  # normal cdf and its inverse (scipy.stats is slow to import)

EULER_GAMMA = 0.5772156649015329
_BOOT_CELLS = 4_000_000  # resampled cells held in memory at once


# ---- row-wise statistics: each takes (B, n) arrays and returns (B,) -----------------------


def _sharpe_rows(r: np.ndarray, periods_per_year: float) -> np.ndarray:
    sd = r.std(axis=1, ddof=1) if r.shape[1] > 1 else np.zeros(r.shape[0])
    mean = r.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(sd > 1e-15, mean / sd * math.sqrt(periods_per_year), 0.0)
    return out


def _sortino_rows(r: np.ndarray, periods_per_year: float) -> np.ndarray:
    down = np.sqrt((np.minimum(r, 0.0) ** 2).mean(axis=1))
    mean = r.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(down > 1e-15, mean / down * math.sqrt(periods_per_year), 0.0)
    return out


def _max_drawdown_rows(r: np.ndarray) -> np.ndarray:
    equity = 1.0 + np.cumsum(r, axis=1)
    peak = np.maximum.accumulate(np.maximum(equity, 1.0), axis=1)
    return (equity / peak - 1.0).min(axis=1)


def _calmar_rows(r: np.ndarray, periods_per_year: float) -> np.ndarray:
    dd = np.abs(_max_drawdown_rows(r))
    annual = r.mean(axis=1) * periods_per_year
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dd > 1e-15, annual / dd, 0.0)


def _turnover_rows(traded: np.ndarray, periods_per_year: float) -> np.ndarray:
    """``traded`` holds ``|position[k] - position[k-1]|`` per bar (resampled as is, so that
    block boundaries do not invent trades)."""
    return traded.mean(axis=1) * periods_per_year


def _hit_rate_rows(r: np.ndarray, position: np.ndarray) -> np.ndarray:
    in_market = position != 0
    n = in_market.sum(axis=1)
    wins = ((r > 0) & in_market).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, wins / np.maximum(n, 1), np.nan)


def _moments(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = r.mean(axis=1)
    centred = r - mean[:, None]
    var = (centred**2).mean(axis=1)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(sd > 1e-15, (centred**3).mean(axis=1) / sd**3, 0.0)
        kurt = np.where(sd > 1e-15, (centred**4).mean(axis=1) / sd**4, 3.0)
        sr = np.where(sd > 1e-15, mean / sd, 0.0)
    return sr, skew, kurt


def _psr_rows(r: np.ndarray, benchmark: float | np.ndarray = 0.0) -> np.ndarray:
    sr, skew, kurt = _moments(r)
    n = r.shape[1]
    denom = np.sqrt(np.maximum(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2, 1e-12))
    return ndtr((sr - benchmark) * math.sqrt(max(n - 1, 1)) / denom)


def _auc_rows(score: np.ndarray, label: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    n_pos = label.sum(axis=1)
    n_neg = label.shape[1] - n_pos
    rank_sum = (ranks * label).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _f1_rows(score: np.ndarray, label: np.ndarray) -> np.ndarray:
    pred = score > 0.5
    tp = (pred & label).sum(axis=1)
    fp = (pred & ~label).sum(axis=1)
    fn = (~pred & label).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)


# ---- public point statistics ---------------------------------------------------------------


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Return the annualized Sharpe ratio of per-bar ``returns``."""
    return float(_sharpe_rows(np.asarray(returns, float)[None], periods_per_year)[0])


def sortino(returns: np.ndarray, periods_per_year: float) -> float:
    """Return the annualized Sortino ratio (downside deviation around 0)."""
    return float(_sortino_rows(np.asarray(returns, float)[None], periods_per_year)[0])


def max_drawdown(returns: np.ndarray) -> float:
    """Return the maximum drawdown of ``1 + cumsum(returns)`` as a negative fraction."""
    return float(_max_drawdown_rows(np.asarray(returns, float)[None])[0])


def calmar(returns: np.ndarray, periods_per_year: float) -> float:
    """Return the annualized mean return over the absolute max drawdown."""
    return float(_calmar_rows(np.asarray(returns, float)[None], periods_per_year)[0])


def turnover(position: np.ndarray, periods_per_year: float) -> float:
    """Return the capital traded per year, ``sum |d position| / n * periods_per_year``."""
    traded = np.abs(np.diff(np.asarray(position, float), prepend=0.0))
    return float(_turnover_rows(traded[None], periods_per_year)[0])


def hit_rate(returns: np.ndarray, position: np.ndarray) -> float:
    """Return the share of in-market bars whose return is positive (NaN if never in market)."""
    r = np.asarray(returns, float)[None]
    return float(_hit_rate_rows(r, np.asarray(position, float)[None])[0])


def probabilistic_sharpe(returns: np.ndarray, benchmark_per_bar: float = 0.0) -> float:
    """Return P(true per-bar Sharpe > ``benchmark_per_bar``) given skew and kurtosis."""
    return float(_psr_rows(np.asarray(returns, float)[None], benchmark_per_bar)[0])


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """Return the expected maximum per-bar Sharpe of ``n_trials`` null trials."""
    if n_trials <= 1:
        return 0.0
    a = float(ndtri(1.0 - 1.0 / n_trials))
    b = float(ndtri(1.0 - 1.0 / (n_trials * math.e)))
    return math.sqrt(max(variance, 0.0)) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b)


def deflated_sharpe(
    returns: np.ndarray, n_trials: int, trial_sharpes: np.ndarray | None = None
) -> float:
    """Return the deflated Sharpe ratio: PSR against the expected max of ``n_trials``.

    Parameters
    ----------
    returns
        Per-bar returns of the chosen strategy.
    n_trials
        Number of strategies / parameter sets tried (from the Optuna study when there is one).
    trial_sharpes
        Per-bar (not annualized) Sharpe ratios of the trials; their variance is used when at
        least two are given, else the sampling variance of the Sharpe estimator.
    """
    return float(_dsr_rows(np.asarray(returns, float)[None], n_trials, trial_sharpes)[0])


def _dsr_rows(r: np.ndarray, n_trials: int, trial_sharpes: np.ndarray | None) -> np.ndarray:
    if trial_sharpes is not None and len(trial_sharpes) >= 2:
        variance = np.full(r.shape[0], float(np.var(trial_sharpes, ddof=1)))
    else:
        sr, skew, kurt = _moments(r)
        n = max(r.shape[1] - 1, 1)
        variance = np.maximum(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2, 0.0) / n
    benchmark = expected_max_sharpe(n_trials, 1.0) * np.sqrt(variance)
    return _psr_rows(r, benchmark)


def direction_auc(direction_prob: np.ndarray, realized_return: np.ndarray) -> float:
    """Return the AUC of ``direction_prob`` for ``realized_return > 0`` (NaN if one class)."""
    score, label = _direction_arrays(direction_prob, realized_return)
    return float(_auc_rows(score[None], label[None])[0]) if len(score) else float("nan")


def direction_f1(direction_prob: np.ndarray, realized_return: np.ndarray) -> float:
    """Return the F1 score of ``direction_prob > 0.5`` for ``realized_return > 0``."""
    score, label = _direction_arrays(direction_prob, realized_return)
    return float(_f1_rows(score[None], label[None])[0]) if len(score) else float("nan")


def _direction_arrays(prob: np.ndarray, realized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prob = np.asarray(prob, float)
    realized = np.asarray(realized, float)
    ok = np.isfinite(prob) & np.isfinite(realized)
    return prob[ok], realized[ok] > 0


# ---- bootstrap -----------------------------------------------------------------------------


def block_bootstrap(
    statistic: Callable[..., np.ndarray],
    arrays: tuple[np.ndarray, ...],
    *,
    n_boot: int = 500,
    block: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Return ``n_boot`` values of ``statistic`` over circular block resamples of ``arrays``.

    ``statistic`` takes (B, n) arrays (one per input, resampled with the same indices) and
    returns (B,). Blocks have length ``block`` (default ``ceil(n ** (1/3))``).
    """
    n = len(arrays[0])
    if n == 0:
        return np.full(n_boot, np.nan)
    block = block or max(1, math.ceil(n ** (1.0 / 3.0)))
    n_blocks = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    batch = max(1, _BOOT_CELLS // max(n, 1))
    out = []
    offsets = np.arange(block)
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        starts = rng.integers(0, n, size=(b, n_blocks))
        index = ((starts[:, :, None] + offsets) % n).reshape(b, -1)[:, :n]
        out.append(statistic(*(a[index] for a in arrays)))
    return np.concatenate(out)


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def scorecard(
    returns: np.ndarray,
    position: np.ndarray,
    *,
    periods_per_year: float,
    direction_prob: np.ndarray | None = None,
    realized_return: np.ndarray | None = None,
    n_trials: int = 1,
    trial_sharpes: np.ndarray | None = None,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Return every metric with its ``(1 - alpha)`` block-bootstrap interval.

    Parameters
    ----------
    returns, position
        Per-bar returns (fraction of capital) and the position held over each bar, shape (n,).
    periods_per_year
        Bars per trading year, from the instrument's calendar.
    direction_prob, realized_return
        The forecasts' direction probabilities and labels for AUC and F1 (optional).
    n_trials, trial_sharpes
        For the deflated Sharpe ratio.

    Returns
    -------
    dict
        ``sharpe``, ``sortino``, ``max_drawdown``, ``calmar``, ``turnover``, ``hit_rate``,
        ``psr``, ``deflated_sharpe``, ``auc``, ``f1``, each with ``<name>_ci_low`` and
        ``<name>_ci_high``; plus ``n_bars``, ``n_forecasts``, ``mean_return``,
        ``annual_return``, ``exposure``.
    """
    r = np.nan_to_num(np.asarray(returns, float))
    pos = np.nan_to_num(np.asarray(position, float))
    ppy = periods_per_year
    traded = np.abs(np.diff(pos, prepend=0.0))
    row_stats: dict[str, Callable[..., np.ndarray]] = {
        "sharpe": lambda r, p, t: _sharpe_rows(r, ppy),
        "sortino": lambda r, p, t: _sortino_rows(r, ppy),
        "max_drawdown": lambda r, p, t: _max_drawdown_rows(r),
        "calmar": lambda r, p, t: _calmar_rows(r, ppy),
        "turnover": lambda r, p, t: _turnover_rows(t, ppy),
        "hit_rate": lambda r, p, t: _hit_rate_rows(r, p),
        "psr": lambda r, p, t: _psr_rows(r),
        "deflated_sharpe": lambda r, p, t: _dsr_rows(r, n_trials, trial_sharpes),
    }
    card: dict[str, float] = {"n_bars": int(len(r))}
    if len(r) == 0:
        for name in [*row_stats, "auc", "f1"]:
            card.update({name: math.nan, f"{name}_ci_low": math.nan, f"{name}_ci_high": math.nan})
        card.update(n_forecasts=0, mean_return=math.nan, annual_return=math.nan, exposure=0.0)
        return card

    def all_stats(r2: np.ndarray, p2: np.ndarray, t2: np.ndarray) -> np.ndarray:
        return np.stack([fn(r2, p2, t2) for fn in row_stats.values()], axis=1)

    point = all_stats(r[None], pos[None], traded[None])[0]
    boot = block_bootstrap(all_stats, (r, pos, traded), n_boot=n_boot, seed=seed)
    boot = boot.reshape(-1, len(row_stats))
    for j, name in enumerate(row_stats):
        low, high = _interval(boot[:, j], alpha)
        card.update({name: float(point[j]), f"{name}_ci_low": low, f"{name}_ci_high": high})
    card["mean_return"] = float(r.mean())
    card["annual_return"] = float(r.mean() * ppy)
    card["exposure"] = float(np.abs(pos).mean())
    card.update(
        direction_scores(direction_prob, realized_return, n_boot=n_boot, alpha=alpha, seed=seed)
    )
    return card


def direction_scores(
    direction_prob: np.ndarray | None,
    realized_return: np.ndarray | None,
    *,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Return ``auc`` and ``f1`` of the forecasts with bootstrap intervals (NaN if absent)."""
    card: dict[str, float] = {}
    if direction_prob is None or realized_return is None:
        score, label = np.empty(0), np.empty(0, bool)
    else:
        score, label = _direction_arrays(direction_prob, realized_return)
    card["n_forecasts"] = int(len(score))
    for name, fn in (("auc", _auc_rows), ("f1", _f1_rows)):
        if len(score) < 2:
            card.update({name: math.nan, f"{name}_ci_low": math.nan, f"{name}_ci_high": math.nan})
            continue
        point = float(fn(score[None], label[None])[0])
        boot = block_bootstrap(fn, (score, label), n_boot=n_boot, seed=seed + 1)
        low, high = _interval(boot, alpha)
        card.update({name: point, f"{name}_ci_low": low, f"{name}_ci_high": high})
    return card
