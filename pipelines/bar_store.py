"""Bars built from the store's ticks: after an ingest (:func:`build_bars`) or during it.

:func:`_bar_deriver` is the ``derive`` callback with which ``pipelines.ingest`` rebuilds the
bars of every day it touches inside its own transaction; :func:`build_bars` scans the stored
quotes and writes their bars in a transaction of its own. Both build with
``pipelines.bars.time_bars``, so they give the same bars.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from tqdm import tqdm

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.store import NO_DATE, NS_PER_DAY, Store, WriteSummary, ns_to_date, to_ns

# chunks of days are scanned and built on threads (Parquet reads and Polars release the GIL)
BUILD_THREADS = max(4, min(8, 2 * (os.cpu_count() or 1)))


def _intraday_ns(every: str, *, flag: str = "every") -> int | None:
    """Return the length of an intraday Polars duration in ns, None for calendar units.

    Raises
    ------
    PipelineError
        ``every`` is not a positive Polars duration string.
    """
    from pipelines.bars import fixed_duration_ns

    try:
        return fixed_duration_ns(every)
    except ValueError as err:
        raise PipelineError(f"--{flag}: {err}") from err


def _day_divisor(every: str, *, flag: str) -> int:
    """Return the length in ns of an intraday duration that divides a day, else raise."""
    length = _intraday_ns(every, flag=flag)
    if length is None or NS_PER_DAY % length:
        message = (
            f"--{flag}: {every!r} does not divide a day; build such bars with "
            "`python -m pipelines bars` after the ingest"
        )
        raise PipelineError(message)
    return length


def _bar_deriver(spec: InstrumentSpec, every: Sequence[str]):
    """Return a ``derive`` callback for ``Transaction.write``: a day's ticks -> that day's bars."""
    from pipelines.bars import time_bars

    def derive(date_text: str, ticks: pl.DataFrame) -> dict[str, pl.DataFrame]:
        lf = ticks.lazy().with_columns(pl.lit(spec.instrument_id).alias("instrument_id"))
        frames = [time_bars(lf, every=e, spec=spec, presorted=True) for e in every]
        return {"bars": pl.concat(frames).collect(engine="in-memory")}

    return derive


def build_bars(
    store: Store | str | Path,
    *,
    spec: InstrumentSpec,
    every: str,
    start: int | str | None = None,
    end: int | str | None = None,
    table: str = "bars",
    progress: bool = False,
    days_per_chunk: int = 3,
) -> WriteSummary:
    """Build time bars from the stored quotes and merge them into ``table`` (one transaction).

    Intraday bar lengths that divide a day are built a few UTC days at a time (bars never
    straddle UTC midnight then), on a few threads, so memory stays bounded by a few times
    ``days_per_chunk`` days of ticks; other lengths are built in one streaming query.

    Parameters
    ----------
    store : Store or path
    spec : InstrumentSpec
    every : str
        Polars duration (``1m``, ``5m``, ``1h``, ``1d``...), passed to ``pipelines.bars.time_bars``.
    start, end : int ns or ISO 8601, optional
        UTC bounds on the ticks used (``end`` exclusive).
    table : str
        Target table (default ``bars``; bars of different lengths have different keys).

    Returns
    -------
    WriteSummary
        Rows written, rows new, partitions touched.

    Raises
    ------
    PipelineError
        No quotes for the instrument in the range, an empty range, or a bad ``every``.
    """
    from pipelines.bars import time_bars

    store = store if isinstance(store, Store) else Store(store)
    length = _intraday_ns(every)
    instrument_id = spec.instrument_id
    store.scan("quotes", instrument_id, start=start, end=end)  # fails early with a clear line
    lo, hi = to_ns(start, what="start"), to_ns(end, what="end")
    if length is not None and NS_PER_DAY % length == 0:
        dates = sorted(
            p.date
            for p in store.partitions("quotes", instrument_id)
            if p.date != NO_DATE
            and (lo is None or p.date >= ns_to_date(lo))
            and (hi is None or p.date <= ns_to_date(hi - 1))
        )
        chunks = [dates[i : i + days_per_chunk] for i in range(0, len(dates), days_per_chunk)]
    else:
        chunks = [[]]
    total = WriteSummary(table, instrument_id)

    def bars_of(chunk: list[str]) -> pl.DataFrame:
        if chunk:
            chunk_lo = to_ns(chunk[0], what="start")
            chunk_hi = to_ns(chunk[-1], what="end") + NS_PER_DAY
            chunk_lo = chunk_lo if lo is None else max(lo, chunk_lo)
            chunk_hi = chunk_hi if hi is None else min(hi, chunk_hi)
        else:
            chunk_lo, chunk_hi = lo, hi
        quotes = store.scan("quotes", instrument_id, start=chunk_lo, end=chunk_hi)
        try:
            return time_bars(quotes, every=every, spec=spec).collect(engine="streaming")
        except pl.exceptions.PolarsError as err:
            message = f"cannot build {every} bars: {' '.join(str(err).split())[:200]}"
            raise PipelineError(message) from err

    with store.transaction() as tx, ThreadPoolExecutor(max_workers=BUILD_THREADS) as pool:
        # chunks are independent: build them on a few threads, write them in order
        built = pool.map(bars_of, chunks)
        bar = tqdm(
            built,
            total=len(chunks),
            desc="bars",
            unit="chunk",
            file=sys.stderr,
            disable=not progress,
        )
        for bars in bar:
            summary = tx.write(table, bars, instrument_id=instrument_id)
            total.rows += summary.rows
            total.rows_new += summary.rows_new
            total.partitions.extend(summary.partitions)
        if total.rows == 0:  # raised inside the transaction: nothing is written
            span = f"{start or '-inf'} .. {end or '+inf'}"
            raise PipelineError(f"no {instrument_id} quotes in {span}: no bars to build")
    return total
