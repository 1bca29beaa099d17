"""The ingest report: rows per file and reason, the accounting check, and batch totals.

:func:`_report` counts one batch before anything is written and raises if
``rows_in != rows_stored + rows_quarantined`` for any file; :func:`_add_table` adds what the
store's writes did, and :func:`_combine` adds one batch's report to the running total. The
fields are listed in :mod:`pipelines.ingest`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.store import Store, WriteSummary, ns_to_iso


def _per_file(frame: pl.DataFrame) -> dict[str, int]:
    """Rows per source file; kept rows come in time order, so files form long runs."""
    if frame.height == 0:
        return {}
    runs = frame.select(pl.col("source_file").rle()).unnest("source_file")
    counted = runs.group_by("value").agg(pl.col("len").sum())
    return {str(k): int(v) for k, v in counted.iter_rows()}


def _per_file_reason(frame: pl.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    if frame.height == 0:
        return out
    counted = frame.group_by("source_file", "reason").len().sort("source_file", "reason")
    for source, reason, n in counted.iter_rows():
        out.setdefault(str(source), {})[str(reason)] = int(n)
    return out


def _add_table(report: dict[str, Any], name: str, summary: WriteSummary) -> None:
    entry = report["tables"].setdefault(name, {"rows_stored": 0, "rows_new": 0, "partitions": []})
    entry["rows_stored"] += summary.rows
    entry["rows_new"] += summary.rows_new
    entry["partitions"] = sorted(set(entry["partitions"]) | set(summary.partitions))


def _combine(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add one batch's report to the running total (counts add, ranges widen, files append)."""
    for key in ("rows_in", "rows_stored", "rows_new", "rows_quarantined", "rows_flagged"):
        total[key] += part[key]
    for key in ("quarantined_by_reason", "flagged_by_reason"):
        merged = dict(total[key])
        for reason, n in part[key].items():
            merged[reason] = merged.get(reason, 0) + n
        total[key] = dict(sorted(merged.items()))
    lo = [r["first_ts_event"] for r in (total["time_range"], part["time_range"]) if r["first"]]
    hi = [r["last_ts_event"] for r in (total["time_range"], part["time_range"]) if r["last"]]
    first, last = (min(lo) if lo else None), (max(hi) if hi else None)
    total["time_range"] = {
        "first_ts_event": first,
        "last_ts_event": last,
        "first": ns_to_iso(first),
        "last": ns_to_iso(last),
    }
    total["files"] += part["files"]
    for name, entry in part["tables"].items():
        mine = total["tables"].setdefault(name, {"rows_stored": 0, "rows_new": 0, "partitions": []})
        mine["rows_stored"] += entry["rows_stored"]
        mine["rows_new"] += entry["rows_new"]
        mine["partitions"] = sorted(set(mine["partitions"]) | set(entry["partitions"]))
    return total


def _report(
    files: list[tuple[Path, str, pl.DataFrame, pl.DataFrame, int]],
    per_table: dict[str, tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]],
    *,
    fmt: str,
    spec: InstrumentSpec,
    store: Store,
    center: bool,
) -> dict[str, Any]:
    """Count rows per file and reason and check the accounting (before anything is written)."""
    stored: dict[str, int] = {}
    quarantined: dict[str, dict[str, int]] = {}
    flagged: dict[str, dict[str, int]] = {}
    first: int | None = None
    last: int | None = None
    for kept, quarantine, flags in per_table.values():
        stored.update(_per_file(kept))
        for source, reasons in _per_file_reason(quarantine).items():
            quarantined.setdefault(source, {}).update(reasons)
        for source, reasons in _per_file_reason(flags).items():
            flagged.setdefault(source, {}).update(reasons)
        if kept.height:
            lo, hi = kept["ts_event"].min(), kept["ts_event"].max()
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
    owners = {str(path): str(path) for path, _, _, _, _ in files}

    def owner(source: str) -> str:
        # zip readers label rows "archive.zip:member.csv"; attribute them to the archive
        if source in owners:
            return source
        for path in owners:
            if source.startswith(path + ":"):
                return path
        return source

    def regroup(counts: dict[str, Any], nested: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for source, value in counts.items():
            key = owner(source)
            if nested:
                target = out.setdefault(key, {})
                for reason, n in value.items():
                    target[reason] = target.get(reason, 0) + n
            else:
                out[key] = out.get(key, 0) + value
        return out

    stored = regroup(stored, nested=False)
    quarantined = regroup(quarantined, nested=True)
    flagged = regroup(flagged, nested=True)
    entries = []
    totals = {"rows_in": 0, "rows_stored": 0, "rows_quarantined": 0, "rows_flagged": 0}
    by_reason: dict[str, int] = {}
    flagged_by_reason: dict[str, int] = {}
    for path, table, _, _, rows_in in files:
        key = str(path)
        n_stored = stored.pop(key, 0)
        reasons = quarantined.pop(key, {})
        flags = flagged.pop(key, {})
        n_quarantined = sum(reasons.values())
        if n_stored + n_quarantined != rows_in:
            message = (
                f"accounting: {rows_in} rows in but {n_stored} stored + {n_quarantined} "
                "quarantined (internal error; nothing was written)"
            )
            raise PipelineError(message, path=path)
        entries.append(
            {
                "path": key,
                "table": table,
                "rows_in": rows_in,
                "rows_stored": n_stored,
                "rows_quarantined": n_quarantined,
                "quarantined_by_reason": reasons,
                "rows_flagged": sum(flags.values()),
                "flagged_by_reason": flags,
            }
        )
        totals["rows_in"] += rows_in
        totals["rows_stored"] += n_stored
        totals["rows_quarantined"] += n_quarantined
        totals["rows_flagged"] += sum(flags.values())
        for reason, n in reasons.items():
            by_reason[reason] = by_reason.get(reason, 0) + n
        for reason, n in flags.items():
            flagged_by_reason[reason] = flagged_by_reason.get(reason, 0) + n
    leftover = {**stored, **quarantined}
    if leftover:
        source = next(iter(leftover))
        message = f"accounting: rows attributed to a file that was not ingested: {source}"
        raise PipelineError(message)
    return {
        "ingest_id": None,
        "created_utc": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "instrument_id": spec.instrument_id,
        "format": fmt,
        "store": str(store.root.resolve()),
        **totals,
        "rows_new": 0,
        "rows_already_stored": 0,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "flagged_by_reason": dict(sorted(flagged_by_reason.items())),
        "time_range": {
            "first_ts_event": first,
            "last_ts_event": last,
            "first": ns_to_iso(first),
            "last": ns_to_iso(last),
        },
        "cleaning": {**asdict(spec.cleaning), "spike_window_centered": center},
        "files": entries,
        "tables": {},
    }
