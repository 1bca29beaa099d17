"""Ingest: accounting on real FXCM ticks, idempotent re-ingest, bad files, flags, bars."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from data_specs import load_spec
from pipelines.errors import PipelineError
from pipelines.ingest import build_bars, ingest
from pipelines.store import Store

SPEC = load_spec("EURUSD")
FXCM = "quantconnect-lean/forex/fxcm/tick/eurusd"


def snapshot(root: Path) -> dict[str, str]:
    """Committed files under root with their hashes (staging folder and lock excluded)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "_staging" and p.name != ".lock"
    }


@pytest.fixture
def fxcm(shared_data):
    return shared_data / FXCM


def test_ingest_accounts_for_every_row_of_a_real_fxcm_day(tmp_path, fxcm):
    store = Store(tmp_path / "store")
    report_path = ingest([fxcm / "20140501_quote.zip"], fmt="lean", spec=SPEC, store=store)
    report = json.loads(report_path.read_text())
    assert report_path.parent == tmp_path / "store" / "_reports"
    assert report["rows_in"] == report["rows_stored"] + report["rows_quarantined"]
    (entry,) = report["files"]
    assert entry["rows_in"] == entry["rows_stored"] + entry["rows_quarantined"] == report["rows_in"]
    quotes = store.scan("quotes", "EURUSD").collect()
    quarantine = store.scan("quarantine", "EURUSD").collect()
    assert quotes.height == report["rows_stored"] == report["rows_new"]
    assert quarantine.height == report["rows_quarantined"]
    by_reason = dict(quarantine.group_by("reason").len().sort("reason").iter_rows())
    assert by_reason == report["quarantined_by_reason"]
    assert report["quarantined_by_reason"]["crossed_quote"] > 0.05 * report["rows_in"]
    assert report["time_range"]["first_ts_event"] == quotes["ts_event"].min()
    assert report["time_range"]["last_ts_event"] == quotes["ts_event"].max()
    files = quarantine["source_file"].cast(pl.String)  # Categorical (LINEAGE)
    assert files.str.starts_with(str(fxcm / "20140501_quote.zip")).all()
    assert quarantine["source_line"].min() >= 1


def test_reingesting_the_same_file_is_idempotent(tmp_path, fxcm):
    store = Store(tmp_path)
    path = fxcm / "20140504_quote.zip"
    first = json.loads(ingest([path], fmt="lean", spec=SPEC, store=store).read_text())
    counts = {t: store.scan(t, "EURUSD").collect().height for t in ("quotes", "quarantine")}
    second = json.loads(ingest([path], fmt="lean", spec=SPEC, store=store).read_text())
    again = {t: store.scan(t, "EURUSD").collect().height for t in ("quotes", "quarantine")}
    assert again == counts
    assert counts["quotes"] == first["rows_stored"] > 0
    assert second["rows_new"] == 0
    assert second["rows_already_stored"] == second["rows_stored"] == first["rows_stored"]
    assert len(store.reports()) == 2


def test_a_bad_file_fails_the_whole_ingest_and_leaves_the_store_as_it_was(tmp_path, fxcm):
    store = Store(tmp_path / "store")
    ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store)
    before = snapshot(tmp_path / "store")
    folder = tmp_path / "in" / FXCM
    folder.mkdir(parents=True)
    good = shutil.copy(fxcm / "20140511_quote.zip", folder)
    data = (fxcm / "20140505_quote.zip").read_bytes()
    truncated = folder / "20140505_quote.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError) as err:
        ingest([good, truncated], fmt="lean", spec=SPEC, store=store)
    message = str(err.value)
    assert "20140505_quote.zip" in message and "\n" not in message
    assert snapshot(tmp_path / "store") == before


def test_a_file_of_another_instrument_is_refused_before_anything_is_written(tmp_path, fxcm):
    store = Store(tmp_path)
    with pytest.raises(PipelineError, match="20140504_quote.zip"):
        ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=load_spec("GBPUSD"), store=store)
    assert snapshot(tmp_path) == {}


def test_flagged_quotes_are_stored_and_counted_in_report_and_flagged_table(tmp_path, fxcm):
    spec = dataclasses.replace(
        SPEC, cleaning=dataclasses.replace(SPEC.cleaning, crossed_quotes="flag")
    )
    store = Store(tmp_path)
    report = json.loads(
        ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=spec, store=store).read_text()
    )
    flagged = store.scan("flagged", "EURUSD").collect()
    assert report["rows_flagged"] == flagged.height > 0
    assert report["flagged_by_reason"] == {"crossed_quote": flagged.height}
    assert "crossed_quote" not in report["quarantined_by_reason"]
    quotes = store.scan("quotes", "EURUSD").collect()
    crossed = quotes.filter(pl.col("bid_price") > pl.col("ask_price")).height
    assert crossed == flagged.height  # flagged rows are stored rows
    assert report["rows_in"] == report["rows_stored"] + report["rows_quarantined"]


