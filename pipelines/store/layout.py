"""Store layout: table and partition names, stored schemas, and UTC time conversions.

A row's partition is the UTC date of its ``ts_event`` (``date=none`` for quarantine rows
without one), or its UTC month for the tables in :data:`MONTHLY_TABLES`. Everything here is
pure: no file is read or written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from data_specs.schemas import BARS, LINEAGE, QUARANTINE, QUOTES, TRADES
from pipelines.errors import PipelineError

NS_PER_DAY = 86_400 * 1_000_000_000
NO_DATE = "none"
MONTHLY_TABLES = frozenset({"bars", "quarantine", "flagged"})  # by month; ticks by day
STAGING = "_staging"
REPORTS = "_reports"

STORED_SCHEMAS: dict[str, pl.Schema] = {
    "quotes": pl.Schema({**QUOTES, **LINEAGE}),
    "trades": pl.Schema({**TRADES, **LINEAGE}),
    "bars": pl.Schema({**BARS, **LINEAGE}),
    "quarantine": QUARANTINE,
    "flagged": QUARANTINE,
}
PUBLIC_SCHEMAS: dict[str, pl.Schema] = {"quotes": QUOTES, "trades": TRADES, "bars": BARS}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Partition:
    """One ``table/instrument_id=X/date=D`` folder and its Parquet files."""

    table: str
    instrument_id: str
    date: str  # "YYYY-MM-DD" or "none"
    path: Path
    files: tuple[Path, ...]


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        message = f"invalid {kind} name {name!r} (letters, digits, '_', '.', '-')"
        raise PipelineError(message)


def to_ns(value: int | str | date | datetime | None, *, what: str) -> int | None:
    """Convert a time bound to int UTC nanoseconds (naive ISO strings and datetimes are UTC)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PipelineError(f"{what}: expected a time, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            message = f"{what}: cannot read {value!r} as a time (ISO 8601 or int nanoseconds)"
            raise PipelineError(message) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, date):
        return (value - date(1970, 1, 1)).days * NS_PER_DAY
    raise PipelineError(f"{what}: expected a time, got {value!r}")


def ns_to_date(ns: int) -> str:
    """Return the UTC date ``YYYY-MM-DD`` of an int nanosecond timestamp."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + ns // NS_PER_DAY).isoformat()


def ns_to_iso(ns: int | None) -> str | None:
    """Render int UTC nanoseconds as ISO 8601 with a ``Z`` (microsecond precision)."""
    if ns is None:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)
    return stamp.isoformat().replace("+00:00", "Z")


def _folder(table: str, key: str) -> str:
    """Partition folder name: ``month=YYYY-MM`` for monthly tables, else ``date=YYYY-MM-DD``."""
    return f"month={key}" if table in MONTHLY_TABLES and key != NO_DATE else f"date={key}"


def _month_start_ns(month: int) -> int:
    """UTC nanoseconds at the start of month number ``month`` (months since 1970-01)."""
    year, index = divmod(month, 12)
    return (date(1970 + year, index + 1, 1) - date(1970, 1, 1)).days * NS_PER_DAY


def _period_text(period: int, *, monthly: bool) -> str:
    if monthly:
        year, index = divmod(period, 12)
        return f"{1970 + year:04d}-{index + 1:02d}"
    return ns_to_date(period * NS_PER_DAY)


def _by_period(df: pl.DataFrame, *, monthly: bool) -> list[tuple[str, pl.DataFrame]]:
    """Split rows by UTC day (or month) of ``ts_event``; ``none`` for null stamps, in order.

    Rows sorted by time (cleaned ticks) are cut into zero-copy slices at the period boundaries
    (binary search); other frames go through ``partition_by``. Row order is kept in both.
    """
    stamp = pl.from_epoch("ts_event", time_unit="ns")
    period = (
        (stamp.dt.year().cast(pl.Int64) - 1970) * 12 + stamp.dt.month().cast(pl.Int64) - 1
        if monthly
        else pl.col("ts_event") // NS_PER_DAY
    )
    ts = df["ts_event"]
    if ts.null_count() == 0 and ts.is_sorted():
        first, last = df.select(period.first().alias("a"), period.last().alias("b")).row(0)
        starts = [_month_start_ns(p) if monthly else p * NS_PER_DAY for p in range(first, last + 2)]
        cuts = ts.search_sorted(pl.Series(starts, dtype=pl.Int64), side="left").to_list()
        return [
            (_period_text(first + i, monthly=monthly), df.slice(lo, hi - lo))
            for i, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:]))
            if hi > lo
        ]
    groups = df.with_columns(period.alias("_period")).partition_by(
        "_period", as_dict=True, maintain_order=True, include_key=False
    )
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0] is None, kv[0][0]))
    return [
        (NO_DATE if key is None else _period_text(key, monthly=monthly), part)
        for (key,), part in ordered
    ]
