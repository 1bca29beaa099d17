"""The backtest door: the only module that imports vectorbt.

Timing. A forecast made at ``ts_event`` t (the close of some bar) sets the position of the
first bar whose ``ts_event >= t``; the order fills at that bar's *open* and the position is
held over that bar and the following ones until the next forecast, at most ``horizon`` bars.
Nothing a forecast decides touches a bar that ended before it was made.

Costs, all from the instrument spec, per side:

- half-spread ``(ask_open - bid_open) / 2`` from the bar's quotes where present, else
  ``costs.typical_spread / 2``, plus slippage ``costs.slippage_ticks * price_increment``: both
  move the fill price against the order (vectorbt ``slippage``, a fraction of the price);
- ``costs.taker_fee`` (fraction of notional) and ``costs.commission_per_contract`` per unit
  of size (vectorbt ``fees``, a fraction of the fill value);
- FX rollover ``costs.rollover_{long,short}_bps_per_day`` of notional for each 17:00
  America/New_York roll a position is held over (Wednesday's counts three times), optional.

Units. Prices are multiplied by ``spec.multiplier`` so one unit of size is one contract (one
base-currency unit for FX). PnL is made in ``spec.currency`` and converted into the account
currency bar by bar at the bar's close (for USDJPY with a USD account: divided by the price).
Sizes are ``position * capital / notional of one unit``, fixed when the position changes;
futures sizes are rounded to whole contracts. Returns are ``pnl / capital`` (no compounding).

CLI::

    python -m strategies.backtest --run runs/EURUSD/<ts> [--strategy threshold] [--bars PATH]

writes ``backtest.json``, ``trades.parquet`` and ``report.html`` into the run folder and prints
the scorecard. Bad input prints one line on stderr and exits with code 2.

Inputs and their alignment live in ``strategies.inputs``, cost arithmetic in
``strategies.costs``, the outputs in ``strategies.report``; this module simulates and scores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.schemas import FORECASTS, check_schema
from data_specs.spec import InstrumentSpec, SpecError, load_spec
from strategies import baselines
from strategies.costs import conversion_to_account, half_spread, pip_value, roll_counts
from strategies.inputs import (
    BacktestInputError,
    bar_seconds,
    check_bars,
    check_inputs,
    iso,
    positions_on_bars,
    read_forecasts,
    run_bars,
    window_bars,
)
from strategies.metrics import scorecard
from strategies.regimes import (
    RegimeParams,
    label_regimes,
    metrics_by_group,
    robustness_summary,
    robustness_table,
)
from strategies.signals import (
    EnergyFilterParams,
    Params,
    ThresholdParams,
    VolTargetParams,
    signals,
    total_energy,
)

STRATEGIES: dict[str, Params] = {
    "threshold": ThresholdParams(),
    "vol-target": VolTargetParams(),
    "energy-filter": EnergyFilterParams(),
}
# statistical baselines that share the forecasts file; never the default model to trade
STATISTICAL_MODELS = {"random_walk", "ar", "har", "garch", "zero"}


@dataclass(frozen=True)
class BacktestConfig:
    """How the backtest sizes, charges and scores."""

    capital: float = 1_000_000.0  # account currency
    account_currency: str = "USD"
    rollover: bool = True  # charge/credit FX rollover at the 17:00 New York roll
    n_boot: int = 500  # bootstrap resamples for the headline scorecard
    n_boot_regime: int = 200  # per regime and per fold
    n_random: int = 200  # turnover-matched random signals for the Sharpe p-value
    seed: int = 0
    regimes: RegimeParams = field(default_factory=RegimeParams)


@dataclass
class Simulation:
    """Per-bar results of one vectorized simulation; arrays are (n_bars, n_columns)."""

    columns: list[str]
    ts_event: np.ndarray  # (n,)
    position: np.ndarray  # target exposure, multiples of capital
    units: np.ndarray  # size held over each bar (contracts / base units)
    returns: np.ndarray  # pnl / capital, account currency, costs included
    capital: float
    costs: np.ndarray  # (n_columns,) account currency: spread, slippage, fees, rollover paid
    trades: pl.DataFrame | None  # one row per position, entry to exit (vectorbt), or None
    n_trades: np.ndarray  # (n_columns,) positions opened (entries and flips)

    @property
    def pnl(self) -> np.ndarray:
        """Per-bar PnL in the account currency, costs included."""
        return self.returns * self.capital


# ---- the simulation --------------------------------------------------------------------


def simulate(
    bars: pl.DataFrame,
    position: np.ndarray,
    spec: InstrumentSpec,
    config: BacktestConfig,
    *,
    columns: list[str],
    with_trades: bool = True,
) -> Simulation:
    """Simulate target ``position`` (n_bars, n_columns) on ``bars`` in one vectorbt call.

    Parameters
    ----------
    bars
        The window's BARS rows, sorted by ``ts_event``.
    position
        Target exposure per bar and column, multiples of capital.
    spec, config
        Costs, units and account.
    columns
        Column names (strategies, parameter sets, baselines).
    with_trades
        Build the per-trade table (skip for large grids).
    """
    import vectorbt as vbt

    position = np.asarray(position, float).reshape(len(bars), -1)
    n, m = position.shape
    mult = spec.multiplier
    open_ = bars.get_column("open").to_numpy().astype(float)
    close = bars.get_column("close").to_numpy().astype(float)
    conv_open = conversion_to_account(spec, open_, config.account_currency)
    conv_close = conversion_to_account(spec, close, config.account_currency)

    # an order only where the target changes, sized at that bar's open: a constant exposure
    # does not trade every bar. (n, m) arrays are few and updated in place, so that a grid of
    # 100 columns over a year of minutes fits in memory.
    change = np.empty((n, m), dtype=bool)
    change[0] = position[0] != 0
    np.not_equal(position[1:], position[:-1], out=change[1:])
    unit_value = open_ * mult * conv_open  # account currency per unit of size
    size = position * (config.capital / unit_value)[:, None]
    if spec.is_future:
        np.round(size, out=size)
    size[~change] = np.nan
    order_count = int(change.sum())
    del change

    hs = half_spread(bars, spec)
    slip = (hs + spec.costs.slippage_ticks * spec.price_increment) / open_
    fees = np.full((n, 1), spec.costs.taker_fee)
    if spec.costs.commission_per_contract > 0:
        units = size.copy()
        units[0] = np.nan_to_num(units[0])
        for j in range(m):
            _ffill_inplace(units[:, j])
        delta = np.diff(units, axis=0, prepend=0.0)
        del units
        fill = open_[:, None] * mult * (1.0 + np.sign(delta) * slip[:, None])
        fees = fees + spec.costs.commission_per_contract / fill
        del delta, fill

    price_q = open_ * mult
    close_q = close * mult
    gross = float(np.nanmax(np.abs(size), initial=0.0) * price_q.max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pf = vbt.Portfolio.from_orders(
            close_q[:, None],
            size,
            size_type="targetamount",
            direction="both",
            price=price_q[:, None],
            fees=fees,
            slippage=slip[:, None],
            init_cash=30.0 * (gross + 1.0),  # never binding: sizes are set here, not by cash
            max_orders=max(order_count, 1),
            max_logs=0,
            freq=None,
        )
        del size, fees
        returns = _writeable(pf.cash_flow().to_numpy()).reshape(n, m)
        assets = _writeable(pf.assets().to_numpy()).reshape(n, m)
        orders = pf.orders.records_arr
        positions = pf.positions.records_arr if with_trades else None
    del pf

    # trading costs per column, from the orders: |size| * |fill - mid| + fees
    costs = np.zeros(m)
    if len(orders):
        idx = orders["idx"]
        cost_q = orders["size"] * np.abs(orders["price"] - price_q[idx]) + orders["fees"]
        costs += np.bincount(orders["col"], weights=cost_q * conv_close[idx], minlength=m)
    del orders

    carry = None
    if config.rollover and spec.is_fx:
        ts = bars.get_column("ts_event").to_numpy()
        ts_next = np.append(ts[1:], bars.get_column("ts_close").to_numpy()[-1])
        rolls = roll_counts(ts, ts_next)
        at = np.nonzero(rolls)[0]  # bars held over a roll: about one a day
        held_units = assets[at]
        bps = np.where(
            held_units > 0,
            spec.costs.rollover_long_bps_per_day,
            spec.costs.rollover_short_bps_per_day,
        )
        notional = np.abs(held_units) * (close_q * conv_close)[at, None]
        carry = (at, rolls[at, None] * bps * 1e-4 * notional)
        costs -= carry[1].sum(axis=0)

    # pnl in the quote currency: cash flow + change in the value held, then into the account
    held = assets * close_q[:, None]
    returns += held
    returns[1:] -= held[:-1]
    del held
    returns *= (conv_close / config.capital)[:, None]
    if carry is not None:
        returns[carry[0]] += carry[1] / config.capital

    long, short = assets > 0, assets < 0
    n_trades = (long[0] | short[0]).astype(np.int64)
    n_trades += ((long[1:] & ~long[:-1]) | (short[1:] & ~short[:-1])).sum(axis=0)
    del long, short
    trades = None
    if positions is not None:
        trades = _trade_table(positions, bars, columns, mult, conv_close)
    return Simulation(
        columns=list(columns),
        ts_event=bars.get_column("ts_event").to_numpy(),
        position=position,
        units=assets,
        returns=returns,
        capital=config.capital,
        costs=costs,
        trades=trades,
        n_trades=n_trades,
    )


def _writeable(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a if a.flags.writeable else a.copy()


def _ffill_inplace(a: np.ndarray) -> None:
    """Fill NaNs in the 1-D ``a`` with the last value before them (the first is not NaN)."""
    index = np.where(np.isnan(a), 0, np.arange(len(a)))
    np.maximum.accumulate(index, out=index)
    a[:] = a[index]


def _trade_table(
    records: np.ndarray, bars: pl.DataFrame, columns: list[str], mult: float, conv: np.ndarray
) -> pl.DataFrame:
    ts = bars.get_column("ts_event").to_numpy()
    ts_close = bars.get_column("ts_close").to_numpy()
    closed = records["status"] == 1
    exit_idx = records["exit_idx"]
    return pl.DataFrame(
        {
            "strategy": np.asarray(columns, dtype=object)[records["col"]].astype(str),
            "direction": np.where(records["direction"] == 0, "long", "short"),
            "status": np.where(closed, "closed", "open"),
            "ts_entry": ts[records["entry_idx"]],
            "ts_exit": np.where(closed, ts[exit_idx], ts_close[exit_idx]),
            "size": records["size"],
            "entry_price": records["entry_price"] / mult,
            "exit_price": records["exit_price"] / mult,
            "fees": records["entry_fees"] + records["exit_fees"],
            "pnl_quote": records["pnl"],
            "pnl_account": records["pnl"] * conv[exit_idx],
            "return": records["return"],
        }
    )


# ---- the whole backtest ----------------------------------------------------------------


@dataclass
class BacktestResult:
    """Scorecards and per-bar series of a backtest of one model's forecasts."""

    card: dict  # backtest.json content
    simulation: Simulation
    bars: pl.DataFrame
    regimes: pl.DataFrame
    robustness: pl.DataFrame


