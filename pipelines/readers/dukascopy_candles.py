"""Dukascopy candle files -> BARS (``fmt="dukascopy-candles"``).

Paths (months 0-based, as for ticks):

- ``SYMBOL/YYYY/MM/DD/{BID,ASK}_candles_min_1.bi5``: one day of 1-minute candles;
- ``SYMBOL/YYYY/MM/{BID,ASK}_candles_hour_1.bi5``: one month of hourly candles;
- ``SYMBOL/YYYY/{BID,ASK}_candles_day_1.bi5``: one year of daily candles (00:00-24:00 UTC).

Each is an LZMA-alone stream of 24-byte big-endian records ``>IIIIIf``: seconds from the
period start, open, **close, low, high** (in that order, integers in price increments) and
volume (millions, float32). Times are UTC. The side is named by the file (``BID_``/``ASK_``)
and fills ``bid_*`` or ``ask_*``; mid OHLC is that one side. Flat zero-volume candles (hours or
days without ticks, e.g. weekends) are kept as Dukascopy ships them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.dukascopy import VOLUME_UNIT, price_scale, read_bi5_records, shortest_float32
from pipelines.readers.ohlc import finish_bars
from pipelines.readers.result import ReadResult, build_result
from pipelines.readers.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, NS_PER_S

_RECORD = np.dtype(
    [
        ("seconds", ">u4"),
        ("open", ">u4"),
        ("close", ">u4"),
        ("low", ">u4"),
        ("high", ">u4"),
        ("volume", ">f4"),
    ]
)
_PATH = re.compile(
    r"(?P<symbol>[A-Za-z0-9]+)/(?P<year>\d{4})(?:/(?P<month>\d{2}))?(?:/(?P<day>\d{2}))?/"
    r"(?P<side>BID|ASK)_candles_(?P<period>min|hour|day)_1\.bi5$"
)
_DURATION = {"min": NS_PER_MINUTE, "hour": NS_PER_HOUR, "day": NS_PER_DAY}
_NEEDS = {"min": ("month", "day"), "hour": ("month",), "day": ()}


def read_dukascopy_candles(path: str | Path, *, spec: InstrumentSpec) -> ReadResult:
    """Read one Dukascopy ``{BID,ASK}_candles_{min,hour,day}_1.bi5`` file into BARS."""
    match = _PATH.search(Path(path).as_posix())
    if match is None:
        message = (
            "not a Dukascopy candle path (expected SYMBOL/YYYY[/MM[/DD]]/"
            "{BID,ASK}_candles_{min,hour,day}_1.bi5)"
        )
        raise PipelineError(message, path=path)
    if match["symbol"].upper() != spec.instrument_id.upper():
        named = match["symbol"]
        message = f"wrong instrument: the path names {named} but the spec is {spec.instrument_id}"
        raise PipelineError(message, path=path)
    period = match["period"]
    present = tuple(k for k in ("month", "day") if match[k] is not None)
    if present != _NEEDS[period]:
        message = (
            f"a {period} candle file must sit in a {'/'.join(('YYYY', *_NEEDS[period]))} folder"
        )
        raise PipelineError(message, path=path)
    start = _period_start(match, path)
    records = read_bi5_records(path, _RECORD)
    side = match["side"].lower()
    scale = price_scale(spec)
    frame = pl.DataFrame(
        {
            "ts_event": start + records["seconds"].astype(np.int64) * NS_PER_S,
            **{
                f"{side}_{field}": records[field].astype(np.float64) / scale
                for field in ("open", "high", "low", "close")
            },
            "volume": shortest_float32(records["volume"]) * VOLUME_UNIT,
            "source_line": np.arange(1, len(records) + 1, dtype=np.int64),
        }
    )
    return build_result(
        "bars",
        finish_bars(frame, duration_ns=_DURATION[period]),
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=len(records),
    )


def _period_start(match: re.Match, path: str | Path) -> int:
    year = int(match["year"])
    month0 = int(match["month"]) if match["month"] is not None else 0
    day = int(match["day"]) if match["day"] is not None else 1
    message = f"no such date in the path (months are 0-based): {match.group(0)}"
    if month0 > 11:
        raise PipelineError(message, path=path)
    try:
        start = np.datetime64(f"{year:04d}-{month0 + 1:02d}-{day:02d}", "ns")
    except ValueError as err:
        raise PipelineError(message, path=path) from err
    return int(start.astype(np.int64))
