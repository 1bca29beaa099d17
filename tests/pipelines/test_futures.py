"""Futures: expiries against known last trading days, roll table, back-adjusted continuity."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from data_specs import BARS, conform, load_spec
from pipelines.futures import (
    continuous,
    contract_code,
    expiry_date,
    is_business_day,
    parse_contract,
    roll_schedule,
)

ES, E6, CL, GC, ZN = (load_spec(i) for i in ("ES", "6E", "CL", "GC", "ZN"))
NS = 1_000_000_000
HOUR = 3600 * NS


@pytest.mark.parametrize(
    ("spec", "year", "month", "expected"),
    [
        (ES, 2024, 3, dt.date(2024, 3, 15)),  # third Friday
        (ES, 2024, 6, dt.date(2024, 6, 21)),
        (E6, 2024, 3, dt.date(2024, 3, 18)),  # two business days before Wed 2024-03-20
        (CL, 2024, 2, dt.date(2024, 1, 22)),  # CLG4: 3 business days before Thu 2024-01-25
        (CL, 2023, 12, dt.date(2023, 11, 20)),  # CLZ3: 25 Nov 2023 is a Saturday -> 4 before
        (GC, 2024, 2, dt.date(2024, 2, 27)),  # third-last business day of February
        (ZN, 2024, 3, dt.date(2024, 3, 19)),  # Good Friday 03-29 makes 03-28 the last b-day
    ],
)
def test_expiry_dates_match_known_last_trading_days(spec, year, month, expected):
    assert expiry_date(spec, year, month) == expected


def test_business_days_skip_weekends_and_us_exchange_holidays():
    assert not is_business_day(dt.date(2024, 3, 29))  # Good Friday
    assert not is_business_day(dt.date(2024, 7, 4))
    assert not is_business_day(dt.date(2021, 12, 24))  # Christmas on a Saturday, observed Fri
    assert not is_business_day(dt.date(2024, 3, 16))  # Saturday
    assert is_business_day(dt.date(2024, 3, 15))


def test_contract_codes_round_trip():
    assert contract_code(ES, 2024, 3) == "ESH4"
    assert parse_contract(ES, "ESH4") == (2024, 3)
    assert parse_contract(ES, "ESZ29") == (2029, 12)
    assert parse_contract(CL, "CLF2025") == (2025, 1)
    with pytest.raises(ValueError, match="not a ES contract"):
        parse_contract(ES, "NQH4")


def test_roll_schedule_rolls_days_before_expiry_at_the_trading_day_open():
    table = roll_schedule(ES, ["ESM4", "ESH4"])
    assert table["contract"].to_list() == ["ESH4", "ESM4"]
    assert table["next_contract"].to_list() == ["ESM4", None]
    assert table["roll_date"][0] == dt.date(2024, 3, 7)  # 2024-03-15 minus 8 days
    # the trading day of 2024-03-07 opens 2024-03-06 17:00 Chicago (CST) = 23:00 UTC
    assert table["roll_ts"][0] == int(dt.datetime(2024, 3, 6, 23, tzinfo=dt.UTC).timestamp()) * NS


def _contract_bars(path: np.ndarray, ts: np.ndarray, contract: str) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "instrument_id": contract,
            "ts_event": ts,
            "ts_close": ts + HOUR,
            "open": path,
            "high": path + 0.5,
            "low": path - 0.5,
            "close": path,
            "bid_close": path - 0.125,
            "ask_close": path + 0.125,
            "tick_count": 10,
            "spread_mean": 0.25,
        }
    )
    return conform(frame, BARS)


@pytest.fixture(scope="module")
def es_contracts():
    """ESH4 and ESM4 hourly bars from Feb to Apr 2024 on one path, ESM4 at a premium."""
    start = int(dt.datetime(2024, 2, 1, tzinfo=dt.UTC).timestamp()) * NS
    ts = start + np.arange(24 * 70, dtype=np.int64) * HOUR
    rng = np.random.default_rng(0)
    path = 5000 * np.exp(np.cumsum(rng.normal(0, 1e-3, ts.size)))
    return ts, path


@pytest.mark.parametrize("adjust", ["difference", "ratio"])
def test_back_adjusted_series_has_no_jump_at_the_roll(es_contracts, adjust):
    ts, path = es_contracts
    back = path * 1.004 if adjust == "ratio" else path + 20.0  # carry premium of the new contract
    bars = {
        "ESH4": _contract_bars(path, ts, "ESH4").lazy(),
        "ESM4": _contract_bars(back, ts, "ESM4").lazy(),
    }
    series, rolls = continuous(bars, spec=ES, adjust=adjust)
    series = series.collect()
    assert series.schema == BARS
    assert (series["instrument_id"] == "ES").all()
    assert series["ts_event"].is_sorted() and series["ts_event"].n_unique() == ts.size
    close = series["close"].to_numpy()
    if adjust == "difference":
        # every bar-to-bar move, across the roll too, equals the underlying path's move
        np.testing.assert_allclose(np.diff(close), np.diff(path), atol=1e-9)
        assert rolls["adjustment"].to_list() == pytest.approx([20.0])
    else:
        np.testing.assert_allclose(np.diff(np.log(close)), np.diff(np.log(path)), atol=1e-12)
        assert rolls["adjustment"].to_list() == pytest.approx([1.004])
    # the latest contract is untouched
    assert close[-1] == pytest.approx(back[-1])
    row = rolls.row(0, named=True)
    assert (row["from_contract"], row["to_contract"]) == ("ESH4", "ESM4")
    assert row["roll_date"] == dt.date(2024, 3, 7)


def test_unadjusted_series_keeps_the_roll_gap(es_contracts):
    ts, path = es_contracts
    bars = {"ESH4": _contract_bars(path, ts, "ESH4"), "ESM4": _contract_bars(path + 20, ts, "ESM4")}
    series, rolls = continuous(bars, spec=ES, adjust="none")
    close = series.collect()["close"].to_numpy()
    jumps = np.diff(close) - np.diff(path)
    assert np.count_nonzero(np.abs(jumps) > 1e-9) == 1
    assert jumps[np.abs(jumps) > 1e-9][0] == pytest.approx(20.0)
    assert rolls["adjustment"].to_list() == [0.0]
