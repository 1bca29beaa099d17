"""The energy-regime dashboard: causal regimes, per-regime statistics, informativeness, CLI."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_specs.spec import load_spec
from strategies import dashboard
from strategies.dashboard import (
    DashboardConfig,
    causal_energy_codes,
    expanding_quantile_codes,
    mean_durations,
    mean_with_ci,
    model_dashboard,
    rank_correlation,
    transition_matrix,
)
from strategies.regimes import energy_labels
from tests.strategies.factories import (
    make_bars,
    make_energy_volatility_pair,
    make_forecasts,
    write_run_folder,
)

ROOT = Path(__file__).resolve().parents[2]

# ---- regimes without look-ahead ----------------------------------------------------------------


def test_causal_labels_ignore_energy_after_t_while_full_sample_labels_do_not():
    rng = np.random.default_rng(0)
    energy = rng.gamma(2.0, 1.0, 600)
    fold = np.repeat([0, 1, 2], 200)
    codes = causal_energy_codes(energy, fold, 4, warmup=30)
    full = np.array(energy_labels(energy, 4, fold=fold), dtype=object)
    for t in (50, 199, 200, 350, 598):
        future = energy.copy()
        future[t + 1 :] = rng.gamma(2.0, 1.0, len(energy) - t - 1) * 10.0  # another scale
        perturbed = causal_energy_codes(future, fold, 4, warmup=30)
        np.testing.assert_array_equal(perturbed[: t + 1], codes[: t + 1])
    # the control: full-sample quantiles (per fold) move when the future moves (so the check
    # can fail)
    future = energy.copy()
    future[301:] *= 10.0
    changed = np.array(energy_labels(future, 4, fold=fold), dtype=object)
    assert (changed[:301] != full[:301]).any()


def test_expanding_codes_equal_quantiles_of_the_prefix_and_warmup_is_unlabelled():
    rng = np.random.default_rng(1)
    values = rng.normal(size=150)
    codes = expanding_quantile_codes(values, 3, warmup=20)
    assert (codes[:20] == -1).all() and (codes[20:] >= 0).all()
    for i in range(20, 150):
        edges = np.quantile(values[: i + 1], [1 / 3, 2 / 3])
        assert codes[i] == np.searchsorted(edges, values[i], side="right"), i


def test_every_fold_restarts_its_warmup():
    energy = np.arange(90, dtype=float)
    codes = causal_energy_codes(energy, np.repeat([3, 7, 9], 30), 2, warmup=10)
    for start in (0, 30, 60):
        assert (codes[start : start + 10] == -1).all()
        assert (codes[start + 10 : start + 30] == 1).all()  # increasing: always the top half


def test_transition_matrix_and_durations_of_a_hand_built_sequence():
    seq = np.array([0, 0, 1, 1, 1, -1, 2, 2, 0, 0, 0, 1, 2, 2, 2, 2])
    matrix = transition_matrix(seq, 3)
    # steps: 0->0, 0->1, 1->1, 1->1, (1->-1, -1->2 skipped), 2->2, 2->0, 0->0, 0->0, 0->1,
    # 1->2, 2->2 x3
    expected = np.array([[3 / 5, 2 / 5, 0.0], [0.0, 2 / 3, 1 / 3], [1 / 5, 0.0, 4 / 5]])
    np.testing.assert_allclose(matrix, expected)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    # runs: 0:[2, 3], 1:[3, 1], 2:[2, 4]
    np.testing.assert_allclose(mean_durations(seq, 3), [2.5, 2.0, 3.0])
    assert np.isnan(transition_matrix(np.array([0, 0, 1]), 3)[1:]).all()  # never left
    assert np.isnan(mean_durations(np.array([0, 0, -1]), 2)[1])  # never seen


# ---- statistics --------------------------------------------------------------------------------


def test_intervals_contain_their_point_estimates():
    rng = np.random.default_rng(2)
    x = rng.normal(size=400)
    y = 0.3 * x + rng.normal(size=400)
    m = mean_with_ci(y, n_boot=200)
    assert m["ci_low"] <= m["mean"] <= m["ci_high"] and m["ci_low"] < m["ci_high"]
    c = rank_correlation(x, y, n_boot=200, n_perm=100)
    assert c["ci_low"] <= c["spearman"] <= c["ci_high"]
    assert c["null_low"] < 0 < c["null_high"]


def test_planted_energy_ranks_volatility_and_shuffled_energy_does_not():
    bars, forecasts = make_energy_volatility_pair(1500, seed=3)
    energy = np.array(forecasts["energy"].to_list()).sum(axis=1)
    fold = forecasts["fold"].to_numpy()
    vol = dashboard.forward_volatility(bars, forecasts["ts_event"].to_numpy(), 16)
    planted = rank_correlation(energy, vol, groups=fold, n_boot=300, n_perm=200)
    assert planted["spearman"] > 0.3 and planted["ci_low"] > 0
    assert not planted["ci_includes_zero"] and planted["p_value"] < 0.05
    assert set(planted["per_group"]) == {"0", "1", "2"}
    assert min(planted["per_group"].values()) > 0.1  # in every fold, not only pooled
    shuffled = np.random.default_rng(4).permutation(energy)
    null = rank_correlation(shuffled, vol, groups=fold, n_boot=300, n_perm=200)
    assert null["ci_includes_zero"] and null["ci_low"] < 0 < null["ci_high"]
    assert null["p_value"] > 0.05


def test_forward_volatility_uses_only_bars_after_the_forecast():
    bars = make_bars(100, seed=5)
    ts = bars["ts_close"].to_numpy()[:10]  # forecasts at the first ten closes
    base = dashboard.forward_volatility(bars, ts, 5)
    close = bars["close"].to_numpy()
    r = np.diff(np.log(close))
    np.testing.assert_allclose(base[0], r[0:5].std(ddof=1))  # bars 1..5 after close of bar 0
    changed = bars.with_columns(pl.Series("close", np.r_[close[:1] * 1.5, close[1:]]))
    np.testing.assert_allclose(dashboard.forward_volatility(changed, ts, 5)[1:], base[1:])


# ---- one model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted():
    return make_energy_volatility_pair(1200, seed=6)


def test_model_dashboard_counts_shares_and_higher_energy_regime_is_more_volatile(planted):
    bars, forecasts = planted
    config = DashboardConfig(n_quantiles=3, warmup=50, n_boot=100, n_perm=50, backtest=False)
    d = model_dashboard(forecasts, bars, load_spec("EURUSD"), model="hmld", config=config)
    rows = d.numbers["regimes"]
    assert sum(r["n_forecasts"] for r in rows) == d.numbers["n_labelled"] == 1199 - 3 * 50
    assert sum(r["share_of_time"] for r in rows) == pytest.approx(1.0)
    for r in rows:
        for key in ("forward_volatility", "mse", "auc"):
            assert r[f"{key}_ci_low"] <= r[key] <= r[f"{key}_ci_high"]
    assert rows[2]["forward_volatility_ci_low"] > rows[0]["forward_volatility_ci_high"]
    np.testing.assert_allclose(np.array(d.numbers["transition_matrix"]).sum(axis=1), 1.0)
    assert d.numbers["realized_volatility_is_abs_return"]


# ---- the CLI -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, planted) -> Path:
    bars, forecasts = planted
    return write_run_folder(tmp_path_factory.mktemp("runs") / "20240101T000000Z", forecasts, bars)


def _bad(tmp_path: Path, forecasts: pl.DataFrame) -> Path:
    return write_run_folder(tmp_path / "run", forecasts, make_bars(300, seed=7))


def _no_energy(tmp_path):
    forecasts = make_forecasts(make_bars(300, seed=7)).with_columns(
        pl.lit([], dtype=pl.List(pl.Float64)).alias("energy")
    )
    return _bad(tmp_path, forecasts), []


def _nan_energy(tmp_path):
    forecasts = make_forecasts(make_bars(300, seed=7))
    energy = forecasts["energy"].to_list()
    energy[40][1] = float("nan")
    forecasts = forecasts.with_columns(pl.Series("energy", energy))
    return _bad(tmp_path, forecasts), []


def _plain(tmp_path):
    return _bad(tmp_path, make_forecasts(make_bars(300, seed=7))), []


def _missing_run(tmp_path):
    return tmp_path / "nope", []


def _no_forecasts(tmp_path):
    (tmp_path / "run").mkdir()
    return tmp_path / "run", []


def _empty_range(tmp_path):
    return _plain(tmp_path)[0], ["--start", "2030-01-01"]


def _few_quantiles(tmp_path):
    return _plain(tmp_path)[0], ["--quantiles", "1"]


def _unknown_model(tmp_path):
    return _plain(tmp_path)[0], ["--model", "lstm"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_missing_run, "run folder not found"),
        (_no_forecasts, "forecasts file not found"),
        (_no_energy, "no model with HML-D energy"),
        (_nan_energy, "1 rows have NaN or infinite energy"),
        (_empty_range, "no forecasts in [2030-01-01"),
        (_few_quantiles, "--quantiles 1: need at least 2"),
        (_unknown_model, "no model 'lstm'"),
    ],
)
def test_cli_bad_input_gives_one_line_exit_2_and_writes_nothing(tmp_path, capsys, make, expected):
    run, extra = make(tmp_path)
    argv = ["--run", str(run), "--bars", str(run / "bars.parquet"), "--no-backtest", *extra]
    assert dashboard.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0], err
    written = [p.name for p in tmp_path.rglob("*") if "dashboard" in p.name]
    assert written == []


@pytest.mark.parametrize(
    ("content", "edges", "says"),
    [
        ('{"energy_quantile_edges": "per_fold"}', "per_fold", "each fold's full-sample"),
        ('{"by_regime": {}}', "pooled", "pooled over all folds"),
        ("{not json", None, "cut at full-sample quantiles (look-ahead)"),
    ],
)
def test_note_on_the_runs_backtest_json_says_how_its_energy_edges_were_cut(
    tmp_path, content, edges, says
):
    (tmp_path / "backtest.json").write_text(content)
    assert dashboard.read_backtest_energy_edges(tmp_path / "backtest.json") == edges
    assert says in dashboard.backtest_json_note(edges)


def test_cli_non_integer_quantiles_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        dashboard.main(["--run", str(tmp_path), "--quantiles", "two"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_python_m_entry_point_bad_input_gives_one_line_and_exit_2(tmp_path):
    command = [sys.executable, "-m", "strategies.dashboard", "--run", str(tmp_path)]
    done = subprocess.run(
        [*command, "--quantiles", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["error: --quantiles 1: need at least 2 regimes"]


def test_cli_writes_html_with_images_synthetic_title_and_json_of_its_numbers(run_folder, capsys):
    out = run_folder / "dash.html"
    (run_folder / "backtest.json").write_text(json.dumps({"energy_quantile_edges": "per_fold"}))
    argv = ["--run", str(run_folder), "--bars", str(run_folder / "bars.parquet"), "--out", str(out)]
    assert dashboard.main([*argv, "--n-boot", "100", "--n-perm", "50", "--warmup", "50"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out)
    page = out.read_text()
    assert "<title>Energy-regime dashboard EURUSD (SYNTHETIC DATA)</title>" in page
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 3
    assert all(base64.b64decode(b).startswith(b"\x89PNG") for b in images)
    numbers = json.loads(out.with_suffix(".json").read_text())
    m = numbers["models"]["hmld"]
    assert numbers["synthetic"] and m["n_forecasts"] == 1199
    c = m["correlations"]["forward_volatility_16bars"]
    assert c["ci_low"] > 0 and f"{c['spearman']:+.3f}" in page
    assert "excludes zero" in page
    strategy = m["strategy"]
    assert strategy["strategy"] == "threshold" and np.isfinite(strategy["sharpe"])
    for r in m["regimes"]:
        assert r["sharpe_ci_low"] <= r["sharpe"] <= r["sharpe_ci_high"]
    assert "Descriptive only: full-sample quantiles per fold" in page
    assert numbers["backtest_energy_edges"] == "per_fold"
    assert "backtest.json scores energy regimes cut at each fold's full-sample quantiles" in page
    assert not list(run_folder.glob(".*.tmp"))


# ---- end to end on a real (tiny) training run --------------------------------------------------

TINY_TRAIN = [
    *("--bar", "5m"),
    *("--max-epochs", "1"),
    *("--set", "window=16"),
    *("--set", "span=8"),
    *("--set", "n_folds=2"),
    *("--set", "batch_size=16"),
    *("--set", "d_model=8"),
    *("--set", "d_state=8"),
    *("--set", "n_layers=1"),
    *("--set", "n_heads=2"),
    *("--set", "min_bars=200"),
]


def test_dashboard_of_a_tiny_hmld_training_run_reads_its_store_and_energy(tmp_path, capsys):
    from pipelines.synthetic import default_store

    store = default_store(tmp_path / "store", days=10, seed=3)
    command = [sys.executable, "-m", "hamfin.train", "--instrument", "EURUSD"]
    command += ["--store", str(store), "--out", str(tmp_path / "runs"), *TINY_TRAIN]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = Path(done.stdout.strip().splitlines()[-1])
    argv = ["--run", str(run), "--no-backtest", "--n-boot", "100", "--n-perm", "50"]
    assert dashboard.main(argv) == 0  # bars from the store named in the run's config.json
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run / "dashboard.html")
    numbers = json.loads((run / "dashboard.json").read_text())
    forecasts = pl.read_parquet(run / "forecasts.parquet")
    hmld = forecasts.filter(pl.col("model") == "hmld")
    assert list(numbers["models"]) == ["hmld"]  # the baselines carry no energy
    m = numbers["models"]["hmld"]
    assert m["n_forecasts"] == hmld.height and m["n_layers"] == 1 and m["folds"] == [0, 1]
    assert sum(r["n_forecasts"] for r in m["regimes"]) == m["n_labelled"] == hmld.height - 200
    synthetic = bool(hmld["synthetic"].any())
    assert numbers["synthetic"] == synthetic
    assert ("(SYNTHETIC DATA)" in (run / "dashboard.html").read_text()) == synthetic
