"""The backtest door: hand-checked PnL and costs, next-bar timing, no look-ahead, significance."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from data_specs.schemas import BARS, FORECASTS, conform
from data_specs.spec import load_spec
from strategies.backtest import BacktestConfig, run_backtest, simulate
from strategies.costs import pip_value, roll_counts
from strategies.inputs import BacktestInputError, load_run_bars, positions_on_bars
from strategies.signals import EnergyFilterParams, ThresholdParams
from tests.strategies.factories import HOUR_NS, MONDAY, SCORECARD_KEYS, make_bars, make_forecasts

FAST = BacktestConfig(n_boot=100, n_boot_regime=30, n_random=100, rollover=False)


def _bars(opens, closes, *, start=MONDAY, instrument="EURUSD", spread=None):
    n = len(opens)
    ts = start + HOUR_NS * np.arange(n, dtype=np.int64)
    frame = pl.DataFrame(
        {
            "instrument_id": [instrument] * n,
            "ts_event": ts,
            "ts_close": ts + HOUR_NS,
            "open": np.asarray(opens, float),
            "close": np.asarray(closes, float),
            "bid_open": None if spread is None else np.asarray(opens, float) - spread / 2,
            "ask_open": None if spread is None else np.asarray(opens, float) + spread / 2,
        }
    )
    frame = frame.with_columns(
        pl.max_horizontal("open", "close").alias("high"),
        pl.min_horizontal("open", "close").alias("low"),
    )
    return conform(frame, BARS)


def _forecasts(bars, probs, *, instrument="EURUSD"):
    """One horizon-1 forecast at the close of each of the first ``len(probs)`` bars."""
    n = len(probs)
    closes = bars.get_column("close").to_numpy()
    frame = pl.DataFrame(
        {
            "ts_event": bars.get_column("ts_close")[:n],
            "instrument_id": [instrument] * n,
            "model": ["hmld"] * n,
            "fold": [0] * n,
            "horizon": [1] * n,
            "predicted_return": (np.asarray(probs) - 0.5) * 1e-3,
            "direction_prob": np.asarray(probs, float),
            "predicted_volatility": [1e-3] * n,
            "energy": [[1.0]] * n,
            "realized_return": np.log(closes[1 : n + 1] / closes[:n]),
            "realized_volatility": [1e-3] * n,
            "synthetic": [True] * n,
        }
    )
    return conform(frame, FORECASTS)


def _simulate(bars, position, instrument="EURUSD", rollover=False):
    spec = load_spec(instrument)
    config = BacktestConfig(rollover=rollover)
    return simulate(bars, np.asarray(position, float)[:, None], spec, config, columns=["s"])


def test_eurusd_long_trade_pnl_matches_hand_computation_with_spec_costs():
    spec = load_spec("EURUSD")
    bars = _bars([1.1000, 1.1010, 1.1030, 1.1020], [1.1010, 1.1030, 1.1020, 1.1040])
    sim = _simulate(bars, [0, 1, 0, 0])
    capital = 1_000_000.0
    units = capital / 1.1010
    cost = spec.costs.typical_spread / 2 + spec.costs.slippage_ticks * spec.price_increment
    entry, exit_ = 1.1010 + cost, 1.1030 - cost
    fee_in, fee_out = units * entry * spec.costs.taker_fee, units * exit_ * spec.costs.taker_fee
    expected = [0.0, units * (1.1030 - entry) - fee_in, units * (exit_ - 1.1030) - fee_out, 0.0]
    np.testing.assert_allclose(sim.pnl[:, 0], expected, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(sim.returns[:, 0], np.array(expected) / capital, atol=1e-12)
    assert sim.costs[0] == pytest.approx(units * 2 * cost + fee_in + fee_out, rel=1e-9)
    trade = sim.trades.row(0, named=True)
    assert trade["direction"] == "long" and trade["status"] == "closed"
    assert trade["entry_price"] == pytest.approx(entry)
    assert trade["exit_price"] == pytest.approx(exit_)
    assert sim.n_trades[0] == 1


def test_half_spread_comes_from_quotes_when_the_bars_have_them():
    bars = _bars([1.1, 1.1, 1.1], [1.1, 1.1, 1.1], spread=2e-4)
    spec = load_spec("EURUSD")
    sim = _simulate(bars, [1, 0, 0])
    units = 1_000_000.0 / 1.1
    per_side = 1e-4 + spec.costs.slippage_ticks * spec.price_increment
    fees = units * ((1.1 + per_side) + (1.1 - per_side)) * spec.costs.taker_fee
    assert sim.pnl[:, 0].sum() == pytest.approx(-(units * 2 * per_side + fees), rel=1e-9)


def test_usdjpy_pnl_is_converted_into_the_usd_account_at_each_close():
    spec = load_spec("USDJPY")
    bars = _bars([150.0, 150.0, 151.0], [150.0, 151.0, 150.5], instrument="USDJPY")
    sim = _simulate(bars, [0, -1, -1], instrument="USDJPY")
    units = 1_000_000.0  # USD base units: 1e6 USD of notional is 1e6 units
    cost = spec.costs.typical_spread / 2 + spec.costs.slippage_ticks * spec.price_increment
    entry = 150.0 - cost
    fee = units * entry * spec.costs.taker_fee
    jpy = [0.0, -units * (151.0 - entry) - fee, -units * (150.5 - 151.0)]
    usd = np.array(jpy) / np.array([150.0, 151.0, 150.5])
    np.testing.assert_allclose(sim.pnl[:, 0], usd, rtol=1e-9, atol=1e-6)


def test_es_futures_use_multiplier_whole_contracts_and_commission_per_contract():
    spec = load_spec("ES")
    bars = _bars([5000.0, 5000.0, 5010.0], [5000.0, 5010.0, 5010.0], instrument="ES")
    sim = _simulate(bars, [0, 1, 0], instrument="ES")
    contracts = round(1_000_000.0 / (5000.0 * spec.multiplier))
    assert sim.units[1, 0] == contracts == 4
    cost = spec.costs.typical_spread / 2 + spec.costs.slippage_ticks * spec.price_increment
    commission = spec.costs.commission_per_contract * contracts
    bar1 = contracts * spec.multiplier * (5010.0 - (5000.0 + cost)) - commission
    bar2 = contracts * spec.multiplier * ((5010.0 - cost) - 5010.0) - commission
    np.testing.assert_allclose(sim.pnl[:, 0], [0.0, bar1, bar2], rtol=1e-9, atol=1e-6)


def test_rollover_is_charged_per_new_york_roll_and_triple_on_wednesday():
    spec = load_spec("EURUSD")
    wednesday_20utc = MONDAY + 2 * 24 * HOUR_NS + 20 * HOUR_NS  # 15:00 New York (EST)
    bars = _bars([1.1] * 4, [1.1] * 4, start=wednesday_20utc)
    with_carry = _simulate(bars, [0, 1, 1, 1], rollover=True)
    without = _simulate(bars, [0, 1, 1, 1], rollover=False)
    carry = with_carry.pnl[:, 0] - without.pnl[:, 0]
    notional = 1_000_000.0 / 1.1 * 1.1
    expected = 3 * spec.costs.rollover_long_bps_per_day * 1e-4 * notional
    np.testing.assert_allclose(carry, [0.0, 0.0, expected, 0.0], atol=1e-6)


def test_roll_counts_add_up_to_seven_days_a_week():
    start = np.array([MONDAY])
    week = np.array([MONDAY + 7 * 24 * HOUR_NS])
    assert roll_counts(start, week)[0] == 7
    tuesday_noon = MONDAY + (24 + 12) * HOUR_NS
    thursday_noon = MONDAY + (3 * 24 + 12) * HOUR_NS
    assert roll_counts(np.array([tuesday_noon]), np.array([thursday_noon]))[0] == 1 + 3


def test_a_forecast_sets_the_position_of_the_next_bar_only():
    bars = _bars(np.full(10, 1.1), np.full(10, 1.1))
    signal = pl.DataFrame({"ts_event": [bars["ts_close"][4]], "position": [1.0], "horizon": [1]})
    position = positions_on_bars(signal, bars.get_column("ts_event").to_numpy())
    assert position.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]


def test_perturbing_the_future_never_changes_past_positions_or_returns():
    spec = load_spec("EURUSD")
    bars = make_bars(400, seed=3)
    forecasts = make_forecasts(bars, kind="oracle", skill=0.5, n_folds=4)
    base = run_backtest(forecasts, bars, spec, config=FAST)
    cut = 250  # bars after index `cut` and forecasts made after bar `cut` closes are perturbed
    t_cut = bars["ts_close"][cut]
    rng = np.random.default_rng(9)
    noisy = forecasts.with_columns(
        pl.when(pl.col("ts_event") > t_cut)
        .then(pl.Series(rng.random(forecasts.height)))
        .otherwise(pl.col("direction_prob"))
        .alias("direction_prob"),
        pl.when(pl.col("ts_event") > t_cut)
        .then(-pl.col("realized_return"))
        .otherwise(pl.col("realized_return"))
        .alias("realized_return"),
        pl.when(pl.col("ts_event") > t_cut)
        .then(pl.col("energy").list.eval(pl.element() * 10))
        .otherwise(pl.col("energy"))
        .alias("energy"),
    )
    shock = np.where(np.arange(bars.height) > cut, 1.02, 1.0)
    moved = bars.with_columns(
        *(pl.col(c) * shock for c in ("open", "high", "low", "close", "bid_open", "ask_open"))
    )
    other = run_backtest(noisy, moved, spec, config=FAST)
    a, b = base.simulation, other.simulation
    keep = [a.columns.index(c) for c in ("threshold", "vol-target", "energy-filter", "momentum")]
    past = a.ts_event <= bars["ts_event"][cut]
    assert past.sum() > 200
    np.testing.assert_array_equal(a.position[past][:, keep], b.position[past][:, keep])
    np.testing.assert_allclose(a.returns[past][:, keep], b.returns[past][:, keep], atol=1e-15)
    assert not np.allclose(a.returns[~past][:, keep[:2]], b.returns[~past][:, keep[:2]])


@pytest.fixture(scope="module")
def oracle_result(bars):
    forecasts = make_forecasts(bars, kind="oracle", skill=0.3, seed=5)
    return run_backtest(forecasts, bars, load_spec("EURUSD"), config=FAST)


@pytest.fixture(scope="module")
def noise_result(bars):
    forecasts = make_forecasts(bars, kind="noise", seed=6)
    return run_backtest(forecasts, bars, load_spec("EURUSD"), config=FAST)


def test_noisy_oracle_shows_a_significant_sharpe_and_auc(oracle_result):
    card = oracle_result.card
    assert card["sharpe_ci_low"] > 0
    assert card["psr"] > 0.99
    assert card["random_pvalue"] <= 0.02
    assert card["auc_ci_low"] > 0.55


def test_pure_noise_forecaster_shows_no_significant_sharpe(noise_result):
    card = noise_result.card
    assert card["random_pvalue"] > 0.05
    assert card["psr"] < 0.95
    assert card["deflated_sharpe"] < 0.95
    assert card["auc_ci_low"] < 0.5 < card["auc_ci_high"]


def test_scorecard_holds_the_interface_fields_and_regime_families(oracle_result):
    card = oracle_result.card
    for key in (
        *SCORECARD_KEYS,
        "by_fold",
        "sortino",
        "calmar",
        "turnover",
        "hit_rate",
        "f1",
    ):
        assert key in card, key
    assert set(card["by_regime"]) == {"volatility", "trend", "session", "energy"}
    assert set(card["by_regime"]["session"]) == {"asia", "london", "new_york"}
    assert set(card["by_regime"]["volatility"]) == {"low", "mid", "high"}
    assert set(card["by_fold"]) == {"0", "1", "2"}
    assert card["sharpe_ci_low"] <= card["sharpe"] <= card["sharpe_ci_high"]
    assert card["n_trades"] > 10
    assert card["n_trials"] == len(card["strategies"]) == 3
    # every strategy's p-value comes from random signals matched to that strategy
    assert card["strategies"]["threshold"]["random_seeds"] == FAST.n_random
    assert card["strategies"]["vol-target"]["random_seeds"] == 50
    assert card["baselines"]["random"]["matched_to"] == "threshold"


def test_backtest_energy_regimes_are_cut_within_each_fold(bars):
    forecasts = make_forecasts(bars).with_columns(  # fold 2: a model on a 100x energy scale
        pl.when(pl.col("fold") == 2)
        .then(pl.col("energy").list.eval(pl.element() * 100))
        .otherwise(pl.col("energy"))
        .alias("energy")
    )
    config = BacktestConfig(n_boot=50, n_boot_regime=20, n_random=10, rollover=False)
    one = {"threshold": ThresholdParams()}
    result = run_backtest(forecasts, bars, load_spec("EURUSD"), strategies=one, config=config)
    for fold in ("0", "1", "2"):
        labels = result.regimes.filter(pl.col("fold") == fold)["energy"].drop_nulls()
        assert set(labels.to_list()) == {"q1", "q2", "q3"}, fold  # pooled: fold 2 all q3
    assert result.card["energy_quantile_edges"] == "per_fold"


def test_bad_forecasts_raise_one_line_errors(bars):
    spec = load_spec("EURUSD")
    forecasts = make_forecasts(bars)
    shifted = forecasts.with_columns(pl.col("ts_event") + 1)
    with pytest.raises(BacktestInputError, match="match no bar close"):
        run_backtest(shifted, bars, spec, config=FAST)
    with pytest.raises(BacktestInputError, match="instrument_id"):
        run_backtest(forecasts, bars, load_spec("GBPUSD"), config=FAST)
    with pytest.raises(BacktestInputError, match="duplicate"):
        run_backtest(pl.concat([forecasts, forecasts.head(3)]), bars, spec, config=FAST)
    with pytest.raises(BacktestInputError, match="energy"):
        no_energy = forecasts.with_columns(pl.lit([], dtype=pl.List(pl.Float64)).alias("energy"))
        run_backtest(
            no_energy,
            bars,
            spec,
            strategies={"energy-filter": EnergyFilterParams()},
            config=FAST,
        )


def test_threshold_band_that_never_trades_is_flat_with_zero_costs(bars):
    forecasts = make_forecasts(bars, kind="noise")
    result = run_backtest(
        forecasts,
        bars,
        load_spec("EURUSD"),
        strategies={"never": ThresholdParams(upper=1.0, lower=0.0)},
        config=FAST,
    )
    assert result.card["n_trades"] == 0
    assert result.card["total_costs"] == 0.0
    assert np.all(result.simulation.returns[:, 0] == 0.0)


def test_pip_value_is_ten_dollars_per_eurusd_lot_and_converted_for_usdjpy():
    assert pip_value(load_spec("EURUSD"), 1.1, "USD") == pytest.approx(10.0)
    assert pip_value(load_spec("USDJPY"), 150.0, "USD") == pytest.approx(1000.0 / 150.0)
    assert pip_value(load_spec("ES"), 5000.0, "USD") is None


def test_optuna_study_sets_the_number_of_trials_for_the_deflated_sharpe(tmp_path, bars):
    import optuna

    from strategies.backtest import optuna_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()  # the CLI passes a URL; load_study takes both
    study = optuna.create_study(study_name="grid", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=40)
    n_trials, _ = optuna_trials(storage, "grid")
    assert n_trials == 40
    forecasts = make_forecasts(bars, kind="oracle", skill=0.05, seed=8)
    spec = load_spec("EURUSD")
    strategies = {"threshold": ThresholdParams()}
    few = run_backtest(forecasts, bars, spec, strategies=strategies, config=FAST, n_trials=1)
    many = run_backtest(forecasts, bars, spec, strategies=strategies, config=FAST, n_trials=40)
    assert many.card["n_trials"] == 40
    assert many.card["deflated_sharpe"] < few.card["deflated_sharpe"]
    assert few.card["deflated_sharpe"] == pytest.approx(few.card["psr"])
    with pytest.raises(BacktestInputError, match="cannot load Optuna study"):
        optuna_trials(storage, "no-such-study")


def test_run_bars_come_from_the_store_aggregated_to_the_runs_bar_length(tmp_path):
    import json

    from pipelines.store import Store

    minute = 60_000_000_000
    one_minute = make_bars(600, seed=21, bar_ns=minute)
    Store(tmp_path / "store").write("bars", one_minute, instrument_id="EURUSD")
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": "hmld", "data": {"store": str(tmp_path / "store"), "bar": "5m"}}
    (run / "config.json").write_text(json.dumps(config))
    five = one_minute.with_columns((pl.col("ts_event") // (5 * minute) * (5 * minute)).alias("w"))
    expected = five.group_by("w", maintain_order=True).agg(
        pl.col("open").first(), pl.col("close").last(), pl.col("high").max()
    )
    forecasts = make_forecasts(
        expected.select(
            pl.lit("EURUSD").alias("instrument_id"),
            (pl.col("w") + 5 * minute).alias("ts_close"),
            "close",
        )
    )
    bars = load_run_bars(run, "EURUSD", forecasts, None)
    assert bars.height == expected.height == 120
    assert (bars["ts_close"] - bars["ts_event"]).unique().to_list() == [5 * minute]
    np.testing.assert_allclose(bars["open"].to_numpy(), expected["open"].to_numpy())
    np.testing.assert_allclose(bars["close"].to_numpy(), expected["close"].to_numpy())
    np.testing.assert_allclose(bars["high"].to_numpy(), expected["high"].to_numpy())
    result = run_backtest(forecasts, bars, load_spec("EURUSD"), config=FAST)
    assert result.card["bar_seconds"] == 300.0


def test_set_overrides_rule_parameters_with_type_checks():
    from strategies.backtest import STRATEGIES, apply_overrides

    out = apply_overrides(dict(STRATEGIES), ["threshold.upper=0.6", "energy-filter.n_quantiles=4"])
    assert out["threshold"] == ThresholdParams(upper=0.6)
    assert out["energy-filter"].n_quantiles == 4
    for bad, message in [
        ("threshold.upper", "RULE.FIELD=VALUE"),
        ("momentum.x=1", "no rule"),
        ("threshold.nope=1", "no field"),
        ("energy-filter.n_quantiles=2.5", "invalid literal"),
        ("threshold.upper=0.3", "lower <= upper"),
    ]:
        with pytest.raises(BacktestInputError, match=message):
            apply_overrides(dict(STRATEGIES), [bad])
