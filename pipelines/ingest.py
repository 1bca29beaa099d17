"""Ingest vendor files into the store: read -> validate -> clean -> one atomic write -> report.

Files are taken in batches of about ``batch_mb`` MB of decompressed input (default 128 MB, one
batch for most jobs), so memory stays bounded however many files one ingest is given. Each
batch is read and validated, its files of one table are cleaned together (``pipelines.clean``:
in the order of ``paths``, so duplicates across files are caught), and its kept rows, quarantine
(reader rejects + cleaning rejects) and flagged rows are staged; everything is committed in ONE
store transaction at the end, with the JSON report. A file that cannot be read (``PipelineError``
from its reader) or that fails validation (another instrument, wrong schema, reader
bookkeeping) fails the whole ingest with one line naming the file, and the store is left
exactly as it was, whichever batch it is in.

Accounting, checked before the commit (an internal error otherwise):
``rows_in == rows_stored + rows_quarantined`` per file and in total, where ``rows_in`` is the
readers' count of data lines. ``rows_stored`` counts rows of this ingest that are in the store
afterwards; ``rows_new`` those that were not there before (a re-ingest has ``rows_new == 0``).

The JSON report (``<store>/_reports/<txid>-<instrument_id>.json``) holds ``ingest_id``,
``instrument_id``, ``format``, ``rows_in``, ``rows_stored``, ``rows_new``,
``rows_already_stored``, ``rows_quarantined``, ``quarantined_by_reason``, ``rows_flagged``,
``flagged_by_reason``, ``time_range`` (first/last stored ``ts_event``, int ns and ISO),
``files`` (the same counts per input file; rows of zip members count for their archive),
``tables`` (rows stored/new and partitions touched per table), ``cleaning`` (the policy used),
``seconds`` and per-phase ``timings``.

Memory: one batch is in memory at a time (peak RSS about 550 MB for the 1.14M FXCM ticks of the
benchmark, 30 MB of text: a few hundred bytes per tick); ``batch_mb`` bounds it. The report
also lists ``batches`` (files per batch). Scans and bars run lazily / in day chunks.

The report is built in :mod:`pipelines.ingest_report`; the bars in :mod:`pipelines.bar_store`
(``build_bars`` is re-exported here).
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from data_specs.schemas import LINEAGE, QUARANTINE, check_schema
from data_specs.spec import InstrumentSpec
from pipelines.bar_store import _bar_deriver, _day_divisor, build_bars
from pipelines.clean import SCHEMAS, clean
from pipelines.errors import PipelineError
from pipelines.ingest_report import _add_table, _combine, _report
from pipelines.readers import read
from pipelines.store import Store

__all__ = ["DEFAULT_BATCH_MB", "READ_THREADS", "build_bars", "ingest"]

# reading is part GIL-bound (zip members, Python glue): more threads than cores still helps
READ_THREADS = max(4, min(8, 2 * (os.cpu_count() or 1)))
DEFAULT_BATCH_MB = 128.0  # decompressed input per batch: about 5M FX ticks, 2-3 GB peak


def _materialize(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Cleaning checkpoint for one in-memory pass: compute each branch point once.

    A ``ts_event`` column found in time order is marked sorted, so that the cleaning's
    ``sort("ts_event")`` (and later slicing by day) costs nothing for vendor files that are
    already in time order, the common case; the check is one linear pass.
    """
    df = lf.collect(engine="in-memory")
    if "ts_event" in df.columns and df.height and df["ts_event"].null_count() == 0:
        if df["ts_event"].is_sorted():
            df = df.with_columns(pl.col("ts_event").set_sorted())
    return df.lazy()


