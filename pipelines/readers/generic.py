"""Generic CSV / Parquet with a column mapping -> QUOTES, TRADES (``fmt="csv"``) or BARS
(``fmt="csv-bars"``).

``column_map`` maps canonical names to the file's columns, plus a few options::

    {
        "ts_event": "timestamp",        # required; for bars the bar OPEN
        "bid_price": "bid", "ask_price": "ask", "bid_size": "bv", "ask_size": "av",  # quotes
        "price": "px", "size": "qty", "aggressor_side": "side",                      # trades
        "open": "o", "high": "h", "low": "l", "close": "c",   # bars (or bid_open..ask_close)
        "volume": "v", "tick_count": "n",                     # bars, optional
        "timestamp_format": "%Y-%m-%d %H:%M:%S",  # chrono format, "epoch_s|ms|us|ns", or None (ISO)
        "tz": "America/New_York",       # clock of naive stamps (default "UTC"); read(tz=) wins
        "separator": ",",
        "has_header": True,             # False: columns are named by "columns": [...]
        "columns": ["t", "bid", "ask"],
        "side": "bid",                  # csv-bars: open/high/low/close are this side's prices
        "bar": "1m",                    # csv-bars: bar length (s/m/h/d); default: the most
                                        # common step between consecutive bars
    }

The table of ``fmt="csv"`` is quotes when bid/ask are mapped and trades when price is mapped.
For ``csv-bars`` without a map, common headers are recognised (``timestamp``/``timestamp_utc``/
``time``/``date``, ``open``, ``high``, ``low``, ``close``, ``volume``), which reads the 6E minute
bars and the FXCM m1 files as they are. Stamps with an offset (``+00:00``) are exact; naive ones
are read in ``tz``, DST-aware for IANA zones (ambiguous fall-back times resolved by file order,
non-existent spring-forward times rejected as ``nonexistent_local_time``). Parquet rows are
numbered from 1 in ``source_line``; a rejected Parquet row's ``raw`` is its JSON rendering.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.delimited import (
    Parsed,
    parse_delimited,
    reject_frame,
    require_some_rows,
    split_invalid,
)
from pipelines.readers.ohlc import FIELDS, finish_bars
from pipelines.readers.result import ReadResult, build_result, time_reject_reason
from pipelines.readers.sources import check_fx_path, read_bytes
from pipelines.readers.timestamps import check_time_zone, text_to_utc_ns

QUOTE_FIELDS = ("bid_price", "ask_price", "bid_size", "ask_size")
TRADE_FIELDS = ("price", "size", "aggressor_side")
BAR_FIELDS = (
    *FIELDS,
    *(f"{side}_{f}" for side in ("bid", "ask") for f in FIELDS),
    "volume",
    "tick_count",
)
OPTIONS = ("timestamp_format", "tz", "separator", "has_header", "columns", "side", "bar")
EPOCH_UNITS = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000, "epoch_ns": 1}
_BAR = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_NS = {
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_TIME_HEADERS = ("ts_event", "timestamp", "timestamp_utc", "time", "datetime", "date")


def read_generic(
    path: str | Path,
    *,
    spec: InstrumentSpec,
    column_map: dict[str, Any] | None,
    bars: bool,
    tz: str | None = None,
) -> ReadResult:
    """Read a CSV (plain or gz) or Parquet file through ``column_map`` (see the module doc)."""
    path = Path(path)
    if spec.is_fx:
        check_fx_path(path, spec)
    is_parquet = path.suffix.lower() in {".parquet", ".pq"}
    options, mapping = _split_map(column_map, path, bars=bars)
    zone = tz or options.get("tz") or "UTC"
    try:
        check_time_zone(zone)
    except ValueError as err:
        raise PipelineError(str(err), path=path) from err
    if is_parquet:
        header = _parquet_header(path)
    else:
        data = read_bytes(path)
        header = _csv_header(data, options, path)
    if not mapping:
        mapping = _guess_bar_map(header, path) if bars else {}
    table = "bars" if bars else _table_of(mapping, path)
    missing = [source for source in mapping.values() if source not in header]
    if missing:
        message = f"column {missing[0]!r} of the column_map is not in the file (has {header})"
        raise PipelineError(message, path=path)
    epoch = EPOCH_UNITS.get(options.get("timestamp_format") or "")
    dtypes = {name: pl.String for name in header}
    for target, source in mapping.items():
        if target == "ts_event":
            dtypes[source] = pl.Int64 if epoch else pl.String
        elif target == "aggressor_side":
            dtypes[source] = pl.String
        else:
            dtypes[source] = pl.Int64 if target == "tick_count" else pl.Float64
    required = [mapping["ts_event"], *_required_prices(mapping, table)]
    if is_parquet:
        (parsed, raw_rows), data = _parse_parquet(path, dtypes, required), None
    else:
        parsed = parse_delimited(
            data,
            columns=dtypes,
            required=required,
            header_lines=1 if options.get("has_header", True) else 0,
            separator=options.get("separator", ","),
            quote_char='"',
        )
    require_some_rows(parsed, str(path), fmt="column-mapped CSV")
    frame = parsed.frame.select(
        "source_line", *(pl.col(source).alias(target) for target, source in mapping.items())
    )
    if epoch:
        frame = frame.with_columns(
            (pl.col("ts_event") * epoch).alias("ts_event"), pl.lit(False).alias("_unparsed")
        )
    else:
        ts_event, unparsed = text_to_utc_ns(
            pl.col("ts_event"), zone, options.get("timestamp_format")
        )
        frame = frame.with_columns(ts_event.alias("ts_event"), unparsed.alias("_unparsed"))
    invalid = pl.col("ts_event").is_null()
    if data is None:
        frame, rejects = _split_parquet(parsed, frame, invalid, raw_rows)
    else:
        frame, rejects = split_invalid(
            parsed, frame, data=data, invalid=invalid, reason=time_reject_reason()
        )
    if table == "trades":
        frame = frame.with_columns(_aggressor(frame))
    if table == "bars":
        side = options.get("side")
        if side is not None:
            frame = frame.rename({f: f"{side}_{f}" for f in FIELDS if f in frame.columns})
        frame = finish_bars(frame, duration_ns=_bar_ns(options.get("bar"), frame, path))
    return build_result(
        table,
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rejects=rejects,
        rows_in=parsed.rows_in,
    )


def _split_map(column_map, path, *, bars: bool) -> tuple[dict[str, Any], dict[str, str]]:
    column_map = dict(column_map or {})
    targets = ("ts_event", *(BAR_FIELDS if bars else (*QUOTE_FIELDS, *TRADE_FIELDS)))
    unknown = sorted(set(column_map) - set(targets) - set(OPTIONS))
    if unknown:
        message = (
            f"unknown column_map key {unknown[0]!r} (known: {', '.join((*targets, *OPTIONS))})"
        )
        raise PipelineError(message, path=path)
    options = {key: column_map.pop(key) for key in OPTIONS if key in column_map}
    if options.get("side") not in (None, "bid", "ask"):
        raise PipelineError(
            f"column_map side must be 'bid' or 'ask', got {options['side']!r}", path=path
        )
    fmt = options.get("timestamp_format")
    if fmt is not None and not isinstance(fmt, str):
        raise PipelineError("column_map timestamp_format must be a string", path=path)
    if fmt is not None and fmt.startswith("epoch") and fmt not in EPOCH_UNITS:
        known = ", ".join(EPOCH_UNITS)
        raise PipelineError(
            f"column_map timestamp_format {fmt!r}: epoch units are {known}", path=path
        )
    if column_map and "ts_event" not in column_map:
        raise PipelineError("column_map needs 'ts_event' (the timestamp column)", path=path)
    return options, {key: str(value) for key, value in column_map.items()}


def _csv_header(data: bytes, options: dict[str, Any], path: Path) -> list[str]:
    if not options.get("has_header", True):
        columns = options.get("columns")
        if not columns:
            raise PipelineError("column_map has_header=False needs 'columns'", path=path)
        return list(columns)
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    separator = options.get("separator", ",")
    return [name.strip().strip('"') for name in first.split(separator)]


def _parquet_header(path: Path) -> list[str]:
    try:
        return list(pl.read_parquet_schema(path))
    except (pl.exceptions.ComputeError, OSError) as err:
        raise PipelineError(f"not a readable Parquet file ({err})", path=path) from err


def _guess_bar_map(header: list[str], path: Path) -> dict[str, str]:
    lower = {name.lower(): name for name in header}
    time = next((lower[h] for h in _TIME_HEADERS if h in lower), None)
    if time is None or not all(f in lower for f in FIELDS):
        message = f"cannot guess the bar columns from header {header}; pass a column_map"
        raise PipelineError(message, path=path)
    mapping = {"ts_event": time, **{f: lower[f] for f in FIELDS}}
    if "volume" in lower:
        mapping["volume"] = lower["volume"]
    return mapping


def _table_of(mapping: dict[str, str], path: Path) -> str:
    if "bid_price" in mapping and "ask_price" in mapping:
        return "quotes"
    if "price" in mapping:
        return "trades"
    message = "column_map must map bid_price and ask_price (quotes) or price (trades)"
    raise PipelineError(message, path=path)


def _required_prices(mapping: dict[str, str], table: str) -> list[str]:
    if table == "quotes":
        return [mapping["bid_price"], mapping["ask_price"]]
    if table == "trades":
        return [mapping["price"]]
    return [mapping[f] for f in BAR_FIELDS[:12] if f in mapping]


def _parse_parquet(
    path: Path, dtypes: dict[str, pl.DataType], required: list[str]
) -> tuple[Parsed, pl.DataFrame]:
    try:
        raw = pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as err:
        raise PipelineError(f"not a readable Parquet file ({err})", path=path) from err
    raw = raw.with_row_index("source_line", offset=1).with_columns(
        pl.col("source_line").cast(pl.Int64),
        *(_datetime_as_text(name, dtype) for name, dtype in raw.schema.items()),
    )
    cast = raw.with_columns(
        pl.col(name).cast(dtype, strict=False)
        for name, dtype in dtypes.items()
        if name in raw.columns
    )
    bad = pl.any_horizontal(
        *(pl.col(name).is_null() for name in required),
        *(
            cast[name].is_null() & raw[name].is_not_null()
            for name in dtypes
            if name in raw.columns and name not in required
        ),
    )
    flagged = cast.with_columns(bad.alias("_bad"))
    rows = raw.filter(flagged["_bad"])
    rejects = reject_frame(rows["source_line"].to_list(), _render(rows), "malformed_line")
    good = flagged.filter(~pl.col("_bad")).drop("_bad")
    return Parsed(frame=good, rejects=rejects, rows_in=raw.height), raw


def _render(rows: pl.DataFrame) -> list[str]:
    """Return each Parquet row as JSON text (the ``raw`` of a rejected row)."""
    columns = pl.exclude("source_line").cast(pl.String)
    return rows.select(pl.struct(columns).struct.json_encode()).to_series().to_list()


def _datetime_as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Render a Parquet Datetime column as ISO text (with its offset when zone-aware)."""
    if not isinstance(dtype, pl.Datetime):
        return pl.col(name)
    if dtype.time_zone is None:
        return pl.col(name).dt.to_string("%Y-%m-%d %H:%M:%S%.f")
    return pl.col(name).dt.convert_time_zone("UTC").dt.to_string("%Y-%m-%d %H:%M:%S%.f+00:00")


