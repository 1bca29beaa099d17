"""What the backtest reads: forecasts, bars (files or the store), and how they line up.

A forecast made at ``ts_event`` t (a bar's close) acts from the first bar whose
``ts_event >= t``, for at most ``horizon`` bars or until the next forecast. Inputs that cannot
be lined up that way are bad input: :class:`BacktestInputError` carries one line naming the
problem, and the CLI turns it into exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.schemas import BARS, FORECASTS, check_schema
from data_specs.spec import InstrumentSpec

BAR_COLUMNS = ["ts_event", "ts_close", "open", "close", "bid_open", "ask_open"]


class BacktestInputError(ValueError):
    """Bad input: wrong schema or instrument, misaligned timestamps, empty forecasts."""


def read_forecasts(path: Path) -> pl.DataFrame:
    """Read a FORECASTS Parquet file, raising ``BacktestInputError`` on a wrong schema."""
    if not path.is_file():
        raise BacktestInputError(f"{path}: forecasts file not found")
    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file is bad input
        raise BacktestInputError(f"{path}: not a readable Parquet file ({err})") from err
    try:
        check_schema(frame, FORECASTS, what=str(path))
    except ValueError as err:
        raise BacktestInputError(f"{err} (FORECASTS schema)") from err
    return frame.select(list(FORECASTS))


def read_bars(path: Path, instrument_id: str) -> pl.DataFrame:
    """Read BARS rows of ``instrument_id`` from a Parquet file."""
    if not path.is_file():
        raise BacktestInputError(f"{path}: bars file not found")
    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001
        raise BacktestInputError(f"{path}: not a readable Parquet file ({err})") from err
    return check_bars(frame, instrument_id, str(path))


def check_bars(frame: pl.DataFrame, instrument_id: str, where: str) -> pl.DataFrame:
    """Return ``instrument_id``'s bars sorted and unique by ``ts_event``, or raise one line.

    Only the columns the backtest uses must be present (``BAR_COLUMNS``, BARS dtypes); bid/ask
    may be null, in which case the spec's typical spread is charged.
    """
    try:
        check_schema(frame, pl.Schema({c: BARS[c] for c in BAR_COLUMNS}), what=where)
    except ValueError as err:
        raise BacktestInputError(f"{err} (BARS schema)") from err
    if "instrument_id" in frame.columns:
        have = sorted(map(str, frame.get_column("instrument_id").unique().to_list()))
        frame = frame.filter(pl.col("instrument_id") == instrument_id)
        if frame.is_empty() and have:
            message = f"{where}: bars are for {have}, not for instrument {instrument_id}"
            raise BacktestInputError(message)
    if frame.is_empty():
        raise BacktestInputError(f"{where}: no bars for instrument {instrument_id}")
    return frame.sort("ts_event").unique("ts_event", keep="last", maintain_order=True)


def check_inputs(forecasts: pl.DataFrame, bars: pl.DataFrame, spec: InstrumentSpec) -> None:
    """Raise ``BacktestInputError`` naming the first problem with ``forecasts`` vs ``bars``."""
    if forecasts.is_empty():
        raise BacktestInputError("forecasts: empty (no rows to trade)")
    ids = forecasts.get_column("instrument_id").unique().to_list()
    if ids != [spec.instrument_id]:
        message = f"forecasts: instrument_id {sorted(map(str, ids))} != {spec.instrument_id}"
        raise BacktestInputError(message)
    dup = forecasts.filter(pl.struct("model", "ts_event").is_duplicated())
    if not dup.is_empty():
        row = dup.row(0, named=True)
        model, ts = row["model"], row["ts_event"]
        message = f"forecasts: duplicate rows for model {model} at ts_event {ts} ({iso(ts)})"
        raise BacktestInputError(message)
    closes = bars.get_column("ts_close").to_numpy()
    ts = forecasts.get_column("ts_event").to_numpy()
    aligned = np.isin(ts, closes)
    if not aligned.all():
        bad = int(ts[~aligned][0])
        n_bad = int((~aligned).sum())
        message = (
            f"forecasts: {n_bad} ts_event values match no bar close, first {bad} "
            f"({iso(bad)}); bars close between {iso(closes.min())} and {iso(closes.max())}"
        )
        raise BacktestInputError(message)


def iso(ns: int) -> str:
    """Return UTC nanoseconds as an ISO 8601 string (for messages and the scorecard)."""
    return str(np.datetime64(int(ns), "ns"))


def window_bars(forecasts: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    """Return the bars the forecasts act on: from the first forecast to the last + horizon."""
    first = forecasts.get_column("ts_event").min()
    last = forecasts.get_column("ts_event").max()
    horizon = int(forecasts.get_column("horizon").max())
    after = bars.filter(pl.col("ts_event") >= first)
    n_tail = int((after.get_column("ts_event") <= last).sum()) + horizon
    return after.head(n_tail)


def bar_seconds(bars: pl.DataFrame) -> float:
    """Return the median bar length in seconds (``ts_close - ts_event``)."""
    length = (bars.get_column("ts_close") - bars.get_column("ts_event")).median()
    return float(length) / 1e9


def positions_on_bars(signal: pl.DataFrame, bar_ts: np.ndarray) -> np.ndarray:
    """Spread forecast-time positions over bars: bar k takes the last forecast made at or
    before its start, for at most ``horizon`` bars; flat elsewhere. Shape (n_bars,)."""
    ts = signal.get_column("ts_event").to_numpy()
    source = forecast_in_force(ts, signal.get_column("horizon").to_numpy(), bar_ts)
    position = signal.get_column("position").to_numpy()
    return np.where(source >= 0, position[np.maximum(source, 0)], 0.0)


def forecast_in_force(ts: np.ndarray, horizon: np.ndarray, bar_ts: np.ndarray) -> np.ndarray:
    """Return, per bar, the row index of the forecast in force (-1 where none).

    ``ts`` must be sorted. A forecast made at ``ts`` acts from the first bar with
    ``ts_event >= ts`` for ``horizon`` bars or until the next forecast, whichever is first.
    """
    start = np.searchsorted(bar_ts, ts, side="left")  # first bar with ts_event >= forecast
    k = np.arange(len(bar_ts))
    last = np.searchsorted(start, k, side="right") - 1  # latest forecast started by bar k
    last = np.minimum(last, len(ts) - 1)
    safe = np.maximum(last, 0)
    alive = (last >= 0) & (k - start[safe] < horizon[safe]) if len(ts) else k < 0
    return np.where(alive, last, -1)


# ---- run folders: bars from the store ---------------------------------------------------


def run_bars(
    run: Path,
    instrument_id: str,
    forecasts: pl.DataFrame,
    *,
    bars_path: Path | None = None,
    store: Path | None = None,
) -> pl.DataFrame:
    """Return the checked bars of a run: from a BARS Parquet file, else from the store.

    The one place where the CLIs' ``--bars PATH`` / ``--store PATH`` options become bars.
    With ``bars_path``, that file is read (:func:`read_bars`); otherwise the bars the run was
    trained on are read through the store (:func:`load_run_bars`, ``store`` or the run's
    ``config.json``). Either way they are checked by :func:`check_bars`: ``instrument_id``'s
    rows only, sorted and unique by ``ts_event``.

    Raises
    ------
    BacktestInputError
        Both sources given, a missing or unreadable file or store, a wrong schema, no bars of
        ``instrument_id``; the message names the file, the store root or the run folder.
    """
    if bars_path is not None and store is not None:
        raise BacktestInputError(f"--bars {bars_path} and --store {store}: give one, not both")
    if bars_path is not None:
        return read_bars(bars_path, instrument_id)
    bars = load_run_bars(run, instrument_id, forecasts, store)
    return check_bars(bars, instrument_id, str(store or run))


def load_run_bars(
    run: Path, instrument_id: str, forecasts: pl.DataFrame, store: Path | None
) -> pl.DataFrame:
    """Return the bars a run was trained on, read through ``pipelines.store.Store``.

    The store root is ``store`` if given, else ``config.json``'s ``data.store``, else the
    built-in synthetic store (``pipelines.synthetic.default_store``, deterministic, rebuilt if
    absent). Bars are scanned over the forecasts' time range plus a margin and, where the
    run's ``data.bar`` is a multiple of the stored bar length, aggregated to it (UTC-aligned
    windows, as the training side does). Without a bar length in the config, the stored length
    whose closes match the most forecast timestamps is kept.
    """
    config: dict = {}
    if (run / "config.json").is_file():
        try:
            config = json.loads((run / "config.json").read_text())
        except json.JSONDecodeError as err:
            raise BacktestInputError(f"{run / 'config.json'}: not valid JSON ({err})") from err
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    try:
        from pipelines.store import Store
    except ImportError as err:
        raise BacktestInputError(f"pipelines.store is not available ({err}); use --bars") from err
    root = store or data.get("store")
    if root is None:
        from pipelines.synthetic import default_store

        root = default_store(instrument_id=instrument_id)
    if not Path(root).is_dir():
        raise BacktestInputError(f"{root}: store root not found")
    ts = forecasts.get_column("ts_event")
    day = 86_400 * 10**9
    start, end = int(ts.min()) - 7 * day, int(ts.max()) + 8 * day  # regime warm-up, horizon
    try:
        bars = Store(Path(root)).scan("bars", instrument_id, start=start, end=end).collect()
    except Exception as err:  # noqa: BLE001 - the store's own message names the problem
        raise BacktestInputError(f"{root}: cannot read bars for {instrument_id} ({err})") from err
    every = data.get("bar")
    if isinstance(every, str) and bars.height:
        want = _duration_ns(every)
        native = int((bars.get_column("ts_close") - bars.get_column("ts_event")).median())
        if want != native:
            if want % native:
                message = f"{root}: stored {native // 10**9}s bars cannot make the run's {every}"
                raise BacktestInputError(message)
            from pipelines.bars import resample_bars

            bars = resample_bars(bars.lazy(), every=every).collect()
    return bars_matching(bars.sort("ts_event"), ts.to_numpy())


def _duration_ns(every: str) -> int:
    units = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86_400 * 10**9}
    try:
        return int(every[:-1]) * units[every[-1]]
    except (KeyError, ValueError) as err:
        raise BacktestInputError(f"config.json: bar length {every!r} is not like 15m/1h") from err


def bars_matching(bars: pl.DataFrame, forecast_ts: np.ndarray) -> pl.DataFrame:
    """Keep the bar length (``ts_close - ts_event``) whose closes match most forecasts."""
    length = bars.get_column("ts_close") - bars.get_column("ts_event")
    lengths = length.unique().to_list()
    if len(lengths) <= 1:
        return bars
    matches = {
        n: int(np.isin(forecast_ts, bars.filter(length == n).get_column("ts_close")).sum())
        for n in lengths
    }
    best = max(matches, key=matches.get)
    return bars.filter(length == best)
