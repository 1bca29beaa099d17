"""Benchmark: a year of 1-minute EUR/USD bars, 100 threshold parameter sets, one vectorbt call.

    python -m strategies.bench [--weeks 52] [--combos 100] [--json PATH]

Bars and forecasts are generated here with NumPy (synthetic: a random walk in log price with
quotes 0.2 pip apart, and a persistent, weakly informative direction probability). The grid is
``ThresholdParams(upper, lower)`` over a 10 x 10 grid; positions for every combination are
stacked as columns and simulated together with ``strategies.backtest.simulate`` (one
``vectorbt.Portfolio.from_orders`` call, columns = combinations), then scored (annualized
Sharpe per column). Prints wall times per stage and peak resident memory; the numba
compilation of vectorbt is done on a tiny input first and reported separately.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.signal import lfilter

from data_specs.schemas import BARS, FORECASTS, conform
from data_specs.spec import load_spec
from strategies.backtest import BacktestConfig, simulate
from strategies.inputs import forecast_in_force
from strategies.signals import ThresholdParams, base_signal

MINUTE_NS = 60_000_000_000
FIRST_SUNDAY_22UTC = 1_704_060_000_000_000_000 + 22 * 3600 * 10**9  # 2023-12-31 22:00 UTC


def synthetic_minutes(weeks: int, *, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (bars, forecasts): FX-week minute bars (Sun 22:00 to Fri 22:00 UTC) and one
    horizon-1 forecast per bar close."""
    rng = np.random.default_rng(seed)
    per_week = 5 * 1440
    week_start = FIRST_SUNDAY_22UTC + np.arange(weeks, dtype=np.int64) * 7 * 1440 * MINUTE_NS
    ts = (week_start[:, None] + np.arange(per_week, dtype=np.int64) * MINUTE_NS).ravel()
    n = len(ts)
    sigma = 0.07 / math.sqrt(260 * 1440)
    log_ret = rng.normal(0.0, sigma, n)
    close = 1.10 * np.exp(np.cumsum(log_ret))
    open_ = np.concatenate([[1.10], close[:-1]])
    half = 1e-5
    bars = conform(
        pl.DataFrame(
            {
                "instrument_id": "EURUSD",
                "ts_event": ts,
                "ts_close": ts + MINUTE_NS,
                "open": open_,
                "high": np.maximum(open_, close),
                "low": np.minimum(open_, close),
                "close": close,
                "bid_open": open_ - half,
                "ask_open": open_ + half,
                "bid_close": close - half,
                "ask_close": close + half,
            }
        ),
        BARS,
    )
    # persistent AR(1) noise (unit variance) plus a little knowledge of the next bar, so that
    # positions last a while as they would with a real forecaster
    phi = 0.995
    noise = lfilter([math.sqrt(1 - phi**2)], [1.0, -phi], rng.normal(size=n - 1))
    z = 0.03 * log_ret[1:] / sigma + noise
    prob = 1.0 / (1.0 + np.exp(-z))
    forecasts = conform(
        pl.DataFrame(
            {
                "ts_event": ts[:-1] + MINUTE_NS,
                "instrument_id": "EURUSD",
                "model": "synthetic",
                "fold": 0,
                "horizon": 1,
                "predicted_return": (prob - 0.5) * sigma,
                "direction_prob": prob,
                "predicted_volatility": sigma,
                "realized_return": log_ret[1:],
                "realized_volatility": np.abs(log_ret[1:]),
                "synthetic": True,
            }
        ).with_columns(pl.lit([], dtype=pl.List(pl.Float64)).alias("energy")),
        FORECASTS,
    )
    return bars, forecasts


