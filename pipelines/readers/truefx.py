"""TrueFX tick CSV -> QUOTES.

Two layouts, told apart by the first line:

- raw TrueFX download: no header, ``EUR/USD,20130101 22:00:00.295,1.31210,1.31240`` (UTC); the
  pair column must name the spec's instrument;
- reformatted (e.g. nautilus_trader's fixtures): header ``timestamp,bid,ask`` and ISO stamps with
  an offset, ``2013-01-01 22:00:00.295000+00:00``; a stamp without offset is read in ``tz``
  (default UTC).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.delimited import parse_delimited, require_some_rows, split_invalid
from pipelines.readers.result import ReadResult, build_result, time_reject_reason
from pipelines.readers.sources import check_fx_path, read_bytes
from pipelines.readers.timestamps import check_time_zone, text_to_utc_ns

RAW_COLUMNS = {
    "pair": pl.String,
    "time": pl.String,
    "bid_price": pl.Float64,
    "ask_price": pl.Float64,
}
ISO_COLUMNS = {"time": pl.String, "bid_price": pl.Float64, "ask_price": pl.Float64}


def read_truefx(path: str | Path, *, spec: InstrumentSpec, tz: str | None = None) -> ReadResult:
    """Read a raw or reformatted TrueFX tick CSV into QUOTES."""
    try:
        zone = check_time_zone(tz or "UTC")
    except ValueError as err:
        raise PipelineError(str(err), path=path) from err
    check_fx_path(path, spec)
    data = read_bytes(path)
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    header = [field.strip().lower() for field in first.split(",")]
    if header[:1] == ["timestamp"]:
        if header != ["timestamp", "bid", "ask"]:
            message = f"not a TrueFX CSV: header {first[:80]!r} (expected 'timestamp,bid,ask')"
            raise PipelineError(message, path=path, line=1)
        parsed = parse_delimited(data, columns=ISO_COLUMNS, header_lines=1)
        require_some_rows(parsed, str(path), fmt="TrueFX CSV")
        ts_event, unparsed = text_to_utc_ns(pl.col("time"), zone)
        frame = parsed.frame.with_columns(ts_event.alias("ts_event"), unparsed.alias("_unparsed"))
    else:
        parsed = parse_delimited(data, columns=RAW_COLUMNS)
        require_some_rows(parsed, str(path), fmt="TrueFX CSV")
        pairs = parsed.frame["pair"].str.replace_all("/", "").str.to_uppercase().unique()
        wrong = sorted(p for p in pairs if p != spec.instrument_id.upper())
        if wrong:
            held = ", ".join(wrong)
            message = f"wrong instrument: the file holds {held}, the spec is {spec.instrument_id}"
            raise PipelineError(message, path=path)
        ts_event, unparsed = text_to_utc_ns(pl.col("time"), zone, "%Y%m%d %H:%M:%S%.f")
        frame = parsed.frame.with_columns(ts_event.alias("ts_event"), unparsed.alias("_unparsed"))
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