def _read_all(
    paths: Sequence[Path],
    *,
    fmt: str,
    spec: InstrumentSpec,
    column_map: dict[str, Any] | None,
    tz: str | None,
    progress: bool,
    contract: str | None = None,
) -> list[tuple[Path, str, pl.DataFrame, pl.DataFrame, int]]:
    """Read and validate every file; return (path, table, frame, rejects, rows_in) each."""
    options: dict[str, Any] = {"column_map": column_map}
    if tz is not None:
        options["tz"] = tz
    if contract is not None:
        options["contract"] = contract

    def load(path: Path) -> tuple[Path, str, pl.DataFrame, pl.DataFrame, int]:
        result = read(path, fmt=fmt, spec=spec, **options)
        try:
            frame = result.frame.collect()
            rejects = result.rejects.collect()
        except pl.exceptions.PolarsError as err:
            raise PipelineError(f"cannot read: {err}", path=path) from err
        if result.table not in SCHEMAS:
            raise PipelineError(f"reader returned unknown table {result.table!r}", path=path)
        try:
            check_schema(frame, pl.Schema({**SCHEMAS[result.table], **LINEAGE}), what="rows")
            check_schema(rejects, QUARANTINE, what="rejects")
        except ValueError as err:
            raise PipelineError(str(err), path=path) from err
        if (frame["instrument_id"] != spec.instrument_id).any():
            other = frame.filter(pl.col("instrument_id") != spec.instrument_id)["instrument_id"][0]
            message = f"holds rows of instrument {other!r}, expected {spec.instrument_id!r}"
            raise PipelineError(message, path=path)
        if frame.height + rejects.height != result.rows_in:
            message = (
                f"reader bookkeeping: rows_in={result.rows_in} but {frame.height} rows + "
                f"{rejects.height} rejects"
            )
            raise PipelineError(message, path=path)
        return path, result.table, frame, rejects, result.rows_in

    # files are independent: read a few at a time (unzip, CSV parsing and Polars release the
    # GIL); results keep the order of ``paths``, and the first failure (in that order) is raised
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        futures = [pool.submit(load, path) for path in paths]
        bar = tqdm(
            total=len(paths), desc="read", unit="file", file=sys.stderr, disable=not progress
        )
        with bar:
            for future in as_completed(futures):
                if not future.cancelled() and future.exception() is not None:
                    for other in futures:
                        other.cancel()
                bar.update(1)
        return [future.result() for future in futures]


def ingest(
    paths: Sequence[str | Path],
    *,
    fmt: str,
    spec: InstrumentSpec,
    store: Store | str | Path,
    column_map: dict[str, Any] | None = None,
    tz: str | None = None,
    progress: bool = False,
    center: bool = True,
    bars: Sequence[str] = (),
    contract: str | None = None,
    batch_mb: float | None = DEFAULT_BATCH_MB,
) -> Path:
    """Read, clean and store vendor files of one instrument; return the JSON report's path.

    Parameters
    ----------
    paths : sequence of path
        Vendor files, in the order they are to be cleaned (file order defines duplicates).
    fmt : str
        One of ``pipelines.readers.FORMATS``.
    spec : InstrumentSpec
        The instrument every file must hold; its cleaning policy applies.
    store : Store or path
        Target store.
    column_map : dict, optional
        For ``csv``/``csv-bars``.
    tz : str, optional
        Override the vendor clock (passed to the reader).
    progress : bool
        Show a tqdm progress bar on stderr.
    center : bool
        Centered (default) or trailing spike window.
    bars : sequence of str
        Intraday bar lengths that divide a day (``1m``, ``5m``, ``1h``...) to build in the same
        transaction: for every date the ingest touches, the bars of that whole day are rebuilt
        from the merged partition (old and new ticks) while it is in memory, and replace the
        stored bars of that day and length. Same bars as :func:`build_bars` gives afterwards.
    contract : str, optional
        Futures files holding several contracts (LEAN, Databento): ``None`` reads the most
        active one per file, ``"all"`` every one, else that contract (``YYYYMM`` for LEAN, the
        symbol for Databento); a file without it fails the ingest.
    batch_mb : float or None
        Memory bound: files are read and cleaned in batches of about this many MB of
        decompressed input (peak memory is roughly 15-20x that), all in one transaction.
        ``None`` cleans every file in one batch. Across batches, a row equal to one stored by an
        earlier batch is not stored twice (the store merges by key) and counts as stored, not
        as a ``duplicate``; spike windows stop at batch edges, as they do between two ingests.

    Returns
    -------
    Path
        ``<store>/_reports/<txid>-<instrument_id>.json``.

    Raises
    ------
    PipelineError
        No files, a missing or unreadable file, or a file that fails validation; nothing is
        written then.
    """
    store = store if isinstance(store, Store) else Store(store)
    if not paths:
        raise PipelineError("no input files given")
    resolved = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise PipelineError("file not found", path=path)
        if path.resolve() in resolved:
            raise PipelineError("file given twice in one ingest", path=path)
        resolved.append(path.resolve())
    for every in bars:
        _day_divisor(every, flag="bars")
    clock = [time.perf_counter(), time.process_time()]
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        # wall seconds per phase, and CPU seconds of the whole process (all threads)
        now, cpu = time.perf_counter(), time.process_time()
        # summed over batches
        timings[name] = round(timings.get(name, 0.0) + now - clock[0], 4)
        cpu_name = name.replace("_s", "_cpu_s")
        timings[cpu_name] = round(timings.get(cpu_name, 0.0) + cpu - clock[1], 4)
        clock[0], clock[1] = now, cpu

    started = clock[0]
    batches = _batches(resolved, batch_mb)
    total: dict[str, Any] | None = None
    derived_rows: dict[str, dict[str, int]] = {}  # derived table -> day -> rows (last wins)

    def prepare(number: int, batch: list[Path]):
        if progress and len(batches) > 1:
            print(f"batch {number}/{len(batches)}: {len(batch)} files", file=sys.stderr)
        files = _read_all(
            batch,
            fmt=fmt,
            spec=spec,
            column_map=column_map,
            tz=tz,
            progress=progress,
            contract=contract,
        )
        lap("read_s")
        per_table = _clean_batch(files, spec=spec, center=center, bars=bars)
        lap("clean_s")
        report = _report(files, per_table, fmt=fmt, spec=spec, store=store, center=center)
        lap("count_s")
        return per_table, report

    # the first batch is read and cleaned before the store is touched: an ingest that fails
    # there (most bad input) leaves no trace at all, not even an empty store folder
    first: Any = prepare(1, batches[0])
    with store.transaction() as tx, ThreadPoolExecutor(max_workers=1) as side:
        for number, batch in enumerate(batches, start=1):
            per_table, report = first if number == 1 else prepare(number, batch)
            first = None
            for table, (kept, quarantine, flagged) in per_table.items():
                # the rejects go to other tables (other partition files): stage them alongside
                rejects = side.submit(
                    lambda q, f: [
                        (name, tx.write(name, frame, instrument_id=spec.instrument_id))
                        for name, frame in (("quarantine", q), ("flagged", f))
                    ],
                    quarantine,
                    flagged,
                )
                derive = _bar_deriver(spec, bars) if bars else None
                summary = tx.write(table, kept, instrument_id=spec.instrument_id, derive=derive)
                _add_table(report, table, summary)
                report["rows_new"] += summary.rows_new
                for name, derived in summary.derived.items():
                    _add_table(report, name, derived)
                    derived_rows.setdefault(name, {}).update(derived.rows_by_day)
                for name, written in rejects.result():
                    _add_table(report, name, written)
            del per_table, kept, quarantine, flagged  # free the batch before the next one
            lap("stage_s")
            total = report if total is None else _combine(total, report)
        assert total is not None  # at least one batch: paths is not empty
        for name, by_partition in derived_rows.items():
            # a day rebuilt in two batches counts its final bars once
            total["tables"][name]["rows_stored"] = sum(by_partition.values())
            total["tables"][name]["every"] = list(bars)
        total["rows_already_stored"] = total["rows_stored"] - total["rows_new"]
        total["ingest_id"] = tx.txid
        total["batches"] = [len(batch) for batch in batches]
        total["seconds"] = round(time.perf_counter() - started, 3)  # before the commit
        total["timings"] = timings
        path = tx.write_report(total, instrument_id=spec.instrument_id)
    return path


