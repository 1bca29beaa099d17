"""Shared last step of every bar reader: bar end and mid OHLC from the sides a vendor ships.

``ts_event`` is the bar open (UTC ns, inclusive) and ``ts_close = ts_event + duration`` (end,
exclusive). Mid OHLC is ``(bid + ask) / 2`` field by field where both sides exist (so the mid
high is the mean of the two highs, an upper bound of the true mid high that keeps
``high >= max(open, close)``), else the one side present, else trade prices.
"""

from __future__ import annotations

import polars as pl

from pipelines.readers.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, NS_PER_S

FIELDS = ("open", "high", "low", "close")
DURATIONS_NS = {
    "second": NS_PER_S,
    "minute": NS_PER_MINUTE,
    "hour": NS_PER_HOUR,
    "daily": NS_PER_DAY,
    "day": NS_PER_DAY,
    "1s": NS_PER_S,
    "1m": NS_PER_MINUTE,
    "1h": NS_PER_HOUR,
    "1d": NS_PER_DAY,
}


def finish_bars(frame: pl.DataFrame, *, duration_ns: int) -> pl.DataFrame:
    """Add ``ts_close`` and mid ``open/high/low/close`` to a frame of side OHLC columns.

    ``frame`` holds ``ts_event`` and any of ``bid_<f>``, ``ask_<f>`` or ``<f>`` (trade) for
    ``f`` in open/high/low/close.
    """
    columns = set(frame.columns)
    has_bid = all(f"bid_{f}" in columns for f in FIELDS)
    has_ask = all(f"ask_{f}" in columns for f in FIELDS)
    mids = []
    for field in FIELDS:
        candidates = []
        if has_bid and has_ask:
            candidates.append((pl.col(f"bid_{field}") + pl.col(f"ask_{field}")) / 2)
        if has_bid:
            candidates.append(pl.col(f"bid_{field}"))
        if has_ask:
            candidates.append(pl.col(f"ask_{field}"))
        if field in columns:
            candidates.append(pl.col(field))
        mid = pl.coalesce(candidates) if len(candidates) > 1 else candidates[0]
        mids.append(mid.alias(field))
    return frame.with_columns((pl.col("ts_event") + duration_ns).alias("ts_close"), *mids)
