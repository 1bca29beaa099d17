"""Bars from ticks: time, tick, volume and dollar bars (``LazyFrame -> LazyFrame``).

Every function takes a QUOTES (or TRADES) frame and returns a lazy frame in exactly the
``data_specs.schemas.BARS`` schema, one row per bar that saw at least one tick (no forward
fill: a minute without ticks has no bar).

For quote bars
    ``open/high/low/close`` are the mid ``(bid + ask) / 2``; ``bid_*`` and ``ask_*`` the OHLC of
    each side; ``spread_mean``/``spread_max`` the mean and max of ``ask - bid`` over the bar's
    ticks; ``volume`` the sum of ``bid_size + ask_size`` over the ticks that carry sizes (null when
    no tick in the bar has a size); ``realized_variance`` the sum of squared log mid returns
    between consecutive ticks *inside* the bar (the jump from the previous bar's last tick is not
    counted, so a one-tick bar has 0).
For trade bars
    the OHLC is the trade price, ``bid_*``/``ask_*``/``spread_*`` are null, ``volume`` is the sum
    of ``size`` and ``realized_variance`` uses log trade-price returns.

Time semantics: ``ts_event`` is the bar's open (inclusive) and ``ts_close`` its end (exclusive);
a bar's values are known from ``ts_close`` on. For time bars these are the window bounds. For
tick, volume and dollar bars ``ts_event`` is the first tick's time and ``ts_close`` the last
tick's time plus one nanosecond (the bar is complete at its last tick).
"""

from __future__ import annotations

import re

import polars as pl

from data_specs.schemas import BARS, QUOTES, TRADES, conform
from data_specs.spec import InstrumentSpec

_CALENDAR_UNIT = re.compile(r"\d+(d|w|mo|q|y)$")


def _is_trades(lf: pl.LazyFrame) -> bool:
    names = lf.collect_schema().names()
    if "price" in names:
        return True
    if "bid_price" in names and "ask_price" in names:
        return False
    message = f"bars need QUOTES (bid_price, ask_price) or TRADES (price) columns, got {names}"
    raise ValueError(message)


def _ohlc(value: pl.Expr, prefix: str = "") -> list[pl.Expr]:
    """First, max, min and last of ``value`` as ``<prefix>open/high/low/close``."""
    return [
        value.first().alias(f"{prefix}open"),
        value.max().alias(f"{prefix}high"),
        value.min().alias(f"{prefix}low"),
        value.last().alias(f"{prefix}close"),
    ]


def _quote_aggs() -> list[pl.Expr]:
    bid, ask = pl.col("bid_price"), pl.col("ask_price")
    mid = (bid + ask) / 2
    spread = ask - bid
    sizes = pl.col("bid_size").fill_null(0.0) + pl.col("ask_size").fill_null(0.0)
    has_size = pl.col("bid_size").is_not_null() | pl.col("ask_size").is_not_null()
    return [
        *_ohlc(mid),
        *_ohlc(bid, "bid_"),
        *_ohlc(ask, "ask_"),
        pl.when(has_size.any()).then(sizes.sum()).otherwise(None).alias("volume"),
        pl.len().cast(pl.Int64).alias("tick_count"),
        spread.mean().alias("spread_mean"),
        spread.max().alias("spread_max"),
        mid.log().diff().pow(2).sum().alias("realized_variance"),
    ]


def _trade_aggs() -> list[pl.Expr]:
    price = pl.col("price")
    return [
        *_ohlc(price),
        pl.col("size").sum().alias("volume"),
        pl.len().cast(pl.Int64).alias("tick_count"),
        price.log().diff().pow(2).sum().alias("realized_variance"),
    ]


def _canonical(lf: pl.LazyFrame) -> tuple[pl.LazyFrame, list[pl.Expr]]:
    """Conform input to QUOTES or TRADES (missing size columns become null) and pick the aggs."""
    if _is_trades(lf):
        return conform(lf, TRADES), _trade_aggs()
    return conform(lf, QUOTES), _quote_aggs()


