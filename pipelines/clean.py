"""Tick cleaning with a quarantine: nothing is dropped silently.

Every stage is ``LazyFrame -> LazyFrame`` with keyword-only options and no ``collect``. Input is a
QUOTES, TRADES or BARS frame followed by the LINEAGE columns ``source_file``/``source_line`` (as
the readers produce it). Each row ends in exactly one of two places:

- **kept**: the table's schema + LINEAGE, sorted by ``ts_event`` (stable: ties keep input order);
- **rejected**: the QUARANTINE schema, with the first ``reason`` that applies, in this order.

Rules, in priority order (a row gets the first reason that applies)
--------------------------------------------------------------------
``missing_timestamp``
    ``ts_event`` is null.
``missing_price``
    a price column is null (quotes: bid or ask; trades: price; bars: any of OHLC).
``non_finite_price``
    a price is NaN or +-inf.
``non_positive_price``
    a price is ``<= 0``.
``invalid_size``
    a size (``bid_size``, ``ask_size``, ``size``, ``volume``) is NaN, infinite or negative
    (null sizes are allowed: many FX sources have none).
``invalid_side`` (trades)
    ``aggressor_side`` not null and not one of ``B``, ``S``, ``N``.
``inconsistent_ohlc`` (bars)
    ``high < low`` or open/close outside ``[low, high]``.
``crossed_quote`` (quotes, policy ``spec.cleaning.crossed_quotes``)
    ``bid - ask >= 0.5 * price_increment`` (bid above ask by at least half an increment).
``locked_quote`` (quotes, policy ``spec.cleaning.locked_quotes``)
    ``|ask - bid| < 0.5 * price_increment``.
``wide_spread`` (quotes)
    ``ask - bid > max_spread_increments * price_increment``.
``out_of_order``
    ``ts_event`` is earlier than the latest ``ts_event`` of any *earlier line of the same
    source file* (file order; equal timestamps are in order). Rows are compared with every
    earlier row of the file that has a timestamp, whatever its other faults.
``duplicate``
    the same ``ts_event`` and the same values (every non-lineage column, nulls equal) as an
    earlier surviving row of the whole batch (file order, then line order); the first copy is
    kept. Checked after ``out_of_order``, so a repeat that also goes back in time is
    ``out_of_order``; a dropped crossed quote is ``crossed_quote`` even when repeated.
``spike`` (quotes on the mid, trades on the price)
    a robust rolling (Hampel) filter over the surviving ticks, in time order. For tick ``k`` the
    window is ``spike_window`` ticks, *centered* by default (ticks ``k - W//2 .. k + W - 1 - W//2``,
    the window Polars' ``center=True`` uses; truncated at the ends of the batch) or trailing
    (``k - W + 1 .. k``) with ``center=False``. With ``med`` the window's median and ``MAD`` the
    median of ``|x - med|`` over the same window (unscaled), the tick is a spike when
    ``|x_k - med| > max(spike_mad_multiple * MAD, spike_threshold_increments * price_increment)``.
    Centered is the default because a centered median follows a genuine level shift at once,
    where a trailing one rejects up to ``W/2`` good ticks after every jump; the price is a mild
    look-ahead in *which* ticks are kept (a tick's fate depends on the ``W/2`` ticks after it),
    never in any stored value. Crossed/locked quotes whose policy is ``keep`` or ``flag`` take
    part in the statistics; dropped ones do not.

Policies ``drop`` / ``keep`` / ``flag`` (crossed and locked quotes)
    ``drop`` quarantines the row with the reason above; ``keep`` stores it like any other row;
    ``flag`` stores it *and* records it, with the same reason, in a separate ``flagged`` frame
    (QUARANTINE schema) so the ingest report counts it under ``flagged`` and the store keeps it
    in its ``flagged`` table. Flagged rows are stored rows: rows in = stored + quarantined.

Speed: the exact median/MAD is computed only for ticks whose window range (rolling max minus
rolling min, both O(n)) exceeds the threshold, since ``|x_k - med| <= max - min`` over the window;
elsewhere no tick can be a spike. Duplicates are searched only among rows sharing a timestamp.

All of this assumes one instrument per frame (the spec is that instrument's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from data_specs.schemas import BARS, LINEAGE, QUARANTINE, QUOTES, TRADES, conform
from data_specs.spec import InstrumentSpec

_REASON = "_reason"
_FLAG = "_flag"

VALUE_COLUMNS: dict[str, list[str]] = {
    "quotes": [c for c in QUOTES if c not in ("instrument_id", "ts_event")],
    "trades": [c for c in TRADES if c not in ("instrument_id", "ts_event")],
    "bars": [c for c in BARS if c not in ("instrument_id", "ts_event")],
}
SCHEMAS: dict[str, pl.Schema] = {"quotes": QUOTES, "trades": TRADES, "bars": BARS}
# reasons travel as small integer codes (cheap when/then chains) and become strings only in the
# quarantine frame
REASONS = (
    "missing_timestamp",
    "missing_price",
    "non_finite_price",
    "non_positive_price",
    "invalid_size",
    "invalid_side",
    "inconsistent_ohlc",
    "crossed_quote",
    "locked_quote",
    "wide_spread",
    "out_of_order",
    "duplicate",
    "spike",
)
CODES = {code: name for code, name in enumerate(REASONS)}


def _code(reason: str) -> pl.Expr:
    return pl.lit(REASONS.index(reason), dtype=pl.UInt8)


@dataclass(frozen=True)
class Cleaned:
    """Result of cleaning one batch (all lazy; collect them together with ``pl.collect_all``).

    Attributes
    ----------
    kept : pl.LazyFrame
        The table's schema followed by LINEAGE columns, sorted by ``ts_event``.
    rejected : pl.LazyFrame
        QUARANTINE schema: every row not kept, with its reason.
    flagged : pl.LazyFrame
        QUARANTINE schema: kept rows that a ``flag`` policy marked (they are also in ``kept``).
    """

    table: str
    kept: pl.LazyFrame
    rejected: pl.LazyFrame
    flagged: pl.LazyFrame


def with_lineage(lf: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Conform ``lf`` to the table's schema followed by LINEAGE (missing lineage -> nulls)."""
    return conform(lf, pl.Schema({**SCHEMAS[table], **LINEAGE}))


