"""The training CLI end to end on tiny data: outputs, bad input, resume, DDP, honesty."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest

from data_specs import FORECASTS, check_schema
from hamfin import train
from hamfin.data import DataConfig, TickDataModule, load_features, make_folds
from hamfin.metrics import auc_with_ci
from hamfin.statistical import BASELINES
from hamfin.system import predict_rows

ROOT = Path(__file__).resolve().parents[2]
# Tiny settings for the CLI tests: 5-minute bars, 2 folds, a 1-layer width-8 model.
TINY = [
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
    *("--set", "checkpoint_every_n_steps=3"),
    *("--set", "min_bars=200"),
]


def _argv(store: Path, out: Path, *extra: str) -> list[str]:
    return ["--instrument", "EURUSD", "--store", str(store), "--out", str(out), *TINY, *extra]


def test_a_run_writes_config_metrics_forecasts_and_prints_the_folder_last(
    bars_store, tmp_path, capsys
):
    assert train.main(_argv(bars_store, tmp_path)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    run_dir = Path(printed[-1])
    assert run_dir.parent == tmp_path / "EURUSD" and run_dir.is_dir()
    assert any("AUC" in line for line in printed)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "hmld" and config["data"]["window"] == 16
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["models"]) == {"hmld", *BASELINES}
    for fold in ("0", "1"):
        row = metrics["models"]["hmld"][fold]
        for key in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "f1", "mse", "qlike"):
            assert isinstance(row[key], float)
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
        assert set(row["dm_pvalue"]) == set(BASELINES)
    forecasts = pl.read_parquet(run_dir / "forecasts.parquet")
    check_schema(forecasts, FORECASTS, what="forecasts")
    assert forecasts.columns == list(FORECASTS)
    hmld = forecasts.filter(pl.col("model") == "hmld")
    assert hmld["energy"].list.len().unique().to_list() == [1]  # one layer
    assert forecasts.filter(pl.col("model") == "ar")["energy"].list.len().max() == 0
    assert not forecasts["synthetic"].any()  # a user store, not the built-in one
    assert (forecasts["direction_prob"].is_between(0, 1)).all()
    assert (forecasts["predicted_volatility"] > 0).all()
    assert list(run_dir.glob("fold_0/checkpoints/*.ckpt"))
    logged = (run_dir / "fold_0/logs/metrics.csv").read_text().splitlines()[0].split(",")
    assert {"energy/layer0", "mpp_energy_mean", "val_auc", "val_loss"} <= set(logged)
    assert not list((tmp_path / "EURUSD").glob(".*.partial"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instrument", "XXXYYY"], "unknown instrument 'XXXYYY'"),
        (["--start", "2024-01-03", "--end", "2024-01-03"], "empty time range|no EURUSD data"),
        (["--start", "2024-01-03", "--end", "2024-01-03T12:00"], "only .* usable 5m bars"),
        (["--set", "no_such_key=1"], "--set no_such_key: unknown key"),
        (["--set", "window=big"], "--set window=big: expected int"),
        (["--set", "hmld_mode=chaotic"], "expected one of dissipative"),
        (["--bar", "7x"], "bad bar length '7x'"),
        (["--model", "gru"], "invalid choice: 'gru'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    bars_store, tmp_path, capsys, extra, message
):
    argv = _argv(bars_store, tmp_path / "runs", *extra)
    if "--instrument" in extra:
        argv = argv[2:]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "runs").exists()


def test_a_store_without_the_instrument_is_one_line_exit_2(quotes_store, tmp_path, capsys):
    argv = ["--instrument", "EURUSD", "--store", str(quotes_store), "--out", str(tmp_path / "r")]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no bars or quotes for instrument EURUSD" in err[0]
    assert not (tmp_path / "r").exists()


class _Crash(RuntimeError):
    pass


class CrashAfter(L.Callback):
    """Raise in the middle of an epoch after ``steps`` optimizer steps (a simulated kill)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step >= self.steps:
            raise _Crash(f"killed at step {trainer.global_step}")


def _numbers(metrics: dict) -> dict:
    return {
        m: {f: {k: v for k, v in row.items() if k != "n"} for f, row in folds.items()}
        for m, folds in metrics["models"].items()
    }


RESUME_ARGS = ["--model", "lstm", "--max-epochs", "2", "--set", "n_folds=1"]


