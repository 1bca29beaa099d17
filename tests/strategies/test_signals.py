"""Signal rules: thresholds and band, volatility targeting, the energy-regime filter."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from strategies.signals import (
    EnergyFilterParams,
    ThresholdParams,
    VolTargetParams,
    energy_filter_signal,
    signals,
    threshold_signal,
    vol_target_signal,
)
from tests.strategies.factories import make_bars, make_forecasts


@pytest.fixture(scope="module")
def forecasts():
    return make_forecasts(make_bars(600, seed=2), kind="oracle", skill=0.5, n_folds=4)


def test_threshold_goes_long_above_short_below_and_flat_in_the_band(forecasts):
    frame = forecasts.head(5).with_columns(pl.Series("direction_prob", [0.9, 0.56, 0.5, 0.44, 0.1]))
    out = threshold_signal(frame, ThresholdParams(upper=0.55, lower=0.45, size=2.0))
    assert out["position"].to_list() == [2.0, 2.0, 0.0, -2.0, -2.0]
    assert out.columns == ["ts_event", "instrument_id", "model", "fold", "horizon", "position"]


def test_threshold_params_reject_an_inverted_band():
    with pytest.raises(ValueError, match="lower <= upper"):
        ThresholdParams(upper=0.4, lower=0.6)


def test_vol_target_sizes_inversely_to_predicted_volatility_and_caps_leverage(forecasts):
    frame = forecasts.head(3).with_columns(
        pl.Series("predicted_return", [0.001, -0.001, 0.0]),
        pl.Series("predicted_volatility", [0.002, 0.004, 0.002]),
        pl.Series("horizon", [4, 4, 4]),
    )
    params = VolTargetParams(target_volatility=0.1, max_leverage=100.0)
    out = vol_target_signal(frame, params, periods_per_year=10_000)
    per_bar_target = 0.1 / math.sqrt(10_000)
    expected = [per_bar_target / (0.002 / 2), -per_bar_target / (0.004 / 2), 0.0]
    np.testing.assert_allclose(out["position"].to_numpy(), expected)
    capped = vol_target_signal(frame, VolTargetParams(max_leverage=0.5), periods_per_year=10_000)
    assert capped["position"].abs().max() == 0.5


def test_energy_filter_stays_flat_in_the_first_fold_and_trades_skilled_regimes_later():
    bars = make_bars(1200, seed=4)
    frame = make_forecasts(bars, kind="noise", n_folds=4, seed=3)
    rng = np.random.default_rng(0)
    energy = rng.random(frame.height)
    high = energy > 0.66
    realized = frame["realized_return"].to_numpy()
    # skill only when the energy is high: the probability then knows the sign
    prob = np.where(high, np.where(realized > 0, 0.8, 0.2), frame["direction_prob"].to_numpy())
    frame = frame.with_columns(
        pl.Series("direction_prob", prob),
        pl.Series("energy", [[e] for e in energy], dtype=pl.List(pl.Float64)),
    )
    params = EnergyFilterParams(base=ThresholdParams(), n_quantiles=3, min_hit_rate=0.6)
    out = energy_filter_signal(frame, params, periods_per_year=6240)
    pos = out["position"].to_numpy()
    fold = frame["fold"].to_numpy()
    assert np.all(pos[fold == 0] == 0)
    # the first `warmup` forecasts of each fold have no regime yet: flat
    index_in_fold = frame.select(pl.int_range(pl.len()).over("fold")).to_series().to_numpy()
    warm = index_in_fold < params.warmup
    assert np.all(pos[warm] == 0)
    later = (fold > 0) & ~warm
    assert np.all(pos[later & (energy < 0.3)] == 0)
    assert np.mean(pos[later & high & (energy > 0.7)] != 0) > 0.9


def test_energy_filter_regimes_are_ranks_within_each_fold_not_levels():
    # each fold is its own model: fold k's energy is scaled by 10**k; skill sits in the top
    # third of every fold. Pooled levels would put all of fold 3 in the top regime.
    bars = make_bars(1200, seed=6)
    frame = make_forecasts(bars, kind="noise", n_folds=4, seed=4)
    rng = np.random.default_rng(1)
    fold = frame["fold"].to_numpy()
    unit = rng.random(frame.height)
    energy = unit * 10.0**fold
    realized = frame["realized_return"].to_numpy()
    top = unit > 0.66
    prob = np.where(top, np.where(realized > 0, 0.8, 0.2), frame["direction_prob"].to_numpy())
    frame = frame.with_columns(
        pl.Series("direction_prob", prob),
        pl.Series("energy", [[e] for e in energy], dtype=pl.List(pl.Float64)),
    )
    params = EnergyFilterParams(base=ThresholdParams(), n_quantiles=3, min_hit_rate=0.6)
    pos = energy_filter_signal(frame, params, periods_per_year=6240)["position"].to_numpy()
    last = fold == 3
    assert np.all(pos[last & (unit < 0.3)] == 0)  # low ranks of the big-scale fold stay flat
    assert np.mean(pos[last & (unit > 0.75)] != 0) > 0.7


def test_energy_filter_decisions_use_only_earlier_folds():
    frame = make_forecasts(make_bars(800, seed=5), kind="oracle", skill=0.8, n_folds=4)
    params = EnergyFilterParams(min_hit_rate=0.55)
    base = energy_filter_signal(frame, params, periods_per_year=6240)["position"].to_numpy()
    last = frame["fold"] == 3
    scrambled = frame.with_columns(
        pl.when(last).then(-pl.col("realized_return")).otherwise(pl.col("realized_return")),
        pl.when(last)
        .then(pl.col("energy").list.eval(pl.element() * 3))
        .otherwise(pl.col("energy")),
    )
    again = energy_filter_signal(scrambled, params, periods_per_year=6240)["position"].to_numpy()
    early = ~last.to_numpy()
    np.testing.assert_array_equal(base[early], again[early])
    assert np.any(base[early] != 0)


def test_energy_filter_refuses_forecasts_without_energy(forecasts):
    empty = forecasts.with_columns(pl.lit([], dtype=pl.List(pl.Float64)).alias("energy"))
    with pytest.raises(ValueError, match="no HML-D energy"):
        energy_filter_signal(empty, EnergyFilterParams(), periods_per_year=6240)


def test_signals_handle_each_model_separately(forecasts):
    two = pl.concat([forecasts, forecasts.with_columns(pl.lit("lstm").alias("model"))])
    out = signals(two, ThresholdParams(), periods_per_year=6240)
    assert out.height == two.height
    by_model = out.partition_by("model", as_dict=True)
    np.testing.assert_array_equal(
        by_model[("hmld",)]["position"].to_numpy(), by_model[("lstm",)]["position"].to_numpy()
    )
