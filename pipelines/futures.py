"""Futures: expiry and roll dates from the spec's rule, continuous back-adjusted series.

Business days are weekdays that are not US exchange holidays (New Year, Martin Luther King,
Presidents', Good Friday, Memorial, Juneteenth from 2022, Independence, Labor, Thanksgiving,
Christmas; a Saturday holiday is observed on the Friday before, a Sunday one on the Monday after,
as the CME and NYSE do). Special one-off closures (days of mourning, hurricanes) and
half-days are not modelled. An expiry that lands on a holiday moves to the business day before.

Rules (``spec.contract.expiry_rule``; year/month are the contract's delivery month):

- ``third_friday``: the third Friday of the month (ES, NQ).
- ``two_business_days_before_third_wednesday``: 6E and the other CME FX futures.
- ``three_business_days_before_25th_of_prior_month``: CL; when the 25th is not a business day,
  the count starts from the business day before it (the CME wording: four business days).
- ``third_last_business_day``: of the contract month (GC).
- ``seventh_business_day_before_last_business_day``: of the contract month (ZN).

The roll date is ``expiry - roll_days_before_expiry`` calendar days (moved back to a business
day); the continuous series switches contracts at the start of that trading day, i.e. at
``calendar.daily_roll`` local time on the evening before.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl

from data_specs.schemas import BARS, conform
from data_specs.spec import MONTH_CODES, InstrumentSpec

Adjust = Literal["difference", "ratio", "none"]
PRICE_COLUMNS = [
    "open", "high", "low", "close",
    "bid_open", "bid_high", "bid_low", "bid_close",
    "ask_open", "ask_high", "ask_low", "ask_close",
]  # fmt: skip
_CODE = re.compile(r"^(?P<root>.+?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2}|\d{4})$")


# ---- business-day calendar ----------------------------------------------------------------------


def _easter(year: int) -> dt.date:
    """Return Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month = (h + l - 7 * m + 114) // 31
    day = (h + l - 7 * m + 114) % 31 + 1
    return dt.date(year, month, day)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """Return the ``n``-th ``weekday`` (Mon=0) of a month; ``n=-1`` for the last one."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = _month_end(year, month)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _month_end(year: int, month: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def _observed(day: dt.date) -> dt.date:
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


@lru_cache(maxsize=256)
def us_exchange_holidays(year: int) -> frozenset[dt.date]:
    """Return the US exchange holidays of ``year`` (see the module docstring)."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Presidents' Day
        _easter(year) - dt.timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(dt.date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(dt.date(year, 12, 25)),
    }
    new_year = dt.date(year, 1, 1)
    if new_year.weekday() != 5:  # a Saturday New Year is not observed on Dec 31 (NYSE rule)
        days.add(_observed(new_year))
    if year >= 2022:
        days.add(_observed(dt.date(year, 6, 19)))  # Juneteenth
    return frozenset(days)


def is_business_day(day: dt.date) -> bool:
    """Return whether ``day`` is a weekday and not a US exchange holiday."""
    return day.weekday() < 5 and day not in us_exchange_holidays(day.year)


def _business_day_on_or_before(day: dt.date) -> dt.date:
    while not is_business_day(day):
        day -= dt.timedelta(days=1)
    return day


def _business_days_before(day: dt.date, n: int) -> dt.date:
    """Return the business day ``n`` business days before ``day`` (``day`` not counted)."""
    while n > 0:
        day -= dt.timedelta(days=1)
        if is_business_day(day):
            n -= 1
    return day


# ---- contracts, expiries, rolls -----------------------------------------------------------------


def expiry_date(spec: InstrumentSpec, year: int, month: int) -> dt.date:
    """Return the last trading day of the ``year``/``month`` contract under the spec's rule."""
    if spec.contract is None:
        raise ValueError(f"{spec.instrument_id} is not a future (no [contract] in its spec)")
    rule = spec.contract.expiry_rule
    if rule == "third_friday":
        return _business_day_on_or_before(_nth_weekday(year, month, 4, 3))
    if rule == "two_business_days_before_third_wednesday":
        return _business_days_before(_nth_weekday(year, month, 2, 3), 2)
    if rule == "three_business_days_before_25th_of_prior_month":
        prior_year, prior_month = (year, month - 1) if month > 1 else (year - 1, 12)
        anchor = _business_day_on_or_before(dt.date(prior_year, prior_month, 25))
        return _business_days_before(anchor, 3)
    if rule == "third_last_business_day":
        last = _business_day_on_or_before(_month_end(year, month))
        return _business_days_before(last, 2)
    if rule == "seventh_business_day_before_last_business_day":
        last = _business_day_on_or_before(_month_end(year, month))
        return _business_days_before(last, 7)
    raise ValueError(f"unknown expiry rule {rule!r}")


