"""HistData.com ASCII files -> QUOTES (tick) or BARS (M1).

Tick (``fmt="histdata"``): no header, ``YYYYMMDD HHMMSSfff,bid,ask,volume`` such as
``20200101 170000065,1.121200,1.121720,0``. M1 bars (``fmt="histdata-bars"``): no header,
``YYYYMMDD HHMMSS;open;high;low;close;volume`` (bid prices). HistData stamps are EST **without
daylight saving**, a fixed UTC-05 all year: 17:00:00.065 on 2020-01-01 is 22:00:00.065 UTC, and
17:00 in July is 22:00 UTC too. ``tz=`` overrides. The volume column is always 0 in HistData
tick files, so sizes are left null; bar volume is kept as given.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.delimited import parse_delimited, require_some_rows, split_invalid
from pipelines.readers.ohlc import finish_bars
from pipelines.readers.result import (
    ReadResult,
    build_result,
    time_reject_reason,
)
from pipelines.readers.sources import check_fx_path, read_bytes
from pipelines.readers.timestamps import NS_PER_MINUTE, check_time_zone, to_utc_ns

HISTDATA_TIME_ZONE = "UTC-05"
TICK_COLUMNS = {
    "time": pl.String,
    "bid_price": pl.Float64,
    "ask_price": pl.Float64,
    "volume": pl.Float64,
}
BAR_COLUMNS = {
    "time": pl.String,
    "bid_open": pl.Float64,
    "bid_high": pl.Float64,
    "bid_low": pl.Float64,
    "bid_close": pl.Float64,
    "volume": pl.Float64,
}


def _zone(path, tz: str | None) -> str:
    try:
        return check_time_zone(tz or HISTDATA_TIME_ZONE)
    except ValueError as err:
        raise PipelineError(str(err), path=path) from err


def local_to_utc(frame: pl.DataFrame, fmt: str, zone: str) -> pl.DataFrame:
    """Parse ``time`` text with ``fmt`` and convert it from ``zone`` to ``ts_event`` (UTC ns).

    Adds ``_unparsed`` (the text did not parse) so callers can tell malformed stamps from
    local times that do not exist (DST gap).
    """
    local = pl.col("time").str.to_datetime(fmt, time_unit="ns", strict=False).dt.epoch("ns")
    return frame.with_columns(local.alias("_local")).with_columns(
        to_utc_ns(pl.col("_local"), zone).alias("ts_event"),
        pl.col("_local").is_null().alias("_unparsed"),
    )


def read_histdata(path: str | Path, *, spec: InstrumentSpec, tz: str | None = None) -> ReadResult:
    """Read a HistData ASCII tick file into QUOTES."""
    zone = _zone(path, tz)
    check_fx_path(path, spec)
    data = read_bytes(path)
    parsed = parse_delimited(
        data, columns=TICK_COLUMNS, required=("time", "bid_price", "ask_price")
    )
    require_some_rows(parsed, str(path), fmt="HistData ASCII tick")
    frame = local_to_utc(parsed.frame, "%Y%m%d %H%M%S%3f", zone)
    frame, rejects = split_invalid(
        parsed, frame, data=data, invalid=pl.col("ts_event").is_null(), reason=time_reject_reason()
    )
    return build_result(
        "quotes",
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rejects=rejects,
        rows_in=parsed.rows_in,
    )


def read_histdata_bars(
    path: str | Path, *, spec: InstrumentSpec, tz: str | None = None
) -> ReadResult:
    """Read a HistData M1 ASCII bar file (bid OHLC) into BARS."""
    zone = _zone(path, tz)
    check_fx_path(path, spec)
    data = read_bytes(path)
    parsed = parse_delimited(data, columns=BAR_COLUMNS, separator=";")
    require_some_rows(parsed, str(path), fmt="HistData M1 ASCII")
    frame = local_to_utc(parsed.frame, "%Y%m%d %H%M%S", zone)
    frame, rejects = split_invalid(
        parsed, frame, data=data, invalid=pl.col("ts_event").is_null(), reason=time_reject_reason()
    )
    return build_result(
        "bars",
        finish_bars(frame, duration_ns=NS_PER_MINUTE),
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rejects=rejects,
        rows_in=parsed.rows_in,
    )
