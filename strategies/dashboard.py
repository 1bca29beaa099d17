"""Energy-regime dashboards of a trained run: one self-contained HTML page and its numbers.

CLI::

    python -m strategies.dashboard --run runs/EURUSD/<stamp> [--out PATH] [--model NAME]
        [--quantiles N] [--warmup N] [--bars PATH | --store PATH] [--start ISO] [--end ISO]
        [--no-backtest]

writes ``dashboard.html`` (plots embedded as base64 PNG, drawn with matplotlib's object API on
the Agg canvas) and ``dashboard.json`` (every number on the page) into the run folder, or to
``--out`` (the HTML path; the JSON goes beside it), and prints the HTML path on its last line.
Bad input prints one line on stderr and exits with code 2; both files are written to temporary
names and renamed, so a failure leaves nothing half-written.

The run folder is read as files (``forecasts.parquet``, ``config.json``): ``strategies`` never
imports ``hamfin``. A model "has energy" when its FORECASTS ``energy`` lists are non-empty: one
value per layer, the layer's channel-mean Hamiltonian ``H_t = p^2/(2m) + k q^2/2`` at the
forecast's last bar (``../shared/HMLD.md``). Total energy is the sum over layers; the layers
are its parts.

Regimes without look-ahead (the labels every per-regime number uses). Energy regimes
``q1`` .. ``qN`` are *expanding-window, per fold*: the forecast made at ``t`` is labelled by
comparing its total energy with the N-quantile edges (``numpy.quantile``, linear) of the
total energies of the same fold's forecasts made up to and including ``t``. The first
``warmup`` forecasts of every fold (default 100) are unlabelled. Per fold, because each
walk-forward fold is a separately trained model whose energy has its own scale; the run folder
holds no energies of the training bars. A bar takes the label of the forecast in force
(:func:`strategies.inputs.forecast_in_force`). The full-sample quantile labels
(:func:`strategies.regimes.energy_labels`, all folds pooled) look ahead and appear only in a
table marked descriptive.

Per regime: forecasts, share of labelled bars, mean run length in bars, the bar-to-bar
transition matrix, realized volatility after the forecast (the forecast's own label and the
forward volatility of the next ``vol_window`` bars), direction AUC, forecast MSE, and the
headline strategy's Sharpe and annual return from :func:`strategies.backtest.run_backtest`.
Intervals are 95% circular block-bootstrap intervals (:func:`strategies.metrics.block_bootstrap`)
over the regime's rows in time order (rows of a regime are not contiguous: an approximation).

Is energy informative? Spearman correlation of total energy with the realized volatility, with
``|realized_return|`` and with the forward bar volatility, stratified by fold (energy and
target replaced by their percentile within the fold, then pooled), with a block-bootstrap
interval (blocks of ``correlation_block`` = 64 bars: energy and volatility are persistent and the
forward volatility windows overlap) and a null from energy circularly shifted within each fold
(:func:`rank_correlation`).
Both targets are later than the energy they are paired with; the within-fold percentiles
describe the sample and are not a trading rule.
"""

from __future__ import annotations

import argparse
import bisect
import html
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.spec import InstrumentSpec, SpecError, load_spec
from strategies.inputs import (
    BacktestInputError,
    check_bars,
    check_inputs,
    forecast_in_force,
    iso,
    load_run_bars,
    read_bars,
    read_forecasts,
    window_bars,
)
from strategies.metrics import block_bootstrap, direction_scores
from strategies.regimes import energy_labels, metrics_by_group


class DashboardInputError(BacktestInputError):
    """Bad input to the dashboard: no energy, NaN energy, empty range, bad options."""


@dataclass(frozen=True)
class DashboardConfig:
    """Regime definition and the statistics' resampling."""

    n_quantiles: int = 3  # energy regimes q1 .. qN
    warmup: int = 100  # forecasts per fold before the first causal label
    vol_window: int = 16  # bars in the forward realized volatility and the plotted smoothing
    n_boot: int = 500  # block-bootstrap resamples per interval
    n_perm: int = 200  # within-fold circular shifts of energy for the null
    correlation_block: int = 64  # bars per bootstrap block of the correlations (> vol_window)
    alpha: float = 0.05  # intervals are (1 - alpha)
    seed: int = 0
    backtest: bool = True  # run the headline strategy for per-regime Sharpe
    strategy: str = "threshold"


# ---- regimes without look-ahead --------------------------------------------------------------


