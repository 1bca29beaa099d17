"""The backtest CLI end to end, and bad input: one line on stderr, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.strategies.factories import SCORECARD_KEYS, make_bars, make_forecasts

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "strategies.backtest", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("runs") / "EURUSD" / "20240101T000000"
    folder.mkdir(parents=True)
    bars = make_bars(800, seed=11)
    make_forecasts(bars, kind="oracle", skill=0.3, seed=12).write_parquet(
        folder / "forecasts.parquet"
    )
    bars_path = folder.parent / "bars.parquet"
    bars.write_parquet(bars_path)
    return folder, bars_path


def test_cli_writes_scorecard_trades_and_report(run_dir):
    folder, bars_path = run_dir
    options = ["--n-boot", "50", "--n-random", "30"]
    done = _cli("--run", str(folder), "--bars", str(bars_path), *options)
    assert done.returncode == 0, done.stderr
    card = json.loads((folder / "backtest.json").read_text())
    for key in SCORECARD_KEYS:
        assert key in card, key
    assert card["by_regime"]["session"]["london"]["sharpe"] is not None
    trades = pl.read_parquet(folder / "trades.parquet")
    assert trades.height >= card["n_trades"] > 0
    assert {"strategy", "ts_entry", "ts_exit", "pnl_account"} <= set(trades.columns)
    report = (folder / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3
    assert "sharpe" in done.stdout and "random p-value" in done.stdout
    assert not list(folder.glob("*.tmp"))


def _bad(folder: Path, frame: pl.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / "forecasts.parquet")
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("schema", "missing column 'direction_prob'"),
        ("instrument", "not for instrument GBPUSD"),
        ("misaligned", "match no bar close"),
        ("empty", "empty"),
        ("no_run", "run folder not found"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(run_dir, tmp_path, case, message):
    folder, bars_path = run_dir
    good = pl.read_parquet(folder / "forecasts.parquet")
    frames = {
        "schema": good.drop("direction_prob"),
        "instrument": good.with_columns(pl.lit("GBPUSD").alias("instrument_id")),
        "misaligned": good.with_columns(pl.col("ts_event") + 30_000_000_000),
        "empty": good.head(0),
    }
    target = tmp_path / "missing" if case == "no_run" else _bad(tmp_path / case, frames[case])
    done = _cli("--run", str(target), "--bars", str(bars_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (target / "backtest.json").exists()
