"""Store: layout, scans by time range, idempotent merges, and atomicity under SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

import pipelines.store.files as store_files
from data_specs import LINEAGE, QUOTES
from pipelines.errors import PipelineError
from pipelines.store import NS_PER_DAY, PAUSE_ENV, STAGING, Store, write_parquet
from pipelines.store.merge import _conform_stored

DAY0 = 1_398_902_400 * 1_000_000_000  # 2014-05-01T00:00:00Z


def quote_frame(days, *, per_day=5, offset_s=0, price=1.38) -> pl.DataFrame:
    ts = [
        DAY0 + d * NS_PER_DAY + (offset_s + 60 * i) * 1_000_000_000
        for d in days
        for i in range(per_day)
    ]
    n = len(ts)
    return pl.DataFrame(
        {
            "instrument_id": ["EURUSD"] * n,
            "ts_event": ts,
            "bid_price": [price + 1e-5 * i for i in range(n)],
            "ask_price": [price + 1e-5 * i + 2e-5 for i in range(n)],
            "bid_size": [None] * n,
            "ask_size": [None] * n,
            "source_file": ["f.csv"] * n,
            "source_line": list(range(1, n + 1)),
        },
        schema_overrides={"bid_size": pl.Float64, "ask_size": pl.Float64},
    )


def snapshot(root: Path) -> dict[str, str]:
    """Every committed file under root with its hash (staging and the lock excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] != STAGING and rel.name != ".lock":
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_write_partitions_by_utc_date_of_ts_event(tmp_path):
    store = Store(tmp_path)
    frame = quote_frame([0], per_day=1).with_columns(pl.Series("ts_event", [DAY0 + NS_PER_DAY - 1]))
    frame = pl.concat([frame, quote_frame([1], per_day=1)])
    paths = store.write("quotes", frame, instrument_id="EURUSD")
    assert [p.name for p in paths] == ["date=2014-05-01", "date=2014-05-02"]
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet"))
    assert len(files) == 2
    assert files[0].startswith("quotes/instrument_id=EURUSD/date=2014-05-01/part-")
    assert store.instruments("quotes") == ["EURUSD"]
    assert [p.date for p in store.partitions("quotes", "EURUSD")] == ["2014-05-01", "2014-05-02"]


def test_scan_returns_the_schema_and_keeps_lineage_on_request(tmp_path):
    store = Store(tmp_path)
    store.write("quotes", quote_frame([0, 1]), instrument_id="EURUSD")
    frame = store.scan("quotes", "EURUSD").collect()
    assert frame.schema == QUOTES
    assert frame.height == 10 and frame["ts_event"].is_sorted()
    with_lineage = store.scan("quotes", "EURUSD", lineage=True).collect(engine="streaming")
    assert with_lineage.columns[-2:] == ["source_file", "source_line"]


def test_scan_by_time_range_is_inclusive_exclusive_and_prunes_partitions(tmp_path):
    store = Store(tmp_path)
    store.write("quotes", quote_frame([0, 1, 2, 3]), instrument_id="EURUSD")
    start = DAY0 + NS_PER_DAY + 60 * 1_000_000_000  # day 1, second tick
    got = store.scan("quotes", "EURUSD", start=start, end="2014-05-03").collect()
    assert got["ts_event"].min() == start
    assert got["ts_event"].max() < DAY0 + 2 * NS_PER_DAY
    assert got.height == 4
    iso = store.scan("quotes", "EURUSD", start="2014-05-02T00:01:00Z", end="2014-05-03")
    assert iso.collect().equals(got)
    # a partition outside the range is never opened: corrupt it and scan again
    (bad,) = store.partitions("quotes", "EURUSD")[3].files
    bad.write_bytes(b"not parquet")
    assert store.scan("quotes", "EURUSD", start=start, end="2014-05-03").collect().equals(got)