_FIXED_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+)(ns|us|ms|s|m|h|d|w|mo|q|y|i)")


def fixed_duration_ns(every: str) -> int | None:
    """Return the length in ns of a Polars duration made of fixed units (ns .. h), else None.

    Durations with calendar units (``d``, ``w``, ``mo``, ``q``, ``y``) return None: their length
    depends on the calendar (DST, month lengths).

    Raises
    ------
    ValueError
        ``every`` is not a positive Polars duration string such as ``1m``, ``5m``, ``1h``, ``1d``.
    """
    parts = _DURATION_PART.findall(every)
    if not parts or "".join(n + u for n, u in parts) != every:
        raise ValueError(f"{every!r} is not a duration such as 1m, 5m, 1h, 1d")
    if any(unit == "i" for _, unit in parts):
        raise ValueError(f"{every!r}: index durations ('i') are not time bars")
    if sum(int(n) for n, _ in parts) <= 0:
        raise ValueError(f"{every!r} must be positive")
    if any(unit not in _FIXED_UNITS_NS for _, unit in parts):
        return None
    return sum(int(n) * _FIXED_UNITS_NS[unit] for n, unit in parts)


def _fixed_time_bars(
    lf: pl.LazyFrame, *, length: int, trades: bool, presorted: bool
) -> pl.LazyFrame:
    """Time bars of a fixed length in ns, windows aligned on multiples of it since the epoch.

    The same windows and values as ``group_by_dynamic`` (which aligns fixed durations on the
    epoch too), computed with an integer group key and per-tick columns prepared before the
    group-by, so that every aggregation is a plain first/last/min/max/sum (no per-group lists).
    ``presorted``: one instrument, sorted by ``ts_event`` -- no sort, no instrument key.
    """
    ts = pl.col("ts_event")
    window = (ts // length) * length
    value = pl.col("price") if trades else (pl.col("bid_price") + pl.col("ask_price")) * 0.5
    log_value = value.log()
    # squared log return from the previous tick, counted only inside one bar of one instrument
    inside = pl.col("_w") == pl.col("_w").shift(1)
    if presorted:
        keys = ["_w"]
        window = window.set_sorted()  # sorted ticks give sorted windows: group without hashing
    else:
        keys = ["instrument_id", "_w"]
        inside = inside & (pl.col("instrument_id") == pl.col("instrument_id").shift(1))
        lf = lf.sort("instrument_id", "ts_event", maintain_order=True)
    step = (log_value - log_value.shift(1)).pow(2)
    prepared = lf.with_columns(window.alias("_w"), value.alias("_v")).with_columns(
        pl.when(inside).then(step).otherwise(0.0).alias("_r2")
    )
    v = pl.col("_v")
    common = [
        *_ohlc(v),
        pl.len().cast(pl.Int64).alias("tick_count"),
        pl.col("_r2").sum().alias("realized_variance"),
    ]
    if trades:
        aggs = [*common, pl.col("size").sum().alias("volume")]
        finish: list[pl.Expr] = []
    else:
        bid, ask = pl.col("bid_price"), pl.col("ask_price")
        prepared = prepared.with_columns(
            (ask - bid).alias("_spread"),
            (pl.col("bid_size").fill_null(0.0) + pl.col("ask_size").fill_null(0.0)).alias("_size"),
            (pl.col("bid_size").is_not_null() | pl.col("ask_size").is_not_null()).alias("_sized"),
        )
        aggs = [
            *common,
            *_ohlc(bid, "bid_"),
            *_ohlc(ask, "ask_"),
            pl.col("_size").sum().alias("volume"),
            pl.col("_sized").any().alias("_sized"),
            pl.col("_spread").mean().alias("spread_mean"),
            pl.col("_spread").max().alias("spread_max"),
        ]
        # volume is null when no tick of the bar carries a size (as in the generic path)
        finish = [pl.when(pl.col("_sized")).then(pl.col("volume")).alias("volume")]
    if presorted:
        aggs.append(pl.col("instrument_id").first())
    frame = (
        prepared.group_by(*keys, maintain_order=True)
        .agg(aggs)
        .with_columns(
            *finish,
            pl.col("_w").alias("ts_event"),
            (pl.col("_w") + length).alias("ts_close"),
        )
    )
    return conform(frame, BARS)


def time_bars(
    quotes_lf: pl.LazyFrame,
    *,
    every: str,
    spec: InstrumentSpec | None = None,
    presorted: bool = False,
) -> pl.LazyFrame:
    """Aggregate ticks into time bars of length ``every``.

    Parameters
    ----------
    quotes_lf
        QUOTES (or TRADES) rows, any order; extra columns (lineage) are ignored. Ticks with equal
        timestamps keep their input order (it decides a bar's open and close among them).
    every
        Any Polars duration string: ``"1s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1w"``...
    spec
        Optional instrument spec. Intraday windows are aligned on the UTC clock. Windows of a day
        or longer are aligned on the instrument's trading day when a spec is given (they start at
        ``calendar.daily_roll`` in ``calendar.timezone``, DST-aware: an FX daily bar runs 17:00 to
        17:00 New York); without a spec they start at midnight UTC.
    presorted
        A promise that the rows hold one instrument sorted by ``ts_event`` (a store partition
        is): fixed-length bars then skip the sort and the instrument key. Wrong results if the
        promise does not hold.

    Returns
    -------
    pl.LazyFrame
        BARS schema, sorted by ``instrument_id, ts_event``; only windows that saw a tick.

    Raises
    ------
    ValueError
        ``every`` is not a positive duration.
    """
    length = fixed_duration_ns(every)
    trades = _is_trades(quotes_lf)
    if length is not None:
        canonical = conform(quotes_lf, TRADES if trades else QUOTES)
        return _fixed_time_bars(canonical, length=length, trades=trades, presorted=presorted)
    quotes_lf, aggs = _canonical(quotes_lf)
    if spec is not None and _CALENDAR_UNIT.search(every):
        tz = spec.calendar.timezone
        hours, minutes = (int(x) for x in spec.calendar.daily_roll.split(":"))
        # The trading day that ends at daily_roll started the previous day at daily_roll.
        offset = f"{hours * 60 + minutes - 24 * 60}m"
    else:
        tz, offset = "UTC", None
    window = pl.from_epoch("ts_event", time_unit="ns")  # naive = UTC wall clock
    if tz != "UTC":
        window = window.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    # sorting on time alone also orders each instrument's ticks (cheaper than a string key)
    frame = (
        quotes_lf.with_columns(window.alias("_window"))
        .sort("ts_event", maintain_order=True)
        .group_by_dynamic(
            "_window",
            every=every,
            offset=offset,
            group_by="instrument_id",
            closed="left",
            label="left",
            start_by="window",
        )
        .agg(aggs)
        .with_columns(
            pl.col("_window").dt.epoch("ns").alias("ts_event"),
            pl.col("_window").dt.offset_by(every).dt.epoch("ns").alias("ts_close"),
        )
        .sort("instrument_id", "ts_event")
    )
    return conform(frame, BARS)


def _bars_by_id(lf: pl.LazyFrame, bar_id: pl.Expr) -> pl.LazyFrame:
    """Group consecutive ticks of each instrument by ``bar_id`` (computed over sorted ticks)."""
    lf, aggs = _canonical(lf)
    frame = (
        lf.sort("ts_event")
        .with_columns(bar_id.over("instrument_id").alias("_bar"))
        .group_by("instrument_id", "_bar", maintain_order=True)
        .agg(
            pl.col("ts_event").first().alias("ts_event"),
            (pl.col("ts_event").last() + 1).alias("ts_close"),
            *aggs,
        )
        .sort("instrument_id", "ts_event")
    )
    return conform(frame, BARS)


def tick_bars(lf: pl.LazyFrame, *, ticks: int) -> pl.LazyFrame:
    """Aggregate every ``ticks`` consecutive ticks of an instrument into one bar.

    The last bar of each instrument may hold fewer ticks (it is still open).
    """
    if ticks < 1:
        raise ValueError(f"ticks must be >= 1, got {ticks}")
    return _bars_by_id(lf, pl.int_range(pl.len()) // ticks)


def _threshold_bars(lf: pl.LazyFrame, amount: pl.Expr, threshold: float) -> pl.LazyFrame:
    # A tick belongs to the bar in which the cumulative amount *before* it lies, so the tick that
    # reaches the threshold closes its bar. The overshoot carries into the next bar (the
    # vectorized form of López de Prado's rule, which resets to zero instead).
    before = amount.cum_sum() - amount
    return _bars_by_id(lf, (before / threshold).floor().cast(pl.Int64))


def _size() -> pl.Expr:
    return pl.col("bid_size").fill_null(0.0) + pl.col("ask_size").fill_null(0.0)


def volume_bars(lf: pl.LazyFrame, *, volume: float) -> pl.LazyFrame:
    """Close a bar each time ``volume`` units have traded (trades) or been quoted (quotes).

    Quote volume is ``bid_size + ask_size``; ticks without sizes count 0.
    """
    if not volume > 0:
        raise ValueError(f"volume must be > 0, got {volume}")
    amount = pl.col("size").fill_null(0.0) if _is_trades(lf) else _size()
    return _threshold_bars(lf, amount, volume)


def dollar_bars(
    lf: pl.LazyFrame, *, notional: float, spec: InstrumentSpec | None = None
) -> pl.LazyFrame:
    """Close a bar each time ``notional`` (price x size x multiplier) has changed hands.

    ``spec.multiplier`` is used when a spec is given (futures), else 1. Quotes use the mid
    price and ``bid_size + ask_size``.
    """
    if not notional > 0:
        raise ValueError(f"notional must be > 0, got {notional}")
    multiplier = spec.multiplier if spec is not None else 1.0
    if _is_trades(lf):
        amount = pl.col("price") * pl.col("size").fill_null(0.0)
    else:
        amount = (pl.col("bid_price") + pl.col("ask_price")) / 2 * _size()
    return _threshold_bars(lf, amount * multiplier, notional)


def trade_bars(
    trades_lf: pl.LazyFrame, *, every: str, spec: InstrumentSpec | None = None
) -> pl.LazyFrame:
    """Aggregate TRADES into time bars (OHLC of trade prices, volume = sum of sizes)."""
    if not _is_trades(trades_lf):
        raise ValueError("trade_bars needs a TRADES frame (a 'price' column)")
    return time_bars(trades_lf, every=every, spec=spec)


def resample_bars(bars: pl.LazyFrame, *, every: str) -> pl.LazyFrame:
    """Aggregate BARS into coarser BARS of length ``every`` (UTC-aligned windows).

    OHLC take first/max/min/last; volumes, tick counts and realized variance add; the mean
    spread is tick-weighted. ``ts_event`` is the window start and ``ts_close`` its end. Windows
    without bars produce no row. Shared by training (``hamfin.data``) and backtests
    (``strategies.inputs``) so both see the same coarse bars.
    """
    ticks = pl.col("tick_count").cast(pl.Float64)
    frame = (
        bars.with_columns(
            pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC").alias("_w")
        )
        .sort("instrument_id", "ts_event")
        .group_by_dynamic("_w", every=every, group_by="instrument_id", closed="left")
        .agg(
            pl.col("open", "bid_open", "ask_open").first(),
            pl.col("high", "bid_high", "ask_high").max(),
            pl.col("low", "bid_low", "ask_low").min(),
            pl.col("close", "bid_close", "ask_close").last(),
            pl.col("volume").sum(),
            pl.col("tick_count").sum(),
            ((pl.col("spread_mean") * ticks).sum() / ticks.sum()).alias("spread_mean"),
            pl.col("spread_max").max(),
            pl.col("realized_variance").sum(),
        )
        .with_columns(
            pl.col("_w").dt.epoch("ns").alias("ts_event"),
            pl.col("_w").dt.offset_by(every).dt.epoch("ns").alias("ts_close"),
        )
        .drop("_w")
    )
    return conform(frame, BARS)
