"""Vendor files -> canonical QUOTES / TRADES / BARS, with rejects and lineage.

One module per vendor format; ``read`` dispatches on ``fmt``:

================== ======== =================================================================
fmt                table    input
================== ======== =================================================================
truefx             quotes   TrueFX CSV ``PAIR,YYYYMMDD HH:MM:SS.fff,bid,ask`` (UTC), or the
                            reformatted ``timestamp,bid,ask`` with ISO stamps
histdata           quotes   HistData ASCII tick ``YYYYMMDD HHMMSSfff,bid,ask,vol`` (UTC-05)
dukascopy          quotes   Dukascopy JForex CSV ``Gmt time,Ask,Bid,AskVolume,BidVolume`` (GMT)
dukascopy-bi5      quotes   Dukascopy raw ``SYMBOL/YYYY/MM0/DD/HHh_ticks.bi5`` (UTC)
lean               quotes/  QuantConnect LEAN tick zips: FX ``ms,bid,ask``; futures trades
                   trades   ``ms,price,quantity,exchange,sale_condition,suspicious``
databento          quotes/  Databento DBN (zstd): mbp-1, tbbo, bbo, mbo (top of book) -> quotes;
                   trades   trades -> trades
csv                quotes/  generic CSV or Parquet with a ``column_map``
                   trades
lean-bars          bars     LEAN minute/hour/daily quote or trade bar zips
dukascopy-candles  bars     Dukascopy ``BID_candles_{min,hour,day}_1.bi5``
histdata-bars      bars     HistData M1 ASCII ``YYYYMMDD HHMMSS;o;h;l;c;v`` (UTC-05)
csv-bars           bars     generic OHLC CSV (6E minute bars, FXCM bid/ask m1 files)
================== ======== =================================================================

Every reader returns a ``ReadResult`` whose ``frame`` is lazy, in the table's schema followed by
``source_file`` (the path as given; ``archive.zip:member.csv`` inside zips) and ``source_line``
(1-based physical line, or record number in binary files), with
``rows_in == frame rows + rejects rows``. Lines that do not parse (wrong field count, bad number
or timestamp) go to ``rejects`` (QUARANTINE schema, reason ``malformed_line``; a local time in a
DST gap: ``nonexistent_local_time``; a LEAN trade flagged suspicious: ``vendor_suspicious``).
A file that cannot be read at all (missing, empty, truncated or corrupt zip/gzip/bi5/DBN, wrong
format, wrong instrument) raises ``pipelines.errors.PipelineError``: one line naming the file.

Clocks (``ts_event`` is always int64 UTC ns; see ``pipelines.readers.timestamps``):

- UTC: Dukascopy (CSV ``Gmt time`` and bi5), TrueFX, LEAN OANDA, LEAN futures (AlgoSeek),
  Databento;
- fixed UTC-05 all year, no DST: LEAN FXCM, HistData (tick and M1);
- ``csv``/``csv-bars``: stamps with an offset are exact; naive ones are in ``tz`` (default UTC),
  DST-aware for IANA zones such as ``America/New_York``.

``tz=`` overrides the vendor clock where the format allows it (LEAN, HistData, TrueFX, csv).
Bars: ``ts_event`` is the bar open, ``ts_close = ts_event + length``; LEAN daily bars cover the
vendor's calendar day ``[00:00, 24:00)`` in its own clock (FXCM: 05:00-05:00 UTC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.result import ReadResult

TICK_FORMATS = ("truefx", "histdata", "dukascopy", "dukascopy-bi5", "lean", "databento", "csv")
BAR_FORMATS = ("lean-bars", "dukascopy-candles", "histdata-bars", "csv-bars")
FORMATS = [*TICK_FORMATS, *BAR_FORMATS]
_TZ_FORMATS = {"truefx", "histdata", "lean", "csv", "lean-bars", "histdata-bars", "csv-bars"}
_CONTRACT_FORMATS = {"lean", "lean-bars", "databento"}

__all__ = ["BAR_FORMATS", "FORMATS", "TICK_FORMATS", "ReadResult", "read"]


def read(
    path: str | Path,
    *,
    fmt: str,
    spec: InstrumentSpec,
    column_map: dict[str, Any] | None = None,
    tz: str | None = None,
    contract: str | None = None,
    table: str | None = None,
) -> ReadResult:
    """Read one vendor file into its canonical table.

    Parameters
    ----------
    path
        The file (zip, gz, bi5, dbn.zst, csv or parquet, per ``fmt``).
    fmt
        One of ``FORMATS``.
    spec
        The instrument the file must hold; a file or path naming another one is refused.
    column_map
        For ``csv``/``csv-bars``: which source column is which (see ``pipelines.readers.csv``).
    tz
        Override the vendor's clock (fixed offset such as ``"UTC-05"`` or an IANA zone).
    contract
        Files holding several contracts of a futures root: ``None`` reads the most active one,
        ``"all"`` every one; LEAN zips take ``"YYYYMM"``, Databento files a raw symbol
        (``"ESU4"``).
    table
        ``databento`` only: ``"trades"`` reads the trade records of an mbp-1, tbbo or mbo file
        (default: quotes from book schemas, trades from ``trades``, bars from ``ohlcv-*``).

    Returns
    -------
    ReadResult

    Raises
    ------
    PipelineError
        Unknown format, missing/empty/corrupt file, wrong format or wrong instrument.
    """
    if fmt not in FORMATS:
        raise PipelineError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", path=path)
    if tz is not None and fmt not in _TZ_FORMATS:
        raise PipelineError(f"tz= does not apply to fmt={fmt!r} (its clock is fixed)", path=path)
    if contract is not None and fmt not in _CONTRACT_FORMATS:
        message = f"contract= applies only to LEAN and Databento formats, not {fmt!r}"
        raise PipelineError(message, path=path)
    if table is not None and fmt != "databento":
        raise PipelineError(f"table= applies only to fmt='databento', not {fmt!r}", path=path)
    if column_map is not None and fmt not in {"csv", "csv-bars"}:
        raise PipelineError(f"column_map applies only to csv formats, not {fmt!r}", path=path)
    if fmt == "csv" and column_map is None:
        raise PipelineError("fmt='csv' needs a column_map", path=path)
    if not Path(path).exists():
        raise PipelineError("file not found", path=path)
    options = {"column_map": column_map, "tz": tz, "contract": contract, "table": table}
    return _dispatch(Path(path), fmt=fmt, spec=spec, **options)


def _dispatch(path, *, fmt, spec, column_map, tz, contract, table) -> ReadResult:
    if fmt == "lean":
        from pipelines.readers.lean import read_lean

        return read_lean(path, spec=spec, tz=tz, contract=contract)
    if fmt == "lean-bars":
        from pipelines.readers.lean_bars import read_lean_bars

        return read_lean_bars(path, spec=spec, tz=tz, contract=contract)
    if fmt == "dukascopy":
        from pipelines.readers.dukascopy import read_dukascopy_csv

        return read_dukascopy_csv(path, spec=spec)
    if fmt == "dukascopy-bi5":
        from pipelines.readers.dukascopy import read_dukascopy_bi5

        return read_dukascopy_bi5(path, spec=spec)
    if fmt == "dukascopy-candles":
        from pipelines.readers.dukascopy_candles import read_dukascopy_candles

        return read_dukascopy_candles(path, spec=spec)
    if fmt == "histdata":
        from pipelines.readers.histdata import read_histdata

        return read_histdata(path, spec=spec, tz=tz)
    if fmt == "histdata-bars":
        from pipelines.readers.histdata import read_histdata_bars

        return read_histdata_bars(path, spec=spec, tz=tz)
    if fmt == "truefx":
        from pipelines.readers.truefx import read_truefx

        return read_truefx(path, spec=spec, tz=tz)
    if fmt in {"csv", "csv-bars"}:
        from pipelines.readers.generic import read_generic

        return read_generic(path, spec=spec, column_map=column_map, bars=fmt == "csv-bars", tz=tz)
    from pipelines.readers.databento import read_databento

    return read_databento(path, spec=spec, table=table, contract=contract)
