"""One model's dashboard numbers: causal regimes, per-regime statistics, energy correlations.

:func:`model_dashboard` lines a model's forecasts up with the bars they act on, labels every
forecast with its causal energy regime (:func:`strategies.regimes.causal_energy_codes`)
and every bar with the regime of the forecast in force, and computes per regime the counts,
share of time, run lengths, volatility after the forecast, direction AUC and forecast MSE with
block-bootstrap intervals, plus the Spearman correlations of energy with later volatility.
Given a backtest, the headline strategy is scored per regime as well. The full-sample quantile
labels (:func:`strategies.regimes.energy_labels`, edges per fold) look ahead and feed only a
table marked descriptive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from data_specs.spec import InstrumentSpec
from strategies.dashboard.stats import (
    forward_volatility,
    mean_durations,
    mean_with_ci,
    rank_correlation,
    transition_matrix,
    within_group_percentile,
)
from strategies.inputs import (
    BacktestInputError,
    check_inputs,
    forecast_in_force,
    iso,
    window_bars,
)
from strategies.metrics import direction_scores
from strategies.regimes import causal_energy_codes, energy_labels, metrics_by_group


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

    full = np.asarray(energy_labels(total, n_q, fold=fold), dtype=object)
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
    percentile = within_group_percentile(total, groups)
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