def run_backtest(
    forecasts: pl.DataFrame,
    bars: pl.DataFrame,
    spec: InstrumentSpec,
    *,
    strategies: dict[str, Params] | None = None,
    model: str | None = None,
    config: BacktestConfig | None = None,
    n_trials: int | None = None,
    trial_sharpes: np.ndarray | None = None,
) -> BacktestResult:
    """Backtest ``strategies`` on one model's ``forecasts`` over ``bars``.

    The first strategy is the headline; every strategy, the baselines (buy-and-hold, flat,
    momentum) and ``config.n_random`` turnover-matched random signals are simulated together
    as columns of one vectorbt call.

    Parameters
    ----------
    forecasts
        FORECASTS rows (one or more models).
    bars
        BARS rows of ``spec.instrument_id`` covering the forecasts.
    spec
        The instrument (costs, units, calendar).
    strategies
        Name -> params; default all rules of :data:`STRATEGIES` (the energy filter only where
        the forecasts carry energy).
    model
        Which model's forecasts to trade; default the only one, else ``hmld`` if present,
        else the first that is not a statistical baseline (the CLI passes the run's model).
    n_trials
        Trials for the deflated Sharpe ratio; default the number of strategies run.
    trial_sharpes
        Per-bar Sharpe ratios of the trials (e.g. from an Optuna study), optional.

    Raises
    ------
    BacktestInputError
        Wrong instrument, duplicate or misaligned forecasts, empty input.
    """
    config = config or BacktestConfig()
    try:
        check_schema(forecasts, FORECASTS, what="forecasts")
    except ValueError as err:
        raise BacktestInputError(f"{err} (FORECASTS schema)") from err
    ids = forecasts.get_column("instrument_id").unique().to_list()
    if forecasts.height and ids != [spec.instrument_id]:
        message = f"forecasts: instrument_id {sorted(map(str, ids))} != {spec.instrument_id}"
        raise BacktestInputError(message)
    bars = check_bars(bars, spec.instrument_id, "bars")
    models = sorted(forecasts.get_column("model").unique().to_list())
    if model is None:
        model = models[0] if len(models) == 1 else ("hmld" if "hmld" in models else models[0])
        model = next((m for m in models if m not in STATISTICAL_MODELS), model)
    if model not in models and not forecasts.is_empty():
        raise BacktestInputError(f"forecasts: no model '{model}' (have {models})")
    mine = forecasts.filter(pl.col("model") == model).sort("ts_event")
    check_inputs(mine, bars, spec)
    window = window_bars(mine, bars)
    bar_ts = window.get_column("ts_event").to_numpy()
    seconds = bar_seconds(window)
    ppy = spec.periods_per_year(seconds)

    has_energy = bool(total_energy(mine).is_not_null().any())
    if strategies is None:
        strategies = {k: v for k, v in STRATEGIES.items() if has_energy or k != "energy-filter"}
    if "energy-filter" in strategies and not has_energy:
        raise BacktestInputError(f"forecasts: model '{model}' has no HML-D energy to filter on")
    names = list(strategies)
    strat_pos = np.column_stack(
        [
            positions_on_bars(signals(mine, strategies[name], periods_per_year=ppy), bar_ts)
            for name in names
        ]
    )
    close = window.get_column("close").to_numpy()
    n = len(window)
    base_names = ["buy_and_hold", "flat", "momentum"]
    base_pos = np.column_stack(
        [baselines.buy_and_hold(n), baselines.flat(n), baselines.momentum(close)]
    )
    # random signals matched to each strategy: n_random for the headline, fewer for the rest
    rand_pos = [
        baselines.random_matched(
            strat_pos[:, j],
            n_seeds=config.n_random if j == 0 else min(config.n_random, 50),
            seed=config.seed + j,
        )
        for j in range(len(names))
    ]
    columns = names + base_names
    rand_cols: dict[str, np.ndarray] = {}
    for name, block in zip(names, rand_pos):
        rand_cols[name] = np.arange(len(columns), len(columns) + block.shape[1])
        columns += [f"random_{name}_{i}" for i in range(block.shape[1])]
    sim = simulate(
        window,
        np.column_stack([strat_pos, base_pos, *rand_pos]),
        spec,
        config,
        columns=columns,
    )
    if sim.trades is not None:
        sim.trades = sim.trades.filter(~pl.col("strategy").str.starts_with("random_"))

    # forecasts mapped onto the bar they act on (for AUC per regime / fold)
    f_ts = mine.get_column("ts_event").to_numpy()
    f_bar = np.searchsorted(bar_ts, f_ts, side="left")
    acting = f_bar < n
    prob = mine.get_column("direction_prob").to_numpy()[acting]
    real = mine.get_column("realized_return").to_numpy().astype(float)[acting]
    f_bar = f_bar[acting]

    n_trials = n_trials or len(names)
    strat_sharpes_bar = sim.returns[:, : len(names)].mean(0) / np.maximum(
        sim.returns[:, : len(names)].std(0, ddof=1), 1e-300
    )
    if trial_sharpes is None and len(names) >= 2:
        trial_sharpes = strat_sharpes_bar

    def card_for(j: int, n_boot: int) -> dict:
        return scorecard(
            sim.returns[:, j],
            sim.position[:, j],
            periods_per_year=ppy,
            direction_prob=prob,
            realized_return=real,
            n_trials=n_trials,
            trial_sharpes=trial_sharpes,
            n_boot=n_boot,
            seed=config.seed,
        )

    headline = card_for(0, config.n_boot)
    random_sharpes = {
        name: np.array([_quick_sharpe(sim.returns[:, j], ppy) for j in cols])
        for name, cols in rand_cols.items()
    }
    p_value = baselines.random_pvalue(headline["sharpe"], random_sharpes[names[0]])

    # regimes per bar: energy of the forecast in force
    energy_bar = np.full(n, np.nan)
    if has_energy:
        e = total_energy(mine).to_numpy().astype(float)[acting]
        energy_bar = _value_in_force(f_bar, e, n)
    # trailing-window regimes start from bars before the window where there are some
    rp = config.regimes
    warmup = bars.filter(pl.col("ts_event") < bar_ts[0]).tail(
        max(rp.vol_window, rp.vr_window + rp.vr_lag) + 1
    )
    fold_bar = _value_in_force(f_bar, mine.get_column("fold").to_numpy()[acting].astype(float), n)
    before = np.full(warmup.height, np.nan)
    regimes = label_regimes(
        pl.concat([warmup.select(window.columns), window]),
        energy=np.concatenate([before, energy_bar]) if has_energy else None,
        fold=np.concatenate([before, fold_bar]),  # energy edges per fold (own energy scale)
        params=rp,
    ).slice(warmup.height)
    fold_labels = np.array([None if np.isnan(v) else str(int(v)) for v in fold_bar], dtype=object)
    regimes = regimes.with_columns(pl.Series("fold", fold_labels, dtype=pl.String))

    r0, p0 = sim.returns[:, 0], sim.position[:, 0]
    by_regime = {}
    for family in [c for c in regimes.columns if c not in ("ts_event", "fold")]:
        labels = regimes.get_column(family).to_numpy()
        by_regime[family] = metrics_by_group(
            labels,
            r0,
            p0,
            periods_per_year=ppy,
            forecast_labels=labels[f_bar],
            direction_prob=prob,
            realized_return=real,
            n_boot=config.n_boot_regime,
            seed=config.seed,
        )
    by_fold = metrics_by_group(
        fold_labels,
        r0,
        p0,
        periods_per_year=ppy,
        forecast_labels=fold_labels[f_bar],
        direction_prob=prob,
        realized_return=real,
        n_boot=config.n_boot_regime,
        seed=config.seed,
    )
    table = robustness_table(by_regime, by_fold)

    per_strategy = {}
    for j, name in enumerate(names):
        c = headline if j == 0 else card_for(j, config.n_boot_regime)
        per_strategy[name] = {
            **c,
            "n_trades": int(sim.n_trades[j]),
            "params": _params_dict(strategies[name]),
            "random_pvalue": baselines.random_pvalue(c["sharpe"], random_sharpes[name]),
            "random_seeds": int(len(random_sharpes[name])),
        }
    base_cards = {}
    for i, name in enumerate(base_names):
        j = len(names) + i
        base_cards[name] = {
            "sharpe": _quick_sharpe(sim.returns[:, j], ppy),
            "annual_return": float(sim.returns[:, j].mean() * ppy),
            "max_drawdown": float(_max_dd(sim.returns[:, j])),
            "n_trades": int(sim.n_trades[j]),
        }
    headline_random = random_sharpes[names[0]]  # matched to the headline strategy
    base_cards["random"] = {
        "n_seeds": int(len(headline_random)),
        "matched_to": names[0],
        "sharpe_mean": float(np.mean(headline_random)) if len(headline_random) else math.nan,
        "sharpe_std": float(np.std(headline_random, ddof=1)) if len(headline_random) > 1 else 0.0,
        "p_value": p_value,
    }
    card = {
        "instrument_id": spec.instrument_id,
        "model": model,
        "models_available": models,
        "strategy": names[0],
        "params": _params_dict(strategies[names[0]]),
        **headline,
        "n_trades": int(sim.n_trades[0]),
        "n_trials": int(n_trials),
        "random_pvalue": p_value,
        "total_costs": float(sim.costs[0]),
        "bar_seconds": seconds,
        "periods_per_year": ppy,
        "start": iso(int(bar_ts[0])),
        "end": iso(int(window.get_column("ts_close")[-1])),
        "synthetic": bool(mine.get_column("synthetic").fill_null(False).any()),
        "account_currency": config.account_currency,
        "capital": config.capital,
        "costs_model": asdict(spec.costs),
        "pip_value_per_lot": pip_value(spec, close[-1], config.account_currency),
        "config": {k: v for k, v in asdict(config).items() if k != "regimes"},
        "by_regime": by_regime,
        "energy_quantile_edges": "per_fold",  # full sample within each fold (descriptive)
        "by_fold": by_fold,
        "robustness": robustness_summary(table),
        "robustness_table": table.to_dicts(),
        "strategies": per_strategy,
        "baselines": base_cards,
    }
    return BacktestResult(card=card, simulation=sim, bars=window, regimes=regimes, robustness=table)


