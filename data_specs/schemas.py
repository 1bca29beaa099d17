"""Table schemas, defined once.

Every table keys rows by ``instrument_id`` (the TOML file name) and ``ts_event``, int64 UTC
nanoseconds since the Unix epoch. Readers attach ``source_file``/``source_line`` lineage
(``LINEAGE``) so that the quarantine can name where a rejected row came from.

Time semantics (no look-ahead):

- QUOTES/TRADES: ``ts_event`` is when the vendor stamped the tick.
- BARS: ``ts_event`` is the bar's open (inclusive), ``ts_close`` its end (exclusive); a bar's
  values are known only at ``ts_close``.
- FEATURES: ``ts_event`` is the time at which every feature in the row is known (a bar's
  ``ts_close``); labels (``label_*``) look forward from that instant.
- FORECASTS: ``ts_event`` is the instant the forecast is made (the same instant as the
  FEATURES row it used); it forecasts the ``horizon`` bars that follow.
"""

from __future__ import annotations

import polars as pl

# source_file is Categorical: a few distinct paths repeated on every row (cheap to build,
# compare, group and write -- Parquet stores it dictionary-encoded either way)
LINEAGE = pl.Schema({"source_file": pl.Categorical(), "source_line": pl.Int64})

QUOTES = pl.Schema(
    {
        "instrument_id": pl.String,
        "ts_event": pl.Int64,
        "bid_price": pl.Float64,
        "ask_price": pl.Float64,
        "bid_size": pl.Float64,
        "ask_size": pl.Float64,
    }
)

TRADES = pl.Schema(
    {
        "instrument_id": pl.String,
        "ts_event": pl.Int64,
        "price": pl.Float64,
        "size": pl.Float64,
        # "B" buyer-initiated, "S" seller-initiated, "N" unknown
        "aggressor_side": pl.String,
    }
)

BARS = pl.Schema(
    {
        "instrument_id": pl.String,
        "ts_event": pl.Int64,  # bar open, inclusive
        "ts_close": pl.Int64,  # bar end, exclusive: values are known from here on
        "open": pl.Float64,  # mid (quotes) or trade price (trades)
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "bid_open": pl.Float64,
        "bid_high": pl.Float64,
        "bid_low": pl.Float64,
        "bid_close": pl.Float64,
        "ask_open": pl.Float64,
        "ask_high": pl.Float64,
        "ask_low": pl.Float64,
        "ask_close": pl.Float64,
        "volume": pl.Float64,
        "tick_count": pl.Int64,
        "spread_mean": pl.Float64,  # in price units; null when the source has no quotes
        "spread_max": pl.Float64,
        "realized_variance": pl.Float64,  # sum of squared log mid returns inside the bar
    }
)

QUARANTINE = pl.Schema(
    {
        "table": pl.String,  # "quotes" | "trades" | "bars"
        "instrument_id": pl.String,
        "ts_event": pl.Int64,  # null when the timestamp itself could not be parsed
        "reason": pl.String,
        "source_file": pl.Categorical(),
        "source_line": pl.Int64,
        "raw": pl.String,  # the offending line or a rendering of the row
    }
)

# FEATURES: these key columns, then Float64 feature columns (any name not starting "label_"),
# then Float64 label columns named "label_*".
FEATURES_KEY = pl.Schema({"instrument_id": pl.String, "ts_event": pl.Int64})
FEATURES = FEATURES_KEY

FORECASTS = pl.Schema(
    {
        "ts_event": pl.Int64,
        "instrument_id": pl.String,
        "model": pl.String,
        "fold": pl.Int64,
        "horizon": pl.Int64,  # in bars
        "predicted_return": pl.Float64,  # log return over the horizon
        "direction_prob": pl.Float64,  # P(forward return > 0)
        "predicted_volatility": pl.Float64,  # std of log return over the horizon
        "energy": pl.List(pl.Float64),  # HML-D energy per layer (empty for non-HML-D models)
        "realized_return": pl.Float64,  # the label, null where not yet known
        "realized_volatility": pl.Float64,
        "synthetic": pl.Boolean,  # True when the forecast was made on generated data
    }
)

TABLES: dict[str, pl.Schema] = {
    "quotes": QUOTES,
    "trades": TRADES,
    "bars": BARS,
    "quarantine": QUARANTINE,
    "forecasts": FORECASTS,
}


def conform(frame: pl.DataFrame | pl.LazyFrame, schema: pl.Schema, *, strict_extra: bool = False):
    """Select and cast ``frame``'s columns to ``schema``, in the schema's order.

    Missing nullable columns are added as nulls. Extra columns are dropped unless
    ``strict_extra`` is set, in which case they raise ``ValueError``.
    """
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    extra = [c for c in names if c not in schema]
    if strict_extra and extra:
        message = f"unexpected columns {extra}; expected {list(schema)}"
        raise ValueError(message)
    exprs = [
        (pl.col(name) if name in names else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.select(exprs)


def check_schema(frame: pl.DataFrame | pl.LazyFrame, schema: pl.Schema, *, what: str) -> None:
    """Raise ``ValueError`` with one line naming the first column that does not match."""
    got = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    for name, dtype in schema.items():
        if name not in got:
            message = f"{what}: missing column '{name}' ({dtype})"
            raise ValueError(message)
        if got[name] != dtype:
            message = f"{what}: column '{name}' is {got[name]}, expected {dtype}"
            raise ValueError(message)