def roll_date(spec: InstrumentSpec, year: int, month: int) -> dt.date:
    """Return the day trading moves off the contract: expiry minus the spec's roll days."""
    days = spec.contract.roll_days_before_expiry
    return _business_day_on_or_before(expiry_date(spec, year, month) - dt.timedelta(days=days))


def contract_code(spec: InstrumentSpec, year: int, month: int) -> str:
    """Return the exchange code, e.g. ``ESH4`` for ES March 2024 (one-digit year)."""
    return f"{spec.contract.root}{MONTH_CODES[month - 1]}{year % 10}"


def parse_contract(spec: InstrumentSpec, code: str, *, near_year: int = 2024) -> tuple[int, int]:
    """Return ``(year, month)`` of a code such as ``ESH4``, ``ESH24`` or ``ESH2024``.

    One- and two-digit years are resolved to the matching year nearest ``near_year``.
    """
    match = _CODE.match(code)
    if match is None or match["root"] != spec.contract.root:
        message = (
            f"'{code}' is not a {spec.contract.root} contract code (e.g. {spec.contract.root}H4)"
        )
        raise ValueError(message)
    month = MONTH_CODES.index(match["month"]) + 1
    digits = match["year"]
    if len(digits) == 4:
        return int(digits), month
    modulus = 10 ** len(digits)
    base = near_year - near_year % modulus + int(digits)
    year = min((base - modulus, base, base + modulus), key=lambda y: abs(y - near_year))
    return year, month


def listed_contracts(spec: InstrumentSpec, start: dt.date, end: dt.date) -> list[tuple[int, int]]:
    """Return the listed ``(year, month)`` contracts whose roll date falls in ``[start, end]``,
    plus the one trading after ``end``'s roll."""
    months = [MONTH_CODES.index(c) + 1 for c in spec.contract.months]
    out = []
    for year in range(start.year, end.year + 2):
        for month in months:
            roll = roll_date(spec, year, month)
            if roll >= start:
                out.append((year, month))
                if roll > end:
                    return out
    return out


def roll_schedule(spec: InstrumentSpec, contracts: Iterable[str | tuple[int, int]]) -> pl.DataFrame:
    """Return one row per contract, in expiry order.

    Columns: ``contract`` (code), ``year``, ``month``, ``expiry`` (date), ``roll_date`` (date),
    ``roll_ts`` (int ns UTC: start of the roll date's trading day, when the continuous series
    switches to ``next_contract``), ``next_contract`` (null for the last).
    """
    pairs = sorted(
        {parse_contract(spec, c) if isinstance(c, str) else tuple(c) for c in contracts},
        key=lambda ym: expiry_date(spec, *ym),
    )
    codes = [contract_code(spec, y, m) for y, m in pairs]
    rolls = [roll_date(spec, y, m) for y, m in pairs]
    return pl.DataFrame(
        {
            "contract": codes,
            "year": [y for y, _ in pairs],
            "month": [m for _, m in pairs],
            "expiry": [expiry_date(spec, y, m) for y, m in pairs],
            "roll_date": rolls,
            "roll_ts": [_trading_day_start_ns(spec, d) for d in rolls],
            "next_contract": codes[1:] + [None],
        },
        schema_overrides={"next_contract": pl.String},
    )


def _trading_day_start_ns(spec: InstrumentSpec, day: dt.date) -> int:
    """Return the UTC ns at which ``day``'s trading day opens (daily_roll the evening before)."""
    hours, minutes = (int(x) for x in spec.calendar.daily_roll.split(":"))
    tz = ZoneInfo(spec.calendar.timezone)
    start = dt.datetime.combine(day, dt.time(hours, minutes), tz)
    if hours or minutes:  # a 17:00 roll means the trading day began the evening before
        start -= dt.timedelta(days=1)  # aware arithmetic is wall-clock: DST-safe
    return int(start.timestamp()) * 1_000_000_000


# ---- continuous series --------------------------------------------------------------------------


