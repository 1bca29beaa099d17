"""Statistical baselines: they find structure that is there, fit on training rows only, and
never look ahead."""

from __future__ import annotations

import numpy as np

from hamfin.metrics import auc
from hamfin.statistical import BASELINES, fit_baselines


def _ar1_garch(n: int, seed: int = 0):
    """AR(1) returns (φ = 0.3) with GARCH(1,1) variance; forward labels for horizon 1."""
    rng = np.random.default_rng(seed)
    r, var = np.zeros(n), np.full(n, 1e-8)
    for t in range(1, n):
        var[t] = 1e-9 + 0.1 * (r[t - 1] - 0.3 * r[max(t - 2, 0)]) ** 2 + 0.85 * var[t - 1]
        r[t] = 0.3 * r[t - 1] + np.sqrt(var[t]) * rng.normal()
    label_return = np.append(r[1:], np.nan)
    label_vol = np.abs(label_return)
    return r, label_return, label_vol


def test_every_baseline_forecasts_every_test_row_with_positive_volatility():
    r, _, vol = _ar1_garch(3000)
    train, test = np.arange(0, 2000), np.arange(2100, 2999)
    out = fit_baselines(r, vol, train, test, horizon=1, bars_per_day=24)
    assert tuple(out) == BASELINES
    for forecast in out.values():
        assert forecast.predicted_return.shape == (test.size,)
        assert np.isfinite(forecast.direction_prob).all()
        assert (forecast.predicted_volatility > 0).all()


def test_ar_baseline_finds_autocorrelation_and_garch_tracks_volatility_clusters():
    r, label_return, label_vol = _ar1_garch(4000, seed=1)
    train, test = np.arange(0, 3000), np.arange(3000, 3999)
    out = fit_baselines(r, label_vol, train, test, horizon=1, bars_per_day=24)
    assert auc(label_return[test] > 0, out["ar"].direction_prob) > 0.55
    corr = np.corrcoef(out["garch"].predicted_volatility, label_vol[test])[0, 1]
    assert corr > 0.1


def test_baselines_never_read_labels_outside_training_or_returns_after_the_row():
    r, _, vol = _ar1_garch(3000, seed=2)
    train, test = np.arange(0, 2000), np.arange(2100, 2500)
    base = fit_baselines(r, vol, train, test, horizon=3, bars_per_day=24)
    r2, vol2 = r.copy(), vol.copy()
    r2[2500:] = 1.0  # returns after the last forecast row
    vol2[2000:] = 5.0  # volatility labels outside training
    again = fit_baselines(r2, vol2, train, test, horizon=3, bars_per_day=24)
    for name in BASELINES:
        np.testing.assert_allclose(
            again[name].predicted_volatility, base[name].predicted_volatility
        )
        np.testing.assert_allclose(again[name].predicted_return, base[name].predicted_return)