def expanding_quantile_codes(values: np.ndarray, n_quantiles: int, *, warmup: int) -> np.ndarray:
    """Return causal quantile codes ``0 .. n_quantiles - 1`` of ``values`` (time order), -1 first.

    Code ``i`` compares ``values[i]`` with the ``n_quantiles``-quantile edges of
    ``values[: i + 1]`` (``numpy.quantile``, linear interpolation); the first ``warmup`` values
    get -1. Nothing after ``i`` enters code ``i``. Shape (n,) -> (n,).
    """
    levels = np.linspace(0.0, 1.0, n_quantiles + 1)[1:-1]
    seen: list[float] = []
    codes = np.full(len(values), -1, dtype=np.int64)
    for i, value in enumerate(np.asarray(values, dtype=float)):
        bisect.insort(seen, float(value))
        if i < warmup:
            continue
        position = levels * (len(seen) - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, len(seen) - 1)
        lo, hi = np.array([seen[j] for j in low]), np.array([seen[j] for j in high])
        edges = lo + (position - low) * (hi - lo)
        codes[i] = int(np.searchsorted(edges, value, side="right"))
    return codes


def causal_energy_codes(
    energy: np.ndarray, fold: np.ndarray, n_quantiles: int, *, warmup: int
) -> np.ndarray:
    """Return :func:`expanding_quantile_codes` run separately within each fold.

    ``energy`` and ``fold`` are per forecast, sorted by time, shape (n,).
    """
    codes = np.full(len(energy), -1, dtype=np.int64)
    for value in np.unique(fold):
        rows = np.flatnonzero(fold == value)
        codes[rows] = expanding_quantile_codes(energy[rows], n_quantiles, warmup=warmup)
    return codes


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


