"""Walk-forward splits: time order, no overlap, purge and embargo gaps."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.splits import walk_forward


def _check(folds, ts, *, horizon, embargo):
    gap = horizon + embargo
    _, step = np.unique(ts, return_inverse=True)
    prev_test_end = -1
    for fold in folds:
        parts = [fold.train, fold.val, fold.test]
        assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
        assert fold.train.size > 0 and fold.test.size > 0
        # disjoint
        assert len(np.intersect1d(fold.train, fold.val)) == 0
        assert len(np.intersect1d(fold.train, fold.test)) == 0
        assert len(np.intersect1d(fold.val, fold.test)) == 0
        # time-ordered: train < val < test
        evals = np.concatenate([fold.val, fold.test])
        assert step[fold.train].max() < step[evals].min()
        if fold.val.size:
            assert step[fold.val].max() < step[fold.test].min()
        # purge + embargo: no train sample within horizon+embargo bars of any val/test sample,
        # and no val sample within horizon+embargo bars of the test block
        distance = np.abs(step[fold.train][:, None] - step[evals][None, :])
        assert distance.min() > gap
        if fold.val.size:
            assert step[fold.test].min() - step[fold.val].max() > gap
        # folds move forward in time
        assert step[fold.test].min() > prev_test_end
        prev_test_end = step[fold.test].max()


@pytest.mark.parametrize("window", ["expanding", "rolling"])
def test_walk_forward_folds_are_ordered_disjoint_and_purged(window):
    ts = np.arange(1000, dtype=np.int64) * 60
    folds = walk_forward(ts, n_folds=4, horizon=5, embargo=3, window=window)
    assert len(folds) == 4
    _check(folds, ts, horizon=5, embargo=3)
    # test blocks tile the tail of the data
    tests = np.concatenate([f.test for f in folds])
    assert np.array_equal(tests, np.arange(500, 1000))
    # purge removed exactly horizon + embargo bars before val and before test
    f0 = folds[0]
    assert f0.val.min() - f0.train.max() == 9 and f0.test.min() - f0.val.max() == 9


def test_expanding_train_grows_and_rolling_train_keeps_its_length():
    ts = np.arange(1000)
    expanding = walk_forward(ts, n_folds=3, horizon=2, embargo=1)
    rolling = walk_forward(ts, n_folds=3, horizon=2, embargo=1, window="rolling")
    assert all(f.train[0] == 0 for f in expanding)
    assert [f.train.size for f in expanding] == sorted(f.train.size for f in expanding)
    assert expanding[-1].train.size > expanding[0].train.size
    assert len({f.train.size for f in rolling}) == 1
    assert rolling[-1].train[0] > 0


def test_samples_sharing_a_timestamp_stay_in_one_block():
    ts = pl.Series(np.repeat(np.arange(300), 2))  # two instruments per bar
    folds = walk_forward(ts, n_folds=3, horizon=4, embargo=2, val_fraction=0.25)
    _check(folds, ts.to_numpy(), horizon=4, embargo=2)
    for f in folds:
        for part in (f.train, f.val, f.test):
            assert part.size % 2 == 0


def test_unsorted_or_too_short_input_is_rejected():
    with pytest.raises(ValueError, match="sorted"):
        walk_forward(np.array([3, 2, 1]), n_folds=1)
    with pytest.raises(ValueError, match="too few|cannot make"):
        walk_forward(np.arange(20), n_folds=5, horizon=10, embargo=5)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(200, 2000),
    n_folds=st.integers(1, 6),
    horizon=st.integers(0, 20),
    embargo=st.integers(0, 10),
    val_fraction=st.sampled_from([0.0, 0.1, 0.3]),
    window=st.sampled_from(["expanding", "rolling"]),
)
def test_walk_forward_invariants_hold_for_any_options(
    n, n_folds, horizon, embargo, val_fraction, window
):
    ts = np.arange(n) * 10
    folds = walk_forward(
        ts, n_folds=n_folds, horizon=horizon, embargo=embargo,
        val_fraction=val_fraction, window=window,
    )  # fmt: skip
    assert len(folds) == n_folds
    _check(folds, ts, horizon=horizon, embargo=embargo)
