"""Features look only backward, labels only forward; session-aware calendar features."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_specs import BARS, conform, load_spec
from pipelines.bars import time_bars
from pipelines.features import (
    FeatureConfig,
    build_features,
    day_of_week,
    feature_columns,
    label_columns,
    time_of_day,
)

NS = 1_000_000_000
MINUTE = 60 * NS
SPEC = load_spec("EURUSD")


def _bars(n: int = 400, *, seed: int = 0, instrument: str = "EURUSD") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = int(dt.datetime(2024, 1, 8, tzinfo=dt.UTC).timestamp()) * NS
    ts = start + np.arange(n, dtype=np.int64) * MINUTE
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    open_ = np.r_[1.1, close[:-1]]
    high = np.maximum(open_, close) * (1 + 1e-5)
    low = np.minimum(open_, close) * (1 - 1e-5)
    spread = rng.uniform(5e-6, 2e-5, n)
    frame = pl.DataFrame(
        {
            "instrument_id": [instrument] * n,
            "ts_event": ts,
            "ts_close": ts + MINUTE,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "bid_close": close - spread / 2,
            "ask_close": close + spread / 2,
            "tick_count": rng.integers(1, 120, n),
            "spread_mean": spread,
            "spread_max": spread * 1.5,
            "realized_variance": rng.uniform(1e-9, 1e-7, n),
        }
    )
    return conform(frame, BARS)


def test_build_features_has_key_float_features_and_labels():
    out = build_features(_bars().lazy(), spec=SPEC, horizons=(1, 5)).collect()
    assert out.columns[:2] == ["instrument_id", "ts_event"]
    assert label_columns(out) == [
        "label_return_h1", "label_direction_h1", "label_volatility_h1",
        "label_return_h5", "label_direction_h5", "label_volatility_h5",
    ]  # fmt: skip
    feats = feature_columns(out)
    assert "log_return_1" in feats and "realized_vol_60" in feats and "time_of_day_sin" in feats
    assert all(out.schema[c] == pl.Float64 for c in feats + label_columns(out))
    assert out.height == 400 - FeatureConfig().warmup
    assert out.select(feats).null_count().sum_horizontal().item() == 0
    # labels are null exactly for the last h bars
    assert out["label_return_h5"].null_count() == 5
    assert out["label_direction_h1"].drop_nulls().is_in([0.0, 1.0]).all()


def test_features_row_is_stamped_at_bar_close_and_labels_match_definitions():
    bars = _bars()
    out = build_features(bars.lazy(), spec=SPEC, horizons=(3,), drop_warmup=False).collect()
    assert out["ts_event"].to_list() == bars["ts_close"].to_list()
    close = bars["close"].to_numpy()
    t = 100
    assert out["log_return_5"][t] == pytest.approx(math.log(close[t] / close[t - 5]))
    assert out["label_return_h3"][t] == pytest.approx(math.log(close[t + 3] / close[t]))
    r = np.diff(np.log(close))
    assert out["label_volatility_h3"][t] == pytest.approx(math.sqrt(np.sum(r[t : t + 3] ** 2)))
    assert out["realized_vol_5"][t] == pytest.approx(math.sqrt(np.sum(r[t - 5 : t] ** 2)))


def test_perturbing_the_future_changes_no_feature_up_to_t_but_changes_labels():
    bars = _bars(600)
    cut = 300  # T = ts_close of bar 299: bars 300.. are "the future"
    t_known = bars["ts_close"][cut - 1]
    rng = np.random.default_rng(1)
    future = pl.col("ts_close") > t_known
    noise = pl.Series(rng.uniform(0.9, 1.1, bars.height))
    perturbed = bars.with_columns(
        [pl.when(future).then(pl.col(c) * noise).otherwise(pl.col(c)).alias(c)
         for c in ["open", "high", "low", "close", "spread_mean", "realized_variance"]]
        + [pl.when(future).then(pl.col("tick_count") * 3).otherwise("tick_count")]
    )  # fmt: skip
    kw = {"spec": SPEC, "horizons": (1, 10)}
    a = build_features(bars.lazy(), **kw).collect().filter(pl.col("ts_event") <= t_known)
    b = build_features(perturbed.lazy(), **kw).collect().filter(pl.col("ts_event") <= t_known)
    feats = feature_columns(a)
    assert a.height > 100
    assert a.select(feats).equals(b.select(feats))
    # the last rows before T have labels reaching past T: those must change
    assert not a.select(label_columns(a)).tail(10).equals(b.select(label_columns(b)).tail(10))
    # rows whose label window ends at or before T keep their labels
    assert (
        a.select(label_columns(a))
        .head(a.height - 10)
        .equals(b.select(label_columns(b)).head(b.height - 10))
    )


def test_features_from_ticks_show_no_look_ahead_either():
    # end to end: ticks -> 1m bars -> features; change every tick after T
    rng = np.random.default_rng(3)
    n = 20_000
    start = int(dt.datetime(2024, 1, 8, tzinfo=dt.UTC).timestamp()) * NS
    ts = start + np.sort(rng.integers(0, 300 * MINUTE, n))
    mid = 1.1 + np.cumsum(rng.normal(0, 1e-5, n))
    t_cut = start + 200 * MINUTE
    mid2 = np.where(ts >= t_cut, mid + rng.normal(0, 1e-3, n), mid)

    def feats(m):
        q = pl.LazyFrame({"instrument_id": "EURUSD", "ts_event": ts,
                          "bid_price": m - 5e-6, "ask_price": m + 5e-6})  # fmt: skip
        f = build_features(time_bars(q, every="1m"), spec=SPEC, horizons=(5,)).collect()
        return f.filter(pl.col("ts_event") <= t_cut)

    a, b = feats(mid), feats(mid2)
    assert a.height > 100
    # equal to rounding: a leak of the perturbation (1e-3 noise) would differ by far more; the
    # engine may sum a bar's terms in another order from one collect to the next
    assert_frame_equal(
        a.select(feature_columns(a)), b.select(feature_columns(b)), rel_tol=1e-9, abs_tol=1e-15
    )
    assert not a["label_return_h5"].tail(5).equals(b["label_return_h5"].tail(5))


def test_instruments_do_not_leak_into_each_other():
    both = pl.concat([_bars(seed=1, instrument="A"), _bars(seed=2, instrument="B")])
    out = build_features(both.lazy(), spec=SPEC, drop_warmup=False).collect()
    only_b = build_features(_bars(seed=2, instrument="B").lazy(), spec=SPEC, drop_warmup=False)
    assert out.filter(pl.col("instrument_id") == "B").equals(only_b.collect())


def _at(*args) -> pl.DataFrame:
    ts = int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * NS
    return pl.DataFrame({"ts_close": [ts]})


def test_time_of_day_is_zero_phase_at_new_york_17h_in_winter_and_summer():
    for when in [(2024, 1, 10, 22, 0), (2024, 7, 10, 21, 0)]:  # 17:00 NY in EST, then EDT
        row = _at(*when).select(
            time_of_day(SPEC, wave="sin"), time_of_day(SPEC, wave="cos"),
        )  # fmt: skip
        assert row["time_of_day_sin"][0] == pytest.approx(0.0, abs=1e-12)
        assert row["time_of_day_cos"][0] == pytest.approx(1.0)
    # 05:00 NY (EST) = 12 h into the FX trading day: phase 1/2
    row = _at(2024, 1, 10, 10, 0).select(time_of_day(SPEC, wave="cos"))
    assert row["time_of_day_cos"][0] == pytest.approx(-1.0)


def test_day_of_week_starts_the_fx_week_at_sunday_17h_new_york():
    # Sunday 2024-01-07 17:00 EST = 22:00 UTC: the start of Monday's trading day -> phase 0
    sunday_open = _at(2024, 1, 7, 22, 0)
    row = sunday_open.select(day_of_week(SPEC, wave="sin"), day_of_week(SPEC, wave="cos"))
    assert row["day_of_week_sin"][0] == pytest.approx(0.0, abs=1e-12)
    assert row["day_of_week_cos"][0] == pytest.approx(1.0)
    # Wednesday 17:00 NY starts Thursday's trading day: phase 3/7
    row = _at(2024, 1, 10, 22, 0).select(day_of_week(SPEC, wave="cos"))
    assert row["day_of_week_cos"][0] == pytest.approx(math.cos(2 * math.pi * 3 / 7))


def test_synthetic_ticks_flow_into_features_labels_and_walk_forward_folds():
    from pipelines.splits import walk_forward
    from pipelines.synthetic import generate_quotes

    quotes = generate_quotes(SPEC, start="2024-01-01", end="2024-01-29", seed=5).lazy()
    frame = build_features(time_bars(quotes, every="5m"), spec=SPEC, horizons=(1, 12)).collect()
    feats = feature_columns(frame)
    assert frame.height > 5000
    assert frame.select(feats).null_count().sum_horizontal().item() == 0
    assert all(frame[c].is_finite().all() for c in feats)
    up = frame["label_direction_h12"].drop_nulls().mean()
    assert 0.35 < up < 0.65  # a driftless walk: neither direction dominates
    folds = walk_forward(frame["ts_event"], n_folds=3, horizon=12, embargo=6)
    assert len(folds) == 3 and all(f.train.size > 1000 for f in folds)
