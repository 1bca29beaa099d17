"""Rows into a partition: conform them to the stored schema, then merge them by key.

Idempotence (merge by key): appending the same rows twice stores them once.

- ``quotes``/``trades``: key ``ts_event`` + every value column; a new row whose key is already
  in the partition is not appended (the stored row, with its lineage, stays).
- ``bars``: key ``(ts_event, ts_close)``; a new bar *replaces* the stored one (bars are derived,
  so recomputing them must win; bars of different lengths have different keys).
- ``quarantine``, ``flagged`` and other tables: key = every column, the stored row stays.

Rows repeated *inside* one write are all stored (cleaning quarantines true duplicates first), so
a second identical write stores nothing new.
"""

from __future__ import annotations

import polars as pl

from data_specs.schemas import QUOTES, TRADES, conform
from pipelines.errors import PipelineError
from pipelines.store.layout import STORED_SCHEMAS

MERGE_KEYS: dict[str, list[str]] = {
    "quotes": [c for c in QUOTES if c != "instrument_id"],
    "trades": [c for c in TRADES if c != "instrument_id"],
    "bars": ["ts_event", "ts_close"],
}
REPLACE_TABLES = {"bars"}


def _conform_stored(df: pl.DataFrame, table: str) -> pl.DataFrame:
    if "ts_event" not in df.columns:
        raise PipelineError(f"cannot store {table}: the frame has no ts_event column")
    schema = STORED_SCHEMAS.get(table)
    if schema is None:
        return df
    try:
        return conform(df, schema)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as err:
        message = f"cannot store {table}: frame does not fit the schema ({err})"
        raise PipelineError(" ".join(message.split())) from err


def _merge(old: pl.DataFrame | None, new: pl.DataFrame, table: str) -> tuple[pl.DataFrame, int]:
    """Merge ``new`` into a partition's ``old`` rows; return (rows to write, new row count)."""
    if old is None or old.height == 0:
        merged = new
        fresh = new.height
    else:
        if table in STORED_SCHEMAS and "instrument_id" in old.columns:
            old = old.drop("instrument_id")  # written before the key left the files
        new = new.select(old.columns) if set(new.columns) == set(old.columns) else new
        key = MERGE_KEYS.get(table, list(new.columns))
        if table in REPLACE_TABLES:
            present = new.join(old.select(key), on=key, how="semi", nulls_equal=True).height
            kept_old = old.join(new.select(key), on=key, how="anti", nulls_equal=True)
            merged = pl.concat([kept_old, new], how="diagonal_relaxed")
            fresh = new.height - present
        else:
            added = new.join(old.select(key), on=key, how="anti", nulls_equal=True)
            merged = pl.concat([old, added], how="diagonal_relaxed")
            fresh = added.height
    if "ts_event" in merged.columns and not merged["ts_event"].is_sorted():
        merged = merged.sort("ts_event", maintain_order=True, nulls_last=True)
    return merged, fresh