def _price_reasons(prices: list[str]) -> pl.Expr:
    """Return a ``when/then`` chain naming the first price fault, or null."""
    missing = pl.any_horizontal([pl.col(c).is_null() for c in prices])
    non_finite = pl.any_horizontal([~pl.col(c).is_finite() for c in prices])
    non_positive = pl.any_horizontal([pl.col(c) <= 0 for c in prices])
    return (
        pl.when(missing)
        .then(_code("missing_price"))
        .when(non_finite)
        .then(_code("non_finite_price"))
        .when(non_positive)
        .then(_code("non_positive_price"))
    )


def _bad_size(sizes: list[str]) -> pl.Expr:
    return pl.any_horizontal(
        [(pl.col(c).is_not_null() & (~pl.col(c).is_finite() | (pl.col(c) < 0))) for c in sizes]
    ).fill_null(False)


def _out_of_order() -> pl.Expr:
    """True where ``ts_event`` is before the running max of earlier rows of the same file."""
    previous_max = pl.col("ts_event").cum_max().shift(1).forward_fill()
    # files arrive one after another: a run of equal source_file values is one file
    file_run = pl.col("source_file").rle_id()
    return (pl.col("ts_event") < previous_max).over(file_run).fill_null(False)


def row_reasons(lf: pl.LazyFrame, *, table: str, spec: InstrumentSpec) -> pl.LazyFrame:
    """Add ``_reason`` for faults visible row by row (and ``out_of_order``) and ``_flag``.

    Parameters
    ----------
    lf : pl.LazyFrame
        The table's schema followed by LINEAGE, in file order.
    table : {"quotes", "trades", "bars"}
    spec : InstrumentSpec
        Quote policies (crossed, locked, maximum spread).
    """
    if table == "quotes":
        chain = _price_reasons(["bid_price", "ask_price"])
        sizes = ["bid_size", "ask_size"]
    elif table == "trades":
        chain = _price_reasons(["price"])
        sizes = ["size"]
    else:
        chain = _price_reasons(["open", "high", "low", "close"])
        sizes = ["volume"]
    chain = chain.when(_bad_size(sizes)).then(_code("invalid_size"))
    if table == "trades":
        side = pl.col("aggressor_side")
        chain = chain.when(side.is_not_null() & ~side.is_in(["B", "S", "N"])).then(
            _code("invalid_side")
        )
    if table == "bars":
        hi, lo = pl.col("high"), pl.col("low")
        bad = (
            (hi < lo)
            | (pl.col("open") > hi)
            | (pl.col("open") < lo)
            | (pl.col("close") > hi)
            | (pl.col("close") < lo)
        )
        chain = chain.when(bad).then(_code("inconsistent_ohlc"))
    flag = pl.lit(None, pl.UInt8)
    if table == "quotes":
        policy, flag = quote_policy(spec)
        chain = chain.when(policy.is_not_null()).then(policy)
    # the row faults and the file-order test are separate columns first, so that Polars
    # computes them in parallel; then the first reason that applies wins
    reason = (
        pl.when(pl.col("ts_event").is_null())
        .then(_code("missing_timestamp"))
        .otherwise(pl.coalesce(pl.col("_row"), pl.col("_order")))
    )
    return (
        lf.with_columns(
            chain.alias("_row"),
            pl.when(_out_of_order()).then(_code("out_of_order")).alias("_order"),
        )
        .with_columns(reason.alias(_REASON))
        .with_columns(pl.when(pl.col(_REASON).is_null()).then(flag).alias(_FLAG))
        .drop("_row", "_order")
    )


