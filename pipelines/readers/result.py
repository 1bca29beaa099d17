"""What every reader returns: the canonical frame, its rejects and the line count."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from data_specs.schemas import BARS, LINEAGE, QUARANTINE, QUOTES, TRADES

TABLE_SCHEMAS: dict[str, pl.Schema] = {"quotes": QUOTES, "trades": TRADES, "bars": BARS}
MALFORMED = "malformed_line"
NONEXISTENT_LOCAL_TIME = "nonexistent_local_time"


@dataclass(frozen=True)
class ReadResult:
    """One vendor file read into a canonical table.

    Attributes
    ----------
    table
        ``"quotes"``, ``"trades"`` or ``"bars"``.
    frame
        The table's schema (``data_specs.schemas``) in schema order, then ``source_file`` and
        ``source_line`` (LINEAGE). Rows are in file order; nothing is cleaned yet.
    rejects
        Lines that could not be parsed, in the QUARANTINE schema (``raw`` holds the line).
    rows_in
        Data lines (or binary records) read, header excluded. Always
        ``rows_in == frame rows + rejects rows``.
    skipped
        Vendor records that by design produce no row and are not counted in ``rows_in``:
        Databento records of other instruments or of other kinds (e.g. book updates below the
        top in an MBO file), LEAN zip members of other contracts. Zero for text formats.
    """

    table: str
    frame: pl.LazyFrame
    rejects: pl.LazyFrame
    rows_in: int
    skipped: int = 0


def empty_rejects() -> pl.DataFrame:
    """Return an empty QUARANTINE frame."""
    return pl.DataFrame(schema=QUARANTINE)


def build_result(
    table: str,
    frame: pl.DataFrame,
    *,
    instrument_id: str,
    source_file: str | pl.Expr,
    rejects: pl.DataFrame | None = None,
    rows_in: int,
    skipped: int = 0,
) -> ReadResult:
    """Conform ``frame`` to the table schema plus lineage and wrap it in a ``ReadResult``.

    ``frame`` must hold ``source_line`` and the table's columns (missing nullable ones become
    null); ``source_file`` is a constant path or an expression (multi-member zips). ``rejects``
    holds ``source_line``, ``raw``, ``reason`` and optionally ``source_file``/``ts_event``.
    """
    schema = TABLE_SCHEMAS[table]
    file_expr = pl.lit(source_file) if isinstance(source_file, str) else source_file
    frame = frame.with_columns(
        pl.lit(instrument_id).alias("instrument_id"), file_expr.alias("source_file")
    )
    columns = [
        (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in {**schema, **LINEAGE}.items()
    ]
    out = frame.select(columns)
    if rejects is None or rejects.height == 0:
        quarantine = empty_rejects()
    else:
        quarantine = rejects.with_columns(
            pl.lit(table).alias("table"), pl.lit(instrument_id).alias("instrument_id")
        )
        if "source_file" not in quarantine.columns:
            quarantine = quarantine.with_columns(file_expr.alias("source_file"))
        quarantine = quarantine.select(
            (pl.col(name) if name in quarantine.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in QUARANTINE.items()
        )
    if out.height + quarantine.height != rows_in:
        message = (
            f"reader bookkeeping: {rows_in} rows in but {out.height} kept + "
            f"{quarantine.height} rejected"
        )
        raise RuntimeError(message)
    return ReadResult(
        table=table,
        frame=out.lazy(),
        rejects=quarantine.lazy(),
        rows_in=rows_in,
        skipped=skipped,
    )


def time_reject_reason() -> pl.Expr:
    """Return the reject reason of a row whose ``ts_event`` is null.

    ``_unparsed`` (set by the reader) tells a stamp that did not parse (``malformed_line``)
    from a local time that does not exist in its zone (``nonexistent_local_time``).
    """
    return (
        pl.when(pl.col("_unparsed"))
        .then(pl.lit(MALFORMED))
        .otherwise(pl.lit(NONEXISTENT_LOCAL_TIME))
    )
