"""Regime labels (DST-aware sessions, volatility terciles, variance ratio) and robustness."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from strategies.regimes import (
    RegimeParams,
    energy_labels,
    label_regimes,
    plot_robustness,
    robustness_summary,
    robustness_table,
)
from tests.strategies.factories import HOUR_NS, MONDAY


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1e9)


def _bars_at(ts: list[int], close: np.ndarray | None = None) -> pl.DataFrame:
    close = np.full(len(ts), 1.1) if close is None else close
    return pl.DataFrame({"ts_event": ts, "close": close})


def test_sessions_follow_new_york_and_london_daylight_saving_time():
    stamps = [
        _ns("2024-01-10T12:30:00"),  # 07:30 New York (EST), 12:30 London -> london
        _ns("2024-07-10T12:30:00"),  # 08:30 New York (EDT) -> new_york
        _ns("2024-01-10T07:30:00"),  # 07:30 London (GMT) -> asia
        _ns("2024-07-10T07:30:00"),  # 08:30 London (BST) -> london
        _ns("2024-03-13T12:30:00"),  # US already on EDT, UK not yet: 08:30 New York -> new_york
        _ns("2024-01-10T22:00:00"),  # 17:00 New York -> asia
    ]
    labels = label_regimes(_bars_at(stamps))["session"].to_list()
    assert labels == ["london", "new_york", "asia", "london", "new_york", "asia"]


def test_volatility_terciles_label_the_calm_and_the_wild_segments():
    rng = np.random.default_rng(0)
    scale = np.repeat([1e-4, 1e-3, 1e-2], 400)
    close = 1.1 * np.exp(np.cumsum(rng.normal(size=1200) * scale))
    ts = (MONDAY + HOUR_NS * np.arange(1200)).tolist()
    labels = label_regimes(_bars_at(ts, close), params=RegimeParams(vol_window=20))
    vol = labels["volatility"].to_list()
    assert vol[0] is None
    assert vol[100:380].count("low") > 250
    assert vol[900:1190].count("high") > 250


def test_variance_ratio_tells_trending_from_mean_reverting_paths():
    rng = np.random.default_rng(1)
    n = 3000
    for phi, expected in ((0.6, "trend"), (-0.6, "mean_reversion")):
        r = np.zeros(n)
        eps = rng.normal(size=n) * 1e-3
        for k in range(1, n):
            r[k] = phi * r[k - 1] + eps[k]
        close = 1.1 * np.exp(np.cumsum(r))
        ts = (MONDAY + HOUR_NS * np.arange(n)).tolist()
        trend = label_regimes(_bars_at(ts, close))["trend"].drop_nulls().to_list()
        assert trend.count(expected) / len(trend) > 0.95


def test_energy_quantiles_label_bars_when_energy_is_given():
    ts = (MONDAY + HOUR_NS * np.arange(300)).tolist()
    energy = np.linspace(0, 1, 300)
    energy[:10] = np.nan
    labels = label_regimes(_bars_at(ts), energy=energy)["energy"].to_list()
    assert labels[:10] == [None] * 10
    assert labels[10] == "q1" and labels[-1] == "q3"


def test_energy_quantile_edges_are_cut_per_fold_so_each_fold_spans_every_regime():
    rng = np.random.default_rng(7)
    fold = np.repeat([0, 1, 2], 300)
    energy = rng.uniform(1.0, 2.0, 900) * 100.0**fold  # three models, scales 1, 100, 1e4
    labels = np.array(energy_labels(energy, 3, fold=fold), dtype=object)
    for f in (0, 1, 2):
        mine = labels[fold == f]
        assert [int((mine == q).sum()) for q in ("q1", "q2", "q3")] == [100, 100, 100]
    # the control: edges pooled over the folds put each fold wholly in one regime
    pooled = np.array(energy_labels(energy, 3), dtype=object)
    assert [set(pooled[fold == f]) for f in (0, 1, 2)] == [{"q1"}, {"q2"}, {"q3"}]


def test_bar_energy_regimes_use_the_fold_of_the_forecast_in_force():
    ts = (MONDAY + HOUR_NS * np.arange(300)).tolist()
    energy = np.linspace(1.0, 2.0, 300) * np.where(np.arange(300) < 150, 1.0, 100.0)
    fold = np.where(np.arange(300) < 150, 0.0, 1.0)
    energy[:10] = fold[:10] = np.nan  # warm-up: no forecast in force
    labels = label_regimes(_bars_at(ts), energy=energy, fold=fold)["energy"].to_list()
    assert labels[:10] == [None] * 10
    assert (labels[10], labels[149], labels[150], labels[-1]) == ("q1", "q3", "q1", "q3")


def test_robustness_table_names_the_worst_regime_and_dispersion():
    def m(s):
        return {"sharpe": s, "sharpe_ci_low": s - 1, "sharpe_ci_high": s + 1}

    by_regime = {"session": {"asia": m(-1.0), "london": m(2.0), "new_york": m(0.5)}}
    by_fold = {"0": m(1.0), "1": m(3.0)}
    table = robustness_table(by_regime, by_fold)
    session = table.filter(pl.col("family") == "session").row(0, named=True)
    assert session["worst_group"] == "asia" and session["worst_sharpe"] == -1.0
    assert session["sharpe_std"] == np.std([-1.0, 2.0, 0.5], ddof=1)
    summary = robustness_summary(table)
    assert summary["worst_regime_sharpe"] == -1.0 and summary["worst_fold_sharpe"] == 1.0
    fig = plot_robustness(by_regime, by_fold)
    assert len(fig.axes) == 2
