"""Vendor clocks to UTC nanoseconds.

Vendors stamp ticks in one of three kinds of clock:

- UTC (Dukascopy, TrueFX, OANDA via LEAN, CME via LEAN/AlgoSeek, Databento);
- a fixed offset with no daylight saving (FXCM via LEAN and HistData: UTC-05 all year, so
  17:00 "EST" is 22:00 UTC in January and in July alike);
- a DST-aware IANA zone (e.g. ``America/New_York`` in a user's own CSV), where a local time in
  the spring-forward gap does not exist and one in the fall-back hour exists twice.

``to_utc_ns`` turns an Int64 expression of *local* nanoseconds since 1970-01-01 00:00 local into
UTC nanoseconds for any of these. Fixed offsets are plain integer arithmetic; IANA zones go
through Polars' time-zone database. Ambiguous fall-back times are resolved from the file order:
a local time earlier than one already seen is the second pass ("latest"), otherwise the first
("earliest"). Non-existent local times become null, and readers quarantine those rows with reason
``nonexistent_local_time``.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
NS_PER_HOUR = 3600 * NS_PER_S
NS_PER_DAY = 24 * NS_PER_HOUR

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$")
_ETC = re.compile(r"^Etc/GMT([+-])(\d{1,2})$")


def fixed_offset_ns(tz: str) -> int | None:
    """Return the UTC offset of ``tz`` in ns if it is a fixed-offset clock, else ``None``.

    Accepts ``"UTC"``, ``"GMT"``, ``"Z"``, ``"UTC-05"``, ``"UTC-05:00"``, ``"-05:00"``,
    ``"+0000"`` and ``"Etc/GMT+5"`` (POSIX sign: this one is UTC-05).
    """
    text = tz.strip()
    if text.upper() in {"UTC", "GMT", "Z", "ETC/UTC", "ETC/GMT"}:
        return 0
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        value = int(hours) * 60 + int(minutes or 0)
        return (1 if sign == "+" else -1) * value * 60 * NS_PER_S
    match = _ETC.match(text)
    if match:
        sign, hours = match.groups()
        return (-1 if sign == "+" else 1) * int(hours) * NS_PER_HOUR
    return None


def check_time_zone(tz: str) -> str:
    """Return ``tz`` if it is a fixed offset or an IANA zone name; raise ``ValueError`` if not."""
    if fixed_offset_ns(tz) is not None:
        return tz
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        message = f"unknown time zone {tz!r} (use an IANA name or a fixed offset like 'UTC-05')"
        raise ValueError(message) from err
    return tz


def to_utc_ns(local_ns: pl.Expr, tz: str) -> pl.Expr:
    """Convert local wall-clock nanoseconds in ``tz`` to UTC nanoseconds (Int64).

    Parameters
    ----------
    local_ns
        Int64 nanoseconds since 1970-01-01 00:00 *in the vendor's wall clock*.
    tz
        A fixed offset (``"UTC"``, ``"UTC-05"``) or an IANA zone (``"America/New_York"``).

    Returns
    -------
    pl.Expr
        Int64 UTC nanoseconds; null where the local time does not exist (DST gap).
    """
    offset = fixed_offset_ns(check_time_zone(tz))
    if offset is not None:
        return (local_ns - offset).cast(pl.Int64)
    second_pass = local_ns < local_ns.cum_max().shift(1)
    ambiguous = pl.when(second_pass).then(pl.lit("latest")).otherwise(pl.lit("earliest"))
    return (
        pl.from_epoch(local_ns, time_unit="ns")
        .dt.replace_time_zone(tz, ambiguous=ambiguous, non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.epoch("ns")
    )


def text_to_utc_ns(text: pl.Expr, tz: str, fmt: str | None = None) -> tuple[pl.Expr, pl.Expr]:
    """Parse timestamp text to UTC ns; return ``(ts_event, unparsed)`` expressions.

    Stamps that carry an offset (``Z``, ``+00:00``, ``-0500``) are exact instants; the others are
    wall-clock times in ``tz`` (fixed or IANA, see ``to_utc_ns``). ``fmt`` is a chrono format
    (``"%Y-%m-%d %H:%M:%S"``, with ``%z`` for an offset) or ``None`` to infer ISO-8601.
    ``unparsed`` is true where the text did not parse, so a null ``ts_event`` with
    ``unparsed`` false is a local time that does not exist.
    """
    if fmt is None:
        aware = text.str.contains(r"(Z|[+-]\d{2}:?\d{2})$")
    else:  # with an explicit layout only an offset directive makes a stamp exact
        aware = pl.lit(any(d in fmt for d in ("%z", "%:z", "%#z", "%Z")))
    aware_ns = (
        pl.when(aware)
        .then(text)
        .str.to_datetime(fmt, time_unit="ns", time_zone="UTC", strict=False)
        .dt.epoch("ns")
    )
    local_ns = (
        pl.when(~aware).then(text).str.to_datetime(fmt, time_unit="ns", strict=False).dt.epoch("ns")
    )
    ts_event = pl.coalesce(aware_ns, to_utc_ns(local_ns, tz))
    return ts_event, aware_ns.is_null() & local_ns.is_null()
