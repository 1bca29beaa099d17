"""Synthetic ticks: schema, determinism, price grid, calendar gaps, spread dynamics."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from data_specs import QUOTES, load_spec
from pipelines.synthetic import SyntheticConfig, generate_quotes

NS = 1_000_000_000
EURUSD = load_spec("EURUSD")


def _local(q: pl.DataFrame, tz: str) -> pl.DataFrame:
    return q.with_columns(
        pl.from_epoch("ts_event", time_unit="ns").dt.replace_time_zone("UTC")
        .dt.convert_time_zone(tz).alias("local")
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_weeks() -> pl.DataFrame:
    return generate_quotes(EURUSD, start="2024-03-04", end="2024-03-18", seed=7)


def test_generate_quotes_has_quotes_schema_sorted_on_price_grid(two_weeks):
    q = two_weeks
    assert q.schema == QUOTES
    assert q["ts_event"].is_sorted()
    assert (q["instrument_id"] == "EURUSD").all()
    assert (q["ask_price"] > q["bid_price"]).all()
    for col in ("bid_price", "ask_price"):
        grid = q[col] / EURUSD.price_increment
        assert (grid - grid.round()).abs().max() < 1e-6
    # about one tick per second of open market time (10 trading days here)
    rate = q.height / (10 * 86_400)
    assert 0.7 < rate < 1.3


def test_generate_quotes_is_deterministic_for_a_seed():
    a = generate_quotes(EURUSD, start="2024-01-02", end="2024-01-03", seed=3)
    b = generate_quotes(EURUSD, start="2024-01-02", end="2024-01-03", seed=3)
    c = generate_quotes(EURUSD, start="2024-01-02", end="2024-01-03", seed=4)
    assert a.equals(b)
    assert not a.equals(c)


def test_fx_has_no_ticks_from_friday_17h_to_sunday_17h_new_york(two_weeks):
    local = _local(two_weeks, "America/New_York")["local"]
    weekday = local.dt.weekday()
    minutes = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    closed = (
        ((weekday == 5) & (minutes >= 17 * 60)) | (weekday == 6)
        | ((weekday == 7) & (minutes < 17 * 60))
    )  # fmt: skip
    assert closed.sum() == 0
    # 2024-03-10 is the US DST switch: the market still reopens at 17:00 NY
    sunday = local.filter(local.dt.date() == dt.date(2024, 3, 10))
    assert sunday.min().hour == 17 and sunday.min().minute == 0
    # ... and the last tick before the weekend is just before Friday 17:00 NY
    friday = local.filter((local.dt.weekday() == 5) & (local.dt.date() == dt.date(2024, 3, 8)))
    assert friday.max().hour == 16 and friday.max().minute == 59


def test_cme_futures_pause_daily_16_to_17_chicago():
    es = load_spec("ES")
    q = generate_quotes(es, start="2024-06-03", end="2024-06-08", seed=1)
    local = _local(q, "America/Chicago")["local"]
    assert (local.dt.hour() == 16).sum() == 0
    assert q.height > 100_000
    # prices on the 0.25 grid
    assert ((q["bid_price"] / 0.25) - (q["bid_price"] / 0.25).round()).abs().max() < 1e-9


def test_spreads_are_wider_in_the_quiet_asian_night_than_in_the_london_ny_overlap(two_weeks):
    spread = (pl.col("ask_price") - pl.col("bid_price")) / EURUSD.pip_size
    hours = _local(two_weeks, "UTC").group_by(pl.col("local").dt.hour().alias("h")).agg(
        spread.mean().alias("spread"), pl.len().alias("ticks")
    )  # fmt: skip
    by_hour = dict(zip(hours["h"], hours["spread"], strict=True))
    ticks = dict(zip(hours["h"], hours["ticks"], strict=True))
    assert by_hour[21] > 1.2 * by_hour[13]  # 21 UTC: after NY close; 13 UTC: overlap
    assert ticks[13] > 2 * ticks[21]  # tick intensity follows the sessions


def test_turbulent_regimes_and_jumps_fatten_the_tails():
    calm = SyntheticConfig(
        regime_volatility=(1.0, 1.0, 1.0), sv_std=(0.0,) * 5, jumps_per_day=0.0,
        tick_t_dof=1000.0,
    )  # fmt: skip
    kw = {"start": "2024-01-01", "end": "2024-01-22", "seed": 2}

    def kurtosis(q):
        mid = ((q["bid_price"] + q["ask_price"]) / 2).to_numpy()
        minute = q["ts_event"].to_numpy() // (60 * NS)
        last = np.r_[np.flatnonzero(np.diff(minute)), minute.size - 1]
        r = np.diff(np.log(mid[last]))
        r = r - r.mean()
        return np.mean(r**4) / np.mean(r**2) ** 2 - 3

    assert kurtosis(generate_quotes(EURUSD, **kw)) > 3 * kurtosis(
        generate_quotes(EURUSD, config=calm, **kw)
    )


def test_default_store_builds_once_marks_synthetic_and_serves_bars(tmp_path):
    from data_specs import BARS
    from pipelines.store import Store
    from pipelines.synthetic import MARKER, default_store

    root = default_store(tmp_path / "synthetic", instrument_id="EURUSD", days=7)
    assert (root / MARKER).is_file()
    assert "SYNTHETIC" in (root / MARKER).read_text()
    store = Store(root)
    bars = store.scan("bars", "EURUSD").collect()
    quotes = store.scan("quotes", "EURUSD").collect()
    assert bars.schema == BARS and bars["ts_event"].is_sorted()
    assert bars["tick_count"].sum() == quotes.height
    # 2024-01-01..08: Mon-Fri trading days plus Sunday evening -> ~5 days of minutes
    assert 5 * 1440 - 60 <= bars.height <= 6 * 1440
    # a second call with the same arguments is served from disk, unchanged
    files = sorted(p.stat().st_mtime_ns for p in root.rglob("*.parquet"))
    assert default_store(root, instrument_id="EURUSD", days=7) == root
    assert sorted(p.stat().st_mtime_ns for p in root.rglob("*.parquet")) == files
    # other arguments rebuild that instrument (no rows of the old build remain)
    default_store(root, instrument_id="EURUSD", days=3, seed=1)
    rebuilt = store.scan("bars", "EURUSD").collect()
    assert rebuilt.height < bars.height and not rebuilt.equals(bars.head(rebuilt.height))
