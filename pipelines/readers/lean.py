"""QuantConnect LEAN tick zips -> QUOTES (FX) or TRADES (futures).

Layout: ``<root>/forex/<vendor>/tick/<pair>/YYYYMMDD_quote.zip`` holding one
``YYYYMMDD_<pair>_tick_quote.csv`` with rows ``ms_since_midnight,bid,ask``; and
``<root>/future/<exchange>/tick/<root>/YYYYMMDD_trade.zip`` holding one
``YYYYMMDD_<root>_tick_trade_<YYYYMM>.csv`` per contract with rows
``ms,price,quantity,exchange,sale_condition,suspicious``.

The date comes from the file name and the clock from the vendor (LEAN market-hours database):
FXCM is fixed UTC-05 all year (no DST), OANDA is UTC, CME/COMEX futures (AlgoSeek) are UTC.
The vendor is inferred from the path (``/fxcm/``, ``/oanda/``, ``/future/``); ``tz=`` overrides.
Trades flagged ``suspicious=1`` by the vendor go to the rejects with reason
``vendor_suspicious``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.delimited import Parsed, parse_delimited, require_some_rows, split_invalid
from pipelines.readers.result import ReadResult, build_result
from pipelines.readers.sources import check_fx_path, symbol_of, zip_members
from pipelines.readers.timestamps import NS_PER_DAY, NS_PER_MS, check_time_zone, to_utc_ns

VENDOR_TIME_ZONES = {"fxcm": "UTC-05", "oanda": "UTC", "future": "UTC"}
_MEMBER = re.compile(
    r"^(?P<date>\d{8})_(?P<symbol>[a-z0-9]+)_(?P<resolution>tick|second|minute|hour|daily)_"
    r"(?P<kind>quote|trade|openinterest)(?:_(?P<contract>\d{6}))?\.csv$",
    re.IGNORECASE,
)
_ZIP = re.compile(r"^(?P<date>\d{8})_(?P<kind>quote|trade|openinterest)\.zip$", re.IGNORECASE)

QUOTE_COLUMNS = {"ms": pl.Int64, "bid_price": pl.Float64, "ask_price": pl.Float64}
TRADE_COLUMNS = {
    "ms": pl.Int64,
    "price": pl.Float64,
    "size": pl.Float64,
    "exchange": pl.String,
    "sale_condition": pl.String,
    "suspicious": pl.Int64,
}
TRADE_REQUIRED = ("ms", "price", "size", "suspicious")


@dataclass(frozen=True)
class Member:
    """One CSV inside a LEAN zip and what its name says."""

    name: str
    data: bytes
    date: str  # YYYYMMDD
    symbol: str | None
    resolution: str | None
    kind: str
    contract: str | None  # YYYYMM for futures


def lean_time_zone(path: str | Path, tz: str | None) -> str:
    """Return the data clock of a LEAN file: ``tz`` if given, else inferred from the path."""
    if tz is not None:
        try:
            return check_time_zone(tz)
        except ValueError as err:
            raise PipelineError(str(err), path=path) from err
    parts = {part.lower() for part in Path(path).parts}
    for key, zone in VENDOR_TIME_ZONES.items():
        if key in parts:
            return zone
    message = (
        "cannot infer the LEAN data time zone from the path (no /fxcm/, /oanda/ or /future/); "
        "pass tz= (e.g. 'UTC-05' for FXCM, 'UTC' for OANDA)"
    )
    raise PipelineError(message, path=path)


def lean_members(path: str | Path, spec: InstrumentSpec) -> list[Member]:
    """Open a LEAN zip, parse its member names and check they name ``spec``'s instrument."""
    path = Path(path)
    check_fx_path(path, spec)
    zip_match = _ZIP.match(path.name)
    members = []
    for name, data in zip_members(path):
        match = _MEMBER.match(Path(name).name)
        if match is None and zip_match is None:
            expected = "YYYYMMDD_<symbol>_<resolution>_<type>.csv"
            message = f"not a LEAN file name: {name!r} (expected {expected})"
            raise PipelineError(message, path=path)
        info = match.groupdict() if match else {**zip_match.groupdict(), "symbol": None}
        symbol = info.get("symbol")
        if symbol is not None and symbol.lower() != symbol_of(spec):
            message = (
                f"wrong instrument: member {name} is {symbol.upper()} "
                f"but the spec is {spec.instrument_id}"
            )
            raise PipelineError(message, path=path)
        members.append(
            Member(
                name=name,
                data=data,
                date=info["date"],
                symbol=symbol,
                resolution=(info.get("resolution") or "tick").lower(),
                kind=info["kind"].lower(),
                contract=info.get("contract"),
            )
        )
    return members


