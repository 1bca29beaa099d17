"""Readers on tiny files of our own: malformed lines, bad files, time zones across DST."""

from __future__ import annotations

import gzip
import lzma
import struct
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from data_specs import QUARANTINE, load_spec
from pipelines.errors import PipelineError
from pipelines.readers import read

EURUSD, GC = load_spec("EURUSD"), load_spec("GC")
HOUR = 3_600_000_000_000


def ns(text: str) -> int:
    stamp = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1_000


def lean_zip(root: Path, vendor: str, day: str, lines: list[str], pair: str = "eurusd") -> Path:
    folder = root / "forex" / vendor / "tick" / pair
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{day}_quote.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{day}_{pair}_tick_quote.csv", "\n".join(lines) + "\n")
    return path


def collect(result):
    frame, rejects = result.frame.collect(), result.rejects.collect()
    assert result.rows_in == frame.height + rejects.height
    assert rejects.schema == QUARANTINE
    return frame, rejects


def test_pipeline_error_is_one_line_path_line_message():
    error = PipelineError("bad\nthing", path="a/b.csv", line=7)
    assert str(error) == "a/b.csv:7: bad thing"
    assert str(PipelineError("no place")) == "no place"
    assert str(PipelineError("x", path="f.zip")) == "f.zip: x"


def test_lean_malformed_lines_go_to_rejects_with_line_and_text(tmp_path):
    lines = [
        "1000,1.1,1.2",
        "2000,1.1",  # too few fields
        "3000,1.1,abc",  # bad number
        "",  # blank: not a data line
        "4000,1.1,1.2,9",  # too many fields
        "5000,1.3,1.4",
        "x,1.3,1.4",  # bad time
        "86400000,1.3,1.4",  # past the end of the day
    ]
    path = lean_zip(tmp_path, "oanda", "20140501", lines)
    result = read(path, fmt="lean", spec=EURUSD)
    frame, rejects = collect(result)
    assert result.rows_in == 7
    assert frame["source_line"].to_list() == [1, 6]
    assert frame["ts_event"].to_list() == [ns("2014-05-01T00:00:01"), ns("2014-05-01T00:00:05")]
    assert rejects["source_line"].to_list() == [2, 3, 5, 7, 8]
    assert rejects["raw"].to_list() == [lines[i - 1] for i in (2, 3, 5, 7, 8)]
    assert set(rejects["reason"]) == {"malformed_line"}
    assert set(rejects["table"]) == {"quotes"} and set(rejects["instrument_id"]) == {"EURUSD"}
    assert set(rejects["source_file"]) == {f"{path}:20140501_eurusd_tick_quote.csv"}


def test_histdata_bad_timestamp_and_field_count_are_quarantined(tmp_path):
    path = tmp_path / "DAT_ASCII_EURUSD_T_202001.csv"
    path.write_text(
        "20200101 170000065,1.121200,1.121720,0\n"
        "20200101 17000X065,1.121200,1.121720,0\n"
        "20200101 170001000,1.121200\n"
        "20200101 170002000,1.121300,1.121800,0\n"
    )
    frame, rejects = collect(read(path, fmt="histdata", spec=EURUSD))
    assert frame["source_line"].to_list() == [1, 4]
    assert rejects["source_line"].to_list() == [2, 3]
    assert rejects["raw"][0] == "20200101 17000X065,1.121200,1.121720,0"


def test_dukascopy_csv_bad_line_is_quarantined_and_gz_is_read(tmp_path):
    text = (
        "Gmt time,Ask,Bid,AskVolume,BidVolume\n"
        "04.02.2019 00:00:00.994,1.14545,1.14543,1,2.06\n"
        "31.02.2019 00:00:01.271,1.14546,1.14544,1,1\n"
        "04.02.2019 00:00:01.464,1.14545,1.14542,1,8.35\n"
    )
    path = tmp_path / "EURUSD_ticks.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    frame, rejects = collect(read(path, fmt="dukascopy", spec=EURUSD))
    assert frame["source_line"].to_list() == [2, 4]
    assert rejects["source_line"].to_list() == [3]
    assert rejects["raw"][0].startswith("31.02.2019")