def duplicate_reasons(lf: pl.LazyFrame, *, table: str) -> pl.LazyFrame:
    """Set ``_reason = "duplicate"`` on repeats of an earlier row (same ts and values).

    ``lf`` must be sorted by ``ts_event`` (stable, so ties keep batch order); only rows sharing a
    timestamp with a neighbour are compared value by value.
    """
    ts = pl.col("ts_event")
    tie = (ts == ts.shift(1)).fill_null(False) | (ts == ts.shift(-1)).fill_null(False)
    key = pl.struct(["ts_event", *VALUE_COLUMNS[table]])
    # only rows that share their timestamp with a neighbour can repeat an earlier row; the
    # value-by-value test (hashing) runs on that short sub-column and is scattered back by row
    row = pl.int_range(pl.len(), dtype=pl.UInt32)
    repeats = row.filter(tie).filter(~key.filter(tie).is_first_distinct())
    reason = pl.when(row.is_in(repeats.implode())).then(_code("duplicate"))
    if _REASON in lf.collect_schema():
        reason = pl.coalesce(pl.col(_REASON), reason)
    return lf.with_columns(reason.alias(_REASON))


def quote_policy(spec: InstrumentSpec) -> tuple[pl.Expr, pl.Expr]:
    """Return ``(reason, flag)`` expressions for crossed/locked policies and the max spread.

    ``reason`` is ``crossed_quote``/``locked_quote`` where the policy is ``drop``, or
    ``wide_spread``; ``flag`` names the condition where the policy is ``flag``; both null otherwise.
    """
    spread = (pl.col("ask_price") - pl.col("bid_price")) / spec.price_increment  # increments
    tests = {"crossed_quote": spread <= -0.5, "locked_quote": spread.abs() < 0.5}
    policy = {
        "crossed_quote": spec.cleaning.crossed_quotes,
        "locked_quote": spec.cleaning.locked_quotes,
    }
    reason = pl.lit(None, pl.UInt8)
    flag = pl.lit(None, pl.UInt8)
    for name, test in tests.items():
        if policy[name] == "drop":
            reason = pl.when(reason.is_null() & test).then(_code(name)).otherwise(reason)
        elif policy[name] == "flag":
            flag = pl.when(flag.is_null() & test).then(_code(name)).otherwise(flag)
    # a crossed quote that is kept or flagged is not also "wide": its spread is negative
    wide = spread > spec.cleaning.max_spread_increments + 1e-9
    reason = pl.when(reason.is_null() & wide).then(_code("wide_spread")).otherwise(reason)
    return reason, flag


