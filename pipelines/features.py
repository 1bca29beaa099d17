"""Features and labels from bars (features as ``pl.Expr`` functions, functime style).

Every feature function returns one ``pl.Expr`` over a BARS frame of a single instrument, sorted by
``ts_event``; ``build_features`` applies them per instrument (``.over("instrument_id")``).
Horizons and windows count bars, not clock time.

No look-ahead. A bar's values are known at its ``ts_close``; the FEATURES row of bar ``t`` is
stamped ``ts_event = ts_close[t]`` and its features use bars ``<= t`` only (``shift(k)`` with
``k >= 0`` and trailing ``rolling_*`` windows). Labels look forward from that instant:

- ``label_return_h{h}`` = ``log(close[t + h] / close[t])``
- ``label_direction_h{h}`` = 1.0 if that return is > 0, 0.0 if <= 0, null where unknown
- ``label_volatility_h{h}`` = ``sqrt(sum_{k=1..h} log(close[t+k] / close[t+k-1])^2)``, the
  realized volatility of the next ``h`` bar returns

Labels are null for the last ``h`` bars of each instrument (the future is not known yet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import polars as pl

from data_specs.schemas import FEATURES_KEY
from data_specs.spec import InstrumentSpec

Wave = Literal["sin", "cos"]
_DAY_S = 86_400
_WEEK_S = 7 * _DAY_S


# ---- price features --------------------------------------------------------------------------


def log_return(horizon: int = 1, *, price: str = "close") -> pl.Expr:
    """Return the log return over the last ``horizon`` bars, ``log(p[t] / p[t - horizon])``."""
    col = pl.col(price)
    return (col / col.shift(horizon)).log().alias(f"log_return_{horizon}")


def realized_volatility(window: int, *, price: str = "close") -> pl.Expr:
    """Return ``sqrt`` of the sum of squared 1-bar log returns over the last ``window`` bars."""
    col = pl.col(price)
    r2 = (col / col.shift(1)).log().pow(2)
    return r2.rolling_sum(window).sqrt().alias(f"realized_vol_{window}")


def intrabar_volatility(window: int) -> pl.Expr:
    """Return ``sqrt`` of the summed tick ``realized_variance`` of the last ``window`` bars.

    Uses the within-bar tick returns, so it sees volatility that bar closes miss.
    """
    return pl.col("realized_variance").rolling_sum(window).sqrt().alias(f"intrabar_vol_{window}")


def bar_range() -> pl.Expr:
    """Return the bar's log range ``log(high / low)`` (a Parkinson-style volatility proxy)."""
    return (pl.col("high") / pl.col("low")).log().alias("bar_range")


def spread_increments(spec: InstrumentSpec) -> pl.Expr:
    """Return the bar's mean spread in price increments (null for trade bars)."""
    return (pl.col("spread_mean") / spec.price_increment).alias("spread_increments")


def relative_spread_bps() -> pl.Expr:
    """Return the bar's mean spread relative to its mid close, in basis points."""
    return (pl.col("spread_mean") / pl.col("close") * 1e4).alias("spread_bps")


def tick_intensity() -> pl.Expr:
    """Return ``log`` ticks per second in the bar (``tick_count / (ts_close - ts_event)``)."""
    seconds = (pl.col("ts_close") - pl.col("ts_event")).cast(pl.Float64) / 1e9
    return (pl.col("tick_count").cast(pl.Float64) / seconds).log().alias("tick_intensity")


def tick_intensity_ratio(window: int) -> pl.Expr:
    """Return the bar's tick count over its trailing ``window``-bar mean (1 = usual activity)."""
    count = pl.col("tick_count").cast(pl.Float64)
    return (count / count.rolling_mean(window)).alias(f"tick_intensity_ratio_{window}")


# ---- session-aware calendar features --------------------------------------------------------


def _trading_clock(spec: InstrumentSpec, column: str) -> tuple[pl.Expr, pl.Expr]:
    """Return (seconds into the trading day, trading-day weekday 0=Mon) in the spec's calendar.

    The trading day starts at ``calendar.daily_roll`` local time (DST-aware): an FX day runs
    17:00 to 17:00 New York, and the session opening Sunday 17:00 is Monday's trading day.
    """
    hours, minutes = (int(x) for x in spec.calendar.daily_roll.split(":"))
    shift_s = _DAY_S - (hours * 3600 + minutes * 60)  # move daily_roll to local midnight
    local = (
        pl.from_epoch(pl.col(column), time_unit="ns")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(spec.calendar.timezone)
        .dt.replace_time_zone(None)  # wall-clock time, so DST days keep 24 wall-clock hours
        .dt.offset_by(f"{shift_s}s")
    )
    seconds = (
        local.dt.hour().cast(pl.Int64) * 3600
        + local.dt.minute().cast(pl.Int64) * 60
        + local.dt.second().cast(pl.Int64)
    ).cast(pl.Float64)
    weekday = (local.dt.weekday().cast(pl.Int64) - 1).cast(pl.Float64)  # Mon=0 .. Sun=6
    return seconds, weekday


def _wave(phase: pl.Expr, wave: Wave) -> pl.Expr:
    angle = phase * (2 * math.pi)
    if wave == "sin":
        return angle.sin()
    if wave == "cos":
        return angle.cos()
    raise ValueError(f"wave must be 'sin' or 'cos', got {wave!r}")


def time_of_day(spec: InstrumentSpec, *, wave: Wave, column: str = "ts_close") -> pl.Expr:
    """Return sin/cos of the phase of the trading day at ``column`` (0 at ``daily_roll``)."""
    seconds, _ = _trading_clock(spec, column)
    return _wave(seconds / _DAY_S, wave).alias(f"time_of_day_{wave}")