@pytest.mark.parametrize(
    ("content", "fmt", "match"),
    [
        (b"", "histdata", "empty file"),
        (b"\n\n", "truefx", "empty file"),
        (
            b"Gmt time,Ask,Bid,AskVolume,BidVolume\n04.02.2019 00:00:00.994,1.1,1.1,1,1\n",
            "histdata",
            "not a HistData",
        ),
        (b"20200101 170000065,1.121200,1.121720,0\n", "dukascopy", "not a Dukascopy"),
        (b"a,b,c\n1,2,3\n", "csv-bars", "cannot guess the bar columns"),
    ],
)
def test_whole_file_failures_raise_one_line_naming_the_file(tmp_path, content, fmt, match):
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=match) as info:
        read(path, fmt=fmt, spec=EURUSD)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_wrong_format_names_the_first_line(shared_data):
    path = shared_data / "dukascopy-node/derived/EURUSD_ticks_20190204-20190205_GMT.csv.gz"
    with pytest.raises(PipelineError, match=r"\.csv\.gz:1: not a HistData") as info:
        read(path, fmt="histdata", spec=EURUSD)
    assert "Gmt time" in str(info.value)


def test_truncated_zip_raises(tmp_path):
    path = lean_zip(tmp_path, "oanda", "20140501", [f"{i},1.1,1.2" for i in range(5000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match="corrupt zip") as info:
        read(path, fmt="lean", spec=EURUSD)
    assert str(path) in str(info.value)


def test_corrupted_zip_member_fails_its_crc(tmp_path):
    path = lean_zip(tmp_path, "oanda", "20140501", [f"{i},1.1,1.2" for i in range(5000)])
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="corrupt zip"):
        read(path, fmt="lean", spec=EURUSD)


def test_truncated_or_ragged_bi5_raises(tmp_path):
    folder = tmp_path / "EURUSD/2019/01/04"
    folder.mkdir(parents=True)
    records = b"".join(struct.pack(">IIIff", i, 114545, 114543, 1.0, 1.0) for i in range(100))
    path = folder / "00h_ticks.bi5"
    path.write_bytes(lzma.compress(records, format=lzma.FORMAT_ALONE)[:-40])
    with pytest.raises(PipelineError, match="corrupt bi5"):
        read(path, fmt="dukascopy-bi5", spec=EURUSD)
    path.write_bytes(lzma.compress(records[:-3], format=lzma.FORMAT_ALONE))
    with pytest.raises(PipelineError, match="whole number of 20-byte records"):
        read(path, fmt="dukascopy-bi5", spec=EURUSD)


def test_zero_byte_bi5_is_an_hour_without_ticks(tmp_path):
    folder = tmp_path / "EURUSD/2019/01/02"
    folder.mkdir(parents=True)
    (folder / "03h_ticks.bi5").write_bytes(b"")
    result = read(folder / "03h_ticks.bi5", fmt="dukascopy-bi5", spec=EURUSD)
    assert result.rows_in == 0 and result.frame.collect().height == 0


def test_bi5_jpy_prices_scale_by_the_spec_increment(tmp_path):
    folder = tmp_path / "USDJPY/2019/00/02"
    folder.mkdir(parents=True)
    record = struct.pack(">IIIff", 1500, 108_123, 108_120, 2.5, 1.25)
    (folder / "05h_ticks.bi5").write_bytes(lzma.compress(record, format=lzma.FORMAT_ALONE))
    result = read(folder / "05h_ticks.bi5", fmt="dukascopy-bi5", spec=load_spec("USDJPY"))
    frame, _ = collect(result)
    assert frame.row(0, named=True) | {"source_file": None} == {
        "instrument_id": "USDJPY",
        "ts_event": ns("2019-01-02T05:00:01.500"),  # month folder 00 is January
        "bid_price": 108.12,
        "ask_price": 108.123,
        "bid_size": 1_250_000.0,
        "ask_size": 2_500_000.0,
        "source_file": None,
        "source_line": 1,
    }


def test_wrong_pair_in_a_lean_path_is_refused(tmp_path):
    path = lean_zip(tmp_path, "fxcm", "20140501", ["1000,1.6,1.7"], pair="gbpusd")
    with pytest.raises(PipelineError, match="wrong instrument.*GBPUSD"):
        read(path, fmt="lean", spec=EURUSD)


def test_lean_time_zone_needs_a_vendor_folder_or_tz(tmp_path):
    path = lean_zip(tmp_path, "somevendor", "20140501", ["1000,1.1,1.2"])
    with pytest.raises(PipelineError, match="pass tz="):
        read(path, fmt="lean", spec=EURUSD)
    frame, _ = collect(read(path, fmt="lean", spec=EURUSD, tz="UTC-05"))
    assert frame["ts_event"][0] == ns("2014-05-01T05:00:01")


def test_truncated_dbn_raises(shared_data, tmp_path):
    name = "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
    source = shared_data / "nautilus-trader/databento" / name
    path = tmp_path / "trades.dbn.zst"
    path.write_bytes(source.read_bytes()[:1000])
    with pytest.raises(PipelineError) as info:
        read(path, fmt="databento", spec=load_spec("ES"))
    assert str(path) in str(info.value)


def test_unknown_format_and_misplaced_options_are_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(PipelineError, match="unknown format"):
        read(path, fmt="bloomberg", spec=EURUSD)
    with pytest.raises(PipelineError, match="tz= does not apply"):
        read(path, fmt="dukascopy", spec=EURUSD, tz="UTC")
    with pytest.raises(PipelineError, match="needs a column_map"):
        read(path, fmt="csv", spec=EURUSD)


def test_lean_gold_trades_suspicious_flag_is_quarantined(tmp_path):
    folder = tmp_path / "future/comex/tick/gc"
    folder.mkdir(parents=True)
    path = folder / "20131007_trade.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "20131007_gc_tick_trade_201312.csv",
            "14463482,1326.5,1,usa,,0\n14463483,1326.6,2,usa,,1\n14463484,1326.4,3,usa,,0\n",
        )
    frame, rejects = collect(read(path, fmt="lean", spec=GC))
    assert frame["size"].to_list() == [1.0, 3.0]
    assert rejects["reason"].to_list() == ["vendor_suspicious"]
    assert rejects["ts_event"].to_list() == [ns("2013-10-07T04:01:03.483")]  # parsed, kept
    assert frame["ts_event"][0] == ns("2013-10-07T04:01:03.482")  # futures data is UTC