@pytest.fixture(scope="module")
def uninterrupted(bars_store, tmp_path_factory) -> dict:
    """metrics.json of an uninterrupted run (the reference for the resume tests)."""
    run_dir = train.run(_argv(bars_store, tmp_path_factory.mktemp("ref"), *RESUME_ARGS))
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", [5, 13])  # mid-epoch in epoch 0 and in epoch 1
def test_resume_after_a_mid_epoch_kill_gives_the_uninterrupted_result(
    bars_store, tmp_path, uninterrupted, crash_at
):
    out = tmp_path / "b"
    with pytest.raises(_Crash):
        train.run(_argv(bars_store, out, *RESUME_ARGS), callbacks=[CrashAfter(steps=crash_at)])
    partial = list((out / "EURUSD").glob(".*.partial"))
    assert len(partial) == 1 and (partial[0] / "fold_0/checkpoints/last.ckpt").exists()
    assert not [p for p in (out / "EURUSD").iterdir() if not p.name.startswith(".")]
    resumed = train.run(_argv(bars_store, out, *RESUME_ARGS, "--resume"))
    assert resumed.is_dir() and not partial[0].exists()
    b = json.loads((resumed / "metrics.json").read_text())
    assert _numbers(uninterrupted) == _numbers(b)
    assert uninterrupted["folds"][0]["epochs"] == b["folds"][0]["epochs"]


@pytest.mark.slow
def test_resume_after_sigkill_of_the_training_process_gives_the_uninterrupted_result(
    bars_store, tmp_path, uninterrupted
):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(train.RUN_DIR_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hamfin.train", *_argv(bars_store, out, *RESUME_ARGS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while not list((out / "EURUSD").glob(".*.partial/fold_0/checkpoints/last.ckpt")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not [p for p in (out / "EURUSD").iterdir() if not p.name.startswith(".")]
    resumed = train.run(_argv(bars_store, out, *RESUME_ARGS, "--resume"))
    b = json.loads((resumed / "metrics.json").read_text())
    assert _numbers(uninterrupted) == _numbers(b)


def _direction_auc(fs, tmp_path) -> tuple[float, float, float, int]:
    """Train a tiny LSTM on one fold of ``fs`` and return its test AUC, CI and size."""
    data = DataConfig(window=16, span=8, n_folds=1, train_min=0.5, batch_size=8)
    config = train.RunConfig(
        model="lstm",
        data=data,
        train=train.TrainConfig(max_epochs=6, lr=1e-2, patience=6),
        model_config=train.ModelConfig(d_model=8, n_layers=1),
    )
    fold = make_folds(fs, data)[0]
    dm = TickDataModule(fs, fold, data)
    result = train.fit(config, dm, fold_dir=tmp_path)
    pred = predict_rows(result.system.model, dm.sets["test"], dm.scales)
    labels = fs.label_return[pred["rows"]] > 0
    return (*auc_with_ci(labels, pred["direction_prob"]), labels.size)


def test_labels_shuffled_in_time_give_an_auc_within_noise_of_one_half(bars_store, tmp_path):
    fs = load_features(DataConfig(store=str(bars_store), bar="5m", min_bars=200))
    perm = np.random.default_rng(0).permutation(fs.ts_event.size)
    shuffled = dataclasses.replace(
        fs, label_return=fs.label_return[perm], label_volatility=fs.label_volatility[perm]
    )
    value, low, high, n = _direction_auc(shuffled, tmp_path)
    assert abs(value - 0.5) < 3 * 0.5 / np.sqrt(n / 2), (value, n)  # ~3 standard errors
    assert low < 0.5 < high or abs(value - 0.5) < 0.03


def test_the_same_harness_finds_a_planted_signal_so_the_shuffle_test_can_fail(bars_store, tmp_path):
    fs = load_features(DataConfig(store=str(bars_store), bar="5m", min_bars=200))
    noise = np.random.default_rng(1).normal(scale=0.5 * np.std(fs.returns), size=fs.returns.size)
    planted = dataclasses.replace(fs, label_return=-0.7 * fs.returns + noise)  # mean reversion
    value, low, _, _ = _direction_auc(planted, tmp_path)
    assert value > 0.6 and low > 0.55, value


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_on_gloo_completes_one_run(bars_store, tmp_path):
    argv = _argv(bars_store, tmp_path, "--model", "lstm", "--devices", "2", "--strategy", "ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(train.RUN_DIR_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "hamfin.train", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["models"]["lstm"]) == {"0", "1"}
    assert metrics["folds"][0]["world_size"] == 2
    assert len(list((tmp_path / "EURUSD").iterdir())) == 1  # one run folder, not one per rank


def test_set_overrides_are_type_checked_against_the_frozen_configs():
    config = train.apply_overrides(
        train.RunConfig(),
        ["lr=0.01", "model.d_model=16", "data.store=none", "precision=bf16-mixed"],
    )
    assert config.train.lr == 0.01 and config.model_config.d_model == 16
    assert config.data.store is None and config.train.precision == "bf16-mixed"
    with pytest.raises(train.UsageError, match="unknown key"):
        train.apply_overrides(train.RunConfig(), ["train.d_model=3"])
