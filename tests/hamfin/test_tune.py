"""The tuning CLI on tiny data: study outputs, no test-set snooping, bad input."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hamfin import train, tune
from hamfin.data import DataConfig, TickDataModule, WindowSet, load_features, make_folds

ROOT = Path(__file__).resolve().parents[2]
# Tiny settings (as test_train's TINY, through --set); the searched fields come from TINY_SPACE.
TINY = [
    f"--set={pair}"
    for pair in (
        "bar=5m",
        "max_epochs=1",
        "span=8",
        "n_folds=2",
        "batch_size=16",
        "d_state=8",
        "n_heads=2",
        "checkpoint_every_n_steps=50",
        "min_bars=200",
    )
]
TINY_SPACE = {
    "model.d_model": CategoricalDistribution((8, 12)),
    "model.n_layers": IntDistribution(1, 2),
    "model.hmld_mode": CategoricalDistribution(("dissipative", "selective")),
    "train.lr": FloatDistribution(1e-3, 1e-2, log=True),
    "train.weight_decay": FloatDistribution(1e-4, 1e-1, log=True),
    "data.window": CategoricalDistribution((16, 24)),
}


def _contains(dist, value) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    return dist.low <= value <= dist.high


@pytest.fixture(scope="module")
def tuned(bars_store, tmp_path_factory):
    """A 2-trial study on the tiny store, recording every row the trials read."""
    out = tmp_path_factory.mktemp("tune")
    read_rows: list[np.ndarray] = []
    module_rows: list[int] = []
    get_item = WindowSet.__getitem__

    def recording_getitem(self, i):
        read_rows.append(self.rows(i).numpy())
        return get_item(self, i)

    class RecordingDataModule(TickDataModule):
        def __init__(self, features, fold, config, *, seed=0):
            module_rows.append(int(features.ts_event.size))
            super().__init__(features, fold, config, seed=seed)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune, "SEARCH_SPACE", TINY_SPACE)
        mp.setattr(WindowSet, "__getitem__", recording_getitem)
        mp.setattr(tune, "TickDataModule", RecordingDataModule)
        argv = ["--instrument", "EURUSD", "--store", str(bars_store), "--out", str(out)]
        folder = tune.run([*argv, "--n-trials", "2", "--seed", "3", *TINY])
    return folder, np.unique(np.concatenate(read_rows)), module_rows


def test_a_two_trial_study_writes_study_best_config_and_plot(tuned):
    folder, _, _ = tuned
    assert folder.name.startswith("tune-") and folder.is_dir()
    study = json.loads((folder / "study.json").read_text())
    assert study["n_trials"] == 2 and len(study["trials"]) == 2
    assert all(t["state"] == "COMPLETE" and np.isfinite(t["value"]) for t in study["trials"])
    assert study["best_value"] == min(t["value"] for t in study["trials"])
    best = train.RunConfig.from_dict(json.loads((folder / "best_config.json").read_text()))
    resolved = {
        "model.d_model": best.model_config.d_model,
        "model.n_layers": best.model_config.n_layers,
        "model.hmld_mode": best.model_config.hmld_mode,
        "train.lr": best.train.lr,
        "train.weight_decay": best.train.weight_decay,
        "data.window": best.data.window,
    }
    for key, dist in TINY_SPACE.items():
        assert _contains(dist, resolved[key]), (key, resolved[key])
        assert resolved[key] == study["best_params"][key]
    assert best.data.bar == "5m" and best.train.max_epochs == 1  # the --set base is kept
    assert (folder / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(folder.parent.glob(".*.partial"))


def test_the_printed_train_command_reproduces_the_best_config(tuned):
    folder, _, _ = tuned
    study = json.loads((folder / "study.json").read_text())
    argv = shlex.split(study["train_command"])[3:]
    config = train.config_from_args(train.build_parser().parse_args(argv))
    assert config.to_dict() == json.loads((folder / "best_config.json").read_text())


def test_the_study_is_stored_where_the_backtest_reads_its_trial_count(tuned):
    import optuna

    folder, _, _ = tuned
    study = json.loads((folder / "study.json").read_text())
    loaded = optuna.load_study(study_name=study["study_name"], storage=study["storage"])
    assert len(loaded.trials) == 2


def test_the_objective_never_reads_a_test_row(tuned, bars_store):
    _, read_rows, module_rows = tuned
    config = train.apply_overrides(
        train.RunConfig(data=DataConfig(store=str(bars_store))), [p[6:] for p in TINY]
    )
    fs = load_features(config.data)
    folds = make_folds(fs, config.data)
    test_rows = np.concatenate([f.test for f in folds])
    assert read_rows.size > 0
    assert np.intersect1d(read_rows, test_rows).size == 0
    assert read_rows.max() < test_rows.min()
    assert np.intersect1d(read_rows, folds[0].val).size > 0  # validation was scored
    assert np.intersect1d(folds[1].val, folds[0].test).size > 0  # why outer folds are not used
    assert max(module_rows) < test_rows.min()  # the datamodules never hold a test bar


def test_a_searched_key_given_with_set_is_pinned():
    space = tune.search_space("lstm", pinned={"model.d_model"})
    assert "model.d_model" not in space and "model.hmld_mode" not in space
    assert "train.lr" in tune.search_space("hmld") and "model.hmld_mode" in tune.search_space(
        "hmld"
    )


BAD_INPUT = [
    (["--instrument", "XXXYYY"], "unknown instrument 'XXXYYY'"),
    (["--set", "no_such_key=1"], "--set no_such_key: unknown key"),
    (["--n-trials", "0"], "--n-trials must be >= 1"),
    (["--storage", "nosuchdb://x"], "--storage nosuchdb://x: cannot open Optuna storage"),
]


def _bad_argv(store: Path, out: Path, extra: list[str]) -> list[str]:
    return ["--instrument", "EURUSD", "--store", str(store), "--out", str(out), *TINY, *extra]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    bars_store, tmp_path, capsys, extra, message
):
    out = tmp_path / "runs"
    assert tune.main(_bad_argv(bars_store, out, extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list(out.rglob("tune-*")) and not list(out.rglob(".tune-*"))


@pytest.mark.parametrize(("extra", "message"), [BAD_INPUT[0], BAD_INPUT[3]])
def test_the_cli_process_exits_2_on_bad_input_without_a_traceback(
    bars_store, tmp_path, extra, message
):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "hamfin.tune", *_bad_argv(bars_store, tmp_path, extra)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in proc.stderr, err
    assert proc.stdout == ""