def spike_reasons(
    lf: pl.LazyFrame,
    *,
    value: pl.Expr,
    window: int,
    mad_multiple: float,
    threshold: float,
    center: bool = True,
    checkpoint: Callable[[pl.LazyFrame], pl.LazyFrame] = lambda lf: lf,
) -> pl.LazyFrame:
    """Set ``_reason = "spike"`` where ``value`` leaves its rolling median (Hampel filter).

    Parameters
    ----------
    lf : pl.LazyFrame
        Surviving ticks of one instrument, sorted by ``ts_event``.
    value : pl.Expr
        The series tested (mid for quotes, price for trades).
    window : int
        Ticks in the window (``spec.cleaning.spike_window``).
    mad_multiple : float
        ``spec.cleaning.spike_mad_multiple``.
    threshold : float
        Minimum deviation in price units (``spike_threshold_increments * price_increment``).
    center : bool
        Centered window (default) or trailing.
    """
    left = window // 2 if center else window - 1
    right = window - 1 - left
    x, n = pl.col("_x"), pl.len()
    # |x_k - median| <= max - min over the window: only wide windows can hold a spike
    # (rolling max and min as two columns: Polars computes them in parallel)
    base = checkpoint(
        lf.with_columns(value.alias("_x"))
        .with_columns(
            x.rolling_max(window, min_samples=1, center=center).alias("_hi"),
            x.rolling_min(window, min_samples=1, center=center).alias("_lo"),
        )
        .with_columns((pl.col("_hi") - pl.col("_lo") > threshold * (1 - 1e-9)).alias("_wide"))
        .drop("_hi", "_lo")
    )
    # The suspects' exact windows, gathered without a join: one row of ``window`` positions per
    # suspect (null where the window runs past either end of the batch), then per-row median
    # and MAD of the window (list ops ignore the nulls).
    row = pl.int_range(n, dtype=pl.Int64)
    suspects = row.filter(pl.col("_wide"))
    positions = pl.int_ranges(suspects - left, suspects + right + 1).explode()
    members = pl.when((positions >= 0) & (positions < n)).then(x.gather(positions.clip(0, n - 1)))
    windows = members.reshape((-1, window)).arr.to_list()
    median = windows.list.median()
    mad = windows.list.eval((pl.element() - pl.element().median()).abs().median()).list.first()
    deviation = (x.gather(suspects) - median).abs()
    spikes = suspects.filter(deviation > pl.max_horizontal(mad * mad_multiple, pl.lit(threshold)))
    reason = pl.when(row.is_in(spikes.implode())).then(_code("spike"))
    if _REASON in lf.collect_schema():
        reason = pl.coalesce(pl.col(_REASON), reason)
    return base.with_columns(reason.alias(_REASON)).drop("_x", "_wide")


def _raw(table: str) -> pl.Expr:
    """Render a row as ``ts_event,<values...>`` for the quarantine's ``raw`` column."""
    columns = ["ts_event", *VALUE_COLUMNS[table]]
    return pl.concat_str(
        [pl.col(c).cast(pl.String).fill_null("") for c in columns], separator=","
    ).alias("raw")


def to_quarantine(lf: pl.LazyFrame, *, table: str, reason: str = _REASON) -> pl.LazyFrame:
    """Project rows carrying a reason column into the QUARANTINE schema."""
    return conform(
        lf.with_columns(
            pl.lit(table).alias("table"),
            pl.col(reason).replace_strict(CODES, return_dtype=pl.String).alias("reason"),
            _raw(table),
        ),
        QUARANTINE,
    )


