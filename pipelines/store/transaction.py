"""Write transactions: stage partitions, write the journal (the commit point), apply it.

Every touched partition is rewritten in full (old rows merged with new) into
``_staging/<txid>/``; everything staged is made durable; then the journal ``COMMIT.json`` is
written and fsynced -- the commit point -- and :func:`_apply` renames the staged files into
place, removes the replaced ones and makes the result durable again. :func:`_apply` is
idempotent, so a crash after the journal is rolled forward by running it again
(``Store.recover``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from pipelines.errors import PipelineError
from pipelines.store.files import (
    WRITE_THREADS,
    _fsync_path,
    _make_durable,
    _start_writeback,
    write_parquet,
)
from pipelines.store.layout import (
    MONTHLY_TABLES,
    NO_DATE,
    NS_PER_DAY,
    REPORTS,
    STAGING,
    STORED_SCHEMAS,
    _by_period,
    _check_name,
    _folder,
    ns_to_date,
)
from pipelines.store.merge import _conform_stored, _merge

if TYPE_CHECKING:
    from pipelines.store import Store

JOURNAL = "COMMIT.json"
# Test hook: "stage:SECONDS" or "apply:SECONDS" sleeps between partitions in that phase, so a
# test can kill a writer mid-transaction.
PAUSE_ENV = "HAMFIN_STORE_TEST_PAUSE"


@dataclass
class WriteSummary:
    """What one :meth:`Transaction.write` did."""

    table: str
    instrument_id: str
    rows: int = 0  # rows handed to write
    rows_new: int = 0  # rows not already in the store (bars: keys not already present)
    partitions: list[str] = field(default_factory=list)  # dates touched
    derived: dict[str, WriteSummary] = field(default_factory=dict)  # tables made by derive()
    rows_by_day: dict[str, int] = field(default_factory=dict)  # derived: rows per source day


Derive = Callable[[str, pl.DataFrame], dict[str, pl.DataFrame]]


@dataclass
class _Staged:
    """One staged partition file (returned by a staging worker)."""

    key: tuple[str, str, str]  # table, instrument_id, date
    path: Path
    remove: list[Path] | None  # committed files it replaces (None: replaces a staged file)
    rows: int
    rows_new: int
    frame: pl.DataFrame | None  # the merged partition, until the worker is done with it


def _pause(phase: str) -> None:
    hook = os.environ.get(PAUSE_ENV, "")
    if hook.startswith(phase + ":"):
        time.sleep(float(hook.split(":", 1)[1]))


def _apply(root: Path, plan: dict[str, Any]) -> None:
    """Carry out a committed journal; safe to run again after a crash part-way."""
    touched: set[Path] = set()
    for op in plan["ops"]:
        staged = root / op["staged"]
        final = root / op["final"]
        final.parent.mkdir(parents=True, exist_ok=True)
        if staged.exists():
            os.replace(staged, final)
        for old in op.get("remove", []):
            (root / old).unlink(missing_ok=True)
        touched.add(final.parent)
        _pause("apply")
    _make_durable(root, touched)


class Transaction:
    """Staged writes of one ingest; see :meth:`Store.transaction`."""

    def __init__(self, store: Store):
        self.store = store
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.txid = f"{stamp}-{uuid.uuid4().hex[:8]}"
        self.dir = store.root / STAGING / self.txid
        self.dir.mkdir(parents=True)
        self._staged: dict[tuple[str, str, str], Path] = {}  # partition -> staged file
        self._remove: dict[tuple[str, str, str], list[Path]] = {}
        self._reports: list[tuple[Path, Path]] = []
        self.summaries: list[WriteSummary] = []

    def _part_name(self) -> str:
        return f"part-{self.txid}.parquet"

    def write(
        self,
        table: str,
        frame: pl.DataFrame | pl.LazyFrame,
        *,
        instrument_id: str,
        derive: Derive | None = None,
    ) -> WriteSummary:
        """Stage ``frame`` (one instrument) for ``table``, merged with what is stored.

        Parameters
        ----------
        table : str
        frame : DataFrame or LazyFrame
            Rows of one instrument (``instrument_id`` may be absent).
        instrument_id : str
        derive : callable, optional
            ``derive(date, merged)`` is called for every touched partition with the full merged
            partition as it will be stored (no ``instrument_id`` column) and returns
            ``{table: rows}`` of derived tables (e.g. bars) whose rows all fall on that same UTC
            date; they are merged into those tables' partitions of that date in the same thread
            and the same transaction. Their summaries are in ``summary.derived``.

        Raises
        ------
        PipelineError
            ``frame`` holds another instrument, lacks ``ts_event``, or does not fit the schema;
            derived rows fall on another date.
        """
        df = self._prepare(table, frame, instrument_id)
        summary = WriteSummary(table, instrument_id, rows=df.height)
        if df.height == 0:
            self.summaries.append(summary)
            return summary
        jobs = _by_period(df, monthly=table in MONTHLY_TABLES)
        if derive is not None and table in MONTHLY_TABLES:
            raise PipelineError(f"derive() needs a daily table, not {table}")

        def stage(job: tuple[str, pl.DataFrame]) -> tuple[_Staged, list[tuple[str, pl.DataFrame]]]:
            date_text, part = job
            done = self._stage_partition(table, instrument_id, date_text, part)
            derived = []
            if derive is not None and date_text != NO_DATE:
                for name, rows in derive(date_text, done.frame).items():
                    if name == table:
                        raise PipelineError(f"derive() of {table} cannot write {table} itself")
                    rows = self._prepare(name, rows, instrument_id)
                    days = rows.select((pl.col("ts_event") // NS_PER_DAY).unique())
                    if days.height > 1 or (
                        days.height == 1 and ns_to_date(days.item() * NS_PER_DAY) != date_text
                    ):
                        message = f"derived {name} rows of {date_text} fall on another date"
                        raise PipelineError(message)
                    if rows.height:
                        derived.append((name, rows))
            done.frame = None  # free the merged partition as soon as it is written
            return done, derived

        # partitions are independent files: stage them on a few threads (Polars releases the GIL)
        with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
            results = list(pool.map(stage, jobs))
            staged = [item for item, _ in results]
            # derived rows of several days may share a (monthly) partition: one job per partition
            grouped: dict[tuple[str, str], list[pl.DataFrame]] = {}
            derived_days: dict[str, dict[str, int]] = {}  # derived table -> day -> rows
            for (date_text, _), (_, derived) in zip(jobs, results):
                for name, rows in derived:
                    key = date_text[:7] if name in MONTHLY_TABLES else date_text
                    grouped.setdefault((name, key), []).append(rows)
                    derived_days.setdefault(name, {})[date_text] = rows.height
            more = pool.map(
                lambda item: self._stage_partition(
                    item[0][0], instrument_id, item[0][1], pl.concat(item[1])
                ),
                grouped.items(),
            )
            staged += list(more)
        for item in staged:
            if item.remove is not None:
                self._remove[item.key] = item.remove
            self._staged[item.key] = item.path
            name = item.key[0]
            target = (
                summary
                if name == table
                else summary.derived.setdefault(name, WriteSummary(name, instrument_id))
            )
            target.rows += item.rows if name != table else 0
            target.rows_new += item.rows_new
            target.partitions.append(item.key[2])
            item.frame = None
        for name, days in derived_days.items():
            summary.derived[name].rows_by_day = days
        self.summaries.append(summary)
        return summary

    def _prepare(
        self, table: str, frame: pl.DataFrame | pl.LazyFrame, instrument_id: str
    ) -> pl.DataFrame:
        """Collect, conform to the stored schema, check the instrument, drop the hive key."""
        df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        df = _conform_stored(df, table)
        if "instrument_id" in df.columns:
            others = df.filter(pl.col("instrument_id") != instrument_id)
            if others.height:
                message = (
                    f"writing {table} for {instrument_id}: frame holds rows of instrument "
                    f"{others['instrument_id'][0]!r}"
                )
                raise PipelineError(message)
        if table in STORED_SCHEMAS:
            df = df.drop("instrument_id")  # hive style: the key lives in the path only
        return df

    def _stage_partition(
        self, table: str, instrument_id: str, date_text: str, part: pl.DataFrame
    ) -> _Staged:
        """Merge ``part`` into one partition (committed or staged earlier) and stage the file.

        Runs on a worker thread: it only reads ``self._staged`` (updated by the caller after
        the workers finish); each partition is staged by one worker at a time.
        """
        key = (table, instrument_id, date_text)
        base = self.store.table_dir(table, instrument_id)
        folder = base / _folder(table, date_text)
        staged = self._staged.get(key)
        remove = None
        if staged is None:
            remove = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
            if table in MONTHLY_TABLES and date_text != NO_DATE:
                # daily folders of this month written by an older version merge into it
                remove += sorted(base.glob(f"date={date_text}-*/part-*.parquet"))
            sources = remove
        else:
            sources = [staged]
        target = self.dir / base.relative_to(self.store.root) / _folder(table, date_text)
        target.mkdir(parents=True, exist_ok=True)
        path = target / self._part_name()
        old = pl.read_parquet(sources) if sources else None
        merged, new_rows = _merge(old, part, table)
        write_parquet(merged, path)
        _start_writeback(path)
        _pause("stage")  # made durable in one go by commit()
        return _Staged(key, path, remove, part.height, new_rows, merged)

    def write_report(self, report: dict[str, Any], *, instrument_id: str) -> Path:
        """Stage a JSON report; return the path it will have once committed."""
        _check_name("instrument", instrument_id)
        name = f"{self.txid}-{instrument_id}.json"
        staged = self.dir / REPORTS / name
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        final = self.store.root / REPORTS / name
        self._reports.append((staged, final))
        return final

    def commit(self) -> None:
        """Write the journal (the commit point), then move every staged file into place."""
        root = self.store.root
        ops = []
        for key, staged in self._staged.items():
            table, instrument_id, date_text = key
            final_dir = self.store.table_dir(table, instrument_id) / _folder(table, date_text)
            ops.append(
                {
                    "staged": str(staged.relative_to(root)),
                    "final": str((final_dir / staged.name).relative_to(root)),
                    "remove": [str(p.relative_to(root)) for p in self._remove.get(key, [])],
                }
            )
        for staged, final in self._reports:
            ops.append(
                {"staged": str(staged.relative_to(root)), "final": str(final.relative_to(root))}
            )
        # every staged file and folder must be durable before the journal (the commit point)
        staged = [Path(folder) / name for folder, _, names in os.walk(self.dir) for name in names]
        _make_durable(self.dir, [*staged, *(Path(folder) for folder, _, _ in os.walk(self.dir))])
        journal = self.dir / JOURNAL
        tmp = self.dir / (JOURNAL + ".tmp")
        tmp.write_text(json.dumps({"txid": self.txid, "ops": ops}))
        _fsync_path(tmp)
        os.replace(tmp, journal)
        _fsync_path(self.dir)
        _apply(root, {"ops": ops})
        shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything staged; the store is as it was."""
        shutil.rmtree(self.dir, ignore_errors=True)
