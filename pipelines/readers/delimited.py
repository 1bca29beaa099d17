"""Fast, lossless parsing of delimited vendor text into typed columns with line numbers.

The fast path is one ``pl.read_csv`` on the bytes with an explicit schema. Only when that fails
(an unparseable number, too many fields) or leaves a required field null (too few fields, an
empty field) does the slow path run: the bytes are split into lines, each line is split on the
separator and every field is cast with ``strict=False``; lines with the wrong field count or a
field that does not parse go to the rejects with their 1-based physical line number and text.
Both paths are vectorized; the slow path costs a few times the fast one and runs only on files
that hold bad lines. Blank lines are not data lines: they are neither kept nor counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from pipelines.errors import PipelineError
from pipelines.readers.result import MALFORMED

_FAST_PATH_FAILURE = pl.exceptions.PolarsError  # any parse trouble: take the per-line path


@dataclass(frozen=True)
class Parsed:
    """Typed columns of the good lines, and the bad lines, of one delimited text."""

    frame: pl.DataFrame  # the declared columns, then source_line (Int64, 1-based physical line)
    rejects: pl.DataFrame  # source_line, raw, reason (and ts_event where known)
    rows_in: int  # data lines, header and blank lines excluded


def count_lines(data: bytes) -> int:
    """Return the number of physical lines in ``data`` (a last line without newline counts)."""
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def raw_lines(data: bytes, line_numbers: Sequence[int]) -> list[str]:
    """Return the text of the given 1-based physical lines of ``data``."""
    lines = data.split(b"\n")
    return [lines[n - 1].rstrip(b"\r").decode("utf-8", errors="replace") for n in line_numbers]


def reject_frame(source_line: Sequence[int], raw: Sequence[str], reason: str) -> pl.DataFrame:
    """Return a rejects frame (source_line, raw, reason)."""
    return pl.DataFrame(
        {"source_line": list(source_line), "raw": list(raw), "reason": [reason] * len(raw)},
        schema={"source_line": pl.Int64, "raw": pl.String, "reason": pl.String},
    )


def parse_delimited(
    data: bytes,
    *,
    columns: dict[str, pl.DataType],
    required: Sequence[str] | None = None,
    header_lines: int = 0,
    separator: str = ",",
    quote_char: str | None = None,
) -> Parsed:
    """Parse delimited ``data`` into the declared typed ``columns``.

    Parameters
    ----------
    data
        The file's bytes (already decompressed).
    columns
        Field name -> dtype, in field order. Declare timestamp text as ``pl.String``.
    required
        Fields that must be present and non-empty (default: all).
    header_lines
        Physical lines at the top that are not data.
    separator
        One-character field separator.
    quote_char
        Quote character of quoted fields (generic CSV); vendor formats have none. The per-line
        path only strips quotes around fields, so a separator inside quotes makes that line
        a reject there.

    Returns
    -------
    Parsed
        Good lines typed, bad lines with reason ``malformed_line``, and the data-line count.
    """
    required = list(columns) if required is None else list(required)
    n_lines = count_lines(data)
    fast = _fast(data, columns, required, header_lines, separator, quote_char, n_lines)
    if fast is not None:
        return fast
    return _slow(data, columns, required, header_lines, separator, quote_char)


def _fast(data, columns, required, header_lines, separator, quote_char, n_lines) -> Parsed | None:
    expected = n_lines - header_lines
    if expected <= 0:
        return None
    try:
        frame = pl.read_csv(
            data,
            has_header=False,
            skip_rows=header_lines,
            new_columns=list(columns),
            schema=pl.Schema(columns),
            separator=separator,
            quote_char=quote_char,
        )
    except _FAST_PATH_FAILURE:
        return None
    if frame.height != expected:
        return None
    checked = [name for name in columns if name in required or columns[name] != pl.String]
    if any(frame[name].null_count() for name in checked):  # null counts are kept, no scan
        return None
    frame = frame.with_columns(
        pl.int_range(header_lines + 1, header_lines + 1 + frame.height, dtype=pl.Int64).alias(
            "source_line"
        )
    )
    return Parsed(frame=frame, rejects=reject_frame([], [], MALFORMED), rows_in=frame.height)


def _slow(data, columns, required, header_lines, separator, quote_char) -> Parsed:
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    text = (
        pl.DataFrame({"raw": pl.Series(lines, dtype=pl.String)})
        .with_row_index("source_line", offset=1)
        .with_columns(pl.col("source_line").cast(pl.Int64), pl.col("raw").str.strip_suffix("\r"))
        .slice(header_lines)
        .filter(pl.col("raw").str.strip_chars() != "")
    )
    names = list(columns)
    fields = pl.col("raw").str.split_exact(separator, len(names) - 1)
    text = text.with_columns(
        fields.struct.rename_fields([f"_text_{n}" for n in names]).alias("_fields")
    ).unnest("_fields")
    typed, bad = (
        [],
        [
            pl.col("raw").str.count_matches(separator, literal=True) != len(names) - 1,
        ],
    )
    for name, dtype in columns.items():
        field = pl.col(f"_text_{name}").str.strip_chars()
        if quote_char is not None:
            field = field.str.strip_prefix(quote_char).str.strip_suffix(quote_char)
        value = field if dtype == pl.String else field.cast(dtype, strict=False)
        typed.append(value.alias(name))
        empty = field.is_null() | (field == "")
        if name in required:
            bad.append(empty)
        if dtype != pl.String:
            bad.append(value.is_null() & ~empty)
    text = text.with_columns(typed).with_columns(pl.any_horizontal(bad).alias("_bad"))
    good = text.filter(~pl.col("_bad")).select([*names, "source_line"])
    rejects = text.filter(pl.col("_bad")).select(
        "source_line", "raw", pl.lit(MALFORMED).alias("reason")
    )
    return Parsed(frame=good, rejects=rejects, rows_in=text.height)


def split_invalid(
    parsed: Parsed,
    frame: pl.DataFrame,
    *,
    data: bytes,
    invalid: pl.Expr,
    reason: pl.Expr | str = MALFORMED,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Move rows of ``frame`` (derived from ``parsed.frame``) where ``invalid`` holds to rejects.

    Used after format-specific conversions (timestamps, scaling) that may yield nulls. Returns
    ``(kept, rejects)`` where rejects already includes ``parsed.rejects``.
    """
    flagged = frame.with_columns(invalid.fill_null(True).alias("_invalid"))
    if not flagged.select(pl.col("_invalid").any()).item():
        return frame, parsed.rejects.with_columns(pl.lit(None, pl.Int64).alias("ts_event"))
    bad = flagged.filter(pl.col("_invalid"))
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    bad = bad.select(
        "source_line",
        pl.col("ts_event")
        if "ts_event" in bad.columns
        else pl.lit(None, pl.Int64).alias("ts_event"),
        pl.Series("raw", raw_lines(data, bad["source_line"].to_list()), dtype=pl.String),
        reason_expr.cast(pl.String).alias("reason"),
    )
    kept = flagged.filter(~pl.col("_invalid")).drop("_invalid")
    return kept, pl.concat([parsed.rejects, bad], how="diagonal_relaxed").sort("source_line")


def require_some_rows(parsed: Parsed, label: str, *, fmt: str) -> None:
    """Raise ``PipelineError`` when no line of a non-empty file parses (wrong format)."""
    if parsed.rows_in == 0:
        raise PipelineError("no data lines", path=label)
    if parsed.frame.height == 0:
        first = parsed.rejects.row(0, named=True)
        message = f"not a {fmt} file: no line parses (first: {first['raw'][:80]!r})"
        raise PipelineError(message, path=label, line=first["source_line"])