def grid(n_combos: int) -> list[ThresholdParams]:
    """Return ``n_combos`` threshold bands on a square grid of upper x lower."""
    side = math.isqrt(n_combos)
    uppers = np.linspace(0.50, 0.62, side)
    lowers = np.linspace(0.38, 0.50, math.ceil(n_combos / side))
    combos = [ThresholdParams(upper=float(u), lower=float(lo)) for u in uppers for lo in lowers]
    return combos[:n_combos]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(weeks: int = 52, n_combos: int = 100, seed: int = 0) -> dict:
    """Run the benchmark and return its figures."""
    spec = load_spec("EURUSD")
    config = BacktestConfig()
    started = time.perf_counter()
    bars, forecasts = synthetic_minutes(weeks, seed=seed)
    t_data = time.perf_counter() - started

    t0 = time.perf_counter()
    simulate(bars.head(50), np.ones((50, 2)), spec, config, columns=["a", "b"], with_trades=False)
    t_jit = time.perf_counter() - t0
    rss_before = _rss_mb()

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    ppy = spec.periods_per_year(60.0)
    bar_ts = bars.get_column("ts_event").to_numpy()
    combos = grid(n_combos)
    ordered = forecasts.sort("ts_event")
    source = forecast_in_force(
        ordered.get_column("ts_event").to_numpy(), ordered.get_column("horizon").to_numpy(), bar_ts
    )
    alive, source = source >= 0, np.maximum(source, 0)
    position = np.empty((bars.height, len(combos)))
    for j, params in enumerate(combos):
        rule = base_signal(ordered, params, periods_per_year=ppy).get_column("position")
        position[:, j] = np.where(alive, rule.to_numpy()[source], 0.0)
    t_signals = time.perf_counter() - t0

    t0 = time.perf_counter()
    sim = simulate(
        bars, position, spec, config, columns=[str(c) for c in combos], with_trades=False
    )
    t_sim = time.perf_counter() - t0

    t0 = time.perf_counter()
    r = sim.returns
    sharpe = r.mean(axis=0) / np.maximum(r.std(axis=0, ddof=1), 1e-300) * math.sqrt(ppy)
    t_score = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    best = int(np.argmax(sharpe))
    return {
        "bars": int(bars.height),
        "combos": len(combos),
        "cells": int(bars.height * len(combos)),
        "orders": int(sim.n_trades.sum()),
        "data_s": t_data,
        "jit_warmup_s": t_jit,
        "signals_s": t_signals,
        "simulate_s": t_sim,
        "score_s": t_score,
        "backtest_wall_s": t_signals + t_sim + t_score,
        "backtest_cpu_s": cpu,
        "peak_rss_mb": _rss_mb(),
        "rss_before_mb": rss_before,
        "best_combo": str(combos[best]),
        "best_sharpe": float(sharpe[best]),
        "median_sharpe": float(np.median(sharpe)),
        "synthetic": True,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strategies.bench", description=__doc__)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--combos", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.weeks < 1 or args.combos < 1:
        print("error: --weeks and --combos must be >= 1", file=sys.stderr)
        return 2
    figures = run(args.weeks, args.combos, args.seed)
    print(
        f"strategies.bench: {figures['bars']:,} one-minute EURUSD bars (synthetic) x "
        f"{figures['combos']} threshold combos = {figures['cells']:,} cells, one vectorbt call"
    )
    for key in ("data_s", "jit_warmup_s", "signals_s", "simulate_s", "score_s"):
        print(f"  {key:<16}{figures[key]:8.2f} s")
    wall = figures["backtest_wall_s"]
    print(f"  {'backtest wall':<16}{wall:8.2f} s  (signals + simulate + score)")
    cpu = figures["backtest_cpu_s"]
    print(f"  {'backtest CPU':<16}{cpu:8.2f} s  (process CPU time of the same stages)")
    print(
        f"  {'peak RSS':<16}{figures['peak_rss_mb']:8.0f} MB  "
        f"(before the grid: {figures['rss_before_mb']:.0f} MB)"
    )
    print(
        f"  positions opened {figures['orders']:,}; best {figures['best_combo']} Sharpe "
        f"{figures['best_sharpe']:+.2f}, median {figures['median_sharpe']:+.2f} (synthetic data)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
