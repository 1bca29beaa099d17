"""Scores: AUC against scikit-learn, the block-bootstrap interval, QLIKE, Diebold–Mariano."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from hamfin.metrics import (
    auc,
    auc_with_ci,
    diebold_mariano,
    f1,
    hac_variance,
    qlike_loss,
)


def test_auc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.normal(size=500) + 0.5 * labels, 1)  # many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_f1_matches_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300).astype(bool)
    prob = rng.random(300)
    assert f1(labels, prob) == pytest.approx(f1_score(labels, prob > 0.5))


def test_bootstrap_interval_brackets_the_point_and_shrinks_with_more_data():
    rng = np.random.default_rng(2)

    def width(n):
        labels = rng.integers(0, 2, n)
        scores = rng.normal(size=n) + 0.3 * labels
        point, low, high = auc_with_ci(labels, scores, n_boot=300)
        assert low <= point <= high
        return high - low

    assert width(4000) < width(250)


def test_block_bootstrap_interval_is_wider_than_iid_for_autocorrelated_scores():
    rng = np.random.default_rng(3)
    n = 2000
    state = np.cumsum(rng.normal(size=n)) * 0.1  # persistent signal, persistent labels
    labels = (np.convolve(rng.normal(size=n), np.ones(50), "same") > 0).astype(int)
    scores = state + labels
    _, lo_block, hi_block = auc_with_ci(labels, scores, n_boot=300, block=100)
    _, lo_iid, hi_iid = auc_with_ci(labels, scores, n_boot=300, block=1)
    assert hi_block - lo_block > hi_iid - lo_iid


def test_qlike_is_zero_at_a_perfect_forecast_and_positive_otherwise():
    vol = np.array([0.1, 0.2, 0.3])
    assert np.allclose(qlike_loss(vol, vol), 0.0)
    assert (qlike_loss(vol, vol * 1.5) > 0).all() and (qlike_loss(vol, vol / 1.5) > 0).all()


def test_hac_variance_of_white_noise_is_close_to_its_variance():
    d = np.random.default_rng(4).normal(size=20000)
    assert hac_variance(d, lags=10) == pytest.approx(1.0, rel=0.05)


def test_diebold_mariano_detects_a_better_forecast_and_not_an_equal_one():
    rng = np.random.default_rng(5)
    target = rng.normal(size=1500)
    good = target + rng.normal(scale=0.5, size=1500)
    bad = target + rng.normal(scale=1.0, size=1500)
    other = target + rng.normal(scale=0.5, size=1500)
    better = diebold_mariano((target - good) ** 2, (target - bad) ** 2)
    assert better.pvalue < 1e-6 and better.statistic < 0
    same = diebold_mariano((target - good) ** 2, (target - other) ** 2)
    assert same.pvalue > 0.01


def test_diebold_mariano_of_identical_forecasts_is_undefined_not_significant():
    loss = np.random.default_rng(6).random(100)
    assert np.isnan(diebold_mariano(loss, loss).pvalue)
