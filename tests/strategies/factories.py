"""Tiny synthetic bars and forecasts of our own, in the BARS and FORECASTS schemas."""

from __future__ import annotations

import numpy as np
import polars as pl

from data_specs.schemas import BARS, FORECASTS, conform

MONDAY = 1_704_672_000_000_000_000  # 2024-01-08 00:00 UTC, a Monday
HOUR_NS = 3_600_000_000_000


def make_bars(
    n: int = 2000,
    *,
    seed: int = 0,
    bar_ns: int = HOUR_NS,
    vol: float = 1e-3,
    price: float = 1.10,
    spread: float | None = 5e-5,
    instrument_id: str = "EURUSD",
) -> pl.DataFrame:
    """Return ``n`` contiguous bars (open = previous close) of a random walk in log price."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate([[price], close[:-1]])
    ts = MONDAY + bar_ns * np.arange(n, dtype=np.int64)
    half = None if spread is None else spread / 2
    frame = pl.DataFrame(
        {
            "instrument_id": [instrument_id] * n,
            "ts_event": ts,
            "ts_close": ts + bar_ns,
            "open": open_,
            "high": np.maximum(open_, close),
            "low": np.minimum(open_, close),
            "close": close,
            "bid_open": None if half is None else open_ - half,
            "ask_open": None if half is None else open_ + half,
            "bid_close": None if half is None else close - half,
            "ask_close": None if half is None else close + half,
        }
    )
    return conform(frame, BARS)


def make_forecasts(
    bars: pl.DataFrame,
    *,
    kind: str = "oracle",
    skill: float = 1.0,
    seed: int = 1,
    n_folds: int = 3,
    energy_layers: int = 2,
    model: str = "hmld",
) -> pl.DataFrame:
    """Return one forecast per bar close (except the last), horizon 1.

    ``kind="oracle"``: the direction probability leans toward the realized next-bar return with
    strength ``skill`` (plus noise); ``kind="noise"``: pure noise, no information.
    """
    rng = np.random.default_rng(seed)
    close = bars.get_column("close").to_numpy()
    ts_close = bars.get_column("ts_close").to_numpy()
    realized = np.log(close[1:] / close[:-1])
    n = len(realized)
    scale = realized.std()
    if kind == "oracle":
        z = skill * realized / scale + rng.normal(size=n)
    elif kind == "noise":
        z = rng.normal(size=n)
    else:
        raise ValueError(kind)
    prob = 1.0 / (1.0 + np.exp(-z))
    energy = rng.gamma(2.0, 1.0, size=(n, energy_layers))
    frame = pl.DataFrame(
        {
            "ts_event": ts_close[:-1],
            "instrument_id": bars.get_column("instrument_id")[:-1],
            "model": [model] * n,
            "fold": (np.arange(n) * n_folds // n).astype(np.int64),
            "horizon": np.ones(n, dtype=np.int64),
            "predicted_return": (prob - 0.5) * scale,
            "direction_prob": prob,
            "predicted_volatility": np.full(n, scale),
            "energy": [list(row) for row in energy],
            "realized_return": realized,
            "realized_volatility": np.abs(realized),
            "synthetic": [True] * n,
        }
    )
    return conform(frame, FORECASTS)


def make_energy_volatility_pair(
    n: int = 1500, *, seed: int = 0, coupling: float = 1.0, persistence: float = 0.98
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return bars with a persistent stochastic volatility and forecasts whose energy tracks it.

    Log volatility is an AR(1) with ``persistence``; the energy of the forecast made at a bar's
    close is ``exp(coupling * log-vol deviation + noise)`` of that bar (known then), split over
    two layers. ``coupling=0`` gives energy unrelated to volatility.
    """
    rng = np.random.default_rng(seed)
    h = np.zeros(n)
    shocks = rng.normal(0.0, 0.3 * np.sqrt(1 - persistence**2), n)
    for t in range(1, n):
        h[t] = persistence * h[t - 1] + shocks[t]
    bars = make_bars(n, seed=seed + 1, vol=1e-3 * np.exp(h))
    forecasts = make_forecasts(bars, seed=seed + 2, energy_layers=2)
    total = np.exp(coupling * h[:-1] / 0.3 + rng.normal(0.0, 0.3, n - 1))
    energy = np.column_stack([0.6 * total, 0.4 * total])
    return bars, forecasts.with_columns(
        pl.Series("energy", [list(row) for row in energy], dtype=pl.List(pl.Float64))
    )


def write_run_folder(folder, forecasts: pl.DataFrame, bars: pl.DataFrame | None = None):
    """Write ``forecasts.parquet`` (and ``bars.parquet``) into a new run ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    forecasts.write_parquet(folder / "forecasts.parquet")
    if bars is not None:
        bars.write_parquet(folder / "bars.parquet")
    return folder


# the scorecard keys the issue names as the interface (backtest.json and BacktestResult.card)
SCORECARD_KEYS = (
    "sharpe",
    "sharpe_ci_low",
    "sharpe_ci_high",
    "psr",
    "deflated_sharpe",
    "max_drawdown",
    "auc",
    "n_trades",
    "by_regime",
)