def _split_parquet(parsed: Parsed, frame: pl.DataFrame, invalid: pl.Expr, raw: pl.DataFrame):
    flagged = frame.with_columns(invalid.fill_null(True).alias("_invalid"))
    bad = flagged.filter(pl.col("_invalid"))
    rows = raw.join(bad.select("source_line"), on="source_line", how="semi")
    rejects = pl.concat(
        [
            parsed.rejects,
            bad.select("source_line", time_reject_reason().alias("reason")).with_columns(
                pl.Series("raw", _render(rows), dtype=pl.String)
            ),
        ],
        how="diagonal_relaxed",
    )
    return flagged.filter(~pl.col("_invalid")).drop("_invalid"), rejects


def _aggressor(frame: pl.DataFrame) -> pl.Expr:
    if "aggressor_side" not in frame.columns:
        return pl.lit("N").alias("aggressor_side")
    text = pl.col("aggressor_side").str.strip_chars().str.to_uppercase()
    return (
        pl.when(text.is_in(["B", "BUY", "BUYER"]))
        .then(pl.lit("B"))
        .when(text.is_in(["S", "SELL", "SELLER"]))
        .then(pl.lit("S"))
        .otherwise(pl.lit("N"))
        .alias("aggressor_side")
    )


def _bar_ns(bar: str | None, frame: pl.DataFrame, path: Path) -> int:
    if bar is not None:
        match = _BAR.match(str(bar))
        if match is None:
            raise PipelineError(
                f"column_map bar {bar!r} is not like '1m', '5m', '1h', '1d'", path=path
            )
        return int(match[1]) * _UNIT_NS[match[2]]
    diffs = frame.select(pl.col("ts_event").sort().diff().alias("d")).filter(pl.col("d") > 0)
    if diffs.height == 0:
        message = "cannot infer the bar length from fewer than two bars; set column_map bar"
        raise PipelineError(message, path=path)
    return int(diffs["d"].mode().min())