# --- time zones across the 2014 New York DST switches (2014-03-09 and 2014-11-02) ---


def csv_quotes(path: Path, stamps: list[str], *, tz: str):
    path.write_text("time,bid,ask\n" + "".join(f"{s},1.1,1.2\n" for s in stamps))
    column_map = {"ts_event": "time", "bid_price": "bid", "ask_price": "ask", "tz": tz}
    return collect(read(path, fmt="csv", spec=EURUSD, column_map=column_map))


def test_new_york_local_csv_shifts_its_offset_at_both_dst_switches(tmp_path):
    frame, rejects = csv_quotes(
        tmp_path / "spring.csv",
        ["2014-03-09 01:59:59", "2014-03-09 02:30:00", "2014-03-09 03:00:00"],
        tz="America/New_York",
    )
    assert frame["ts_event"].to_list() == [ns("2014-03-09T06:59:59"), ns("2014-03-09T07:00:00")]
    assert rejects["reason"].to_list() == ["nonexistent_local_time"]  # 02:30 never happened
    assert rejects["source_line"].to_list() == [3]
    frame, _ = csv_quotes(
        tmp_path / "autumn.csv",
        [f"2014-11-02 {t}" for t in ("00:59:00", "01:30:00", "01:10:00", "02:00:00")],
        tz="America/New_York",
    )
    assert frame["ts_event"].to_list() == [
        ns("2014-11-02T04:59:00"),  # EDT, UTC-4
        ns("2014-11-02T05:30:00"),  # first 01:30, still EDT
        ns("2014-11-02T06:10:00"),  # the clock went back: second pass, EST
        ns("2014-11-02T07:00:00"),  # EST, UTC-5
    ]


@pytest.mark.parametrize("day", ["20140309", "20141102"])
def test_fixed_minus_five_vendors_do_not_shift_at_dst(tmp_path, day):
    """HistData and FXCM are UTC-05 all year: wall-clock gaps equal UTC gaps across a switch."""
    histdata = tmp_path / "ticks.csv"
    histdata.write_text(
        f"{day} 013000000,1.1,1.2,0\n{day} 023000000,1.1,1.2,0\n{day} 033000000,1.1,1.2,0\n"
    )
    hist, _ = collect(read(histdata, fmt="histdata", spec=EURUSD))
    lines = ["5400000,1.1,1.2", "9000000,1.1,1.2", "12600000,1.1,1.2"]  # 01:30, 02:30, 03:30
    lean = lean_zip(tmp_path, "fxcm", day, lines)
    fxcm, _ = collect(read(lean, fmt="lean", spec=EURUSD))
    iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    expected = [ns(f"{iso}T06:30:00"), ns(f"{iso}T07:30:00"), ns(f"{iso}T08:30:00")]
    assert hist["ts_event"].to_list() == expected
    assert fxcm["ts_event"].to_list() == expected
    ny, _ = csv_quotes(
        tmp_path / "ny.csv", [f"{iso} 01:30:00", f"{iso} 03:30:00"], tz="America/New_York"
    )
    assert ny["ts_event"][1] - ny["ts_event"][0] != 2 * HOUR  # New York time does shift


