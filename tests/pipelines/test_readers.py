"""Readers on the real vendor samples in ../shared/data (see its PROVENANCE.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from data_specs import LINEAGE, QUARANTINE, QUOTES, TRADES, load_spec
from pipelines.errors import PipelineError
from pipelines.readers import FORMATS, read

EURUSD = load_spec("EURUSD")
LEAN_FX = "quantconnect-lean/forex"
LEAN_EURUSD = {"fmt": "lean", "spec": EURUSD}


def ns(text: str) -> int:
    """Return UTC nanoseconds for an ISO timestamp without zone (taken as UTC)."""
    stamp = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1_000


def collect(result):
    frame, rejects = result.frame.collect(), result.rejects.collect()
    assert result.rows_in == frame.height + rejects.height
    assert rejects.schema == QUARANTINE
    return frame, rejects


def test_formats_list_names_every_contract_format():
    assert FORMATS == [
        "truefx",
        "histdata",
        "dukascopy",
        "dukascopy-bi5",
        "lean",
        "databento",
        "csv",
        "lean-bars",
        "dukascopy-candles",
        "histdata-bars",
        "csv-bars",
    ]


def test_lean_fxcm_ticks_count_schema_and_fixed_minus_five_clock(shared_data):
    path = shared_data / LEAN_FX / "fxcm/tick/eurusd/20140501_quote.zip"
    result = read(path, fmt="lean", spec=EURUSD)
    frame, rejects = collect(result)
    assert result.table == "quotes"
    assert frame.schema == pl.Schema({**QUOTES, **LINEAGE})
    assert rejects.height == 0
    # first row "1787,1.38727,1.38729": 00:00:01.787 UTC-05 = 05:00:01.787 UTC
    first = frame.row(0, named=True)
    assert first["ts_event"] == ns("2014-05-01T05:00:01.787")
    assert (first["bid_price"], first["ask_price"]) == (1.38727, 1.38729)
    assert first["source_file"] == f"{path}:20140501_eurusd_tick_quote.csv"
    assert first["source_line"] == 1
    assert frame["ts_event"].is_sorted()


@pytest.mark.parametrize(("vendor", "ticks"), [("fxcm", 1_144_807), ("oanda", 532_903)])
def test_lean_all_days_hold_the_documented_tick_count(shared_data, vendor, ticks):
    paths = sorted((shared_data / LEAN_FX / vendor / "tick/eurusd").glob("*_quote.zip"))
    assert len(paths) == 13
    results = [read(p, fmt="lean", spec=EURUSD) for p in paths]
    assert sum(r.rows_in for r in results) == ticks
    assert all(r.rejects.collect().height == 0 for r in results)
    for result in results:  # monotonic within each day, as PROVENANCE.md states
        assert result.frame.collect()["ts_event"].is_sorted()


def test_lean_fxcm_nine_am_lines_up_with_oanda_two_pm(shared_data):
    """FXCM (UTC-05) 09:00 and OANDA (UTC) 14:00 are the same instant: minute mids agree best
    with no shift, and an hour's shift either way (a DST mistake) agrees clearly worse."""
    day = "20140506_quote.zip"
    fxcm, _ = collect(read(shared_data / LEAN_FX / "fxcm/tick/eurusd" / day, **LEAN_EURUSD))
    oanda, _ = collect(read(shared_data / LEAN_FX / "oanda/tick/eurusd" / day, **LEAN_EURUSD))
    minute, hour = 60_000_000_000, 3_600_000_000_000

    def minute_mids(frame, shift=0):
        return frame.group_by(((pl.col("ts_event") + shift) // minute).alias("m")).agg(
            ((pl.col("bid_price") + pl.col("ask_price")) / 2).mean().alias("mid")
        )

    def disagreement(shift):
        joined = minute_mids(fxcm, shift).join(minute_mids(oanda), on="m", suffix="_o")
        return (joined["mid"] - joined["mid_o"]).abs().median()

    nine_am_fxcm = fxcm.filter(pl.col("ts_event") >= ns("2014-05-06T14:00:00"))
    assert nine_am_fxcm["source_line"].min() > 1
    aligned = disagreement(0)
    assert aligned < 0.00005  # half a pip
    assert disagreement(hour) > 3 * aligned and disagreement(-hour) > 3 * aligned


def test_lean_wrong_pair_in_path_is_refused(shared_data):
    path = shared_data / LEAN_FX / "fxcm/tick/eurusd/20140501_quote.zip"
    with pytest.raises(PipelineError, match="wrong instrument") as info:
        read(path, fmt="lean", spec=load_spec("GBPUSD"))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_lean_gold_trade_ticks_all_contracts_count(shared_data):
    gold = load_spec("GC")
    paths = sorted((shared_data / "quantconnect-lean/future/comex/tick/gc").glob("*_trade.zip"))
    results = [read(p, fmt="lean", spec=gold, contract="all") for p in paths]
    assert sum(r.rows_in for r in results) == 157_849
    frame, _ = collect(results[0])
    assert frame.schema == pl.Schema({**TRADES, **LINEAGE})
    assert frame["price"].is_between(1200, 1400).all()
    assert set(frame["aggressor_side"]) == {"N"}


def test_lean_gold_default_reads_the_most_active_contract_and_counts_the_rest(shared_data):
    path = shared_data / "quantconnect-lean/future/comex/tick/gc/20131007_trade.zip"
    result = read(path, fmt="lean", spec=load_spec("GC"))
    frame, _ = collect(result)
    assert frame["source_file"].unique().to_list() == [f"{path}:20131007_gc_tick_trade_201312.csv"]
    assert result.rows_in + result.skipped == 40_192


def test_dukascopy_csv_two_days_ticks(shared_data):
    path = shared_data / "dukascopy-node/derived/EURUSD_ticks_20190204-20190205_GMT.csv.gz"
    frame, rejects = collect(read(path, fmt="dukascopy", spec=EURUSD))
    assert frame.height == 266_219 and rejects.height == 0
    assert frame["ts_event"].min() == ns("2019-02-04T00:00:00.994")
    assert frame["ts_event"].max() == ns("2019-02-05T23:59:59.765")
    first = frame.row(0, named=True)
    assert (first["ask_price"], first["bid_price"]) == (1.14545, 1.14543)
    assert (first["ask_size"], first["bid_size"]) == (1_000_000.0, 2_060_000.0)
    assert first["source_line"] == 2  # line 1 is the header
    assert frame["bid_price"].is_between(1.13, 1.15).all()


def test_dukascopy_bi5_agrees_with_the_csv_export_tick_for_tick(shared_data):
    csv = shared_data / "dukascopy-node/derived/EURUSD_ticks_20190204-20190205_GMT.csv.gz"
    ticks, _ = collect(read(csv, fmt="dukascopy", spec=EURUSD))
    hours = sorted((shared_data / "dukascopy-node/EURUSD/2019/01").glob("*/*h_ticks.bi5"))
    assert len(hours) == 48
    raw = pl.concat([collect(read(p, fmt="dukascopy-bi5", spec=EURUSD))[0] for p in hours])
    columns = ["ts_event", "bid_price", "ask_price", "bid_size", "ask_size"]
    assert raw.height == 266_219
    assert raw.select(columns).equals(ticks.select(columns))


def test_dukascopy_bi5_month_in_path_is_zero_based(shared_data):
    path = shared_data / "dukascopy-node/EURUSD/2019/01/04/14h_ticks.bi5"
    frame, _ = collect(read(path, fmt="dukascopy-bi5", spec=EURUSD))
    assert frame["ts_event"].min() >= ns("2019-02-04T14:00:00")
    assert frame["ts_event"].max() < ns("2019-02-04T15:00:00")