def _value_in_force(bar_index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    if len(bar_index) == 0:
        return out
    k = np.arange(n)
    last = np.searchsorted(bar_index, k, side="right") - 1
    ok = last >= 0
    out[ok] = values[last[ok]]
    return out


def _quick_sharpe(r: np.ndarray, ppy: float) -> float:
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    return float(r.mean() / sd * math.sqrt(ppy)) if sd > 1e-15 else 0.0


def _max_dd(r: np.ndarray) -> float:
    equity = 1.0 + np.cumsum(r)
    return float((equity / np.maximum.accumulate(np.maximum(equity, 1.0)) - 1.0).min())


def _params_dict(params: Params) -> dict:
    return {"rule": type(params).__name__, **asdict(params)}


# ---- the CLI -------------------------------------------------------------------------


def optuna_trials(storage, study_name: str) -> tuple[int, np.ndarray | None]:
    """Return the number of completed trials of an Optuna study (and no Sharpe values).

    ``storage`` is an Optuna storage URL (``sqlite:///study.db``) or storage object.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception as err:  # noqa: BLE001
        message = f"{storage}: cannot load Optuna study '{study_name}' ({err})"
        raise BacktestInputError(message) from err
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return max(len(done), 1), None


def apply_overrides(strategies: dict[str, Params], pairs: list[str]) -> dict[str, Params]:
    """Return ``strategies`` with ``rule.field=value`` overrides applied, type-checked.

    Raises
    ------
    BacktestInputError
        Unknown rule or field, a value of the wrong type, or params that fail validation.
    """
    out = dict(strategies)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        rule, dot, name = key.partition(".")
        if not sep or not dot:
            raise BacktestInputError(f"--set {pair!r}: expected RULE.FIELD=VALUE")
        if rule not in out:
            raise BacktestInputError(f"--set {pair!r}: no rule {rule!r} (have {sorted(out)})")
        params = out[rule]
        kinds = {f.name: f.type for f in fields(params)}
        if name not in kinds or name == "base":
            message = f"--set {pair!r}: {type(params).__name__} has no field {name!r}"
            raise BacktestInputError(message)
        kind = kinds[name] if isinstance(kinds[name], str) else kinds[name].__name__
        try:
            value = int(raw) if kind == "int" else float(raw)
            out[rule] = replace(params, **{name: value})
        except ValueError as err:
            raise BacktestInputError(f"--set {pair!r}: {err}") from err
    return out


def _has_energy(forecasts: pl.DataFrame) -> bool:
    return bool(total_energy(forecasts).is_not_null().any())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m strategies.backtest",
        description="Backtest a run's forecasts; write backtest.json, trades.parquet, report.html.",
    )
    parser.add_argument("--run", type=Path, required=True, help="run folder with forecasts.parquet")
    parser.add_argument(
        "--strategy",
        action="append",
        choices=sorted(STRATEGIES),
        help="rule(s) to run, the first is the headline (default: all that apply)",
    )
    parser.add_argument("--model", help="which model's forecasts (default: the run's model)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="RULE.FIELD=VALUE",
        help="override a rule parameter, e.g. threshold.upper=0.6 (type-checked)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bars", type=Path, help="Parquet file of BARS rows")
    source.add_argument("--store", type=Path, help="store root (default: config.json's store)")
    parser.add_argument("--instrument", help="instrument id (default: from the forecasts)")
    parser.add_argument("--capital", type=float, default=BacktestConfig.capital)
    parser.add_argument("--no-rollover", action="store_true", help="ignore FX rollover")
    parser.add_argument("--n-boot", type=int, default=BacktestConfig.n_boot)
    parser.add_argument("--n-random", type=int, default=BacktestConfig.n_random)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optuna-storage", help="Optuna storage URL (n_trials for the DSR)")
    parser.add_argument("--optuna-study", help="Optuna study name")
    parser.add_argument("--out", type=Path, help="output folder (default: the run folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        result = _run_cli(args)
    except (BacktestInputError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from strategies.report import format_scorecard, write_outputs  # matplotlib: import late

    paths = write_outputs(result, args.out or args.run)
    print(format_scorecard(result.card))
    print(f"wrote {paths['backtest']} {paths['trades']} {paths['report']}")
    print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def _run_cli(args: argparse.Namespace) -> BacktestResult:
    run: Path = args.run
    if not run.is_dir():
        raise BacktestInputError(f"{run}: run folder not found")
    forecasts = read_forecasts(run / "forecasts.parquet")
    if forecasts.is_empty():
        raise BacktestInputError(f"{run / 'forecasts.parquet'}: empty (no forecasts)")
    ids = forecasts.get_column("instrument_id").unique().to_list()
    instrument = args.instrument or (ids[0] if len(ids) == 1 else None)
    if instrument is None:
        raise BacktestInputError(f"forecasts: several instruments {sorted(ids)}; pass --instrument")
    spec = load_spec(instrument)
    bars = run_bars(run, spec.instrument_id, forecasts, bars_path=args.bars, store=args.store)
    n_trials, trial_sharpes = None, None
    if args.optuna_storage or args.optuna_study:
        if not (args.optuna_storage and args.optuna_study):
            raise BacktestInputError("--optuna-storage and --optuna-study go together")
        n_trials, trial_sharpes = optuna_trials(args.optuna_storage, args.optuna_study)
    model = args.model
    if model is None and (run / "config.json").is_file():
        try:
            model = json.loads((run / "config.json").read_text()).get("model")
        except (json.JSONDecodeError, AttributeError):
            model = None
        have = set(forecasts.get_column("model").unique().to_list())
        model = model if model in have else None
    strategies = None
    if args.strategy:
        strategies = {name: STRATEGIES[name] for name in dict.fromkeys(args.strategy)}
    if args.set:
        chosen = strategies or dict(STRATEGIES)
        strategies = apply_overrides(chosen, args.set)
        if not args.strategy and not _has_energy(forecasts):
            strategies.pop("energy-filter", None)
    config = BacktestConfig(
        capital=args.capital,
        rollover=not args.no_rollover,
        n_boot=args.n_boot,
        n_random=args.n_random,
        seed=args.seed,
    )
    return run_backtest(
        forecasts,
        bars,
        spec,
        strategies=strategies,
        model=model,
        config=config,
        n_trials=n_trials,
        trial_sharpes=trial_sharpes,
    )


if __name__ == "__main__":
    sys.exit(main())
