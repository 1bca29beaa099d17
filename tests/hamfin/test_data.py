"""TickDataModule and its checks: windows, train-only normalization, leakage, bad data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hamfin.data import (
    DataConfig,
    DataError,
    FeatureSet,
    LeakageError,
    TickDataModule,
    check_leakage,
    cover_windows,
    load_features,
    make_folds,
)
from pipelines.bars import resample_bars
from pipelines.store import Store


def _feature_set(n: int = 1200, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    r = rng.normal(scale=1e-4, size=n + 1)
    features = np.column_stack([r[:-1], np.abs(r[:-1]), rng.normal(size=n)])
    return FeatureSet(
        instrument="EURUSD",
        ts_event=np.arange(n, dtype=np.int64) * 300 * 10**9,
        features=features,
        feature_names=("log_return_1", "abs_return", "noise"),
        label_return=r[1:],
        label_volatility=np.abs(r[1:]),
        returns=r[:-1],
        horizon=1,
        bar="5m",
        synthetic=True,
    )


def test_cover_windows_scores_every_row_once_with_enough_context():
    rows = np.concatenate([np.arange(5, 40), np.arange(60, 97)])
    ends, weights = cover_windows(rows, n=100, window=16, span=6)
    scored = np.concatenate([np.arange(e - 15, e + 1)[w > 0] for e, w in zip(ends, weights)])
    assert sorted(scored.tolist()) == [r for r in rows.tolist() if r >= 15]
    assert len(set(scored.tolist())) == scored.size
    for w in weights:
        assert (np.flatnonzero(w) >= 16 - 6).all()  # at least window - span bars of context


def test_normalization_is_fit_on_training_rows_only():
    fs = _feature_set()
    config = DataConfig(window=16, span=8, n_folds=2)
    fold = make_folds(fs, config)[0]
    before = TickDataModule(fs, fold, config).scales
    changed = fs.features.copy()
    changed[fold.val[0] :] *= 1000.0
    labels = fs.label_return.copy()
    labels[fold.val[0] :] *= 1000.0
    fs2 = dataclasses.replace(fs, features=changed, label_return=labels)
    after = TickDataModule(fs2, fold, config).scales
    np.testing.assert_allclose(after.mean, before.mean)
    np.testing.assert_allclose(after.std, before.std)
    assert after.return_scale == before.return_scale


def test_training_windows_only_score_training_rows():
    fs = _feature_set()
    config = DataConfig(window=16, span=8, n_folds=2)
    fold = make_folds(fs, config)[1]
    dm = TickDataModule(fs, fold, config)
    train = set(fold.train.tolist())
    for i in range(len(dm.sets["train"])):
        rows = dm.sets["train"].rows(i).numpy()
        weights = dm.sets["train"][i][2].numpy()
        assert set(rows[weights > 0].tolist()) <= train


def test_a_target_leaked_into_the_features_fails_loudly():
    fs = _feature_set()
    leaked = dataclasses.replace(
        fs,
        features=np.column_stack([fs.features, fs.label_return + 1e-7]),
        feature_names=(*fs.feature_names, "innocent_looking"),
    )
    with pytest.raises(LeakageError, match="innocent_looking.*label_return"):
        check_leakage(leaked)
    sign = dataclasses.replace(
        fs,
        features=np.column_stack([fs.features, np.sign(fs.label_return) * fs.features[:, 2] ** 2]),
        feature_names=(*fs.feature_names, "sign_of_future"),
    )
    with pytest.raises(LeakageError, match="sign_of_future.*direction"):
        check_leakage(sign)
    check_leakage(fs)  # honest features pass


def test_stored_bars_are_used_and_resampled_to_the_requested_bar(bars_store):
    config = DataConfig(store=str(bars_store), bar="5m", min_bars=100)
    fs = load_features(config)
    assert fs.bar == "5m" and not fs.synthetic
    step = np.median(np.diff(fs.ts_event))
    assert step == 300 * 10**9
    one_minute = Store(bars_store).scan("bars", "EURUSD").collect()
    five = resample_bars(one_minute.lazy(), every="5m").collect()
    assert five["volume"].sum() == pytest.approx(one_minute["volume"].sum())
    assert five["tick_count"].sum() == one_minute["tick_count"].sum()


def test_bars_are_built_from_quotes_when_the_store_has_no_bars(quotes_store):
    fs = load_features(
        DataConfig(instrument="GBPUSD", store=str(quotes_store), bar="15m", min_bars=100)
    )
    assert np.median(np.diff(fs.ts_event)) == 900 * 10**9


def test_nan_in_the_bars_is_reported_naming_the_feature(bars_store, tmp_path):
    bars = Store(bars_store).scan("bars", "EURUSD").collect()
    mid = bars.height // 2
    import polars as pl

    bad = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == mid)
        .then(float("nan"))
        .otherwise(pl.col("close"))
        .alias("close")
    )
    Store(tmp_path).write("bars", bad.lazy(), instrument_id="EURUSD")
    with pytest.raises(DataError, match="feature '.*' has .* NaN"):
        load_features(DataConfig(store=str(tmp_path), bar="5m", min_bars=100))