def choose_contracts(
    members: list[Member], contract: str | None, path: str | Path
) -> tuple[list[Member], int]:
    """Pick the members to read; return them and the line count of those skipped.

    ``contract=None`` picks the contract with the most bytes (the most active one), ``"all"``
    reads every member, ``"YYYYMM"`` that contract only.
    """
    if contract == "all" or (contract is None and len(members) == 1):
        return members, 0
    if contract is None:
        chosen = [max(members, key=lambda m: len(m.data))]
    else:  # a named contract must be there, also when the zip holds a single member
        chosen = [m for m in members if m.contract == contract]
        if not chosen:
            have = ", ".join(sorted(str(m.contract) for m in members if m.contract)) or "none"
            message = f"no member for contract {contract} (have {have})"
            raise PipelineError(message, path=path)
    kept = {id(m) for m in chosen}
    skipped = sum(_count(m.data) for m in members if id(m) not in kept)
    return chosen, skipped


def _count(data: bytes) -> int:
    return sum(1 for line in data.splitlines() if line.strip())


def read_lean(
    path: str | Path,
    *,
    spec: InstrumentSpec,
    tz: str | None = None,
    contract: str | None = None,
) -> ReadResult:
    """Read a LEAN tick zip into QUOTES (``*_quote``) or TRADES (``*_trade``).

    Parameters
    ----------
    path
        ``YYYYMMDD_quote.zip`` or ``YYYYMMDD_trade.zip`` from a LEAN ``tick`` folder.
    spec
        The instrument; the pair or futures root in the member names must match it.
    tz
        The data clock, overriding the vendor inferred from the path.
    contract
        For futures zips with one member per contract: ``None`` (the most active one),
        ``"all"`` or ``"YYYYMM"``.
    """
    zone = lean_time_zone(path, tz)
    members = lean_members(path, spec)
    kinds = {m.kind for m in members}
    resolutions = {m.resolution for m in members}
    if resolutions != {"tick"}:
        message = f"not a LEAN tick file (resolution {sorted(resolutions)}); use fmt='lean-bars'"
        raise PipelineError(message, path=path)
    if kinds - {"quote", "trade"} or len(kinds) != 1:
        message = f"unsupported LEAN tick kind {sorted(kinds)} (quote or trade only)"
        raise PipelineError(message, path=path)
    kind = kinds.pop()
    if kind == "quote" and spec.is_future:
        message = "LEAN futures tick quotes are not supported (only FX tick quotes)"
        raise PipelineError(message, path=path)
    chosen, skipped = choose_contracts(members, contract, path)
    frames, rejects, rows_in = [], [], 0
    for member in chosen:
        label = f"{path}:{member.name}"
        frame, bad, count = _read_member(member, kind=kind, zone=zone, label=label)
        frames.append(frame)
        rejects.append(bad)
        rows_in += count
    table = "quotes" if kind == "quote" else "trades"
    return build_result(
        table,
        pl.concat(frames),
        instrument_id=spec.instrument_id,
        source_file=pl.col("source_file"),
        rejects=pl.concat(rejects, how="diagonal_relaxed"),
        rows_in=rows_in,
        skipped=skipped,
    )


def _read_member(member: Member, *, kind: str, zone: str, label: str):
    if kind == "quote":
        parsed = parse_delimited(member.data, columns=QUOTE_COLUMNS)
    else:
        parsed = parse_delimited(member.data, columns=TRADE_COLUMNS, required=TRADE_REQUIRED)
    require_some_rows(parsed, label, fmt=f"LEAN tick {kind}")
    day = pl.lit(day_ns(member.date, label), dtype=pl.Int64)
    frame = parsed.frame.with_columns(
        to_utc_ns(day + pl.col("ms") * NS_PER_MS, zone).alias("ts_event")
    )
    bad_ms = (pl.col("ms") < 0) | (pl.col("ms") >= NS_PER_DAY // NS_PER_MS)
    frame, bad = split_invalid(parsed, frame, data=member.data, invalid=bad_ms)
    if kind == "trade":
        parsed = Parsed(frame=frame, rejects=bad, rows_in=parsed.rows_in)
        frame, bad = split_invalid(
            parsed,
            frame,
            data=member.data,
            invalid=pl.col("suspicious") != 0,
            reason="vendor_suspicious",
        )
        frame = frame.with_columns(pl.lit("N").alias("aggressor_side"))
    return (
        frame.with_columns(pl.lit(label).alias("source_file")),
        bad.with_columns(pl.lit(label).alias("source_file")),
        parsed.rows_in,
    )


def day_ns(date: str, label: str) -> int:
    try:
        day = pl.Series([date]).str.to_date("%Y%m%d").cast(pl.Datetime("ns")).cast(pl.Int64)
    except pl.exceptions.InvalidOperationError as err:
        raise PipelineError(f"bad date {date!r} in the file name", path=label) from err
    return int(day[0])
