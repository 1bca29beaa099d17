"""Dukascopy ticks -> QUOTES: the JForex CSV export and the raw hourly ``.bi5`` datafeed files.

JForex CSV (``fmt="dukascopy"``, gzip allowed): header ``Gmt time,Ask,Bid,AskVolume,BidVolume``
and rows ``04.02.2019 00:00:00.994,1.14545,1.14543,1,2.06`` (GMT). A ``Local time`` export whose
stamps end in ``GMT+0100`` is also read, converting each row by its own offset.

Raw datafeed (``fmt="dukascopy-bi5"``): ``<SYMBOL>/YYYY/MM/DD/HHh_ticks.bi5`` with a **0-based
month** (``2019/01/04`` is 2019-02-04), an LZMA "alone" stream of 20-byte big-endian records
``>IIIff``: ms from the start of the hour, ask and bid in price increments (``×1e-5`` for a
5-decimal pair, ``×1e-3`` for JPY pairs: the spec's ``price_increment``), ask and bid volume in
millions. Time is UTC. A 0-byte ``.bi5`` is how Dukascopy serves an hour without ticks: it reads
as an empty result, not an error.

Volumes (millions in both layouts) are converted to base-currency units. Float32 volumes are
taken at their shortest decimal rendering (``2.06``, not ``2.0599999``) so that the CSV export
and the raw file agree exactly.
"""

from __future__ import annotations

import lzma
import re
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.delimited import parse_delimited, require_some_rows, split_invalid
from pipelines.readers.result import ReadResult, build_result
from pipelines.readers.sources import check_fx_path, read_bytes
from pipelines.readers.timestamps import NS_PER_HOUR, NS_PER_MS

VOLUME_UNIT = 1_000_000.0  # Dukascopy volumes are in millions of base units
_TIME_FORMAT = "%d.%m.%Y %H:%M:%S%.f"
_BI5_PATH = re.compile(
    r"(?P<symbol>[A-Za-z0-9]+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/"
    r"(?P<hour>\d{2})h_ticks\.bi5$"
)
_RECORD = np.dtype(
    [("ms", ">u4"), ("ask", ">u4"), ("bid", ">u4"), ("ask_v", ">f4"), ("bid_v", ">f4")]
)


def read_dukascopy_csv(path: str | Path, *, spec: InstrumentSpec) -> ReadResult:
    """Read a Dukascopy JForex tick CSV export (plain or ``.gz``) into QUOTES."""
    check_fx_path(path, spec)
    data = read_bytes(path)
    header = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    fields = [field.strip().lower() for field in header.split(",")]
    time_field = fields[0] if fields else ""
    wanted = {"ask", "bid", "askvolume", "bidvolume"}
    if time_field not in {"gmt time", "local time"} or set(fields[1:]) != wanted:
        message = (
            f"not a Dukascopy JForex tick CSV: header {header[:80]!r} "
            "(expected 'Gmt time,Ask,Bid,AskVolume,BidVolume')"
        )
        raise PipelineError(message, path=path, line=1)
    names = {
        "gmt time": "time",
        "local time": "time",
        "ask": "ask_price",
        "bid": "bid_price",
        "askvolume": "ask_size",
        "bidvolume": "bid_size",
    }
    columns = {names[f]: (pl.String if f.endswith("time") else pl.Float64) for f in fields}
    parsed = parse_delimited(
        data, columns=columns, required=("time", "ask_price", "bid_price"), header_lines=1
    )
    require_some_rows(parsed, str(path), fmt="Dukascopy CSV")
    if time_field == "gmt time":
        stamp = pl.col("time").str.to_datetime(_TIME_FORMAT, time_unit="ns", strict=False)
    else:
        stamp = (
            pl.col("time")
            .str.replace(r" GMT([+-]\d{4})$", " $1")
            .str.to_datetime(f"{_TIME_FORMAT} %z", time_unit="ns", strict=False)
            .dt.convert_time_zone("UTC")
        )
    frame = parsed.frame.with_columns(
        stamp.dt.epoch("ns").alias("ts_event"),
        pl.col("ask_size") * VOLUME_UNIT,
        pl.col("bid_size") * VOLUME_UNIT,
    )
    frame, rejects = split_invalid(parsed, frame, data=data, invalid=pl.col("ts_event").is_null())
    return build_result(
        "quotes",
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rejects=rejects,
        rows_in=parsed.rows_in,
    )


