"""Forecast scores: direction AUC with a block-bootstrap interval, accuracy, F1, MSE, QLIKE, and
the Diebold–Mariano test with a HAC (Newey–West) variance.

Everything here is NumPy/SciPy on 1-D arrays ordered in time. Time order matters twice: the
bootstrap resamples contiguous blocks (forecast errors of overlapping horizons are
autocorrelated, so an i.i.d. bootstrap would give intervals that are too narrow), and the DM
variance is a long-run (HAC) variance for the same reason.

QLIKE (Patton, 2011) for a variance forecast ``h`` of a realized variance ``s``:
``s/h − log(s/h) − 1`` (zero at a perfect forecast, robust to noise in the proxy ``s``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

_EPS = 1e-12


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the area under the ROC curve (Mann–Whitney U with tied ranks averaged).

    Parameters
    ----------
    labels : ndarray of shape (n,)
        1 for a positive outcome (up move), 0 otherwise.
    scores : ndarray of shape (n,)
        Any monotone score, e.g. the direction probability.

    Returns
    -------
    float
        AUC in [0, 1]; NaN when only one class is present.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def block_bootstrap_indices(
    n: int, *, n_boot: int, block: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw moving-block bootstrap index sets (Künsch, 1989).

    Returns
    -------
    ndarray of shape (n_boot, n)
        Each row concatenates ``ceil(n / block)`` contiguous blocks with uniform random starts,
        cut to length ``n``.
    """
    block = max(1, min(block, n))
    n_blocks = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n_boot, -1)
    return idx[:, :n]


def default_block_length(n: int, horizon: int = 1) -> int:
    """Return a block length of ``max(horizon, n^(1/3))`` (the usual rate for the mean)."""
    return int(max(horizon, round(n ** (1 / 3))))


def auc_with_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    n_boot: int = 500,
    level: float = 0.95,
    block: int | None = None,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Return ``(auc, ci_low, ci_high)`` with a percentile moving-block-bootstrap interval.

    Bootstrap samples holding one class only are skipped.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    point = auc(labels, scores)
    n = labels.size
    if np.isnan(point) or n < 4:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = block_bootstrap_indices(n, n_boot=n_boot, block=block or default_block_length(n), rng=rng)
    draws = np.array([auc(labels[i], scores[i]) for i in idx])
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return point, float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return point, float(low), float(high)


def accuracy(labels: np.ndarray, prob: np.ndarray, *, threshold: float = 0.5) -> float:
    """Return the share of correct up/down calls, calling up when ``prob > threshold``."""
    labels = np.asarray(labels, dtype=bool)
    pred = np.asarray(prob) > threshold
    return float(np.mean(pred == labels)) if labels.size else float("nan")


def f1(labels: np.ndarray, prob: np.ndarray, *, threshold: float = 0.5) -> float:
    """Return the F1 score of the up class (0 when nothing is called up or nothing went up)."""
    labels = np.asarray(labels, dtype=bool)
    pred = np.asarray(prob) > threshold
    tp = float(np.sum(pred & labels))
    denom = float(np.sum(pred) + np.sum(labels))
    return 2 * tp / denom if denom > 0 else 0.0


def squared_error(realized: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Return per-observation squared errors, shape (n,)."""
    return (np.asarray(realized, np.float64) - np.asarray(predicted, np.float64)) ** 2


def qlike_loss(realized_vol: np.ndarray, predicted_vol: np.ndarray) -> np.ndarray:
    """Return per-observation QLIKE ``s/h − log(s/h) − 1`` on variances ``s = rv², h = pv²``.

    Both arguments are volatilities (standard deviations); they are squared here.
    """
    s = np.maximum(np.asarray(realized_vol, np.float64) ** 2, _EPS)
    h = np.maximum(np.asarray(predicted_vol, np.float64) ** 2, _EPS)
    ratio = s / h
    return ratio - np.log(ratio) - 1.0


def hac_variance(d: np.ndarray, *, lags: int) -> float:
    """Return the Newey–West (Bartlett kernel) long-run variance of the mean of ``d``'s terms."""
    d = np.asarray(d, np.float64) - np.mean(d)
    n = d.size
    gamma0 = float(d @ d) / n
    total = gamma0
    for lag in range(1, min(lags, n - 1) + 1):
        weight = 1.0 - lag / (lags + 1)
        total += 2.0 * weight * float(d[lag:] @ d[:-lag]) / n
    return max(total, 0.0)


@dataclass(frozen=True)
class DieboldMariano:
    """Result of a Diebold–Mariano test of equal predictive accuracy."""

    statistic: float  # negative: the first forecast has the lower loss
    pvalue: float  # two-sided
    mean_loss_difference: float
    n: int


def diebold_mariano(
    loss_a: np.ndarray, loss_b: np.ndarray, *, horizon: int = 1, lags: int | None = None
) -> DieboldMariano:
    """Test equal expected loss of forecasts ``a`` and ``b`` (Diebold & Mariano, 1995).

    Uses a Newey–West variance with ``lags = max(horizon − 1, floor(n^(1/3)))`` by default, the
    Harvey–Leybourne–Newbold small-sample correction and Student-t(n − 1) p-values.

    Parameters
    ----------
    loss_a, loss_b : ndarray of shape (n,)
        Per-observation losses of the two forecasts on the same targets, in time order.
    horizon : int
        Forecast horizon in steps (losses of h-step forecasts are MA(h − 1)).

    Returns
    -------
    DieboldMariano
        NaN statistic and p-value when the difference is constant (e.g. identical forecasts).
    """
    d = np.asarray(loss_a, np.float64) - np.asarray(loss_b, np.float64)
    d = d[np.isfinite(d)]
    n = d.size
    if n < 8:
        return DieboldMariano(float("nan"), float("nan"), float(np.mean(d)) if n else 0.0, n)
    lags = lags if lags is not None else max(horizon - 1, int(n ** (1 / 3)))
    variance = hac_variance(d, lags=lags) / n
    mean = float(np.mean(d))
    if variance <= 1e-300:
        return DieboldMariano(float("nan"), float("nan"), mean, n)
    statistic = mean / np.sqrt(variance)
    h = horizon
    correction = np.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    statistic *= correction
    pvalue = 2.0 * stats.t.sf(abs(statistic), df=n - 1)
    return DieboldMariano(float(statistic), float(pvalue), mean, n)


def direction_scores(
    realized_return: np.ndarray, prob: np.ndarray, *, n_boot: int = 500, seed: int = 0
) -> dict[str, float]:
    """Return ``auc``, ``auc_ci_low``, ``auc_ci_high``, ``accuracy`` and ``f1`` for one forecast."""
    labels = np.asarray(realized_return) > 0
    value, low, high = auc_with_ci(labels, prob, n_boot=n_boot, seed=seed)
    return {
        "auc": value,
        "auc_ci_low": low,
        "auc_ci_high": high,
        "accuracy": accuracy(labels, prob),
        "f1": f1(labels, prob),
    }
