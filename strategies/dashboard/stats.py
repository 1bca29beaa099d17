"""The dashboard's statistics: causal regime codes, run lengths, transitions, intervals, ranks.

Regime codes ``0 .. N - 1`` (``-1`` unlabelled) come from expanding-window quantiles, per fold,
so nothing after a forecast enters its code (:func:`strategies.regimes.causal_energy_codes`).
Intervals are circular block-bootstrap intervals (:func:`strategies.metrics.block_bootstrap`); the
correlation null circularly shifts energy within each fold (:func:`rank_correlation`).
Everything here is NumPy in, NumPy or plain numbers out.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from strategies.metrics import block_bootstrap

# ---- regimes without look-ahead: strategies.regimes.causal_energy_codes ---------------------


def mean_durations(codes: np.ndarray, n_states: int) -> np.ndarray:
    """Return the mean run length of each state ``0 .. n_states - 1`` in ``codes`` (NaN if never).

    A run is a maximal stretch of equal consecutive codes; -1 (unlabelled) breaks runs.
    """
    codes = np.asarray(codes)
    if len(codes) == 0:
        return np.full(n_states, np.nan)
    starts = np.flatnonzero(np.diff(codes, prepend=codes[0] - 1) != 0)
    lengths = np.diff(np.append(starts, len(codes)))
    state = codes[starts]
    out = np.full(n_states, np.nan)
    for s in range(n_states):
        if (state == s).any():
            out[s] = lengths[state == s].mean()
    return out


def transition_matrix(codes: np.ndarray, n_states: int) -> np.ndarray:
    """Return P[i, j] = share of steps from state i that go to state j (rows sum to 1).

    Steps touching -1 (unlabelled) are skipped; a state never left has a row of NaN.
    Shape (n_states, n_states).
    """
    codes = np.asarray(codes)
    before, after = codes[:-1], codes[1:]
    ok = (before >= 0) & (after >= 0)
    counts = np.zeros((n_states, n_states))
    np.add.at(counts, (before[ok], after[ok]), 1.0)
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, counts / total, np.nan)


# ---- statistics ------------------------------------------------------------------------------


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation per row of (B, n) arrays, returned as (B,)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / denom, np.nan)


def within_group_percentile(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Return each value's percentile rank within its group, in (0, 1]. Shape (n,) -> (n,)."""
    from scipy.stats import rankdata

    out = np.empty(len(values))
    for g in np.unique(groups):
        rows = groups == g
        out[rows] = rankdata(values[rows]) / rows.sum()
    return out


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return math.nan, math.nan
    return tuple(float(v) for v in np.quantile(finite, [alpha / 2, 1 - alpha / 2]))


def mean_with_ci(
    values: np.ndarray, *, n_boot: int = 500, alpha: float = 0.05, seed: int = 0
) -> dict[str, float]:
    """Return ``mean``, ``ci_low``, ``ci_high`` (block bootstrap) of the finite ``values``.

    ``values`` in time order, shape (n,).
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    boot = block_bootstrap(lambda a: a.mean(axis=1), (values,), n_boot=n_boot, seed=seed)
    low, high = _interval(boot, alpha)
    return {"mean": float(values.mean()), "ci_low": low, "ci_high": high}


def rank_correlation(
    x: np.ndarray,
    y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 500,
    n_perm: int = 200,
    block: int | None = None,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Return the Spearman correlation of ``x`` and ``y`` stratified by ``groups``, with a CI and
    a shuffled-``x`` null.

    Within each group ``x`` and ``y`` are replaced by their percentiles, then pooled. The
    interval is a circular block bootstrap of the pooled pairs (time order; blocks of ``block``
    rows, default ``ceil(n ** (1/3))``). The null shifts
    ``x`` circularly within each group by a random offset (at least a tenth of the group away),
    ``n_perm`` times: a shuffle that keeps ``x``'s autocorrelation, so a persistent energy
    against a persistent volatility is not mistaken for information (an i.i.d. shuffle of a
    persistent series gives a null far too narrow).

    Returns
    -------
    dict
        ``spearman``, ``ci_low``, ``ci_high``, ``ci_includes_zero``, ``null_low``,
        ``null_high`` (the null's central ``1 - alpha`` range), ``p_value`` (two-sided,
        permutation), ``n``, ``per_group`` (the point estimate within each group).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    groups = np.zeros(len(x)) if groups is None else np.asarray(groups)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, groups = x[ok], y[ok], groups[ok]
    out = {"n": int(len(x))}
    if len(x) < 3:
        nan = math.nan
        out.update(spearman=nan, ci_low=nan, ci_high=nan, ci_includes_zero=True)
        return {**out, "null_low": nan, "null_high": nan, "p_value": nan, "per_group": {}}
    u, v = within_group_percentile(x, groups), within_group_percentile(y, groups)
    point = float(_spearman_rows(u[None], v[None])[0])
    boot = block_bootstrap(_spearman_rows, (u, v), n_boot=n_boot, block=block, seed=seed)
    low, high = _interval(boot, alpha)
    rng = np.random.default_rng(seed + 1)
    shuffled = np.tile(u, (n_perm, 1))
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        n = len(rows)
        shift = rng.integers(n // 10, n - n // 10, size=n_perm, endpoint=True)
        shuffled[:, rows] = u[rows][(np.arange(n) + shift[:, None]) % n]
    null = _spearman_rows(shuffled, np.tile(v, (n_perm, 1)))
    null_low, null_high = _interval(null, alpha)
    extreme = int((np.abs(null) >= abs(point)).sum()) if np.isfinite(point) else n_perm
    out.update(spearman=point, ci_low=low, ci_high=high)
    out["ci_includes_zero"] = bool(not (low > 0 or high < 0))
    out.update(null_low=null_low, null_high=null_high, p_value=(1 + extreme) / (1 + n_perm))
    out["per_group"] = {
        str(g): float(_spearman_rows(u[None, groups == g], v[None, groups == g])[0])
        for g in np.unique(groups)
    }
    return out


def forward_volatility(bars: pl.DataFrame, forecast_ts: np.ndarray, window: int) -> np.ndarray:
    """Return, per forecast, the std of the 1-bar log returns of the ``window`` bars it acts on.

    Those are the bars from the first with ``ts_event >= forecast_ts`` on (the forecast's own
    bar close is their first reference price); NaN where fewer than ``window`` bars follow.
    ``bars`` sorted by ``ts_event``. Shape (n,).
    """
    close = bars.get_column("close").to_numpy().astype(float)
    r = np.diff(np.log(close), prepend=np.nan)  # r[k]: bar k's return over close[k - 1]
    out = np.full(len(forecast_ts), np.nan)
    if len(r) < window + 1 or window < 2:
        return out
    rolling = np.lib.stride_tricks.sliding_window_view(r, window).std(axis=1, ddof=1)
    start = np.searchsorted(bars.get_column("ts_event").to_numpy(), forecast_ts, side="left")
    ok = (start >= 1) & (start < len(rolling))
    out[ok] = rolling[start[ok]]
    return out
