"""Cleaning: every reason on tiny frames, the spike filter against a brute-force Hampel filter,
and rows in = kept + quarantined on the real FXCM sample."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from data_specs import QUARANTINE, load_spec
from pipelines.clean import clean, clean_bars, clean_quotes, clean_trades

SPEC = load_spec("EURUSD")
INC = SPEC.price_increment
T0 = 1_400_000_000_000_000_000


def with_policy(**cleaning) -> object:
    return dataclasses.replace(SPEC, cleaning=dataclasses.replace(SPEC.cleaning, **cleaning))


def quotes(rows, *, source="a.csv", first_line=1) -> pl.LazyFrame:
    """rows: (ts offset in ms, bid, ask[, bid_size, ask_size])."""
    data = []
    for i, row in enumerate(rows):
        ts, bid, ask, *sizes = row
        bid_size, ask_size = sizes if sizes else (None, None)
        data.append(
            {
                "instrument_id": "EURUSD",
                "ts_event": None if ts is None else T0 + ts * 1_000_000,
                "bid_price": bid,
                "ask_price": ask,
                "bid_size": bid_size,
                "ask_size": ask_size,
                "source_file": source,
                "source_line": first_line + i,
            }
        )
    schema = {
        "instrument_id": pl.String,
        "ts_event": pl.Int64,
        "bid_price": pl.Float64,
        "ask_price": pl.Float64,
        "bid_size": pl.Float64,
        "ask_size": pl.Float64,
        "source_file": pl.String,
        "source_line": pl.Int64,
    }
    return pl.DataFrame(data, schema=schema).lazy()


def run(lf, spec=SPEC, table="quotes", center=True):
    result = clean(lf, table=table, spec=spec, center=center)
    kept, rejected, flagged = pl.collect_all([result.kept, result.rejected, result.flagged])
    return kept, rejected, flagged


def reasons(rejected: pl.DataFrame) -> dict[int, str]:
    return dict(zip(rejected["source_line"].to_list(), rejected["reason"].to_list()))


def flat(n, *, bid=1.1000, ask=1.10002, step_ms=100):
    return [(i * step_ms, bid, ask) for i in range(n)]


def test_bad_prices_and_timestamps_are_quarantined_with_their_reason():
    rows = flat(5) + [
        (600, None, 1.1),
        (700, float("nan"), 1.1),
        (800, 1.1, float("inf")),
        (900, 0.0, 1.1),
        (1000, -1.0, 1.1),
        (None, 1.1, 1.10002),
    ]
    kept, rejected, _ = run(quotes(rows))
    assert kept.height == 5
    assert reasons(rejected) == {
        6: "missing_price",
        7: "non_finite_price",
        8: "non_finite_price",
        9: "non_positive_price",
        10: "non_positive_price",
        11: "missing_timestamp",
    }
    assert rejected.schema == QUARANTINE
    assert set(rejected["source_file"]) == {"a.csv"}
    assert rejected["table"].unique().to_list() == ["quotes"]


def test_negative_or_nan_size_is_invalid_but_null_size_is_fine():
    rows = [
        (0, 1.1, 1.10002, 1.0, 2.0),
        (1, 1.1, 1.10002, -1.0, 2.0),
        (2, 1.1, 1.10002, 1.0, float("nan")),
        (3, 1.1, 1.10002, None, None),
    ]
    kept, rejected, _ = run(quotes(rows))
    assert reasons(rejected) == {2: "invalid_size", 3: "invalid_size"}
    assert kept["source_line"].to_list() == [1, 4]


def test_exact_duplicates_are_quarantined_and_the_first_copy_is_kept():
    rows = [
        (0, 1.1, 1.10002),
        (5, 1.1, 1.10002),  # A at t=5
        (5, 1.1, 1.10003),  # B: same time, other values -> kept
        (5, 1.1, 1.10002),  # A again, not adjacent -> duplicate
        (6, 1.1, 1.10002),  # same values, other time -> kept
        (6, 1.1, 1.10002),  # adjacent repeat -> duplicate
    ]
    kept, rejected, _ = run(quotes(rows))
    assert reasons(rejected) == {4: "duplicate", 6: "duplicate"}
    assert kept["source_line"].to_list() == [1, 2, 3, 5]


def test_duplicates_across_files_of_one_batch_are_caught():
    a = quotes([(0, 1.1, 1.10002), (1, 1.1, 1.10002)], source="a.csv")
    b = quotes([(1, 1.1, 1.10002), (2, 1.1, 1.10002)], source="b.csv")
    kept, rejected, _ = run(pl.concat([a, b]))
    assert rejected.select("source_file", "source_line", "reason").rows() == [
        ("b.csv", 1, "duplicate")
    ]
    assert kept.height == 3


def test_out_of_order_is_judged_against_earlier_lines_of_the_same_file():
    a = quotes([(0, 1.1, 1.10002), (10, 1.1, 1.10002), (5, 1.1, 1.10002), (10, 1.1, 1.10003)])
    b = quotes([(1, 1.1, 1.10004), (2, 1.1, 1.10004)], source="b.csv")  # earlier than a's end
    kept, rejected, _ = run(pl.concat([a, b]))
    assert rejected.select("source_file", "source_line", "reason").rows() == [
        ("a.csv", 3, "out_of_order")
    ]
    # kept rows come out in time order, ties in batch order
    assert kept["ts_event"].is_sorted()
    assert kept.height == 5


@pytest.mark.parametrize(
    ("policy", "stored", "quarantined", "flagged"),
    [("drop", 3, 1, 0), ("keep", 4, 0, 0), ("flag", 4, 0, 1)],
)
def test_crossed_quote_policy(policy, stored, quarantined, flagged):
    spec = with_policy(crossed_quotes=policy)
    rows = flat(3) + [(500, 1.10003, 1.10001)]
    kept, rejected, flags = run(quotes(rows), spec=spec)
    assert (kept.height, rejected.height, flags.height) == (stored, quarantined, flagged)
    if quarantined:
        assert reasons(rejected) == {4: "crossed_quote"}
    if flagged:
        assert flags.select("source_line", "reason").rows() == [(4, "crossed_quote")]
        assert 4 in kept["source_line"].to_list()  # a flagged row is stored


@pytest.mark.parametrize(
    ("policy", "stored", "quarantined", "flagged"),
    [("drop", 3, 1, 0), ("keep", 4, 0, 0), ("flag", 4, 0, 1)],
)
def test_locked_quote_policy(policy, stored, quarantined, flagged):
    spec = with_policy(locked_quotes=policy, crossed_quotes="drop")
    rows = flat(3) + [(500, 1.10002, 1.10002)]
    kept, rejected, flags = run(quotes(rows), spec=spec)
    assert (kept.height, rejected.height, flags.height) == (stored, quarantined, flagged)
    if quarantined:
        assert reasons(rejected) == {4: "locked_quote"}
    if flagged:
        assert flags["reason"].to_list() == ["locked_quote"]


def test_spread_wider_than_the_spec_maximum_is_quarantined():
    limit = SPEC.cleaning.max_spread_increments * INC
    mid = 1.10001  # spreads around the same mid, so the mid is no spike
    rows = flat(3) + [
        (500, mid - limit * 0.495, mid + limit * 0.495),
        (600, mid - limit * 0.505, mid + limit * 0.505),
    ]
    kept, rejected, _ = run(quotes(rows))
    assert reasons(rejected) == {5: "wide_spread"}
    assert kept.height == 4


def random_walk(n, seed, *, spikes=()):
    rng = np.random.default_rng(seed)
    mid = 1.1 + np.cumsum(rng.normal(0, 0.3 * INC, n)).round(6)
    for at, size in spikes:
        mid[at] += size
    return [(i * 100, float(m - INC), float(m + INC)) for i, m in enumerate(mid)]


def test_isolated_spike_is_quarantined_and_a_level_shift_is_not():
    thr = SPEC.cleaning.spike_threshold_increments * INC
    rows = random_walk(300, 1, spikes=[(100, 3 * thr)])
    rows = rows[:200] + [(ts, b + 2 * thr, a + 2 * thr) for ts, b, a in rows[200:]]  # jump
    kept, rejected, _ = run(quotes(rows))
    assert reasons(rejected) == {101: "spike"}
    assert kept.height == 299


def test_trailing_window_rejects_ticks_after_a_level_shift_where_centered_does_not():
    thr = SPEC.cleaning.spike_threshold_increments * INC
    rows = random_walk(200, 2)
    rows = rows[:100] + [(ts, b + 2 * thr, a + 2 * thr) for ts, b, a in rows[100:]]
    _, centered, _ = run(quotes(rows), center=True)
    _, trailing, _ = run(quotes(rows), center=False)
    assert centered.height == 0
    window = SPEC.cleaning.spike_window
    assert 0 < trailing.height <= window // 2 + 1
    assert set(trailing["reason"]) == {"spike"}
    assert min(trailing["source_line"]) == 101


def test_small_move_below_the_increment_threshold_is_not_a_spike():
    rows = flat(60)
    rows[30] = (3000, 1.1 + 50 * INC, 1.10002 + 50 * INC)  # 5 pips, MAD = 0
    kept, rejected, _ = run(quotes(rows))
    assert rejected.height == 0 and kept.height == 60


def hampel_reference(x, window, mad_multiple, threshold, center):
    """Brute-force Hampel filter over the windows the clean module documents."""
    n = len(x)
    left = window // 2 if center else window - 1
    right = window - 1 - left
    out = np.zeros(n, dtype=bool)
    for k in range(n):
        w = x[max(0, k - left) : min(n, k + right + 1)]
        med = np.median(w)
        mad = np.median(np.abs(w - med))
        out[k] = abs(x[k] - med) > max(mad_multiple * mad, threshold)
    return out


@pytest.mark.parametrize("center", [True, False])
def test_spike_filter_matches_brute_force_hampel_reference(center):
    rng = np.random.default_rng(7)
    n = 2000
    spec = with_policy(spike_window=21, spike_mad_multiple=5.0, spike_threshold_increments=5.0)
    mid = 1.1 + np.cumsum(rng.standard_t(2, n) * 0.8 * INC)
    at = rng.choice(n, 40, replace=False)
    mid[at] += rng.choice([-1, 1], 40) * rng.uniform(2, 30, 40) * INC
    rows = [(i, float(m - INC), float(m + INC)) for i, m in enumerate(mid)]
    kept, rejected, _ = run(quotes(rows), spec=spec, center=center)
    x = (np.array([r[1] for r in rows]) + np.array([r[2] for r in rows])) * 0.5
    expected = hampel_reference(x, 21, 5.0, 5.0 * INC, center)
    got = np.zeros(n, dtype=bool)
    got[rejected["source_line"].to_numpy() - 1] = True
    assert expected.sum() > 10  # the case exercises the filter
    np.testing.assert_array_equal(got, expected)
    assert set(rejected["reason"]) == {"spike"}


def test_trades_cleaning_reasons():
    frame = pl.DataFrame(
        {
            "instrument_id": ["EURUSD"] * 5,
            "ts_event": [T0, T0 + 1, T0 + 1, T0 + 2, T0 + 3],
            "price": [1.1, 1.1, 1.1, -1.0, 1.1],
            "size": [1.0, 2.0, 2.0, 1.0, 1.0],
            "aggressor_side": ["B", "S", "S", "N", "X"],
            "source_file": ["t.csv"] * 5,
            "source_line": [1, 2, 3, 4, 5],
        }
    ).lazy()
    kept, rejected = pl.collect_all(clean_trades(frame, spec=SPEC))
    assert reasons(rejected) == {3: "duplicate", 4: "non_positive_price", 5: "invalid_side"}
    assert kept["source_line"].to_list() == [1, 2]


def test_bars_cleaning_rejects_inconsistent_ohlc():
    frame = pl.DataFrame(
        {
            "instrument_id": ["EURUSD"] * 3,
            "ts_event": [T0, T0 + 60, T0 + 120],
            "ts_close": [T0 + 60, T0 + 120, T0 + 180],
            "open": [1.1, 1.1, 1.1],
            "high": [1.2, 1.0, 1.2],
            "low": [1.0, 1.05, 1.0],
            "close": [1.1, 1.1, 1.3],
            "source_file": ["b.csv"] * 3,
            "source_line": [1, 2, 3],
        }
    ).lazy()
    kept, rejected = pl.collect_all(clean_bars(frame, spec=SPEC))
    assert reasons(rejected) == {2: "inconsistent_ohlc", 3: "inconsistent_ohlc"}
    assert kept.height == 1


def test_every_row_is_kept_or_quarantined_on_a_messy_random_batch():
    rng = np.random.default_rng(3)
    rows = random_walk(3000, 4, spikes=[(int(i), 40 * INC) for i in rng.choice(3000, 15)])
    for i in rng.choice(3000, 200, replace=False):  # crossed, locked, bad, repeated, late
        ts, b, a = rows[i]
        rows[i] = [(ts, a, b), (ts, b, b), (ts, -b, a), rows[i - 1], (ts - 5000, b, a)][i % 5]
    kept, rejected, _ = run(quotes(rows))
    assert kept.height + rejected.height == len(rows)
    lines = sorted([*kept["source_line"], *rejected["source_line"]])
    assert lines == list(range(1, len(rows) + 1))  # each row exactly once
    assert set(rejected["reason"]) >= {"crossed_quote", "non_positive_price", "out_of_order"}


def test_rows_in_equal_kept_plus_quarantined_on_real_fxcm_day(shared_data):
    from pipelines.readers import read

    path = shared_data / "quantconnect-lean/forex/fxcm/tick/eurusd/20140501_quote.zip"
    result = read(path, fmt="lean", spec=SPEC)
    frame = result.frame.collect()
    kept, rejected = pl.collect_all(clean_quotes(frame.lazy(), spec=SPEC))
    assert kept.height + rejected.height == frame.height
    assert frame.height + result.rejects.collect().height == result.rows_in
    crossed = frame.filter(pl.col("bid_price") - pl.col("ask_price") >= 0.5 * INC).height
    assert crossed > 0.05 * frame.height  # the FXCM sample's ~10% crossed quotes
    by_reason = dict(rejected.group_by("reason").len().iter_rows())
    assert by_reason["crossed_quote"] == crossed  # spec EURUSD: crossed -> drop
    assert kept["ts_event"].is_sorted()
    assert (kept["ask_price"] - kept["bid_price"] > -0.5 * INC).all()


def test_materializing_checkpoints_give_the_same_split_as_the_lazy_plan():
    rows = random_walk(2000, 5, spikes=[(500, 400 * INC), (1500, -400 * INC)])
    rows[100] = (rows[100][0], rows[100][2], rows[100][1])  # crossed
    rows[200] = rows[199]  # duplicate
    lazy = clean(quotes(rows), table="quotes", spec=SPEC)
    eager = clean(
        quotes(rows), table="quotes", spec=SPEC, checkpoint=lambda lf: lf.collect().lazy()
    )
    for a, b in zip(
        pl.collect_all([lazy.kept, lazy.rejected]), [eager.kept.collect(), eager.rejected.collect()]
    ):
        assert a.equals(b)
    assert set(eager.rejected.collect()["reason"]) == {"crossed_quote", "duplicate", "spike"}