def test_generic_csv_epoch_and_aware_stamps_ignore_tz(tmp_path):
    path = tmp_path / "trades.csv"
    path.write_text("ms;px;qty;side\n1704150060000;1.1;2;buy\n1704150061000;1.2;1;S\n")
    column_map = {"ts_event": "ms", "price": "px", "size": "qty", "aggressor_side": "side"}
    column_map |= {"timestamp_format": "epoch_ms", "separator": ";", "tz": "America/New_York"}
    frame, _ = collect(read(path, fmt="csv", spec=EURUSD, column_map=column_map))
    assert frame["ts_event"].to_list() == [ns("2024-01-01T23:01:00"), ns("2024-01-01T23:01:01")]
    assert frame["aggressor_side"].to_list() == ["B", "S"]
    aware = tmp_path / "aware.csv"
    aware.write_text("time,bid,ask\n2014-03-09 02:30:00-05:00,1.1,1.2\n")
    column_map = {"ts_event": "time", "bid_price": "bid", "ask_price": "ask"}
    frame, _ = collect(read(aware, fmt="csv", spec=EURUSD, column_map=column_map, tz="Asia/Tokyo"))
    assert frame["ts_event"].to_list() == [ns("2014-03-09T07:30:00")]


def test_generic_parquet_quarantines_rows_that_do_not_cast(tmp_path):
    path = tmp_path / "quotes.parquet"
    pl.DataFrame(
        {"t": ["2024-01-02 10:00:00", "2024-01-02 10:00:01", "nope"], "b": ["1.1", "x", "1.2"]}
    ).with_columns(pl.lit("1.3").alias("a")).write_parquet(path)
    column_map = {"ts_event": "t", "bid_price": "b", "ask_price": "a"}
    frame, rejects = collect(read(path, fmt="csv", spec=EURUSD, column_map=column_map))
    assert frame["source_line"].to_list() == [1]
    assert rejects["source_line"].sort().to_list() == [2, 3]
    assert '"x"' in rejects.sort("source_line")["raw"][0]


def test_histdata_m1_bars_are_minus_five_minute_bars(tmp_path):
    path = tmp_path / "DAT_ASCII_EURUSD_M1_2020.csv"
    path.write_text(
        "20200101 170000;1.121200;1.121500;1.121100;1.121400;0\n"
        "20200101 170100;1.121400;1.121600;1.121300;1.121350;0\n"
        "20200101 1702;1.1;1.2;1.0;1.1;0\n"
    )
    result = read(path, fmt="histdata-bars", spec=EURUSD)
    frame, rejects = collect(result)
    assert frame["ts_event"].to_list() == [ns("2020-01-01T22:00:00"), ns("2020-01-01T22:01:00")]
    assert (frame["ts_close"] - frame["ts_event"]).to_list() == [60_000_000_000] * 2
    assert frame["close"].to_list() == frame["bid_close"].to_list() == [1.1214, 1.12135]
    assert rejects["source_line"].to_list() == [3]


def test_generic_parquet_datetime_columns_keep_their_instant(tmp_path):
    stamps = pl.Series([datetime(2014, 11, 2, 1, 30), datetime(2014, 11, 2, 3, 0)])
    frame = pl.DataFrame({"ny": stamps, "bid": [1.1, 1.2], "ask": [1.2, 1.3]})
    aware = frame.with_columns(
        pl.col("ny").dt.replace_time_zone("America/New_York", ambiguous="earliest")
    )
    column_map = {"ts_event": "ny", "bid_price": "bid", "ask_price": "ask"}
    expected = [ns("2014-11-02T05:30:00"), ns("2014-11-02T08:00:00")]
    for name, data, tz in [("naive", frame, "America/New_York"), ("aware", aware, None)]:
        path = tmp_path / f"{name}.parquet"
        data.write_parquet(path)
        result = read(path, fmt="csv", spec=EURUSD, column_map=column_map, tz=tz)
        assert collect(result)[0]["ts_event"].to_list() == expected, name