def cache(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Default checkpoint: let Polars compute a shared sub-plan once per collect."""
    return lf.cache()


def clean(
    lf: pl.LazyFrame,
    *,
    table: str,
    spec: InstrumentSpec,
    center: bool = True,
    checkpoint: Callable[[pl.LazyFrame], pl.LazyFrame] = cache,
) -> Cleaned:
    """Split a batch into kept, rejected and flagged rows (see the module docstring for rules).

    Parameters
    ----------
    lf : pl.LazyFrame
        One instrument's rows in the table's schema (+ LINEAGE), in file order; several files
        may be concatenated (file order, then line order).
    table : {"quotes", "trades", "bars"}
    spec : InstrumentSpec
        Cleaning policy and price increment.
    center : bool
        Centered (default) or trailing spike window.
    checkpoint : callable
        Applied where the plan branches (rows are split between kept and rejected). The default
        marks a shared sub-plan (``LazyFrame.cache``) and keeps everything lazy; a runner that
        wants the fastest single pass (``pipelines.ingest``) passes one that materializes,
        ``lambda lf: lf.collect().lazy()``. This module itself never collects.

    Returns
    -------
    Cleaned
        Lazy ``kept`` / ``rejected`` / ``flagged``; every input row is in exactly one of
        ``kept`` and ``rejected``.
    """
    if table not in SCHEMAS:
        message = f"cannot clean table '{table}' (expected one of {sorted(SCHEMAS)})"
        raise ValueError(message)
    frame = checkpoint(row_reasons(with_lineage(lf, table), table=table, spec=spec))
    early_rejects = frame.filter(pl.col(_REASON).is_not_null())
    survivors = frame.filter(pl.col(_REASON).is_null()).sort("ts_event", maintain_order=True)
    survivors = checkpoint(duplicate_reasons(survivors, table=table))
    late_rejects = survivors.filter(pl.col(_REASON).is_not_null())
    candidates = survivors.filter(pl.col(_REASON).is_null())
    if table in ("quotes", "trades"):
        value = (
            (pl.col("bid_price") + pl.col("ask_price")) * 0.5
            if table == "quotes"
            else pl.col("price")
        )
        candidates = spike_reasons(
            candidates,
            value=value,
            window=spec.cleaning.spike_window,
            mad_multiple=spec.cleaning.spike_mad_multiple,
            threshold=spec.cleaning.spike_threshold_increments * spec.price_increment,
            center=center,
            checkpoint=checkpoint,
        )
    candidates = checkpoint(candidates)
    spikes = candidates.filter(pl.col(_REASON).is_not_null())
    kept = candidates.filter(pl.col(_REASON).is_null())
    rejected = pl.concat(
        [
            to_quarantine(early_rejects, table=table),
            to_quarantine(late_rejects, table=table),
            to_quarantine(spikes, table=table),
        ],
        how="vertical",
    )
    flagged = to_quarantine(kept.filter(pl.col(_FLAG).is_not_null()), table=table, reason=_FLAG)
    return Cleaned(
        table=table,
        kept=with_lineage(kept, table),
        rejected=rejected,
        flagged=flagged,
    )


def clean_quotes(
    lf: pl.LazyFrame, *, spec: InstrumentSpec, center: bool = True
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Clean QUOTES (+ LINEAGE); return ``(kept, rejected)``. Flags: see :func:`clean`."""
    result = clean(lf, table="quotes", spec=spec, center=center)
    return result.kept, result.rejected


def clean_trades(
    lf: pl.LazyFrame, *, spec: InstrumentSpec, center: bool = True
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Clean TRADES (+ LINEAGE); return ``(kept, rejected)``."""
    result = clean(lf, table="trades", spec=spec, center=center)
    return result.kept, result.rejected


def clean_bars(lf: pl.LazyFrame, *, spec: InstrumentSpec) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Clean vendor BARS (+ LINEAGE): prices, OHLC consistency, order, duplicates; no spikes."""
    result = clean(lf, table="bars", spec=spec)
    return result.kept, result.rejected
