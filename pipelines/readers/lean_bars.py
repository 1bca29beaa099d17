"""QuantConnect LEAN bar zips -> BARS (``fmt="lean-bars"``).

Layouts (``<market>`` is ``forex/<vendor>`` or ``future/<exchange>``):

- ``<market>/minute/<symbol>/YYYYMMDD_{quote,trade}.zip`` (also ``second``): members
  ``YYYYMMDD_<symbol>_minute_<kind>[_YYYYMM].csv``, rows start with milliseconds since midnight;
- ``<market>/{hour,daily}/<symbol>.zip`` (FX) or ``<symbol>_{quote,trade}.zip`` (futures):
  members ``<symbol>.csv`` or ``<symbol>_<kind>_YYYYMM.csv``, rows start with ``YYYYMMDD HH:mm``.

Quote bars are ``time,bidO,bidH,bidL,bidC,lastBidSize,askO,askH,askL,askC,lastAskSize`` (the
sizes are last sizes, not volume, so ``volume`` stays null); trade bars are
``time,open,high,low,close,volume``. Clocks are as for LEAN ticks (FXCM UTC-05 fixed, OANDA UTC,
futures UTC; ``tz=`` overrides). The bar length comes from the resolution folder: 1 s, 1 min,
1 h, 1 day. ``ts_event`` is the bar open; a LEAN **daily** bar stamped ``YYYYMMDD 00:00`` covers
that calendar day in the vendor's clock, ``[00:00, 24:00)`` local: for FXCM that is
05:00 UTC to 05:00 UTC the next day, for OANDA and CME futures 00:00 to 24:00 UTC.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.delimited import parse_delimited, require_some_rows, split_invalid
from pipelines.readers.lean import (
    Member,
    choose_contracts,
    day_ns,
    lean_members,
    lean_time_zone,
)
from pipelines.readers.ohlc import DURATIONS_NS, finish_bars
from pipelines.readers.result import ReadResult, build_result, time_reject_reason
from pipelines.readers.sources import check_fx_path, symbol_of, zip_members
from pipelines.readers.timestamps import NS_PER_DAY, NS_PER_MS, to_utc_ns

RESOLUTIONS = ("second", "minute", "hour", "daily")
_LONG_MEMBER = re.compile(
    r"^(?P<symbol>[a-z0-9]+?)(?:_(?P<kind>quote|trade|openinterest))?(?:_(?P<contract>\d{6}))?"
    r"\.csv$",
    re.IGNORECASE,
)
_SIDES = ("open", "high", "low", "close")
QUOTE_COLUMNS = {
    "time": pl.String,
    **{f"bid_{f}": pl.Float64 for f in _SIDES},
    "last_bid_size": pl.Float64,
    **{f"ask_{f}": pl.Float64 for f in _SIDES},
    "last_ask_size": pl.Float64,
}
TRADE_COLUMNS = {"time": pl.String, **{f: pl.Float64 for f in _SIDES}, "volume": pl.Float64}


def read_lean_bars(
    path: str | Path,
    *,
    spec: InstrumentSpec,
    tz: str | None = None,
    contract: str | None = None,
) -> ReadResult:
    """Read a LEAN minute/second/hour/daily bar zip into BARS (see the module doc)."""
    path = Path(path)
    zone = lean_time_zone(path, tz)
    parts = [part.lower() for part in path.parts]
    resolution = next((r for r in RESOLUTIONS if r in parts), None)
    if resolution is None and "tick" in parts:
        raise PipelineError("a LEAN tick file: use fmt='lean'", path=path)
    if resolution is None:
        message = "cannot tell the LEAN bar resolution: no /second/, /minute/, /hour/ or /daily/"
        raise PipelineError(message, path=path)
    if resolution in {"second", "minute"}:
        members = lean_members(path, spec)
        if {m.resolution for m in members} == {"tick"}:
            raise PipelineError("a LEAN tick file: use fmt='lean'", path=path)
    else:
        members = _long_members(path, spec)
    kinds = {m.kind for m in members}
    if kinds - {"quote", "trade"} or len(kinds) != 1:
        message = f"unsupported LEAN bar kind {sorted(kinds)} (quote or trade bars only)"
        raise PipelineError(message, path=path)
    kind = kinds.pop()
    chosen, skipped = choose_contracts(members, contract, path)
    frames, rejects, rows_in = [], [], 0
    for member in chosen:
        label = f"{path}:{member.name}"
        frame, bad, count = _read_member(
            member, kind=kind, resolution=resolution, zone=zone, label=label
        )
        frames.append(frame)
        rejects.append(bad)
        rows_in += count
    frame = finish_bars(pl.concat(frames), duration_ns=DURATIONS_NS[resolution])
    return build_result(
        "bars",
        frame,
        instrument_id=spec.instrument_id,
        source_file=pl.col("source_file"),
        rejects=pl.concat(rejects, how="diagonal_relaxed"),
        rows_in=rows_in,
        skipped=skipped,
    )


def _long_members(path: Path, spec: InstrumentSpec) -> list[Member]:
    check_fx_path(path, spec)
    members = []
    for name, data in zip_members(path):
        match = _LONG_MEMBER.match(Path(name).name)
        if match is None:
            message = (
                f"not a LEAN hour/daily member name: {name!r} (expected <symbol>[_<kind>].csv)"
            )
            raise PipelineError(message, path=path)
        if match["symbol"].lower() != symbol_of(spec):
            message = (
                f"wrong instrument: member {name} is {match['symbol'].upper()} "
                f"but the spec is {spec.instrument_id}"
            )
            raise PipelineError(message, path=path)
        kind = (match["kind"] or ("quote" if spec.is_fx else "trade")).lower()
        members.append(
            Member(
                name=name,
                data=data,
                date="",
                symbol=match["symbol"],
                resolution=None,
                kind=kind,
                contract=match["contract"],
            )
        )
    return members


def _read_member(member: Member, *, kind: str, resolution: str, zone: str, label: str):
    columns = QUOTE_COLUMNS if kind == "quote" else TRADE_COLUMNS
    # quote bars may be one-sided (an empty ask or bid half): only the time is required here
    required = ["time"] if kind == "quote" else list(columns)
    parsed = parse_delimited(member.data, columns=columns, required=required)
    require_some_rows(parsed, label, fmt=f"LEAN {resolution} {kind} bar")
    if resolution in {"second", "minute"}:
        day = day_ns(member.date, label)
        ms = pl.col("time").cast(pl.Int64, strict=False)
        in_day = (ms >= 0) & (ms < NS_PER_DAY // NS_PER_MS)
        local = pl.when(in_day).then(day + ms * NS_PER_MS)
    else:
        local = pl.col("time").str.to_datetime("%Y%m%d %H:%M", time_unit="ns", strict=False)
        local = local.dt.epoch("ns")
    frame = (
        parsed.frame.with_columns(local.alias("_local"))
        .with_columns(
            to_utc_ns(pl.col("_local"), zone).alias("ts_event"),
            pl.col("_local").is_null().alias("_unparsed"),
        )
        .drop("last_bid_size", "last_ask_size", strict=False)
    )
    invalid = pl.col("ts_event").is_null()
    if kind == "quote":
        bid = [pl.col(f"bid_{f}").is_not_null() for f in _SIDES]
        ask = [pl.col(f"ask_{f}").is_not_null() for f in _SIDES]
        whole_bid, any_bid = pl.all_horizontal(bid), pl.any_horizontal(bid)
        whole_ask, any_ask = pl.all_horizontal(ask), pl.any_horizontal(ask)
        sides_ok = (whole_bid | whole_ask) & (whole_bid | ~any_bid) & (whole_ask | ~any_ask)
        invalid = invalid | ~sides_ok
    frame, bad = split_invalid(
        parsed,
        frame,
        data=member.data,
        invalid=invalid,
        reason=pl.when(pl.col("ts_event").is_null())
        .then(time_reject_reason())
        .otherwise(pl.lit("malformed_line")),
    )
    return (
        frame.with_columns(pl.lit(label).alias("source_file")),
        bad.with_columns(pl.lit(label).alias("source_file")),
        parsed.rows_in,
    )