def day_of_week(spec: InstrumentSpec, *, wave: Wave, column: str = "ts_close") -> pl.Expr:
    """Return sin/cos of the phase of the trading week (0 at Monday's trading-day open)."""
    seconds, weekday = _trading_clock(spec, column)
    return _wave((weekday * _DAY_S + seconds) / _WEEK_S, wave).alias(f"day_of_week_{wave}")


# ---- labels -----------------------------------------------------------------------------------


def label_return(horizon: int, *, price: str = "close") -> pl.Expr:
    """Return the forward log return ``log(p[t + horizon] / p[t])`` (null where unknown)."""
    col = pl.col(price)
    return (col.shift(-horizon) / col).log().alias(f"label_return_h{horizon}")


def label_direction(horizon: int, *, price: str = "close") -> pl.Expr:
    """Return 1.0 where the forward return is > 0, 0.0 where <= 0, null where unknown."""
    ret = label_return(horizon, price=price)
    return (ret > 0).cast(pl.Float64).alias(f"label_direction_h{horizon}")


def label_volatility(horizon: int, *, price: str = "close") -> pl.Expr:
    """Return the realized volatility of the next ``horizon`` 1-bar log returns."""
    col = pl.col(price)
    r2 = (col / col.shift(1)).log().pow(2)
    # rolling_sum at t + h covers returns t+1 .. t+h; shift it back to t.
    return r2.rolling_sum(horizon).shift(-horizon).sqrt().alias(f"label_volatility_h{horizon}")


# ---- assembly ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureConfig:
    """Which features ``build_features`` computes (windows and horizons in bars)."""

    return_horizons: tuple[int, ...] = (1, 5, 15, 60)
    volatility_windows: tuple[int, ...] = (5, 15, 60)
    intensity_window: int = 60
    spread: bool = True  # set False for trade bars (no quotes, spread is null)
    calendar: bool = True

    @property
    def warmup(self) -> int:
        """Bars needed before every feature is defined."""
        return max(*self.return_horizons, *self.volatility_windows, self.intensity_window, 1)


def feature_exprs(spec: InstrumentSpec, config: FeatureConfig = FeatureConfig()) -> list[pl.Expr]:
    """Return the feature expressions of ``config`` (per instrument, not yet ``.over``-ed)."""
    exprs = [log_return(h) for h in config.return_horizons]
    exprs += [realized_volatility(w) for w in config.volatility_windows]
    exprs += [intrabar_volatility(w) for w in config.volatility_windows]
    exprs += [bar_range(), tick_intensity(), tick_intensity_ratio(config.intensity_window)]
    if config.spread:
        exprs += [spread_increments(spec), relative_spread_bps()]
    if config.calendar:
        exprs += [time_of_day(spec, wave="sin"), time_of_day(spec, wave="cos")]
        exprs += [day_of_week(spec, wave="sin"), day_of_week(spec, wave="cos")]
    return exprs


def label_exprs(horizons: tuple[int, ...]) -> list[pl.Expr]:
    """Return the label expressions for each horizon (per instrument, not yet ``.over``-ed)."""
    exprs = []
    for h in horizons:
        if h < 1:
            raise ValueError(f"label horizons must be >= 1 bar, got {h}")
        exprs += [label_return(h), label_direction(h), label_volatility(h)]
    return exprs


def build_features(
    bars_lf: pl.LazyFrame,
    *,
    spec: InstrumentSpec,
    horizons: tuple[int, ...] = (1,),
    config: FeatureConfig = FeatureConfig(),
    drop_warmup: bool = True,
) -> pl.LazyFrame:
    """Turn BARS into a FEATURES frame with forward labels.

    Parameters
    ----------
    bars_lf
        BARS rows (one or more instruments), any order.
    spec
        The instrument spec (price increment, calendar for session features).
    horizons
        Label horizons in bars.
    config
        Which features to compute.
    drop_warmup
        Drop each instrument's first ``config.warmup`` bars, where trailing windows are
        incomplete (so features are non-null except where the bars themselves hold nulls).

    Returns
    -------
    pl.LazyFrame
        ``instrument_id, ts_event`` (= the bar's ``ts_close``), Float64 feature columns, then
        ``label_return_h{h}, label_direction_h{h}, label_volatility_h{h}`` per horizon.
    """
    features = [e.over("instrument_id").cast(pl.Float64) for e in feature_exprs(spec, config)]
    labels = [e.over("instrument_id").cast(pl.Float64) for e in label_exprs(tuple(horizons))]
    frame = bars_lf.sort("instrument_id", "ts_event").select(
        pl.col("instrument_id"),
        pl.col("ts_close").alias("ts_event"),
        *features,
        *labels,
        pl.int_range(pl.len()).over("instrument_id").alias("_bar_index"),
    )
    if drop_warmup:
        frame = frame.filter(pl.col("_bar_index") >= config.warmup)
    return frame.drop("_bar_index").with_columns(
        [pl.col(name).cast(dtype) for name, dtype in FEATURES_KEY.items()]
    )


def _names(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    return frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns


def feature_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """Return the feature column names of a FEATURES frame, in order."""
    return [c for c in _names(frame) if c not in FEATURES_KEY and not c.startswith("label_")]


def label_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    """Return the label column names (``label_*``) of a FEATURES frame, in order."""
    return [c for c in _names(frame) if c.startswith("label_")]