def continuous(
    bars_by_contract: Mapping[str, pl.LazyFrame | pl.DataFrame],
    *,
    spec: InstrumentSpec,
    adjust: Adjust = "difference",
) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """Stitch per-contract BARS into one back-adjusted continuous series.

    Each contract supplies the bars from the previous contract's roll to its own roll
    (``roll_schedule``). At each roll the gap between the new and the old contract's closes at
    their last common bar close at or before the roll instant (``probe_ts``) is removed from
    all *earlier* bars: added
    (``"difference"``, keeps point moves), multiplied (``"ratio"``, keeps returns and needs
    positive prices), or left in (``"none"``). The latest contract is never changed.

    Returns
    -------
    (pl.LazyFrame, pl.DataFrame)
        BARS rows with ``instrument_id = spec.instrument_id``, and the roll table: ``roll_date``,
        ``roll_ts``, ``probe_ts``, ``from_contract``, ``to_contract``, ``from_close``, ``to_close``,
        ``adjustment`` (points added, or factor applied, to bars before the roll; ``0`` with
        ``adjust="none"``). Only the two closes per roll are collected to build the table.
    """
    if adjust not in ("difference", "ratio", "none"):
        raise ValueError(f"adjust must be 'difference', 'ratio' or 'none', got {adjust!r}")
    schedule = roll_schedule(spec, bars_by_contract.keys())
    lookup = {contract_code(spec, *parse_contract(spec, c)): c for c in bars_by_contract}
    frames = {code: bars_by_contract[lookup[code]].lazy() for code in schedule["contract"]}
    codes, roll_ts = schedule["contract"].to_list(), schedule["roll_ts"].to_list()

    # closes of the outgoing and incoming contract at their last common bar close at or
    # before each roll instant (so the gap is measured at one instant, even with holes in data)
    probes = []
    for i in range(len(codes) - 1):
        old, new = (frames[c].select("ts_close", "close") for c in (codes[i], codes[i + 1]))
        probes.append(
            old.join(new, on="ts_close", suffix="_new")
            .filter(pl.col("ts_close") <= roll_ts[i])
            .sort("ts_close")
            .select(pl.col("ts_close").last(), pl.col("close").last(), pl.col("close_new").last())
        )
    rows = [frame.row(0) for frame in pl.collect_all(probes)] if probes else []
    for i, (at, _, _) in enumerate(rows):
        if at is None:
            message = f"{codes[i]} and {codes[i + 1]} share no bar at or before their roll"
            raise ValueError(f"{message} on {schedule['roll_date'][i]}")
    probe_ts = [r[0] for r in rows]
    from_close, to_close = [r[1] for r in rows], [r[2] for r in rows]
    if adjust == "difference":
        step = [b - a for a, b in zip(from_close, to_close, strict=True)]
    elif adjust == "ratio":
        step = [b / a for a, b in zip(from_close, to_close, strict=True)]
    else:
        step = [0.0] * len(from_close)

    pieces = []
    for i, code in enumerate(codes):
        lo = roll_ts[i - 1] if i > 0 else None
        hi = roll_ts[i] if i < len(codes) - 1 else None
        piece = frames[code]
        if lo is not None:
            piece = piece.filter(pl.col("ts_event") >= lo)
        if hi is not None:
            piece = piece.filter(pl.col("ts_event") < hi)
        later = step[i:]  # adjustments of every roll after this contract
        if adjust == "ratio":
            factor = 1.0
            for s in later:
                factor *= s
            prices = [pl.col(c) * factor for c in PRICE_COLUMNS]
            prices += [pl.col(c) * factor for c in ("spread_mean", "spread_max")]
        else:
            offset = sum(later)
            prices = [pl.col(c) + offset for c in PRICE_COLUMNS]
        pieces.append(piece.with_columns(prices))
    bars = pl.concat(pieces, how="vertical_relaxed").with_columns(
        pl.lit(spec.instrument_id, dtype=pl.String).alias("instrument_id")
    )
    table = pl.DataFrame(
        {
            "roll_date": schedule["roll_date"][:-1],
            "roll_ts": schedule["roll_ts"][:-1],
            "probe_ts": probe_ts,
            "from_contract": codes[:-1],
            "to_contract": codes[1:],
            "from_close": from_close,
            "to_close": to_close,
            "adjustment": step if adjust != "none" else [0.0] * len(step),
        },
        schema_overrides={
            "from_close": pl.Float64,
            "to_close": pl.Float64,
            "adjustment": pl.Float64,
        },  # fmt: skip
    )
    return conform(bars.sort("ts_event"), BARS), table