def _clean_batch(
    files: list[tuple[Path, str, pl.DataFrame, pl.DataFrame, int]],
    *,
    spec: InstrumentSpec,
    center: bool,
    bars: Sequence[str],
) -> dict[str, tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]:
    """Clean one batch's files together, per table: ``{table: (kept, quarantine, flagged)}``."""
    tables = sorted({table for _, table, _, _, _ in files})
    if bars and tables != ["quotes"] and tables != ["trades"]:
        message = f"bars: time bars are built from quotes or trades, this ingest holds {tables}"
        raise PipelineError(message)
    per_table = {}
    for table in tables:
        frames = [f for _, t, f, _, _ in files if t == table]
        reader_rejects = [r for _, t, _, r, _ in files if t == table]
        cleaned = clean(
            pl.concat(frames, rechunk=False).lazy(),  # no copy: cleaning makes new columns
            table=table,
            spec=spec,
            center=center,
            checkpoint=_materialize,
        )
        kept, rejected, flagged = pl.collect_all(
            [cleaned.kept, cleaned.rejected, cleaned.flagged], engine="in-memory"
        )
        quarantine = pl.concat([*reader_rejects, rejected], how="vertical")
        per_table[table] = (kept, quarantine, flagged)
    return per_table


# compressed formats other than zip (whose members list their size): a rough expansion factor
_EXPANSION = {".gz": 6, ".zst": 6, ".bi5": 6, ".xz": 6, ".lzma": 6}


def _text_bytes(path: Path) -> int:
    """Estimate the decompressed size of a vendor file (exact for zips)."""
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                return sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError):
            pass  # the reader will name the problem
    return path.stat().st_size * _EXPANSION.get(path.suffix.lower(), 1)


def _batches(paths: list[Path], batch_mb: float | None) -> list[list[Path]]:
    """Cut ``paths`` (in order) into batches of about ``batch_mb`` MB of decompressed input."""
    if batch_mb is None:
        return [paths]
    if not batch_mb > 0:
        raise PipelineError(f"--batch-mb: must be positive, got {batch_mb}")
    limit = batch_mb * 2**20
    batches: list[list[Path]] = [[]]
    size = 0.0
    for path in paths:
        n = _text_bytes(path)
        if batches[-1] and size + n > limit:
            batches.append([])
            size = 0.0
        batches[-1].append(path)
        size += n
    return batches