def test_scan_without_data_or_with_an_empty_range_raises_one_line(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(PipelineError, match="has no quotes for instrument GBPUSD"):
        store.scan("quotes", "GBPUSD")
    store.write("quotes", quote_frame([0]), instrument_id="EURUSD")
    with pytest.raises(PipelineError, match="empty time range"):
        store.scan("quotes", "EURUSD", start="2014-05-02", end="2014-05-01")
    with pytest.raises(PipelineError, match="no quotes for EURUSD in"):
        store.scan("quotes", "EURUSD", start="2015-01-01")
    with pytest.raises(PipelineError, match="cannot read 'yesterday'"):
        store.scan("quotes", "EURUSD", start="yesterday")


def test_writing_the_same_rows_twice_stores_them_once(tmp_path):
    store = Store(tmp_path)
    frame = quote_frame([0, 1])
    with store.transaction() as tx:
        first = tx.write("quotes", frame, instrument_id="EURUSD")
    with store.transaction() as tx:
        second = tx.write("quotes", frame, instrument_id="EURUSD")
    assert (first.rows_new, second.rows_new) == (10, 0)
    assert store.scan("quotes", "EURUSD").collect().height == 10
    day1 = frame.filter(pl.col("ts_event") >= DAY0 + NS_PER_DAY)
    overlap = pl.concat([day1, quote_frame([2])])
    with store.transaction() as tx:
        third = tx.write("quotes", overlap, instrument_id="EURUSD")
    assert third.rows_new == 5
    assert store.scan("quotes", "EURUSD").collect().height == 15
    assert all(len(p.files) == 1 for p in store.partitions("quotes", "EURUSD"))


def test_rewriting_bars_replaces_bars_with_the_same_open_and_close(tmp_path):
    store = Store(tmp_path)
    bars = pl.DataFrame(
        {
            "instrument_id": ["EURUSD"] * 2,
            "ts_event": [DAY0, DAY0 + 60_000_000_000],
            "ts_close": [DAY0 + 60_000_000_000, DAY0 + 120_000_000_000],
            "open": [1.0, 2.0],
            "high": [1.0, 2.0],
            "low": [1.0, 2.0],
            "close": [1.0, 2.0],
        }
    )
    store.write("bars", bars, instrument_id="EURUSD")
    store.write("bars", bars.with_columns(pl.col("close") * 10), instrument_id="EURUSD")
    got = store.scan("bars", "EURUSD").collect()
    assert got["close"].to_list() == [10.0, 20.0]


def test_frame_of_another_instrument_is_refused(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(PipelineError, match="holds rows of instrument 'EURUSD'"):
        store.write("quotes", quote_frame([0]), instrument_id="GBPUSD")
    assert snapshot(tmp_path) == {}


def test_exception_inside_a_transaction_leaves_the_store_unchanged(tmp_path):
    store = Store(tmp_path)
    store.write("quotes", quote_frame([0]), instrument_id="EURUSD")
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as tx:
            tx.write("quotes", quote_frame([0, 1], price=1.5), instrument_id="EURUSD")
            raise RuntimeError("boom")
    assert snapshot(tmp_path) == before
    assert not any((tmp_path / STAGING).iterdir())


WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_store import quote_frame
from pipelines.store import Store
Store(sys.argv[1]).write("quotes", quote_frame(range(6), price=float(sys.argv[2])),
                         instrument_id="EURUSD")
"""


def start_writer(root: Path, price: float, pause: str) -> subprocess.Popen:
    env = {**os.environ, PAUSE_ENV: pause}
    here = str(Path(__file__).parent)
    argv = [sys.executable, "-c", WRITER, str(root), str(price), here]
    return subprocess.Popen(argv, env=env)


def wait_for(predicate, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the writer ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for the writer"
        time.sleep(0.02)


def test_writer_killed_while_staging_leaves_the_store_as_it_was(tmp_path):
    store = Store(tmp_path)
    store.write("quotes", quote_frame([0, 1, 2]), instrument_id="EURUSD")
    before = snapshot(tmp_path)
    rows_before = store.scan("quotes", "EURUSD", lineage=True).collect()
    proc = start_writer(tmp_path, 1.5, "stage:30")
    wait_for(lambda: any((tmp_path / STAGING).rglob("*.parquet")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert snapshot(tmp_path) == before  # nothing committed, nothing partial
    store.recover()
    assert not any((tmp_path / STAGING).iterdir())  # the staged files are gone
    assert store.scan("quotes", "EURUSD", lineage=True).collect().equals(rows_before)


def test_writer_killed_after_its_commit_point_is_rolled_forward(tmp_path):
    store = Store(tmp_path)
    store.write("quotes", quote_frame([0, 1, 2]), instrument_id="EURUSD")
    expected_root = tmp_path / "expected"
    expected = Store(expected_root)
    expected.write("quotes", quote_frame([0, 1, 2]), instrument_id="EURUSD")
    expected.write("quotes", quote_frame(range(6), price=1.5), instrument_id="EURUSD")
    root = tmp_path / "killed"
    killed = Store(root)
    killed.write("quotes", quote_frame([0, 1, 2]), instrument_id="EURUSD")
    proc = start_writer(root, 1.5, "apply:30")
    wait_for(lambda: any((root / STAGING).rglob("COMMIT.json")), proc)
    time.sleep(0.3)  # let it apply the first partition, then die in the pause after it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed.recover()
    assert not any((root / STAGING).iterdir())
    got = killed.scan("quotes", "EURUSD", lineage=True).collect()
    want = expected.scan("quotes", "EURUSD", lineage=True).collect()
    assert got.equals(want)
    assert all(len(p.files) == 1 for p in killed.partitions("quotes", "EURUSD"))


def test_quarantine_rows_without_a_timestamp_go_to_date_none(tmp_path):
    store = Store(tmp_path)
    rows = pl.DataFrame(
        {
            "table": ["quotes", "quotes"],
            "instrument_id": ["EURUSD", "EURUSD"],
            "ts_event": [None, DAY0],
            "reason": ["malformed_line", "crossed_quote"],
            "source_file": ["f.csv", "f.csv"],
            "source_line": [1, 2],
            "raw": ["garbage", "x"],
        },
        schema_overrides={"ts_event": pl.Int64},
    )
    store.write("quarantine", rows, instrument_id="EURUSD")
    assert [p.date for p in store.partitions("quarantine", "EURUSD")] == ["2014-05", "none"]
    assert store.scan("quarantine", "EURUSD").collect().height == 2
    ranged = store.scan("quarantine", "EURUSD", start="2014-05-01").collect()
    assert ranged["reason"].to_list() == ["crossed_quote"]
    store.write("quarantine", rows, instrument_id="EURUSD")  # idempotent, nulls included
    assert store.scan("quarantine", "EURUSD").collect().height == 2


def test_sorted_and_unsorted_rows_land_in_the_same_partitions(tmp_path):
    sorted_rows = quote_frame([0, 1, 3], per_day=4)  # a gap day (2) between partitions
    shuffled = sorted_rows.sample(fraction=1.0, shuffle=True, seed=3)
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    assert [p.name for p in a.write("quotes", sorted_rows, instrument_id="EURUSD")] == [
        "date=2014-05-01",
        "date=2014-05-02",
        "date=2014-05-04",
    ]
    b.write("quotes", shuffled, instrument_id="EURUSD")
    for day in ("2014-05-01", "2014-05-02", "2014-05-04"):
        got = a.scan("quotes", "EURUSD", start=day, end=f"{day}T23:59:59.999999").collect()
        want = b.scan("quotes", "EURUSD", start=day, end=f"{day}T23:59:59.999999").collect()
        assert got.height == 4 and got.equals(want)


def test_partition_files_round_trip_every_type_and_null(tmp_path):
    frame = quote_frame([0], per_day=6).with_columns(
        pl.Series("bid_size", [None, 1.5, None, 2.0, float("nan"), 0.0]),
        pl.Series("source_line", [1, None, 3, 4, 5, 6]),
    )
    store = Store(tmp_path)
    store.write("quotes", frame, instrument_id="EURUSD")
    back = store.scan("quotes", "EURUSD", lineage=True).collect()
    assert back.schema == pl.Schema({**QUOTES, **LINEAGE})
    assert_frame_equal(back, frame.cast(dict(back.schema)))
    files = list(tmp_path.rglob("part-*.parquet"))
    encodings = pq.ParquetFile(files[0]).metadata.row_group(0).column(0).encodings
    assert "DELTA_BINARY_PACKED" in encodings  # ts_event


def test_commit_without_syncfs_falls_back_to_fsync_per_file(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(store_files, "_LIBC", None)
    monkeypatch.setattr(store_files, "_fsync_all", lambda paths: calls.append(list(paths)))
    Store(tmp_path).write("quotes", quote_frame([0, 1]), instrument_id="EURUSD")
    staged = [p for p in calls[0] if p.suffix == ".parquet"]
    assert len(staged) == 2  # both staged partition files were made durable before the journal
    assert len(calls) == 2  # staged files + folders, then the final folders after the renames


def hourly_bars(days: int, *, start_day: int = 0, close: float = 1.0) -> pl.DataFrame:
    hour = 3_600_000_000_000
    ts = [DAY0 + (start_day * 24 + h) * hour for h in range(days * 24)]
    return pl.DataFrame(
        {
            "instrument_id": ["EURUSD"] * len(ts),
            "ts_event": ts,
            "ts_close": [t + hour for t in ts],
            "open": [1.0] * len(ts),
            "high": [1.0] * len(ts),
            "low": [1.0] * len(ts),
            "close": [close] * len(ts),
        }
    )


def test_bars_are_partitioned_by_month_and_scans_prune_months(tmp_path):
    store = Store(tmp_path)
    paths = store.write("bars", hourly_bars(61), instrument_id="EURUSD")  # May and June 2014
    assert [p.name for p in paths] == ["month=2014-05", "month=2014-06"]
    assert [p.date for p in store.partitions("bars", "EURUSD")] == ["2014-05", "2014-06"]
    june = store.scan("bars", "EURUSD", start="2014-06-02", end="2014-06-03").collect()
    assert june.height == 24
    with pytest.raises(PipelineError, match="no bars"):
        store.scan("bars", "EURUSD", start="2014-08-01", end="2014-09-01")


def test_daily_bar_folders_of_an_older_layout_are_read_and_merged_into_their_month(tmp_path):
    store = Store(tmp_path)
    legacy = store.table_dir("bars", "EURUSD") / "date=2014-05-01"
    legacy.mkdir(parents=True)
    old = _conform_stored(hourly_bars(1), "bars").drop("instrument_id")
    write_parquet(old, legacy / "part-old.parquet")
    assert store.scan("bars", "EURUSD").collect().height == 24  # still readable
    store.write("bars", hourly_bars(2, close=2.0), instrument_id="EURUSD")  # May 1-2 again
    got = store.scan("bars", "EURUSD").collect()
    assert got.height == 48 and got["close"].unique().to_list() == [2.0]  # replaced, not doubled
    assert not list(legacy.glob("*.parquet"))
    assert [p.path.name for p in store.partitions("bars", "EURUSD")] == ["month=2014-05"]