def bi5_hour_ns(path: str | Path) -> int:
    """Return the UTC start of the hour a ``.../SYMBOL/YYYY/MM0/DD/HHh_ticks.bi5`` file covers."""
    match = _BI5_PATH.search(Path(path).as_posix())
    if match is None:
        message = "not a Dukascopy tick path (expected SYMBOL/YYYY/MM/DD/HHh_ticks.bi5)"
        raise PipelineError(message, path=path)
    year, month0, day, hour = (int(match[k]) for k in ("year", "month", "day", "hour"))
    message = f"no such hour in the path (months are 0-based): {match.group(0)}"
    if month0 > 11 or hour > 23:
        raise PipelineError(message, path=path)
    try:
        start = np.datetime64(f"{year:04d}-{month0 + 1:02d}-{day:02d}T{hour:02d}", "ns")
    except ValueError as err:
        raise PipelineError(message, path=path) from err
    return int(start.astype(np.int64))


def read_bi5_records(path: str | Path, dtype: np.dtype) -> np.ndarray:
    """Decompress a ``.bi5`` LZMA-alone file into records of ``dtype`` (empty for 0 bytes)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError("file not found", path=path)
    raw = path.read_bytes()
    if not raw:
        return np.zeros(0, dtype=dtype)
    try:
        data = lzma.decompress(raw, format=lzma.FORMAT_ALONE)
    except (lzma.LZMAError, EOFError) as err:
        raise PipelineError(f"truncated or corrupt bi5 (LZMA: {err})", path=path) from err
    if len(data) % dtype.itemsize:
        size = dtype.itemsize
        message = f"corrupt bi5: {len(data)} bytes is not a whole number of {size}-byte records"
        raise PipelineError(message, path=path)
    return np.frombuffer(data, dtype=dtype)


def price_scale(spec: InstrumentSpec) -> float:
    """Return the divisor that turns Dukascopy integer prices into prices (1e5 for EURUSD)."""
    return float(round(1.0 / spec.price_increment))


def shortest_float32(values: np.ndarray) -> pl.Series:
    """Return float32 ``values`` as Float64 at their shortest decimal rendering (2.06)."""
    return pl.Series(values.astype(np.float32)).cast(pl.String).cast(pl.Float64)


def read_dukascopy_bi5(path: str | Path, *, spec: InstrumentSpec) -> ReadResult:
    """Read one raw Dukascopy ``HHh_ticks.bi5`` hour into QUOTES."""
    match = _BI5_PATH.search(Path(path).as_posix())
    if match is not None and match["symbol"].upper() != spec.instrument_id.upper():
        named = match["symbol"]
        message = f"wrong instrument: the path names {named} but the spec is {spec.instrument_id}"
        raise PipelineError(message, path=path)
    hour = bi5_hour_ns(path)
    records = read_bi5_records(path, _RECORD)
    scale = price_scale(spec)
    bad_ms = records["ms"] >= NS_PER_HOUR // NS_PER_MS
    if bad_ms.any():
        line = int(np.flatnonzero(bad_ms)[0]) + 1
        message = f"corrupt bi5: record {line} is {int(records['ms'][line - 1])} ms into the hour"
        raise PipelineError(message, path=path, line=line)
    frame = pl.DataFrame(
        {
            "ts_event": hour + records["ms"].astype(np.int64) * NS_PER_MS,
            "bid_price": records["bid"].astype(np.float64) / scale,
            "ask_price": records["ask"].astype(np.float64) / scale,
            "bid_size": shortest_float32(records["bid_v"]) * VOLUME_UNIT,
            "ask_size": shortest_float32(records["ask_v"]) * VOLUME_UNIT,
            "source_line": np.arange(1, len(records) + 1, dtype=np.int64),
        }
    )
    return build_result(
        "quotes",
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=len(records),
    )
