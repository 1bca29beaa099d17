"""The bars of a run: one door for ``--bars PATH`` and the run's store, both checked."""

from __future__ import annotations

import json

import polars as pl
import pytest

from strategies.inputs import BacktestInputError, run_bars
from tests.strategies.factories import make_bars, make_forecasts


@pytest.fixture(scope="module")
def hourly() -> pl.DataFrame:
    return make_bars(200, seed=31)


def test_run_bars_from_a_file_keep_the_instrument_sorted_and_unique(tmp_path, hourly):
    other = hourly.head(5).with_columns(pl.lit("GBPUSD").alias("instrument_id"))
    shuffled = pl.concat([hourly.reverse(), hourly.head(3), other])  # reversed, 3 repeats
    shuffled.write_parquet(tmp_path / "bars.parquet")
    got = run_bars(tmp_path, "EURUSD", make_forecasts(hourly), bars_path=tmp_path / "bars.parquet")
    assert got["ts_event"].to_list() == hourly["ts_event"].to_list()
    assert got["instrument_id"].unique().to_list() == ["EURUSD"]


def test_run_bars_from_the_store_named_in_the_run_config(tmp_path, hourly):
    from pipelines.store import Store

    Store(tmp_path / "store").write("bars", hourly, instrument_id="EURUSD")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"store": str(tmp_path / "store")}}))
    got = run_bars(run, "EURUSD", make_forecasts(hourly))
    assert got["ts_event"].to_list() == hourly["ts_event"].to_list()
    assert got["close"].to_list() == hourly["close"].to_list()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"bars_path": "missing.parquet"}, "missing.parquet: bars file not found"),
        ({"store": "no_store"}, "no_store: store root not found"),
        ({"bars_path": "b.parquet", "store": "s"}, "give one, not both"),
    ],
)
def test_run_bars_bad_source_raises_one_line_naming_it(tmp_path, hourly, source, expected):
    source = {k: tmp_path / v for k, v in source.items()}
    with pytest.raises(BacktestInputError) as info:
        run_bars(tmp_path, "EURUSD", make_forecasts(hourly), **source)
    message = str(info.value)
    assert expected in message and "\n" not in message
