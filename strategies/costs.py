"""Cost and currency arithmetic from the instrument spec (no vectorbt here).

- :func:`conversion_to_account`: account-currency units per unit of the spec's currency.
- :func:`half_spread`: from the bar's quotes at the open where present, else the spec's
  ``typical_spread / 2``.
- :func:`roll_counts`: FX rollover days in a time span, Wednesday's roll counting three.
- :func:`pip_value`: one pip on one standard lot, in the account currency.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from data_specs.spec import InstrumentSpec
from strategies.inputs import BacktestInputError


def conversion_to_account(spec: InstrumentSpec, close: np.ndarray, account: str) -> np.ndarray:
    """Return account-currency units per unit of ``spec.currency``, per bar."""
    if spec.currency == account:
        return np.ones(len(close))
    if spec.is_fx and spec.base_currency == account:
        return 1.0 / close  # e.g. USDJPY: USD per JPY
    message = (
        f"no conversion from {spec.currency} into the {account} account for {spec.instrument_id}"
    )
    raise BacktestInputError(message)


def half_spread(bars: pl.DataFrame, spec: InstrumentSpec) -> np.ndarray:
    """Return the half-spread at each bar's open: from quotes where present, else typical."""
    quoted = (bars.get_column("ask_open") - bars.get_column("bid_open")).to_numpy() / 2.0
    quoted = np.where(np.isfinite(quoted) & (quoted >= 0), quoted, np.nan)
    return np.where(np.isnan(quoted), spec.costs.typical_spread / 2.0, quoted)


def roll_counts(ts_from: np.ndarray, ts_to: np.ndarray) -> np.ndarray:
    """Return the weighted number of 17:00 New York rolls in ``[ts_from, ts_to)``.

    Rolls happen Monday to Friday; Wednesday's counts three (weekend value dates).
    """
    weekly = np.array([1, 2, 5, 6, 7, 7, 7])  # cumulative weight through Mon..Sun

    def cumulative(ns: np.ndarray) -> np.ndarray:
        local = (
            pl.Series(ns - 1, dtype=pl.Int64)
            .cast(pl.Datetime("ns"))
            .dt.replace_time_zone("UTC")
            .dt.convert_time_zone("America/New_York")
            .dt.offset_by("-17h")
            .dt.date()
            .cast(pl.Int64)
            .to_numpy()
        )
        days = local + 3  # 1970-01-01 was a Thursday: Monday-based day number
        return 7 * (days // 7) + weekly[days % 7]

    return cumulative(ts_to) - cumulative(ts_from)


def pip_value(spec: InstrumentSpec, price: float, account: str) -> float | None:
    """Account-currency value of one pip on one standard lot (FX only), at ``price``."""
    if not spec.is_fx:
        return None
    conv = conversion_to_account(spec, np.array([price]), account)[0]
    return float(spec.pip_size * spec.lot_size * spec.multiplier * conv)