def test_build_bars_writes_one_minute_bars_idempotently(tmp_path, fxcm):
    store = Store(tmp_path)
    ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store)
    quotes = store.scan("quotes", "EURUSD").collect()
    minutes = quotes.select(pl.col("ts_event") // 60_000_000_000).n_unique()
    first = build_bars(store, spec=SPEC, every="1m")
    second = build_bars(store, spec=SPEC, every="1m")
    bars = store.scan("bars", "EURUSD").collect()
    assert first.rows == second.rows == bars.height == minutes
    assert (first.rows_new, second.rows_new) == (minutes, 0)
    assert bars["tick_count"].sum() == quotes.height
    assert (bars["ts_close"] - bars["ts_event"] == 60_000_000_000).all()


def test_build_bars_rejects_a_bad_duration_and_a_range_without_quotes(tmp_path, fxcm):
    store = Store(tmp_path)
    ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store)
    with pytest.raises(PipelineError, match="not a duration"):
        build_bars(store, spec=SPEC, every="1x")
    with pytest.raises(PipelineError, match="no quotes for EURUSD in"):
        build_bars(store, spec=SPEC, every="1m", start="2020-01-01", end="2020-01-02")


def test_vendor_minute_bars_are_ingested_into_the_bars_table(tmp_path, shared_data):
    path = shared_data / "quantconnect-lean/forex/oanda/minute/eurusd/20140501_quote.zip"
    store = Store(tmp_path)
    report = json.loads(ingest([path], fmt="lean-bars", spec=SPEC, store=store).read_text())
    bars = store.scan("bars", "EURUSD").collect()
    assert report["tables"]["bars"]["rows_stored"] == bars.height == report["rows_stored"] > 1000
    assert report["rows_in"] == report["rows_stored"] + report["rows_quarantined"]
    assert (bars["high"] >= bars["low"]).all() and bars["ts_event"].is_sorted()


def test_a_range_with_partitions_but_no_ticks_builds_nothing_and_says_so(tmp_path, fxcm):
    store = Store(tmp_path)
    ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store)
    last = store.scan("quotes", "EURUSD").select(pl.col("ts_event").max()).collect().item()
    with pytest.raises(PipelineError, match="no bars to build"):
        build_bars(store, spec=SPEC, every="1m", start=last + 1)
    assert store.instruments("bars") == []


def test_the_same_file_twice_in_one_ingest_is_refused(tmp_path, fxcm):
    path = fxcm / "20140504_quote.zip"
    with pytest.raises(PipelineError, match="given twice"):
        ingest([path, path], fmt="lean", spec=SPEC, store=Store(tmp_path))