def test_lean_tick_and_bar_files_point_to_each_other(shared_data):
    fxcm = shared_data / "quantconnect-lean/forex/fxcm"
    with pytest.raises(PipelineError, match="use fmt='lean-bars'"):
        read(fxcm / "minute/eurusd/20140501_quote.zip", fmt="lean", spec=EURUSD)
    with pytest.raises(PipelineError, match="use fmt='lean'"):
        read(fxcm / "tick/eurusd/20140501_quote.zip", fmt="lean-bars", spec=EURUSD)


def test_generic_csv_reads_quoted_fields_on_both_paths(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text(
        '"time","bid","ask"\n"2024-01-02 10:00:00","1.1","1.2"\n"2024-01-02 10:00:01",x,"1.2"\n'
    )
    column_map = {"ts_event": "time", "bid_price": "bid", "ask_price": "ask"}
    frame, rejects = collect(read(path, fmt="csv", spec=EURUSD, column_map=column_map))
    assert frame["ts_event"].to_list() == [ns("2024-01-02T10:00:00")]
    assert frame["bid_price"].to_list() == [1.1]
    assert rejects["source_line"].to_list() == [3]


def test_raw_truefx_layout_checks_the_pair_column(tmp_path):
    path = tmp_path / "ticks-2013-01.csv"
    path.write_text(
        "EUR/USD,20130101 22:00:00.295,1.31210,1.31240\n"
        "EUR/USD,20130101 22:00:01,1.31211,1.31241\n"
        "EUR/USD,2013-01-01 22:00:02,1.31211,1.31241\n"
    )
    frame, rejects = collect(read(path, fmt="truefx", spec=EURUSD))
    assert frame["ts_event"].to_list() == [ns("2013-01-01T22:00:00.295"), ns("2013-01-01T22:00:01")]
    assert rejects["source_line"].to_list() == [3]
    path.write_text("GBP/USD,20130101 22:00:00.295,1.61210,1.61240\n")
    with pytest.raises(PipelineError, match="wrong instrument: the file holds GBPUSD"):
        read(path, fmt="truefx", spec=EURUSD)


def test_lean_contract_option_picks_one_member_or_refuses(shared_data):
    path = shared_data / "quantconnect-lean/future/cme/minute/es/20131007_trade.zip"
    spec = load_spec("ES")
    june = read(path, fmt="lean-bars", spec=spec, contract="201406")
    frame, _ = collect(june)
    assert set(frame["source_file"]) == {f"{path}:20131007_es_minute_trade_201406.csv"}
    whole = read(path, fmt="lean-bars", spec=spec, contract="all")
    assert june.rows_in + june.skipped == whole.rows_in
    with pytest.raises(PipelineError, match="no member for contract 209912"):
        read(path, fmt="lean-bars", spec=spec, contract="209912")


def test_dbn_definition_file_holds_no_ticks(shared_data):
    path = shared_data / "nautilus-trader/databento/definition-glbx-es-fut.dbn.zst"
    with pytest.raises(PipelineError, match="holds no quotes, trades or bars"):
        read(path, fmt="databento", spec=load_spec("ES"))


def test_truncated_gzip_raises(tmp_path):
    text = "Gmt time,Ask,Bid,AskVolume,BidVolume\n" + "04.02.2019 00:00:00.994,1.1,1.0,1,1\n" * 999
    path = tmp_path / "EURUSD_ticks.csv.gz"
    path.write_bytes(gzip.compress(text.encode())[:-30])
    with pytest.raises(PipelineError, match="corrupt gzip") as info:
        read(path, fmt="dukascopy", spec=EURUSD)
    assert str(path) in str(info.value)


def test_lean_contract_option_is_checked_in_a_single_member_zip(shared_data, tmp_path):
    source = shared_data / "quantconnect-lean/future/cme/minute/es/20131007_trade.zip"
    member = "20131007_es_minute_trade_201406.csv"
    with zipfile.ZipFile(source) as archive:
        data = archive.read(member)
    path = tmp_path / "future" / "cme" / "minute" / "es" / "20131007_trade.zip"  # LEAN layout
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    spec = load_spec("ES")
    assert read(path, fmt="lean-bars", spec=spec, contract="201406").rows_in > 0
    assert read(path, fmt="lean-bars", spec=spec).rows_in > 0  # the only contract
    with pytest.raises(PipelineError, match=r"no member for contract 201403 \(have 201406\)"):
        read(path, fmt="lean-bars", spec=spec, contract="201403")
