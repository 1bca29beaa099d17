"""Pure signal rules: FORECASTS rows in, target positions out (Polars in, Polars out).

Every rule maps a FORECASTS frame (``data_specs.schemas.FORECASTS``) to a frame with the
forecast keys and one column ``position``: the target exposure, as a multiple of capital,
signed (+1 long one unit of capital, -1 short). A forecast made at ``ts_event`` t decides the
position held over the bars that *follow* t; the backtest door applies that timing, the rules
here never look at prices or at the ``realized_*`` columns of the rows they act on.

Rules
-----
- :func:`threshold_signal` -- long above ``upper``, short below ``lower`` on the direction
  probability, flat inside the no-trade band.
- :func:`vol_target_signal` -- the sign of the predicted return, sized so that the predicted
  volatility of the position equals a target (volatility targeting).
- :func:`energy_filter_signal` -- a base rule, kept only in HML-D energy regimes where earlier
  folds (strictly before the fold traded, labels known by then) showed direction skill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from strategies.regimes import causal_energy_codes

KEYS = ["ts_event", "instrument_id", "model", "fold", "horizon"]


@dataclass(frozen=True)
class ThresholdParams:
    """Direction-probability threshold with a no-trade band ``[lower, upper]``."""

    upper: float = 0.55  # long when direction_prob > upper
    lower: float = 0.45  # short when direction_prob < lower
    size: float = 1.0  # exposure in multiples of capital when in the market

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower <= self.upper <= 1.0:
            message = f"ThresholdParams: need 0 <= lower <= upper <= 1, got {self}"
            raise ValueError(message)
        if self.size <= 0:
            raise ValueError(f"ThresholdParams: size must be > 0, got {self.size}")


@dataclass(frozen=True)
class VolTargetParams:
    """Sign of the predicted return, sized by predicted volatility."""

    target_volatility: float = 0.10  # annualized volatility the position aims at
    max_leverage: float = 3.0  # cap on |position|
    min_abs_return: float = 0.0  # no trade when |predicted_return| is at or below this

    def __post_init__(self) -> None:
        if self.target_volatility <= 0 or self.max_leverage <= 0 or self.min_abs_return < 0:
            message = f"VolTargetParams: target_volatility, max_leverage must be > 0: {self}"
            raise ValueError(message)


@dataclass(frozen=True)
class EnergyFilterParams:
    """Trade the base rule only in energy regimes where earlier folds showed skill."""

    base: ThresholdParams | VolTargetParams = field(default_factory=ThresholdParams)
    n_quantiles: int = 3  # energy regimes = causal quantiles of the fold's own total energy
    min_hit_rate: float = 0.5  # direction hit rate an energy regime needs in earlier folds
    min_samples: int = 30  # fewer earlier forecasts in a regime than this: do not trade it
    single_fold_periods: int = 4  # when all rows share one fold, split time into this many
    warmup: int = 50  # first forecasts of a fold, flat: too few to place a quantile

    def __post_init__(self) -> None:
        if (
            self.n_quantiles < 1
            or self.min_samples < 1
            or self.single_fold_periods < 2
            or self.warmup < 0
        ):
            raise ValueError(f"EnergyFilterParams: invalid {self}")


Params = ThresholdParams | VolTargetParams | EnergyFilterParams


def threshold_signal(forecasts: pl.DataFrame, params: ThresholdParams) -> pl.DataFrame:
    """Return +size above ``upper``, -size below ``lower``, 0 in the band.

    Parameters
    ----------
    forecasts
        Rows in the FORECASTS schema.
    params
        Thresholds and size.

    Returns
    -------
    polars.DataFrame
        ``KEYS`` plus ``position`` (Float64).
    """
    p = pl.col("direction_prob")
    position = (
        pl.when(p > params.upper)
        .then(params.size)
        .when(p < params.lower)
        .then(-params.size)
        .otherwise(0.0)
        .fill_null(0.0)
        .cast(pl.Float64)
    )
    return forecasts.select(*KEYS, position.alias("position"))


def vol_target_signal(
    forecasts: pl.DataFrame, params: VolTargetParams, *, periods_per_year: float
) -> pl.DataFrame:
    """Return ``sign(predicted_return) * target_per_bar / predicted_vol_per_bar``, capped.

    ``predicted_volatility`` is the std of the log return over ``horizon`` bars; its per-bar
    value is ``predicted_volatility / sqrt(horizon)``. The annual target becomes a per-bar
    target through ``periods_per_year`` (``InstrumentSpec.periods_per_year(bar_seconds)``).
    """
    target_per_bar = params.target_volatility / math.sqrt(periods_per_year)
    vol_per_bar = pl.col("predicted_volatility") / pl.col("horizon").cast(pl.Float64).sqrt()
    ret = pl.col("predicted_return")
    size = (target_per_bar / vol_per_bar).clip(0.0, params.max_leverage)
    position = (
        pl.when((ret.abs() > params.min_abs_return) & (vol_per_bar > 0))
        .then(ret.sign() * size)
        .otherwise(0.0)
        .fill_null(0.0)
        .fill_nan(0.0)
        .cast(pl.Float64)
    )
    return forecasts.select(*KEYS, position.alias("position"))


def total_energy(forecasts: pl.DataFrame) -> pl.Series:
    """Return the per-row HML-D energy summed over layers (null where the list is empty)."""
    energy = forecasts.select(
        pl.when(pl.col("energy").list.len() > 0).then(pl.col("energy").list.sum()).alias("e")
    )
    return energy.get_column("e")


def energy_filter_signal(
    forecasts: pl.DataFrame, params: EnergyFilterParams, *, periods_per_year: float
) -> pl.DataFrame:
    """Keep the base rule's position only in energy regimes with earlier validated skill.

    A forecast's energy regime is its causal quantile code *within its own fold*
    (:func:`strategies.regimes.causal_energy_codes`: the fold's energies up to and including
    it, after ``warmup`` forecasts; warm-up rows stay flat). Each fold is a separately trained
    model whose energy has its own scale, so levels are not comparable across folds while ranks
    are. For each fold (ordered by its first ``ts_event``), the rows of *earlier* folds whose
    label was known before the fold starts (``ts_event + horizon * bar`` not after the fold's
    first ``ts_event``) give each regime's direction hit rate (``direction_prob > 0.5`` vs
    ``realized_return > 0``); a regime is traded when that reaches ``min_hit_rate`` over at
    least ``min_samples`` rows. The first fold has no earlier evidence and stays flat. With a
    single fold, time is split into ``single_fold_periods`` equal-count periods that play the
    role of folds.

    Raises
    ------
    ValueError
        When no row carries an energy (non-HML-D models have empty energy lists).
    """
    base = base_signal(forecasts, params.base, periods_per_year=periods_per_year)
    energy = total_energy(forecasts).to_numpy().astype(float)
    if np.isnan(energy).all():
        raise ValueError("energy filter: the forecasts carry no HML-D energy (empty lists)")
    ts = forecasts.get_column("ts_event").to_numpy()
    horizon = forecasts.get_column("horizon").to_numpy()
    periods = _periods(forecasts, params.single_fold_periods)
    bar_ns = _bar_ns(ts)
    label_known = ts + horizon * bar_ns
    hit = (forecasts.get_column("direction_prob").to_numpy() > 0.5) == (
        forecasts.get_column("realized_return").to_numpy() > 0
    )
    has_label = forecasts.get_column("realized_return").is_not_null().to_numpy()
    # causal within-fold codes, computed in time order (-1: warm-up or no energy)
    codes = np.full(len(ts), -1, dtype=np.int64)
    order = np.lexsort((ts,))
    order = order[~np.isnan(energy[order])]
    codes[order] = causal_energy_codes(
        energy[order], periods[order], params.n_quantiles, warmup=params.warmup
    )
    keep = np.zeros(len(ts), dtype=bool)
    starts = {p: ts[periods == p].min() for p in np.unique(periods)}
    for period, start in sorted(starts.items(), key=lambda item: item[1]):
        rows = periods == period
        prior = (ts < start) & (label_known <= start) & has_label & (codes >= 0)
        skilled = [
            code
            for code in range(params.n_quantiles)
            if (prior & (codes == code)).sum() >= params.min_samples
            and hit[prior & (codes == code)].mean() >= params.min_hit_rate
        ]
        keep[rows] = np.isin(codes[rows], skilled)
    return base.with_columns(pl.Series("position", np.where(keep, base["position"], 0.0)))


def base_signal(
    forecasts: pl.DataFrame, params: Params, *, periods_per_year: float
) -> pl.DataFrame:
    """Dispatch to the rule that ``params`` belongs to."""
    if isinstance(params, ThresholdParams):
        return threshold_signal(forecasts, params)
    if isinstance(params, VolTargetParams):
        return vol_target_signal(forecasts, params, periods_per_year=periods_per_year)
    if isinstance(params, EnergyFilterParams):
        return energy_filter_signal(forecasts, params, periods_per_year=periods_per_year)
    raise TypeError(f"no signal rule for {type(params).__name__}")


def signals(forecasts: pl.DataFrame, params: Params, *, periods_per_year: float) -> pl.DataFrame:
    """Return target positions for ``forecasts`` under the rule chosen by ``params``.

    Each model's rows are handled on their own (the energy filter validates per model). Rows
    are returned sorted by ``model`` then ``ts_event``; see the module docstring for the timing
    contract.
    """
    parts = [
        base_signal(part, params, periods_per_year=periods_per_year)
        for part in forecasts.sort("model", "ts_event").partition_by("model", maintain_order=True)
    ]
    if not parts:
        return forecasts.select(*KEYS).with_columns(pl.lit(0.0).alias("position"))
    return pl.concat(parts)


def _periods(forecasts: pl.DataFrame, n_periods: int) -> np.ndarray:
    folds = forecasts.get_column("fold").fill_null(0).to_numpy()
    if len(np.unique(folds)) > 1:
        return folds
    ts = forecasts.get_column("ts_event").to_numpy()
    ranks = np.argsort(np.argsort(ts, kind="stable"), kind="stable")
    return (ranks * n_periods // max(len(ts), 1)).astype(np.int64)


def _bar_ns(ts: np.ndarray) -> int:
    steps = np.diff(np.unique(ts))
    return int(np.median(steps)) if len(steps) else 0