def test_an_ingest_killed_mid_write_leaves_the_store_as_it_was(tmp_path, fxcm):
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipelines.store import PAUSE_ENV, STAGING

    root = tmp_path / "store"
    store = Store(root)
    ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store)
    before = snapshot(root)
    quotes_before = store.scan("quotes", "EURUSD", lineage=True).collect()
    argv = [
        sys.executable,
        "-m",
        "pipelines",
        "ingest",
        "--store",
        str(root),
        "--instrument",
        "EURUSD",
        "--format",
        "lean",
        str(fxcm / "20140504_quote.zip"),
        str(fxcm / "20140511_quote.zip"),
    ]
    proc = subprocess.Popen(argv, env={**os.environ, PAUSE_ENV: "stage:30"})
    deadline = time.monotonic() + 60
    while not any((root / STAGING).rglob("*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it died mid-write, not by itself
    assert snapshot(root) == before
    store.recover()
    assert not any((root / STAGING).iterdir())
    assert store.scan("quotes", "EURUSD", lineage=True).collect().equals(quotes_before)
    assert len(store.reports()) == 1


def test_bars_built_during_ingest_equal_bars_built_afterwards(tmp_path, fxcm):
    # two files whose UTC days overlap (FXCM days run 05:00-05:00 UTC): the second ingest must
    # rebuild the shared day's bars from the merged old + new ticks
    first, second = fxcm / "20140501_quote.zip", fxcm / "20140502_quote.zip"
    fused = Store(tmp_path / "fused")
    one = json.loads(ingest([first], fmt="lean", spec=SPEC, store=fused, bars=["1m"]).read_text())
    two = json.loads(ingest([second], fmt="lean", spec=SPEC, store=fused, bars=["1m"]).read_text())
    assert one["tables"]["bars"]["rows_new"] == one["tables"]["bars"]["rows_stored"] > 1000
    shared_day = set(one["tables"]["bars"]["partitions"]) & set(two["tables"]["bars"]["partitions"])
    assert shared_day  # the overlap really happens
    separate = Store(tmp_path / "separate")
    ingest([first, second], fmt="lean", spec=SPEC, store=separate)
    build_bars(separate, spec=SPEC, every="1m")
    got = fused.scan("bars", "EURUSD").collect().sort("ts_event")
    want = separate.scan("bars", "EURUSD").collect().sort("ts_event")
    # realized variance sums the same terms in another order: equal to rounding only
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    assert got["tick_count"].sum() == fused.scan("quotes", "EURUSD").collect().height


def test_bars_during_ingest_hold_several_lengths_and_reingest_adds_nothing(tmp_path, fxcm):
    store = Store(tmp_path)
    path = fxcm / "20140504_quote.zip"
    ingest([path], fmt="lean", spec=SPEC, store=store, bars=["1m", "1h"])
    again = json.loads(
        ingest([path], fmt="lean", spec=SPEC, store=store, bars=["1m", "1h"]).read_text()
    )
    bars = store.scan("bars", "EURUSD").collect()
    lengths = dict(bars.group_by(pl.col("ts_close") - pl.col("ts_event")).len().iter_rows())
    assert set(lengths) == {60_000_000_000, 3_600_000_000_000}
    assert again["tables"]["bars"]["rows_new"] == 0
    assert again["tables"]["bars"]["rows_stored"] == bars.height


@pytest.mark.parametrize("every", ["7m", "1d", "1x", "0m"])
def test_ingest_refuses_bars_that_do_not_divide_a_day_and_writes_nothing(tmp_path, fxcm, every):
    store = Store(tmp_path)
    with pytest.raises(PipelineError, match="--bars"):
        ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store, bars=[every])
    assert store.tables() == []


def test_ingest_in_batches_stores_what_one_batch_stores(tmp_path, fxcm):
    paths = [fxcm / f"201405{day:02d}_quote.zip" for day in (1, 2, 4)]
    one = Store(tmp_path / "one")
    whole = json.loads(
        ingest(paths, fmt="lean", spec=SPEC, store=one, bars=["1m"], batch_mb=None).read_text()
    )
    many = Store(tmp_path / "many")
    split = json.loads(
        ingest(paths, fmt="lean", spec=SPEC, store=many, bars=["1m"], batch_mb=1e-6).read_text()
    )
    assert whole["batches"] == [3] and split["batches"] == [1, 1, 1]
    for key in ("rows_in", "rows_stored", "rows_new", "rows_quarantined", "time_range"):
        assert split[key] == whole[key], key
    assert split["quarantined_by_reason"] == whole["quarantined_by_reason"]
    assert [f["rows_stored"] for f in split["files"]] == [f["rows_stored"] for f in whole["files"]]
    for table in ("quotes", "quarantine", "bars"):
        got = many.scan(table, "EURUSD").collect().sort(pl.all())
        want = one.scan(table, "EURUSD").collect().sort(pl.all())
        assert_frame_equal(got, want, check_exact=False, rel_tol=1e-12)
        assert split["tables"][table]["rows_stored"] == got.height, table  # days counted once


def test_a_bad_file_in_a_later_batch_leaves_the_store_unchanged(tmp_path, fxcm):
    store = Store(tmp_path / "store")
    ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=store)
    before = snapshot(store.root)
    bad = tmp_path / "20140505_quote.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    paths = [fxcm / "20140501_quote.zip", fxcm / "20140502_quote.zip", bad]
    with pytest.raises(PipelineError, match="20140505_quote.zip"):
        ingest(paths, fmt="lean", spec=SPEC, store=store, batch_mb=1e-6)
    assert snapshot(store.root) == before
    assert not any((store.root / "_staging").iterdir())


def test_a_non_positive_batch_size_is_refused(tmp_path, fxcm):
    with pytest.raises(PipelineError, match="--batch-mb"):
        ingest([fxcm / "20140504_quote.zip"], fmt="lean", spec=SPEC, store=tmp_path, batch_mb=0)
