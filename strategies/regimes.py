"""Market regimes per bar, metrics per regime and per fold, and the robustness summary.

Regime families (one label column each, null where undefined, e.g. during warm-up):

- ``volatility``: terciles (``low``/``mid``/``high``) of the trailing realized volatility of
  1-bar log returns over ``vol_window`` bars, measured up to the bar *before* (known when the
  bar starts). Tercile edges are taken over the evaluated sample: a description of the sample,
  used for scoring, never for trading.
- ``trend``: the trailing variance ratio ``VR(q) = var(q-bar returns) / (q var(1-bar returns))``
  over ``vr_window`` bars: ``trend`` when VR > 1, ``mean_reversion`` otherwise.
- ``session``: from the bar's start in local clocks (DST-aware): ``new_york`` when New York
  local time is in [08:00, 17:00), else ``london`` when London local time is in
  [08:00, 17:00), else ``asia``.
- ``energy``: quantiles ``q1`` .. ``qN`` of the total HML-D energy of the forecast that set the
  bar's position, the edges cut *per fold* (each walk-forward fold is a separately trained model
  whose energy has its own scale) over the fold's whole evaluated sample: like the volatility
  terciles, a description used for scoring, never for trading (absent for models without
  energy).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from strategies.metrics import scorecard

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FAMILIES = ("volatility", "trend", "session", "energy")


@dataclass(frozen=True)
class RegimeParams:
    """Windows and quantiles that define the regimes."""

    vol_window: int = 60  # bars in the trailing realized volatility
    vr_window: int = 240  # bars in the trailing variance ratio
    vr_lag: int = 4  # q of VR(q)
    energy_quantiles: int = 3


def label_regimes(
    bars: pl.DataFrame,
    *,
    energy: np.ndarray | None = None,
    fold: np.ndarray | None = None,
    params: RegimeParams | None = None,
) -> pl.DataFrame:
    """Return ``ts_event`` plus one regime label column per family for each bar.

    Parameters
    ----------
    bars
        BARS rows of one instrument sorted by ``ts_event`` (``ts_event``, ``close`` used).
    energy
        Per-bar total energy of the forecast in force (NaN where none), shape (n,), optional.
    fold
        Per-bar fold of the forecast in force (NaN where none), shape (n,): the energy quantile
        edges are cut within each fold (:func:`energy_labels`). ``None``: one fold.
    params
        Regime windows.
    """
    params = params or RegimeParams()
    r = pl.col("close").log().diff()
    q = params.vr_lag
    rq = r.rolling_sum(q)
    vr = rq.rolling_var(params.vr_window) / (q * r.rolling_var(params.vr_window))
    local = pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC")
    ny_hour = local.dt.convert_time_zone("America/New_York").dt.hour()
    ldn_hour = local.dt.convert_time_zone("Europe/London").dt.hour()
    frame = bars.select(
        "ts_event",
        r.rolling_std(params.vol_window).shift(1).alias("_vol"),
        vr.shift(1).alias("_vr"),
        pl.when(ny_hour.is_between(8, 16))
        .then(pl.lit("new_york"))
        .when(ldn_hour.is_between(8, 16))
        .then(pl.lit("london"))
        .otherwise(pl.lit("asia"))
        .alias("session"),
    )
    vol = frame.get_column("_vol").fill_nan(None).drop_nulls()
    edges = (vol.quantile(1 / 3), vol.quantile(2 / 3)) if len(vol) else (np.inf, np.inf)
    frame = frame.with_columns(
        pl.when(pl.col("_vol").is_null() | pl.col("_vol").is_nan())
        .then(None)
        .when(pl.col("_vol") <= edges[0])
        .then(pl.lit("low"))
        .when(pl.col("_vol") <= edges[1])
        .then(pl.lit("mid"))
        .otherwise(pl.lit("high"))
        .alias("volatility"),
        pl.when(pl.col("_vr").is_null() | pl.col("_vr").is_nan())
        .then(None)
        .when(pl.col("_vr") > 1.0)
        .then(pl.lit("trend"))
        .otherwise(pl.lit("mean_reversion"))
        .alias("trend"),
    ).drop("_vol", "_vr")
    if energy is not None and np.isfinite(energy).any():
        frame = frame.with_columns(
            pl.Series("energy", energy_labels(energy, params.energy_quantiles, fold=fold))
        )
    return frame


def energy_labels(
    energy: np.ndarray, n_quantiles: int, *, fold: np.ndarray | None = None
) -> list[str | None]:
    """Return ``q1`` .. ``qN`` energy quantile labels, the edges cut within each fold.

    Each walk-forward fold is a separately trained model whose energy has its own scale, so
    a row is placed among the ``n_quantiles``-quantile edges (``numpy.quantile``, linear) of
    the finite energies of its own fold; pooling the folds would mix scales and put a
    low-energy fold wholly in ``q1``. The edges use the fold's whole sample, later rows
    included: a descriptive labelling used for scoring only, never a trading rule (the
    causal labels are :func:`causal_energy_codes` below).

    Parameters
    ----------
    energy
        Total energy per row, NaN where none, shape (n,).
    n_quantiles
        Number of regimes.
    fold
        Fold per row, shape (n,); ``None``: all rows one fold. Rows whose fold is NaN get no
        label.

    Returns
    -------
    list
        ``"q1"`` .. ``"qN"`` per row, ``None`` where the energy (or the fold) is NaN.
    """
    energy = np.asarray(energy, dtype=float)
    fold = np.zeros(len(energy)) if fold is None else np.asarray(fold)
    finite = np.isfinite(energy)
    levels = np.linspace(0, 1, n_quantiles + 1)[1:-1]
    bucket = np.full(len(energy), -1, dtype=np.int64)
    for value in np.unique(fold[finite]):
        rows = finite & (fold == value)
        if rows.any():
            edges = np.quantile(energy[rows], levels)
            bucket[rows] = np.searchsorted(edges, energy[rows], side="right")
    return [f"q{b + 1}" if b >= 0 else None for b in bucket]


def metrics_by_group(
    labels: np.ndarray,
    returns: np.ndarray,
    position: np.ndarray,
    *,
    periods_per_year: float,
    forecast_labels: np.ndarray | None = None,
    direction_prob: np.ndarray | None = None,
    realized_return: np.ndarray | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Return the scorecard of every group: ``{group: metrics}`` (null labels are skipped).

    ``labels`` are per bar; ``forecast_labels`` per forecast row (for AUC and F1).
    """
    out: dict[str, dict[str, float]] = {}
    labels = np.asarray(labels, dtype=object)
    groups = sorted({g for g in labels if g is not None}, key=_group_order)
    for group in groups:
        rows = labels == group
        prob = real = None
        if forecast_labels is not None and direction_prob is not None:
            mine = np.asarray(forecast_labels, dtype=object) == group
            prob, real = direction_prob[mine], realized_return[mine]
        out[str(group)] = scorecard(
            returns[rows],
            position[rows],
            periods_per_year=periods_per_year,
            direction_prob=prob,
            realized_return=real,
            n_boot=n_boot,
            seed=seed,
        )
    return out


