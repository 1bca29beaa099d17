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


def test_real_es_roll_from_december_2013_to_march_2014_is_seamless(shared_data):
    """LEAN ES minute quote bars: ESZ3 (expiry 2013-12-20) rolls to ESH4 on 2013-12-12."""
    from pipelines.readers import read

    root = shared_data / "quantconnect-lean" / "future" / "cme" / "minute" / "es"
    days = {"201312": ["20131202", "20131203"], "201403": ["20131202", "20131218", "20131220"]}
    bars = {
        f"ES{'Z' if c.endswith('12') else 'H'}{c[:4]}": pl.concat(
            read(root / f"{day}_quote.zip", fmt="lean-bars", spec=ES, contract=c).frame.collect()
            for day in days[c]
        )
        for c in days
    }
    assert expiry_date(ES, 2013, 12) == dt.date(2013, 12, 20)
    series, rolls = continuous(bars, spec=ES, adjust="difference")
    series = series.collect()
    row = rolls.row(0, named=True)
    assert (row["from_contract"], row["to_contract"]) == ("ESZ3", "ESH4")
    assert row["roll_date"] == dt.date(2013, 12, 12)
    # the gap is measured at the last minute both contracts traded before the roll: ESH4's last
    # bar of the 2013-12-02 file (ESZ3 also traded on 12-03, ESH4 has no bars there)
    h4_before = bars["ESH2014"].filter(pl.col("ts_close") <= row["roll_ts"])
    assert row["probe_ts"] == h4_before["ts_close"].max()
    old, new = (
        bars[k].filter(pl.col("ts_close") == row["probe_ts"]) for k in ("ESZ2013", "ESH2014")
    )
    assert row["adjustment"] == pytest.approx(new["close"][0] - old["close"][0])
    assert row["adjustment"] < 0  # ESH4 traded below ESZ3 (dividends above financing cost)
    # before the roll: ESZ3 shifted by the adjustment; after: ESH4 untouched
    before = series.filter(pl.col("ts_event") < row["roll_ts"])
    after = series.filter(pl.col("ts_event") >= row["roll_ts"])
    z3 = bars["ESZ2013"].sort("ts_event")
    np.testing.assert_allclose(before["close"], z3["close"] + row["adjustment"])
    h4 = bars["ESH2014"].filter(pl.col("ts_event") >= row["roll_ts"]).sort("ts_event")
    np.testing.assert_allclose(after["close"], h4["close"])
    # no jump at the roll: at the probe minute the adjusted old contract equals the new one
    at_probe = before.filter(pl.col("ts_close") == row["probe_ts"])["close"][0]
    assert at_probe == pytest.approx(new["close"][0])
