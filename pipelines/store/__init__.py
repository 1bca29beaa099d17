"""The Parquet store: the only package that scans or sinks Parquet (paths live here).

Layout under ``root``::

    quotes|trades/instrument_id=<id>/date=<YYYY-MM-DD>/part-<txid>.parquet     by day
    bars|quarantine|flagged/instrument_id=<id>/month=<YYYY-MM>/part-<txid>.parquet  by month
    _reports/<txid>-<instrument_id>.json                              ingest reports
    _staging/<txid>/...                                               transactions in flight
    .lock                                                             writer lock (flock)

``date`` is the UTC date of ``ts_event`` (``date=none`` holds quarantine rows without one).
``bars``, ``quarantine`` and ``flagged`` are partitioned by UTC month instead
(:data:`MONTHLY_TABLES`): a day of hourly bars is 24 rows and a day's rejects a few thousand,
and one file per day made long hourly histories slow to write and to scan (and costs every
ingest a file per day for its quarantine). Tables written by day by an older version
(``date=`` folders) are still read, and are merged into their month the next time that month
is written.
As in any hive layout the partition key ``instrument_id`` lives in the path, not in the files of
the known tables (``scan`` puts it back); ``date`` is never a column.
Tables: ``quotes``, ``trades``, ``bars`` (the schema + LINEAGE columns), ``quarantine`` and
``flagged`` (QUARANTINE schema); any other name is stored as given.

Writes are transactions (:meth:`Store.transaction`): every touched partition is rewritten in
full (old rows merged with new) into ``_staging/<txid>/``; everything staged is made durable
(one ``syncfs`` on Linux, else an ``fsync`` per file and folder); then a journal
``COMMIT.json`` is written and fsynced -- the commit point -- and the staged files are renamed
into place, the replaced files removed and the result made durable again. A crash before the
journal leaves the store as it was (the staging folder is deleted by :meth:`Store.recover`);
a crash after it is rolled forward by :meth:`Store.recover` (every step is idempotent).
``recover`` runs before every transaction and scan. One writer at a time (an ``flock`` on
``.lock``); readers take no lock and must not run while a transaction applies.

Idempotence (merge by key, rules in :mod:`pipelines.store.merge`): appending the same rows
twice stores them once.

Modules: :mod:`~pipelines.store.layout` (names, partitions, time conversions),
:mod:`~pipelines.store.files` (Parquet encoding, durability), :mod:`~pipelines.store.merge`
(schema and merge keys), :mod:`~pipelines.store.transaction` (staging, journal, apply);
:class:`Store` (listing, scans, transactions, recovery) is here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import polars as pl

from pipelines.errors import PipelineError
from pipelines.store.files import COMPRESSION, WRITE_THREADS, write_parquet
from pipelines.store.layout import (
    MONTHLY_TABLES,
    NO_DATE,
    NS_PER_DAY,
    PUBLIC_SCHEMAS,
    REPORTS,
    STAGING,
    STORED_SCHEMAS,
    Partition,
    _check_name,
    _folder,
    ns_to_date,
    ns_to_iso,
    to_ns,
)
from pipelines.store.merge import MERGE_KEYS, REPLACE_TABLES
from pipelines.store.transaction import (
    JOURNAL,
    PAUSE_ENV,
    Derive,
    Transaction,
    WriteSummary,
    _apply,
)

__all__ = [
    "COMPRESSION",
    "JOURNAL",
    "MERGE_KEYS",
    "MONTHLY_TABLES",
    "NO_DATE",
    "NS_PER_DAY",
    "PAUSE_ENV",
    "PUBLIC_SCHEMAS",
    "REPLACE_TABLES",
    "REPORTS",
    "STAGING",
    "STORED_SCHEMAS",
    "WRITE_THREADS",
    "Derive",
    "Partition",
    "Store",
    "Transaction",
    "WriteSummary",
    "ns_to_date",
    "ns_to_iso",
    "to_ns",
    "write_parquet",
]


class Store:
    """A hive-partitioned Parquet store rooted at ``root``.

    Parameters
    ----------
    root : str or Path
        Store folder; created on first write.
    """

    def __init__(self, root: str | Path = "data"):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---------------------------------------------------------------- layout
    def table_dir(self, table: str, instrument_id: str) -> Path:
        _check_name("table", table)
        _check_name("instrument", instrument_id)
        return self.root / table / f"instrument_id={instrument_id}"

    def partitions(self, table: str, instrument_id: str) -> list[Partition]:
        """Return the committed partitions of one table and instrument, by date.

        ``Partition.date`` is ``YYYY-MM-DD`` for daily partitions and ``YYYY-MM`` for monthly
        ones (legacy daily folders of a monthly table are listed too).
        """
        base = self.table_dir(table, instrument_id)
        if not base.is_dir():
            return []
        out = []
        for folder in base.iterdir():
            kind, _, key = folder.name.partition("=")
            if kind not in ("date", "month") or not folder.is_dir():
                continue
            files = tuple(sorted(folder.glob("part-*.parquet")))
            if files:
                out.append(Partition(table, instrument_id, key, folder, files))
        return sorted(out, key=lambda p: (p.date == NO_DATE, p.date, p.path.name))

    def tables(self) -> list[str]:
        """Return the tables that hold data, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(("_", ".")) and any(p.glob("instrument_id=*"))
        )

    def instruments(self, table: str) -> list[str]:
        """Return the instrument ids that have rows in ``table``, sorted."""
        base = self.root / table
        if not base.is_dir():
            return []
        return sorted(
            p.name.split("=", 1)[1]
            for p in base.glob("instrument_id=*")
            if any(p.glob("*=*/part-*.parquet"))
        )

    def reports(self) -> list[Path]:
        """Return the ingest report paths, oldest first."""
        folder = self.root / REPORTS
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    # ---------------------------------------------------------------- reading
    def scan(
        self,
        table: str,
        instrument_id: str,
        *,
        start: int | str | date | datetime | None = None,
        end: int | str | date | datetime | None = None,
        lineage: bool = False,
    ) -> pl.LazyFrame:
        """Scan one table of one instrument lazily, rows with ``start <= ts_event < end``.

        Only the date partitions that can hold such rows are opened; the ``ts_event`` filter is
        pushed into the Parquet reader (row-group statistics). Collect with
        ``engine="streaming"`` for data larger than memory.

        Parameters
        ----------
        table : str
            ``quotes``, ``trades``, ``bars``, ``quarantine``, ``flagged`` or another table.
        instrument_id : str
        start, end : int ns, ISO 8601 string, date or datetime, optional
            UTC bounds; ``end`` is exclusive. Naive values are UTC.
        lineage : bool
            Keep ``source_file``/``source_line`` on quotes, trades and bars (dropped by default,
            so the frame is exactly the table's schema).

        Raises
        ------
        PipelineError
            No data for the instrument (or none in the range), or bad bounds.
        """
        lo, hi = to_ns(start, what="start"), to_ns(end, what="end")
        if lo is not None and hi is not None and hi <= lo:
            raise PipelineError(f"empty time range: end {end!r} is not after start {start!r}")
        self.recover()
        parts = self.partitions(table, instrument_id)
        if not parts:
            known = ", ".join(self.instruments(table)) or "none"
            message = (
                f"store {self.root} has no {table} for instrument {instrument_id} "
                f"(instruments with {table}: {known})"
            )
            raise PipelineError(message)
        first = ns_to_date(lo) if lo is not None else None
        last = ns_to_date(hi - 1) if hi is not None else None
        # a month key "YYYY-MM" compares with the prefix of a date bound
        chosen = [
            f
            for p in parts
            if (p.date == NO_DATE and lo is None and hi is None)
            or (
                p.date != NO_DATE
                and (first is None or p.date >= first[: len(p.date)])
                and (last is None or p.date <= last[: len(p.date)])
            )
            for f in p.files
        ]
        if not chosen:
            span = f"{ns_to_iso(lo) or '-inf'} .. {ns_to_iso(hi) or '+inf'}"
            message = f"store {self.root} has no {table} for {instrument_id} in {span}"
            raise PipelineError(message)
        frame = pl.scan_parquet(chosen, hive_partitioning=False)
        if table in STORED_SCHEMAS:  # the partition key is in the path, not in the files
            schema = STORED_SCHEMAS[table]
            frame = frame.with_columns(pl.lit(instrument_id).alias("instrument_id")).select(
                list(schema)
            )
        if lo is not None:
            frame = frame.filter(pl.col("ts_event") >= lo)
        if hi is not None:
            frame = frame.filter(pl.col("ts_event") < hi)
        if table in PUBLIC_SCHEMAS and not lineage:
            frame = frame.select(list(PUBLIC_SCHEMAS[table]))
        return frame

    # ---------------------------------------------------------------- writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Open a write transaction: commits on normal exit, leaves no trace on an exception."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the whole block
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._recover_locked()
            tx = Transaction(self)
            try:
                yield tx
            except BaseException:
                tx.abort()
                raise
            tx.commit()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def write(
        self, table: str, frame: pl.DataFrame | pl.LazyFrame, *, instrument_id: str
    ) -> list[Path]:
        """Merge ``frame`` into ``table`` for one instrument atomically; return its partitions."""
        with self.transaction() as tx:
            summary = tx.write(table, frame, instrument_id=instrument_id)
        base = self.table_dir(table, instrument_id)
        return [base / _folder(table, d) for d in summary.partitions]

    # ---------------------------------------------------------------- recovery
    def recover(self) -> None:
        """Finish or undo transactions left by a crashed writer (skipped while one is writing)."""
        staging = self.root / STAGING
        if not staging.is_dir() or not any(staging.iterdir()):
            return
        with open(self.root / ".lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a writer is active; it recovers before it starts
            try:
                self._recover_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _recover_locked(self) -> None:
        staging = self.root / STAGING
        if not staging.is_dir():
            return
        for folder in sorted(staging.iterdir()):
            journal = folder / JOURNAL
            if journal.is_file():
                _apply(self.root, json.loads(journal.read_text()))
            shutil.rmtree(folder, ignore_errors=True)