_ORDER = {"low": 0, "mid": 1, "high": 2, "asia": 0, "london": 1, "new_york": 2}


def _group_order(group) -> tuple:
    text = str(group)
    if text in _ORDER:
        return (0, _ORDER[text], "")
    if text.lstrip("q").isdigit():
        return (1, int(text.lstrip("q")), "")
    return (2, 0, text)


def robustness_table(
    by_regime: dict[str, dict[str, dict[str, float]]], by_fold: dict[str, dict[str, float]]
) -> pl.DataFrame:
    """Return one row per regime family (and one for folds): worst, best and spread of Sharpe.

    Columns: ``family``, ``n_groups``, ``worst_group``, ``worst_sharpe``, ``best_sharpe``,
    ``sharpe_std`` (dispersion across groups), ``sharpe_range``.
    """
    rows = []
    families = {**by_regime, "fold": by_fold}
    for family, groups in families.items():
        sharpes = {g: m["sharpe"] for g, m in groups.items() if np.isfinite(m["sharpe"])}
        if not sharpes:
            continue
        values = np.array(list(sharpes.values()))
        worst = min(sharpes, key=sharpes.get)
        rows.append(
            {
                "family": family,
                "n_groups": len(values),
                "worst_group": worst,
                "worst_sharpe": float(values.min()),
                "best_sharpe": float(values.max()),
                "sharpe_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "sharpe_range": float(values.max() - values.min()),
            }
        )
    schema = {
        "family": pl.String,
        "n_groups": pl.Int64,
        "worst_group": pl.String,
        "worst_sharpe": pl.Float64,
        "best_sharpe": pl.Float64,
        "sharpe_std": pl.Float64,
        "sharpe_range": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def robustness_summary(table: pl.DataFrame) -> dict[str, float]:
    """Return the headline robustness numbers from :func:`robustness_table`."""
    regimes = table.filter(pl.col("family") != "fold")
    folds = table.filter(pl.col("family") == "fold")
    nan = float("nan")
    return {
        "worst_regime_sharpe": float(regimes["worst_sharpe"].min()) if len(regimes) else nan,
        "regime_sharpe_dispersion": float(regimes["sharpe_std"].mean()) if len(regimes) else nan,
        "worst_fold_sharpe": float(folds["worst_sharpe"][0]) if len(folds) else nan,
        "fold_sharpe_dispersion": float(folds["sharpe_std"][0]) if len(folds) else nan,
    }


def plot_robustness(
    by_regime: dict[str, dict[str, dict[str, float]]],
    by_fold: dict[str, dict[str, float]],
    *,
    title: str = "",
) -> Figure:
    """Return a figure: Sharpe with its bootstrap interval per regime and per fold."""
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    families = {**by_regime, "fold": by_fold}
    families = {k: v for k, v in families.items() if v}
    fig = Figure(figsize=(3.2 * max(len(families), 1), 3.4))
    axes = fig.subplots(1, max(len(families), 1), squeeze=False)
    for ax, (family, groups) in zip(axes[0], families.items()):
        names = list(groups)
        values = np.array([groups[g]["sharpe"] for g in names], dtype=float)
        low = np.array([groups[g]["sharpe_ci_low"] for g in names], dtype=float)
        high = np.array([groups[g]["sharpe_ci_high"] for g in names], dtype=float)
        err = np.vstack([np.maximum(values - low, 0), np.maximum(high - values, 0)])
        colors = ["tab:green" if v > 0 else "tab:red" for v in values]
        ax.bar(range(len(names)), values, yerr=np.nan_to_num(err), color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_title(family, fontsize=10)
        ax.set_ylabel("Sharpe (annualized)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---- causal (expanding) quantile codes: used for trading rules and the dashboard -----------


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