def _within_group_percentile(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
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
    u, v = _within_group_percentile(x, groups), _within_group_percentile(y, groups)
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


# ---- one model's dashboard -------------------------------------------------------------------


@dataclass
class ModelDashboard:
    """Numbers (JSON-ready) and the series the plots draw, for one model with energy."""

    numbers: dict
    ts_event: np.ndarray  # (n,) forecasts, sorted
    energy: np.ndarray  # (n, n_layers)
    codes: np.ndarray  # (n,) causal regime codes, -1 in warm-up
    realized_volatility: np.ndarray  # (n,)
    bars: pl.DataFrame  # the bars the forecasts act on
    bar_codes: np.ndarray  # (n_bars,) regime of the forecast in force, -1 where none


def energy_matrix(forecasts: pl.DataFrame, *, where: str) -> np.ndarray:
    """Return the per-layer energies of ``forecasts`` as (n, n_layers), or raise one line.

    Raises
    ------
    DashboardInputError
        Rows without energy, rows of different layer counts, or non-finite values.
    """
    lengths = forecasts.get_column("energy").list.len().to_numpy()
    ts = forecasts.get_column("ts_event").to_numpy()
    if len(lengths) and (lengths != lengths.max()).any():
        first = int(np.flatnonzero(lengths != lengths.max())[0])
        message = (
            f"{where}: {int((lengths != lengths.max()).sum())} rows have {lengths[first]} energy "
            f"values instead of {lengths.max()}, first at ts_event {ts[first]} ({iso(ts[first])})"
        )
        raise DashboardInputError(message)
    energy = np.array(forecasts.get_column("energy").to_list(), dtype=float).reshape(
        len(lengths), -1
    )
    bad = ~np.isfinite(energy).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        message = (
            f"{where}: {int(bad.sum())} rows have NaN or infinite energy, first at ts_event "
            f"{ts[first]} ({iso(ts[first])})"
        )
        raise DashboardInputError(message)
    return energy


def model_dashboard(
    forecasts: pl.DataFrame,
    bars: pl.DataFrame,
    spec: InstrumentSpec,
    *,
    model: str,
    config: DashboardConfig | None = None,
    backtest=None,
    where: str = "forecasts",
) -> ModelDashboard:
    """Compute one model's regimes, per-regime statistics and energy correlations.

    Parameters
    ----------
    forecasts
        FORECASTS rows (any models); ``model``'s rows must carry energy.
    bars
        BARS rows of ``spec.instrument_id`` covering the forecasts, sorted by ``ts_event``.
    spec
        The instrument.
    model
        Which model.
    config
        Regimes and resampling.
    backtest
        A :class:`strategies.backtest.BacktestResult` of ``model`` (its headline strategy is
        scored per regime), optional.
    where
        Names the input in error messages.
    """
    config = config or DashboardConfig()
    n_q = config.n_quantiles
    mine = forecasts.filter(pl.col("model") == model).sort("ts_event")
    if mine.is_empty():
        raise DashboardInputError(f"{where}: no forecasts of model '{model}'")
    check_inputs(mine, bars, spec)
    energy = energy_matrix(mine, where=f"{where} (model {model})")
    if energy.shape[1] == 0:
        raise DashboardInputError(f"{where}: model '{model}' has no HML-D energy")
    total = energy.sum(axis=1)
    ts = mine.get_column("ts_event").to_numpy()
    fold = mine.get_column("fold").to_numpy()
    horizon = mine.get_column("horizon").to_numpy()
    codes = causal_energy_codes(total, fold, n_q, warmup=config.warmup)
    if (codes < 0).all():
        sizes = {int(f): int((fold == f).sum()) for f in np.unique(fold)}
        message = (
            f"{where}: model '{model}' has no forecast past the warm-up of {config.warmup} per "
            f"fold (forecasts per fold: {sizes}); lower --warmup"
        )
        raise DashboardInputError(message)
    window = window_bars(mine, bars)
    source = forecast_in_force(ts, horizon, window.get_column("ts_event").to_numpy())
    bar_codes = np.where(source >= 0, codes[np.maximum(source, 0)], -1)

    prob = mine.get_column("direction_prob").to_numpy().astype(float)
    real = mine.get_column("realized_return").to_numpy().astype(float)
    rv = mine.get_column("realized_volatility").to_numpy().astype(float)
    err2 = (mine.get_column("predicted_return").to_numpy().astype(float) - real) ** 2
    fwd = forward_volatility(bars, ts, config.vol_window)
    boot = {"n_boot": config.n_boot, "alpha": config.alpha, "seed": config.seed}
    durations = mean_durations(bar_codes, n_q)
    labelled_bars = max(int((bar_codes >= 0).sum()), 1)
    regimes = []
    for g in range(n_q):
        rows = codes == g
        row: dict = {
            "regime": f"q{g + 1}",
            "n_forecasts": int(rows.sum()),
            "share_of_time": float((bar_codes == g).sum() / labelled_bars),
            "mean_duration_bars": float(durations[g]),
            "energy_min": float(total[rows].min()) if rows.any() else math.nan,
            "energy_max": float(total[rows].max()) if rows.any() else math.nan,
        }
        for name, values in (
            ("realized_volatility", rv),
            ("forward_volatility", fwd),
            ("mse", err2),
        ):
            stats = mean_with_ci(values[rows], **boot)
            row.update({name: stats["mean"], f"{name}_ci_low": stats["ci_low"]})
            row[f"{name}_ci_high"] = stats["ci_high"]
        row["mse_zero_forecast"] = float(np.mean(real[rows] ** 2)) if rows.any() else math.nan
        scores = direction_scores(prob[rows], real[rows], **boot)
        row.update({k: scores[k] for k in ("auc", "auc_ci_low", "auc_ci_high")})
        regimes.append(row)

    strategy = None
    if backtest is not None:
        strategy = _strategy_by_regime(backtest, ts, horizon, codes, regimes, config)

    groups = fold
    targets = {
        "realized_volatility": rv,
        "abs_realized_return": np.abs(real),
        f"forward_volatility_{config.vol_window}bars": fwd,
    }
    block = config.correlation_block
    correlations = {
        name: rank_correlation(total, y, groups=groups, n_perm=config.n_perm, block=block, **boot)
        for name, y in targets.items()
    }

    full = np.asarray(energy_labels(total, n_q), dtype=object)
    causal = np.array([f"q{c + 1}" if c >= 0 else None for c in codes], dtype=object)
    labelled = codes >= 0
    descriptive = [
        {
            "regime": f"q{g + 1}",
            "n_forecasts": int((full == f"q{g + 1}").sum()),
            "realized_volatility": float(rv[full == f"q{g + 1}"].mean()),
            "forward_volatility": float(np.nanmean(fwd[full == f"q{g + 1}"])),
        }
        for g in range(n_q)
        if (full == f"q{g + 1}").any()
    ]
    percentile = _within_group_percentile(total, groups)
    decile = np.minimum((percentile * 10).astype(int), 9)
    deciles = {
        "decile": list(range(1, 11)),
        "realized_volatility": [_nanmean(rv[decile == d]) for d in range(10)],
        "forward_volatility": [_nanmean(fwd[decile == d]) for d in range(10)],
    }
    last_edges = {
        str(int(f)): np.quantile(total[fold == f], np.linspace(0, 1, n_q + 1)[1:-1]).tolist()
        for f in np.unique(fold)
    }
    numbers = {
        "model": model,
        "n_forecasts": int(len(ts)),
        "n_labelled": int(labelled.sum()),
        "n_layers": int(energy.shape[1]),
        "folds": [int(f) for f in np.unique(fold)],
        "horizon": int(horizon.max()),
        "start": iso(int(ts[0])),
        "end": iso(int(ts[-1])),
        "n_bars": int(window.height),
        "regimes": regimes,
        "transition_matrix": transition_matrix(bar_codes, n_q).tolist(),
        "edges_at_fold_end": last_edges,
        "correlations": correlations,
        "realized_volatility_is_abs_return": bool(np.allclose(rv, np.abs(real), equal_nan=True)),
        "energy_deciles": deciles,
        "descriptive_full_sample": descriptive,
        "full_sample_agreement": float((full[labelled] == causal[labelled]).mean()),
        "strategy": strategy,
    }
    return ModelDashboard(
        numbers=numbers,
        ts_event=ts,
        energy=energy,
        codes=codes,
        realized_volatility=rv,
        bars=window,
        bar_codes=bar_codes,
    )


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _strategy_by_regime(backtest, ts, horizon, codes, regimes, config) -> dict:
    """Add the headline strategy's Sharpe and annual return per regime to ``regimes`` rows."""
    card, sim = backtest.card, backtest.simulation
    ppy = float(card["periods_per_year"])
    source = forecast_in_force(ts, horizon, sim.ts_event)
    labels = np.array(
        [f"q{codes[s] + 1}" if s >= 0 and codes[s] >= 0 else None for s in source], dtype=object
    )
    returns, position = sim.returns[:, 0], sim.position[:, 0]
    by = metrics_by_group(
        labels, returns, position, periods_per_year=ppy, n_boot=config.n_boot, seed=config.seed
    )
    for row in regimes:
        group = by.get(row["regime"])
        if group is None:
            continue
        row.update({k: group[k] for k in ("sharpe", "sharpe_ci_low", "sharpe_ci_high")})
        annual = mean_with_ci(
            returns[labels == row["regime"]], n_boot=config.n_boot, alpha=config.alpha
        )
        row["annual_return"] = annual["mean"] * ppy
        row["annual_return_ci_low"] = annual["ci_low"] * ppy
        row["annual_return_ci_high"] = annual["ci_high"] * ppy
    keys = ("sharpe", "sharpe_ci_low", "sharpe_ci_high", "annual_return", "n_bars", "n_trades")
    return {"strategy": card["strategy"], **{k: card[k] for k in keys}}


# ---- plots -----------------------------------------------------------------------------------


def _regime_colors(n_states: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["coolwarm"]
    return [cmap(0.1 + 0.8 * g / max(n_states - 1, 1)) for g in range(n_states)]


def plot_timeline(d: ModelDashboard, *, vol_window: int, title: str = ""):
    """Return price, energy (total and per layer) and realized volatility on one time axis,
    shaded by the causal energy regime of the bar."""
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    n_q = len(d.numbers["regimes"])
    colors = _regime_colors(n_q)
    bar_time = d.bars.get_column("ts_event").to_numpy().astype("datetime64[ns]")
    close_time = d.bars.get_column("ts_close").to_numpy().astype("datetime64[ns]")
    time = d.ts_event.astype("datetime64[ns]")
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    axes[0].plot(close_time, d.bars.get_column("close").to_numpy(), color="black", lw=0.8)
    axes[0].set_ylabel("bar close")
    total = d.energy.sum(axis=1)
    axes[1].plot(time, total, color="black", lw=0.9, label="total energy")
    if d.energy.shape[1] > 1:
        for j in range(d.energy.shape[1]):
            axes[1].plot(time, d.energy[:, j], lw=0.6, alpha=0.8, label=f"layer {j}")
    axes[1].set_ylabel("HML-D energy")
    axes[1].legend(fontsize=7, ncol=4, loc="upper left")
    rv = d.realized_volatility
    axes[2].plot(time, rv, color="0.6", lw=0.4, label="realized volatility (label)")
    smooth = pl.Series(rv).rolling_mean(vol_window, min_samples=1).to_numpy()
    axes[2].plot(time, smooth, color="tab:purple", lw=1.0, label=f"{vol_window}-forecast mean")
    axes[2].set_ylabel("realized volatility")
    axes[2].legend(fontsize=7, loc="upper left")
    for ax in axes:
        for g in range(n_q):
            ax.fill_between(
                bar_time,
                0,
                1,
                where=d.bar_codes == g,
                step="post",
                color=colors[g],
                alpha=0.18,
                lw=0,
                transform=ax.get_xaxis_transform(),
                label=f"q{g + 1} (causal)" if ax is axes[0] else None,
            )
    axes[0].legend(fontsize=7, ncol=n_q, loc="upper left")
    axes[0].set_title(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_regime_stats(numbers: dict, *, vol_window: int):
    """Return per-regime bars with bootstrap intervals: volatility after, AUC, MSE, Sharpe."""
    from matplotlib.figure import Figure

    rows = numbers["regimes"]
    panels = [
        ("forward_volatility", f"forward volatility ({vol_window} bars)"),
        ("realized_volatility", "realized volatility (label)"),
        ("auc", "direction AUC"),
        ("mse", "forecast MSE"),
    ]
    if numbers.get("strategy"):
        panels.append(("sharpe", f"Sharpe of {numbers['strategy']['strategy']}"))
    colors = _regime_colors(len(rows))
    fig = Figure(figsize=(2.6 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    names = [r["regime"] for r in rows]
    for ax, (key, label) in zip(axes, panels):
        value = np.array([r.get(key, math.nan) for r in rows], dtype=float)
        low = np.array([r.get(f"{key}_ci_low", math.nan) for r in rows], dtype=float)
        high = np.array([r.get(f"{key}_ci_high", math.nan) for r in rows], dtype=float)
        err = np.nan_to_num(np.vstack([np.maximum(value - low, 0), np.maximum(high - value, 0)]))
        ax.bar(range(len(rows)), np.nan_to_num(value), yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)), names)
        ax.set_title(label, fontsize=9)
        if key == "auc":
            ax.axhline(0.5, color="black", lw=0.8)
            ax.set_ylim(
                min(0.4, np.nanmin(low, initial=0.5) - 0.02),
                max(0.6, np.nanmax(high, initial=0.5) + 0.02),
            )
        if key == "sharpe":
            ax.axhline(0.0, color="black", lw=0.8)
    fig.tight_layout()
    return fig


def plot_informativeness(numbers: dict):
    """Return the transition matrix, volatility by energy decile and the correlations with
    their intervals against the shuffled-energy null."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6))
    ax_t, ax_d, ax_c = fig.subplots(1, 3)
    matrix = np.array(numbers["transition_matrix"], dtype=float)
    names = [r["regime"] for r in numbers["regimes"]]
    ax_t.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=1)
    for (i, j), p in np.ndenumerate(matrix):
        ax_t.text(j, i, "nan" if np.isnan(p) else f"{p:.2f}", ha="center", va="center", fontsize=8)
    ax_t.set_xticks(range(len(names)), names)
    ax_t.set_yticks(range(len(names)), names)
    ax_t.set_xlabel("to (next bar)")
    ax_t.set_ylabel("from")
    ax_t.set_title("regime transitions per bar", fontsize=9)
    deciles = numbers["energy_deciles"]
    ax_d.plot(deciles["decile"], deciles["forward_volatility"], "o-", label="forward volatility")
    ax_d.plot(deciles["decile"], deciles["realized_volatility"], "s--", label="realized (label)")
    ax_d.set_xlabel("energy decile within fold")
    ax_d.set_title("volatility after the forecast", fontsize=9)
    ax_d.legend(fontsize=7)
    corr = numbers["correlations"]
    for y, c in enumerate(corr.values()):
        ax_c.plot(
            [c["null_low"], c["null_high"]], [y, y], color="0.75", lw=8, solid_capstyle="butt"
        )
        ax_c.errorbar(
            c["spearman"],
            y,
            xerr=[[max(c["spearman"] - c["ci_low"], 0)], [max(c["ci_high"] - c["spearman"], 0)]],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
    ax_c.axvline(0.0, color="black", lw=0.8)
    ax_c.set_yticks(range(len(corr)), list(corr), fontsize=7)
    ax_c.set_title("Spearman(energy, target): CI (blue), shifted-energy null (grey)", fontsize=9)
    fig.tight_layout()
    return fig


# ---- the page --------------------------------------------------------------------------------

_REGIME_COLUMNS = (
    "regime n_forecasts share_of_time mean_duration_bars energy_min energy_max "
    "forward_volatility forward_volatility_ci_low forward_volatility_ci_high "
    "realized_volatility realized_volatility_ci_low realized_volatility_ci_high "
    "auc auc_ci_low auc_ci_high mse mse_ci_low mse_ci_high mse_zero_forecast"
).split()
_STRATEGY_COLUMNS = (
    "regime sharpe sharpe_ci_low sharpe_ci_high "
    "annual_return annual_return_ci_low annual_return_ci_high"
).split()
_CORRELATION_COLUMNS = "target spearman ci_low ci_high null_low null_high p_value n by_fold".split()


def correlation_verdict(name: str, c: dict) -> str:
    """Return one plain sentence on whether energy ranks ``name`` (CI vs zero, null p-value)."""
    if not np.isfinite(c["spearman"]):
        return f"{name}: not computable (constant or too few values)."
    interval = f"{c['spearman']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
    if c["ci_includes_zero"]:
        return (
            f"{name}: Spearman {interval}; the interval includes zero, so this sample gives no "
            f"evidence that energy ranks {name} (shifted-energy null p = {c['p_value']:.3f})."
        )
    sign = "positive" if c["spearman"] > 0 else "negative"
    return (
        f"{name}: Spearman {interval}; the interval excludes zero ({sign} relation; "
        f"shifted-energy null p = {c['p_value']:.3f})."
    )


def render(numbers: dict, images: dict[str, dict[str, str]]) -> str:
    """Return the dashboard as one HTML string.

    ``numbers`` is the JSON content; ``images`` maps model -> {caption: base64 PNG}.
    """
    from strategies.report import html_table

    esc = html.escape
    cfg = numbers["config"]
    parts = [
        f"<h1>{esc(numbers['title'])}</h1>",
        f"<p>run <code>{esc(numbers['run'])}</code>, instrument {esc(numbers['instrument_id'])}."
        f" Energy regimes q1..q{cfg['n_quantiles']} are causal: each forecast's total energy is"
        f" placed among the quantiles of the energies of the same fold's forecasts made up to"
        f" and including it (expanding window, per fold, first {cfg['warmup']} forecasts of"
        f" each fold unlabelled). Bars take the regime of the forecast in force. Intervals:"
        f" {100 * (1 - cfg['alpha']):.0f}% circular block bootstrap, {cfg['n_boot']}"
        f" resamples (blocks of {cfg['correlation_block']} bars for the correlations);"
        f" null: energy circularly shifted within each fold, {cfg['n_perm']} random shifts"
        f" (keeps its autocorrelation).</p>",
    ]
    if numbers["synthetic"]:
        parts.append("<p><b>SYNTHETIC DATA: these forecasts were made on synthetic bars.</b></p>")
    if numbers.get("run_has_backtest_json"):
        parts.append(
            "<p>The run folder's backtest.json scores energy regimes cut at full-sample"
            " quantiles (look-ahead); every per-regime number on this page uses the causal"
            " labels instead.</p>"
        )
    for model, m in numbers["models"].items():
        parts.append(f"<h2>model {esc(model)}</h2>")
        parts.append(
            f"<p>{m['n_forecasts']} forecasts ({m['n_labelled']} past the warm-up), "
            f"{m['n_layers']} layer(s), folds {m['folds']}, horizon {m['horizon']} bar(s), "
            f"{esc(m['start'])} to {esc(m['end'])}, {m['n_bars']} bars.</p>"
        )
        parts.append("<h3>Is energy informative?</h3><ul>")
        for name, c in m["correlations"].items():
            parts.append(f"<li>{esc(correlation_verdict(name, c))}</li>")
        parts.append("</ul>")
        if m["realized_volatility_is_abs_return"]:
            parts.append(
                "<p>Here the forecasts' realized volatility equals |realized return| (one-bar "
                "horizon), so those two rows are the same test; the forward volatility over "
                f"{cfg['vol_window']} bars is the less noisy target.</p>"
            )
        rows = [
            {"target": k, **v, "by_fold": _by_fold(v["per_group"])}
            for k, v in m["correlations"].items()
        ]
        parts.append(html_table(rows, _CORRELATION_COLUMNS))
        parts.append("<h3>Per regime (causal labels)</h3>")
        parts.append(html_table(m["regimes"], _REGIME_COLUMNS))
        if m["strategy"]:
            s = m["strategy"]
            parts.append(
                f"<p>Strategy <b>{esc(s['strategy'])}</b> (strategies.backtest, costs included):"
                f" Sharpe {s['sharpe']:+.2f} [{s['sharpe_ci_low']:+.2f}, "
                f"{s['sharpe_ci_high']:+.2f}] over {s['n_bars']} bars, {s['n_trades']} trades."
                f" Per regime (bars labelled by the causal regime):</p>"
            )
            parts.append(html_table(m["regimes"], _STRATEGY_COLUMNS))
        else:
            parts.append("<p>No backtest: per-regime strategy returns not shown.</p>")
        names = [r["regime"] for r in m["regimes"]]
        matrix = [
            {"from": n, **dict(zip(names, row))} for n, row in zip(names, m["transition_matrix"])
        ]
        parts.append("<h3>Transition matrix (bar to next bar)</h3>")
        parts.append(html_table(matrix, ["from", *names]))
        for caption, png in images.get(model, {}).items():
            parts.append(
                f"<h3>{esc(caption)}</h3><img alt='{esc(caption)}' "
                f"src='data:image/png;base64,{png}'>"
            )
        parts.append(
            "<h3>Descriptive only: full-sample quantiles (look-ahead, all folds pooled)</h3>"
            f"<p>Not usable for trading or for the tests above. Agreement with the causal "
            f"labels: {m['full_sample_agreement']:.3f} of labelled forecasts.</p>"
        )
        columns = ["regime", "n_forecasts", "realized_volatility", "forward_volatility"]
        parts.append(html_table(m["descriptive_full_sample"], columns))
    body = "\n".join(parts)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(numbers["title"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style>
</head><body>
{body}
</body></html>
"""


def _by_fold(per_group: dict) -> str:
    return " ".join(f"{g}:{r:+.3f}" for g, r in per_group.items())


def build(
    forecasts: pl.DataFrame,
    bars: pl.DataFrame,
    spec: InstrumentSpec,
    *,
    models: list[str],
    config: DashboardConfig,
    run: str = "",
    where: str = "forecasts",
    run_has_backtest_json: bool = False,
) -> tuple[dict, str]:
    """Return the dashboard's numbers (JSON content) and its HTML for ``models``."""
    from strategies.report import figure_png

    synthetic = bool(forecasts.get_column("synthetic").fill_null(False).any())
    title = f"Energy-regime dashboard {spec.instrument_id}" + (
        " (SYNTHETIC DATA)" if synthetic else ""
    )
    numbers: dict = {
        "title": title,
        "run": run,
        "instrument_id": spec.instrument_id,
        "synthetic": synthetic,
        "config": asdict(config),
        "run_has_backtest_json": run_has_backtest_json,
        "models": {},
    }
    images: dict[str, dict[str, str]] = {}
    for model in models:
        result = None
        if config.backtest:
            result = _backtest(forecasts, bars, spec, model, config)
        d = model_dashboard(
            forecasts, bars, spec, model=model, config=config, backtest=result, where=where
        )
        numbers["models"][model] = d.numbers
        label = f"{spec.instrument_id} {model}" + (" (SYNTHETIC)" if synthetic else "")
        images[model] = {
            "Energy, price and realized volatility by causal regime": figure_png(
                plot_timeline(d, vol_window=config.vol_window, title=label)
            ),
            "Per regime (95% intervals)": figure_png(
                plot_regime_stats(d.numbers, vol_window=config.vol_window)
            ),
            "Transitions and informativeness": figure_png(plot_informativeness(d.numbers)),
        }
    return numbers, render(numbers, images)


def _backtest(forecasts, bars, spec, model, config):
    from strategies.backtest import STRATEGIES, BacktestConfig, run_backtest

    if config.strategy not in STRATEGIES:
        message = f"--strategy {config.strategy!r}: unknown (have {sorted(STRATEGIES)})"
        raise DashboardInputError(message)
    bt_config = BacktestConfig(n_boot=config.n_boot, n_boot_regime=50, n_random=20)
    strategies = {config.strategy: STRATEGIES[config.strategy]}
    return run_backtest(forecasts, bars, spec, strategies=strategies, model=model, config=bt_config)


def write_dashboard(numbers: dict, page: str, html_path: Path) -> tuple[Path, Path]:
    """Write the HTML and its JSON (beside it, ``.json``) via temporary names, then rename."""
    from strategies.report import jsonable

    json_path = html_path.with_suffix(".json")
    tmp_html = html_path.with_name(f".{html_path.name}.tmp")
    tmp_json = json_path.with_name(f".{json_path.name}.tmp")
    try:
        tmp_json.write_text(json.dumps(jsonable(numbers), indent=2))
        tmp_html.write_text(page)
        tmp_json.replace(json_path)
        tmp_html.replace(html_path)
    finally:
        tmp_json.unlink(missing_ok=True)
        tmp_html.unlink(missing_ok=True)
    return html_path, json_path


# ---- the CLI ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line on stderr, exit code 2 (argparse prints usage too)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m strategies.dashboard",
        description="Energy-regime dashboard of a run: one HTML page and a JSON of its numbers.",
    )
    parser.add_argument("--run", type=Path, required=True, help="run folder with forecasts.parquet")
    parser.add_argument("--out", type=Path, help="HTML path (default RUN/dashboard.html)")
    parser.add_argument("--model", help="one model with energy (default: every such model)")
    parser.add_argument("--quantiles", type=int, default=DashboardConfig.n_quantiles)
    parser.add_argument("--warmup", type=int, default=DashboardConfig.warmup)
    parser.add_argument("--vol-window", type=int, default=DashboardConfig.vol_window)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bars", type=Path, help="Parquet file of BARS rows")
    source.add_argument("--store", type=Path, help="store root (default: config.json's store)")
    parser.add_argument("--start", help="first forecast time, ISO UTC (inclusive)")
    parser.add_argument("--end", help="last forecast time, ISO UTC (exclusive)")
    parser.add_argument("--strategy", default=DashboardConfig.strategy)
    parser.add_argument("--no-backtest", action="store_true", help="skip per-regime Sharpe")
    parser.add_argument("--n-boot", type=int, default=DashboardConfig.n_boot)
    parser.add_argument("--n-perm", type=int, default=DashboardConfig.n_perm)
    parser.add_argument("--seed", type=int, default=DashboardConfig.seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        numbers, page, html_path = _run_cli(args)
        paths = write_dashboard(numbers, page, html_path)
    except (BacktestInputError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for model, m in numbers["models"].items():
        for name, c in m["correlations"].items():
            print(f"{model}: {correlation_verdict(name, c)}")
    print(f"wrote {paths[1]} in {time.perf_counter() - started:.1f}s")
    print(paths[0])
    return 0


def _run_cli(args: argparse.Namespace) -> tuple[dict, str, Path]:
    run: Path = args.run
    checks = [
        (args.quantiles < 2, f"--quantiles {args.quantiles}: need at least 2 regimes"),
        (args.warmup < 1, f"--warmup {args.warmup}: need at least 1 forecast"),
        (args.vol_window < 2, f"--vol-window {args.vol_window}: need at least 2 bars"),
        (args.n_boot < 10 or args.n_perm < 10, "--n-boot and --n-perm: need at least 10"),
        (not run.is_dir(), f"{run}: run folder not found"),
    ]
    for bad, message in checks:
        if bad:
            raise DashboardInputError(message)
    html_path = args.out or run / "dashboard.html"
    if html_path.is_dir():
        html_path = html_path / "dashboard.html"
    if not html_path.parent.is_dir():
        raise DashboardInputError(f"--out {html_path}: folder {html_path.parent} not found")
    path = run / "forecasts.parquet"
    forecasts = read_forecasts(path)
    forecasts = _time_range(forecasts, args.start, args.end, where=str(path))
    have = sorted(forecasts.get_column("model").unique().to_list())
    with_energy = sorted(
        forecasts.filter(pl.col("energy").list.len() > 0).get_column("model").unique().to_list()
    )
    if args.model is not None:
        if args.model not in have:
            raise DashboardInputError(f"{path}: no model '{args.model}' (have {have})")
        if args.model not in with_energy:
            message = (
                f"{path}: model '{args.model}' has no HML-D energy (with energy: {with_energy})"
            )
            raise DashboardInputError(message)
    if not with_energy:
        raise DashboardInputError(f"{path}: no model with HML-D energy (models: {have})")
    models = [args.model] if args.model else with_energy
    ids = forecasts.get_column("instrument_id").unique().to_list()
    if len(ids) != 1:
        raise DashboardInputError(f"{path}: forecasts of several instruments {sorted(ids)}")
    spec = load_spec(ids[0])
    if args.bars is not None:
        bars = read_bars(args.bars, spec.instrument_id)
    else:
        bars = load_run_bars(run, spec.instrument_id, forecasts, args.store)
        bars = check_bars(bars, spec.instrument_id, str(args.store or run))
    config = DashboardConfig(
        n_quantiles=args.quantiles,
        warmup=args.warmup,
        vol_window=args.vol_window,
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        seed=args.seed,
        backtest=not args.no_backtest,
        strategy=args.strategy,
    )
    numbers, page = build(
        forecasts,
        bars,
        spec,
        models=models,
        config=config,
        run=str(run),
        where=str(path),
        run_has_backtest_json=(run / "backtest.json").is_file(),
    )
    return numbers, page, html_path


def _time_range(forecasts: pl.DataFrame, start, end, *, where: str) -> pl.DataFrame:
    """Keep forecasts with ``start <= ts_event < end``; raise one line when none are left."""
    bounds = {}
    for name, value in (("--start", start), ("--end", end)):
        if value is None:
            continue
        try:
            bounds[name] = int(np.datetime64(value, "ns").astype(np.int64))
        except ValueError as err:
            raise DashboardInputError(f"{name} {value!r}: not an ISO time ({err})") from err
    if "--start" in bounds:
        forecasts = forecasts.filter(pl.col("ts_event") >= bounds["--start"])
    if "--end" in bounds:
        forecasts = forecasts.filter(pl.col("ts_event") < bounds["--end"])
    if forecasts.is_empty():
        span = f" in [{start}, {end})" if bounds else ""
        raise DashboardInputError(f"{where}: no forecasts{span}")
    return forecasts


if __name__ == "__main__":
    sys.exit(main())
