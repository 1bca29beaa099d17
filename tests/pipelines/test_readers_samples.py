"""Readers on the real samples in ../shared/data: HistData, TrueFX, generic CSV, Databento, bars."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from data_specs import BARS, LINEAGE, QUARANTINE, QUOTES, TRADES, load_spec
from pipelines.errors import PipelineError
from pipelines.readers import read

EURUSD, ES = load_spec("EURUSD"), load_spec("ES")
MINUTE, HOUR, DAY = 60_000_000_000, 3_600_000_000_000, 86_400_000_000_000
DBN = "nautilus-trader/databento"
MBP1 = f"{DBN}/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
LEAN = "quantconnect-lean"


def ns(text: str) -> int:
    stamp = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1_000


def collect(result, schema=None):
    frame, rejects = result.frame.collect(), result.rejects.collect()
    assert result.rows_in == frame.height + rejects.height
    assert rejects.schema == QUARANTINE
    if schema is not None:
        assert frame.schema == pl.Schema({**schema, **LINEAGE})
    return frame, rejects


def assert_bars_consistent(frame: pl.DataFrame, duration_ns: int) -> None:
    for _, group in frame.group_by("source_file"):
        assert group["ts_event"].is_sorted()
        assert group["ts_event"].n_unique() == group.height
    assert (frame["ts_close"] - frame["ts_event"] == duration_ns).all()
    checks = frame.select(
        (pl.col("high") >= pl.max_horizontal("open", "close")).all().alias("high"),
        (pl.col("low") <= pl.min_horizontal("open", "close")).all().alias("low"),
        pl.any_horizontal(pl.col("open", "high", "low", "close").is_null()).any().alias("gap"),
    )
    assert checks.row(0) == (True, True, False)


def test_histdata_ticks_are_fixed_est_five_hours_behind_utc(shared_data):
    path = shared_data / "nautilus-trader/histdata/quote_tick_data.csv"
    frame, rejects = collect(read(path, fmt="histdata", spec=EURUSD), QUOTES)
    assert frame.height == 9_500 and rejects.height == 0
    assert frame["ts_event"][0] == ns("2020-01-01T22:00:00.065")  # 17:00:00.065 EST
    assert frame["ts_event"][-1] == ns("2020-01-02T04:00:52.125")
    assert (frame["bid_price"][0], frame["ask_price"][0]) == (1.1212, 1.12172)


def test_truefx_reformatted_iso_ticks(shared_data):
    path = shared_data / "nautilus-trader/truefx/usdjpy-ticks.csv"
    frame, _ = collect(read(path, fmt="truefx", spec=load_spec("USDJPY")), QUOTES)
    assert frame.height == 1_000
    assert frame["ts_event"][0] == ns("2013-01-01T22:00:00.295")
    assert frame["ts_event"][-1] == ns("2013-01-01T22:35:13.494")
    assert frame["bid_price"].is_between(86, 88).all()
    assert frame["source_line"][0] == 2


def test_truefx_file_of_another_pair_is_refused(shared_data):
    path = shared_data / "nautilus-trader/truefx/usdjpy-ticks.csv"
    with pytest.raises(PipelineError, match="wrong instrument.*USDJPY"):
        read(path, fmt="truefx", spec=EURUSD)


def test_6e_minute_bars_csv_row_count_volume_and_utc_range(shared_data):
    path = shared_data / "nautilus-trader/xcme/6EH4.XCME_1min_bars_20240101_20240131.csv.gz"
    frame, _ = collect(read(path, fmt="csv-bars", spec=load_spec("6E")), BARS)
    assert frame.height == 29_996
    assert frame["volume"].sum() == 4_310_578
    assert frame["ts_event"].min() == ns("2024-01-01T23:01:00")
    assert frame["ts_event"].max() == ns("2024-01-31T23:59:00")
    assert_bars_consistent(frame, MINUTE)


@pytest.mark.parametrize(
    ("name", "instrument", "rows"),
    [("gbpusd-m1-bid-2012.csv", "GBPUSD", 30_117), ("usdjpy-m1-ask-2013.csv", "USDJPY", 28_761)],
)
def test_fxcm_one_sided_minute_bars_fill_that_side(shared_data, name, instrument, rows):
    side = "bid" if "-bid-" in name else "ask"
    column_map = {"ts_event": "timestamp", "open": "open", "high": "high", "low": "low"}
    column_map |= {"close": "close", "side": side}
    path = shared_data / "nautilus-trader/fxcm" / name
    result = read(path, fmt="csv-bars", spec=load_spec(instrument), column_map=column_map)
    frame, _ = collect(result)
    assert frame.height == rows
    assert frame[f"{side}_close"].equals(frame["close"], check_names=False)
    other = "ask" if side == "bid" else "bid"
    assert frame[f"{other}_open"].null_count() == rows
    assert_bars_consistent(frame, MINUTE)


def test_databento_mbp1_quotes_and_trades_agree_with_the_trades_file(shared_data):
    quotes, _ = collect(read(shared_data / MBP1, fmt="databento", spec=ES), QUOTES)
    assert quotes.height == 2_288
    assert quotes["bid_price"].is_between(4800, 5600).all()
    assert (quotes["ask_price"] - quotes["bid_price"]).min() >= 0.25
    assert quotes["ts_event"].min() >= ns("2024-07-01T23:58:00")
    assert quotes["ts_event"].max() < ns("2024-07-02T00:02:00")
    from_mbp, _ = collect(read(shared_data / MBP1, fmt="databento", spec=ES, table="trades"))
    trades_path = shared_data / DBN / "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
    trades, _ = collect(read(trades_path, fmt="databento", spec=ES), TRADES)
    assert trades.height == 120
    columns = ["ts_event", "price", "size", "aggressor_side"]
    assert from_mbp.select(columns).equals(trades.select(columns))
    assert set(trades["aggressor_side"]) <= {"B", "S"}
    assert (
        (trades["price"] * 4)
        .round(9)
        .cast(pl.Int64)
        .cast(pl.Float64)
        .equals(trades["price"] * 4, check_names=False)
    )  # on the 0.25 tick grid, no 1e-9 float noise


def test_databento_mbo_is_reduced_to_a_top_of_book_and_its_trades(shared_data):
    path = shared_data / DBN / "esh4-glbx-mdp3-20231225.mbo.dbn.zst"
    result = read(path, fmt="databento", spec=ES)
    quotes, _ = collect(result, QUOTES)
    assert result.rows_in + result.skipped == 68_792
    assert quotes["ts_event"][0] == ns("2023-12-25T00:00:00")  # the snapshot's book
    live = quotes.filter(pl.col("ts_event") >= ns("2023-12-25T23:00:00"))
    assert live["bid_price"].is_between(4790, 4820).all()
    assert (live["ask_price"] > live["bid_price"]).all()  # crossed only in the pre-open
    assert quotes["ts_event"].is_sorted()
    spread = live["ask_price"] - live["bid_price"]
    assert spread.median() == 0.25 and (spread == 0.25).mean() > 0.9  # ES trades one tick wide
    trades, _ = collect(read(path, fmt="databento", spec=ES, table="trades"), TRADES)
    assert trades.height == 2_973
    assert trades["price"][0] == 4800.25 and trades["price"][-1] == 4810.0
    prevailing = trades.join_asof(
        live.select("ts_event", "bid_price", "ask_price"),
        on="ts_event",
        strategy="backward",
        allow_exact_matches=False,
    )
    inside = prevailing["price"].is_between(prevailing["bid_price"], prevailing["ask_price"])
    assert inside.mean() > 0.95  # the rebuilt book is the one the trades hit


def test_databento_tiny_official_fixtures_parse_in_every_tick_schema(shared_data):
    root = shared_data / "databento-python/GLBX.MDP3"
    for schema, table in [("mbp-1", "quotes"), ("tbbo", "quotes"), ("trades", "trades")]:
        frame, _ = collect(read(root / f"test_data.{schema}.dbn.zst", fmt="databento", spec=ES))
        price = frame["price" if table == "trades" else "bid_price"]
        assert frame.height == 4 and price.is_between(3600, 3800).all()
    bars, _ = collect(read(root / "test_data.ohlcv-1h.dbn.zst", fmt="databento", spec=ES), BARS)
    assert bars.height == 4
    assert_bars_consistent(bars, HOUR)


def test_databento_multi_symbol_bars_keep_only_the_spec_root(shared_data):
    path = shared_data / DBN / "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst"
    es = read(path, fmt="databento", spec=ES)
    nq = read(path, fmt="databento", spec=load_spec("NQ"))
    es_bars, nq_bars = collect(es)[0], collect(nq)[0]
    assert (es.rows_in, es.skipped, nq.rows_in) == (30, 30, 30)
    assert es_bars["close"].is_between(4800, 5600).all()
    assert nq_bars["close"].min() > 15_000


@pytest.mark.parametrize("instrument", ["NQ", "EURUSD"])
def test_databento_file_of_another_root_is_refused(shared_data, instrument):
    with pytest.raises(PipelineError, match="wrong instrument") as info:
        read(shared_data / MBP1, fmt="databento", spec=load_spec(instrument))
    assert str(shared_data / MBP1) in str(info.value)


@pytest.mark.parametrize(("vendor", "days", "rows"), [("fxcm", 17, 21_592), ("oanda", 15, 18_184)])
def test_lean_fx_minute_quote_bars(shared_data, vendor, days, rows):
    paths = sorted((shared_data / LEAN / "forex" / vendor / "minute/eurusd").glob("*.zip"))
    assert len(paths) == days
    frames = [collect(read(p, fmt="lean-bars", spec=EURUSD), BARS)[0] for p in paths]
    frame = pl.concat(frames)
    assert frame.height == rows
    assert_bars_consistent(frame, MINUTE)
    mid = (frame["bid_close"] + frame["ask_close"]) / 2
    assert (frame["close"] - mid).abs().max() < 1e-12


@pytest.mark.parametrize(
    ("vendor", "resolution", "rows", "first"),
    [
        ("fxcm", "hour", 69_928, "2007-03-30T05:00:00"),  # 00:00 UTC-05
        ("oanda", "hour", 74_439, None),
        ("fxcm", "daily", 3_487, "2007-03-30T05:00:00"),
        ("oanda", "daily", 3_738, "2007-01-01T00:00:00"),
    ],
)
def test_lean_fx_hour_and_daily_bars(shared_data, vendor, resolution, rows, first):
    path = shared_data / LEAN / "forex" / vendor / resolution / "eurusd.zip"
    frame, _ = collect(read(path, fmt="lean-bars", spec=EURUSD))
    assert frame.height == rows
    assert_bars_consistent(frame, HOUR if resolution == "hour" else DAY)
    if first is not None:
        assert frame["ts_event"][0] == ns(first)


@pytest.mark.parametrize(("vendor", "offset_hours"), [("fxcm", 5), ("oanda", 0)])
def test_lean_daily_bar_covers_the_vendor_calendar_day(shared_data, vendor, offset_hours):
    """A daily bar stamped D 00:00 aggregates the hourly bars of [D 00:00, D+1 00:00) in the
    vendor clock: FXCM (UTC-05) [05:00, 05:00) UTC, OANDA [00:00, 24:00) UTC."""
    fx = shared_data / LEAN / "forex" / vendor
    daily, _ = collect(read(fx / "daily/eurusd.zip", fmt="lean-bars", spec=EURUSD))
    hourly, _ = collect(read(fx / "hour/eurusd.zip", fmt="lean-bars", spec=EURUSD))
    shift = offset_hours * HOUR
    from_hours = (
        hourly.group_by(((pl.col("ts_event") - shift) // DAY * DAY + shift).alias("day"))
        .agg(
            pl.col("bid_open").sort_by("ts_event").first().alias("open_h"),
            pl.col("bid_high").max().alias("high_h"),
            pl.col("bid_low").min().alias("low_h"),
            pl.col("bid_close").sort_by("ts_event").last().alias("close_h"),
        )
        .join(daily, left_on="day", right_on="ts_event")
    )
    assert from_hours.height == daily.height
    for mine, theirs in [("open_h", "bid_open"), ("high_h", "bid_high"), ("low_h", "bid_low")]:
        assert from_hours[mine].equals(from_hours[theirs], check_names=False)
    assert from_hours["close_h"].equals(from_hours["bid_close"], check_names=False)


def test_lean_es_sunday_open_is_22_utc_and_minute_bars_count(shared_data):
    minute = shared_data / LEAN / "future/cme/minute/es"
    sunday, _ = collect(read(minute / "20131006_trade.zip", fmt="lean-bars", spec=ES))
    assert sunday["ts_event"].min() == ns("2013-10-06T22:00:00")
    for kind, rows in [("trade", 23_948), ("quote", 47_776)]:
        paths = sorted(minute.glob(f"*_{kind}.zip"))
        results = [read(p, fmt="lean-bars", spec=ES, contract="all") for p in paths]
        frame = pl.concat([collect(r, BARS)[0] for r in results])
        assert frame.height == rows
        assert_bars_consistent(frame, MINUTE)
        assert frame["close"].is_between(1500, 3500).all()


def test_lean_es_hour_and_daily_bars_with_one_sided_quotes(shared_data):
    for resolution, duration in [("hour", HOUR), ("daily", DAY)]:
        for kind in ("trade", "quote"):
            path = shared_data / LEAN / f"future/cme/{resolution}/es_{kind}.zip"
            frame, rejects = collect(read(path, fmt="lean-bars", spec=ES, contract="all"))
            assert frame.height > 100 and rejects.height == 0
            assert_bars_consistent(frame, duration)


def test_dukascopy_minute_candles_equal_the_bid_ticks_of_each_minute(shared_data):
    """Candle records are open, CLOSE, LOW, HIGH: a wrong field order fails this."""
    root = shared_data / "dukascopy-node"
    path = root / "EURUSD/2019/01/04/BID_candles_min_1.bi5"
    candles, _ = collect(read(path, fmt="dukascopy-candles", spec=EURUSD), BARS)
    assert candles.height == 1_440
    assert_bars_consistent(candles, MINUTE)
    ticks = read(
        root / "EURUSD/2019/01/04/14h_ticks.bi5", fmt="dukascopy-bi5", spec=EURUSD
    ).frame.collect()
    per_minute = ticks.group_by((pl.col("ts_event") // MINUTE * MINUTE).alias("ts_event")).agg(
        pl.col("bid_price").first().alias("o"),
        pl.col("bid_price").max().alias("h"),
        pl.col("bid_price").min().alias("l"),
        pl.col("bid_price").last().alias("c"),
        pl.col("bid_size").sum().alias("v"),
    )
    joined = candles.join(per_minute, on="ts_event")
    assert joined.height == 60
    pairs = [("bid_open", "o"), ("bid_high", "h"), ("bid_low", "l"), ("bid_close", "c")]
    for mine, theirs in pairs:
        assert joined[mine].equals(joined[theirs], check_names=False)
    assert ((joined["volume"] - joined["v"]).abs() < 1.0).all()


@pytest.mark.parametrize(
    ("relative", "rows", "duration"),
    [
        ("2019/00/BID_candles_hour_1.bi5", 744, HOUR),
        ("2019/01/BID_candles_hour_1.bi5", 672, HOUR),
        ("2018/BID_candles_day_1.bi5", 365, DAY),
        ("2019/BID_candles_day_1.bi5", 365, DAY),
    ],
)
def test_dukascopy_hour_and_day_candles(shared_data, relative, rows, duration):
    path = shared_data / "dukascopy-node/EURUSD" / relative
    frame, _ = collect(read(path, fmt="dukascopy-candles", spec=EURUSD))
    assert frame.height == rows
    assert_bars_consistent(frame, duration)
    assert frame["close"].is_between(1.08, 1.26).all()


def test_databento_numpy_records_match_the_databento_dbn_record_objects(shared_data):
    """The fast path (NumPy view of the records) equals the reference (dbn record objects)."""
    from pipelines.readers.databento import read_databento

    paths = sorted((shared_data / DBN).glob("*.dbn.zst"))
    paths += sorted((shared_data / "databento-python/GLBX.MDP3").glob("*.dbn.zst"))
    compared = 0
    for path in paths:
        if any(kind in path.name for kind in ("definition", "statistics", "status")):
            continue
        tables = [None] + (
            ["trades"] if any(k in path.name for k in ("mbo", "mbp", "tbbo")) else []
        )
        for table in tables:
            fast = read_databento(path, spec=ES, table=table, engine="numpy")
            slow = read_databento(path, spec=ES, table=table, engine="records")
            assert fast.frame.collect().equals(slow.frame.collect()), (path.name, table)
            assert (fast.rows_in, fast.skipped) == (slow.rows_in, slow.skipped)
            compared += 1
    assert compared >= 20


def test_databento_contract_option_names_a_symbol(shared_data):
    path = shared_data / DBN / "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst"
    assert read(path, fmt="databento", spec=ES, contract="ESU4").rows_in == 30
    with pytest.raises(PipelineError, match="no symbol ESZ4 in the file"):
        read(path, fmt="databento", spec=ES, contract="ESZ4")
