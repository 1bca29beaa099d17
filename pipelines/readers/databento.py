"""Databento DBN files (zstd or plain) for CME futures -> QUOTES, TRADES or BARS.

Decoded with the ``databento_dbn`` package. By schema:

============ ===========================================================================
mbp-1, tbbo, quotes: the top of book each record carries (``bid_px_00``...); with
mbp-10,      ``table="trades"`` (not bbo), the trade records (action ``T``) instead
bbo-1s/1m
mbo          quotes: the book rebuilt order by order (add/cancel/modify/clear), its top
             emitted at the end of each event (flag ``F_LAST``, or the last snapshot
             record) when it changed; snapshot records carry the time of the original
             order, so the snapshot's quote is stamped with ``ts_recv`` (snapshot time).
             With ``table="trades"``, the trade records (action ``T``)
trades       trades
ohlcv-*      bars (1 s, 1 min, 1 h, 1 day), trade OHLC and volume
============ ===========================================================================

Prices are int64 ×1e-9 (undefined prices become null); ``ts_event`` is uint64 ns UTC.
Records are mapped to the spec through the file's symbology: raw symbols such as ``ESU4`` must
be the spec's futures root plus a contract month (``ES`` + ``U4``) or a parent/continuous symbol
(``ES.FUT``, ``ES.c.0``); records of other instruments are skipped (counted in ``skipped``), and a
file with no symbol of the spec's root is refused. Trade aggressor: ``B`` buy, ``A`` (ask side
initiated a sell) -> ``S``, else ``N``. ``source_line`` is the 1-based record number.
"""

from __future__ import annotations

import bisect
import re
from operator import attrgetter
from pathlib import Path

import databento_dbn as dbn
import polars as pl
import pyarrow as pa

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.ohlc import finish_bars
from pipelines.readers.result import ReadResult, build_result
from pipelines.readers.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, NS_PER_S

PRICE_DIVISOR = 1e9  # int64 nano-units; dividing rounds exactly (4800.25, not 4800.2500000000005)
UNDEF_PRICE = dbn.UNDEF_PRICE
QUOTE_SCHEMAS = ("mbp-1", "tbbo", "bbo-1s", "bbo-1m", "mbp-10", "cbbo-1s", "cbbo-1m")
BAR_SCHEMAS = {
    "ohlcv-1s": NS_PER_S,
    "ohlcv-1m": NS_PER_MINUTE,
    "ohlcv-1h": NS_PER_HOUR,
    "ohlcv-1d": NS_PER_DAY,
}
_AGGRESSOR = {"B": "B", "A": "S"}


def decode(path: str | Path) -> tuple[dbn.Metadata, list]:
    """Return the metadata and records of a DBN file (zstd-compressed or not)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError("file not found", path=path)
    raw = path.read_bytes()
    if not raw:
        raise PipelineError("empty file", path=path)
    if raw[:4] == b"\x28\xb5\x2f\xfd":  # zstd frame magic
        try:
            raw = pa.input_stream(pa.BufferReader(raw), compression="zstd").read()
        except (OSError, pa.ArrowInvalid) as err:
            raise PipelineError(f"truncated or corrupt zstd ({err})", path=path) from err
    decoder = dbn.DBNDecoder()
    try:
        decoder.write(raw)
        records = decoder.decode()
    except (dbn.DBNError, ValueError) as err:
        raise PipelineError(f"not a readable DBN file ({err})", path=path) from err
    if not records or not isinstance(records[0], dbn.Metadata):
        raise PipelineError("not a DBN file (no metadata header)", path=path)
    leftover = len(decoder.buffer()) if hasattr(decoder, "buffer") else 0
    if leftover:
        raise PipelineError(f"truncated DBN file ({leftover} bytes of a partial record)", path=path)
    return records[0], records[1:]


def instrument_ids(metadata: dbn.Metadata, spec: InstrumentSpec, path: str | Path) -> set[int]:
    """Return the DBN instrument ids whose symbols belong to ``spec``; refuse if there are none."""
    if spec.contract is None:
        message = f"wrong instrument: Databento files hold futures, {spec.instrument_id} is FX"
        raise PipelineError(message, path=path)
    root = re.escape(spec.contract.root)
    pattern = re.compile(rf"^{root}(?:[FGHJKMNQUVXZ]\d{{1,2}}|\.FUT|\.[cnv]\.\d+)$")
    mappings = metadata.mappings or {}
    symbols = list(mappings) or list(metadata.symbols or [])
    matching = [s for s in symbols if pattern.match(s)]
    if symbols and all(s.isdigit() for s in symbols):
        message = (
            "the file is requested by instrument_id, so its symbols cannot be checked against "
            f"{spec.contract.root}; request raw_symbol or parent symbology"
        )
        raise PipelineError(message, path=path)
    if not matching:
        held = ", ".join(symbols) or "no symbols"
        message = f"wrong instrument: the file holds {held}, the spec root is {spec.contract.root}"
        raise PipelineError(message, path=path)
    ids: set[int] = set()
    for symbol in matching:
        for interval in mappings.get(symbol, []):
            value = interval["symbol"] if isinstance(interval, dict) else interval.symbol
            if str(value).isdigit():
                ids.add(int(value))
    return ids


def read_databento(
    path: str | Path, *, spec: InstrumentSpec, table: str | None = None
) -> ReadResult:
    """Read a DBN file into QUOTES, TRADES or BARS (see the module doc)."""
    metadata, records = decode(path)
    schema = str(metadata.schema) if metadata.schema is not None else ""
    ids = instrument_ids(metadata, spec, path)
    if ids:
        mine = [(n, r) for n, r in enumerate(records, start=1) if r.instrument_id in ids]
    else:  # no symbology to map through: every record is the spec's symbol
        mine = list(enumerate(records, start=1))
    skipped = len(records) - len(mine)
    if schema in BAR_SCHEMAS:
        return _bars(mine, spec, path, BAR_SCHEMAS[schema], skipped, table)
    want = table or ("trades" if schema == "trades" else "quotes")
    if want not in {"quotes", "trades"}:
        raise PipelineError(f"table must be 'quotes' or 'trades', got {table!r}", path=path)
    if want == "trades":
        if schema not in {"trades", "mbo", "mbp-1", "tbbo", "mbp-10"}:
            raise PipelineError(f"DBN schema {schema!r} holds no trades", path=path)
        trades = [(n, r) for n, r in mine if r.action == "T"]
        return _trades(trades, spec, path, skipped + len(mine) - len(trades))
    if schema in QUOTE_SCHEMAS:
        return _quotes(mine, spec, path, skipped)
    if schema == "mbo":
        return _mbo_quotes(mine, spec, path, skipped)
    raise PipelineError(f"DBN schema {schema!r} holds no quotes, trades or bars", path=path)


def _price(column: str) -> pl.Expr:
    return (
        pl.when(pl.col(column) != UNDEF_PRICE)
        .then(pl.col(column).cast(pl.Float64) / PRICE_DIVISOR)
        .alias(column)
    )


def _quotes(mine, spec, path, skipped) -> ReadResult:
    fields = ("ts_event", "bid_px_00", "ask_px_00", "bid_sz_00", "ask_sz_00")
    get = attrgetter(*fields)
    rows = [(n, *get(r)) for n, r in mine]
    frame = pl.DataFrame(
        rows,
        schema={
            "source_line": pl.Int64,
            "ts_event": pl.UInt64,
            "bid": pl.Int64,
            "ask": pl.Int64,
            "bid_size": pl.Float64,
            "ask_size": pl.Float64,
        },
        orient="row",
    )
    frame = frame.with_columns(
        pl.col("ts_event").cast(pl.Int64),
        _price("bid").alias("bid_price"),
        _price("ask").alias("ask_price"),
    ).with_columns(
        pl.when(pl.col("bid_price").is_not_null()).then(pl.col("bid_size")).alias("bid_size"),
        pl.when(pl.col("ask_price").is_not_null()).then(pl.col("ask_size")).alias("ask_size"),
    )
    return build_result(
        "quotes",
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped,
    )


def _trades(mine, spec, path, skipped) -> ReadResult:
    get = attrgetter("ts_event", "price", "size", "side")
    rows = [(n, stamp, price, size, str(side)) for n, (stamp, price, size, side) in _get(get, mine)]
    frame = pl.DataFrame(
        rows,
        schema={
            "source_line": pl.Int64,
            "ts_event": pl.UInt64,
            "price": pl.Int64,
            "size": pl.Float64,
            "side": pl.String,
        },
        orient="row",
    ).with_columns(
        pl.col("ts_event").cast(pl.Int64),
        _price("price"),
        pl.col("side").replace_strict(_AGGRESSOR, default="N").alias("aggressor_side"),
    )
    return build_result(
        "trades",
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped,
    )


def _bars(mine, spec, path, duration_ns, skipped, table) -> ReadResult:
    if table not in (None, "bars"):
        raise PipelineError(f"an OHLCV file reads only as bars, not {table!r}", path=path)
    get = attrgetter("ts_event", "open", "high", "low", "close", "volume")
    rows = [(n, *get(r)) for n, r in mine]
    frame = pl.DataFrame(
        rows,
        schema={
            "source_line": pl.Int64,
            "ts_event": pl.UInt64,
            "open": pl.Int64,
            "high": pl.Int64,
            "low": pl.Int64,
            "close": pl.Int64,
            "volume": pl.Float64,
        },
        orient="row",
    ).with_columns(
        pl.col("ts_event").cast(pl.Int64), *(_price(c) for c in ("open", "high", "low", "close"))
    )
    return build_result(
        "bars",
        finish_bars(frame, duration_ns=duration_ns),
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped,
    )


def _get(get: attrgetter, mine: list) -> list:
    return [(n, get(r)) for n, r in mine]


class _Book:
    """One instrument's order book: orders by id and aggregated sizes by price level."""

    def __init__(self) -> None:
        self.orders: dict[int, tuple[str, int, int]] = {}
        self.levels: dict[str, dict[int, int]] = {"B": {}, "A": {}}
        self.prices: dict[str, list[int]] = {"B": [], "A": []}  # sorted ascending

    def clear(self) -> None:
        self.__init__()

    def _change(self, side: str, price: int, delta: int) -> None:
        levels, prices = self.levels[side], self.prices[side]
        size = levels.get(price, 0) + delta
        if size > 0:
            if price not in levels:
                bisect.insort(prices, price)
            levels[price] = size
        elif price in levels:
            del levels[price]
            del prices[bisect.bisect_left(prices, price)]

    def add(self, order_id: int, side: str, price: int, size: int) -> None:
        if side not in self.levels or price == UNDEF_PRICE:
            return
        if order_id in self.orders:
            self.cancel(order_id, self.orders[order_id][2])
        self.orders[order_id] = (side, price, size)
        self._change(side, price, size)

    def cancel(self, order_id: int, size: int) -> None:
        order = self.orders.get(order_id)
        if order is None:
            return
        side, price, held = order
        taken = min(size, held)
        self._change(side, price, -taken)
        if held - taken > 0:
            self.orders[order_id] = (side, price, held - taken)
        else:
            del self.orders[order_id]

    def modify(self, order_id: int, side: str, price: int, size: int) -> None:
        order = self.orders.pop(order_id, None)
        if order is not None:
            self._change(order[0], order[1], -order[2])
        self.add(order_id, side, price, size)

    def top(self) -> tuple[int | None, int | None, int, int]:
        bids, asks = self.prices["B"], self.prices["A"]
        bid = bids[-1] if bids else None
        ask = asks[0] if asks else None
        bid_size = self.levels["B"][bid] if bid is not None else 0
        ask_size = self.levels["A"][ask] if ask is not None else 0
        return bid, ask, bid_size, ask_size


def _mbo_quotes(mine, spec, path, skipped) -> ReadResult:
    books: dict[int, _Book] = {}
    last: dict[int, tuple] = {}
    rows = []
    last_flag, snapshot_flag = dbn.F_LAST, dbn.F_SNAPSHOT
    for index, (n, record) in enumerate(mine):
        book = books.setdefault(record.instrument_id, _Book())
        action = record.action
        if action == "A":
            book.add(record.order_id, str(record.side), record.price, record.size)
        elif action == "C":
            book.cancel(record.order_id, record.size)
        elif action == "M":
            book.modify(record.order_id, str(record.side), record.price, record.size)
        elif action == "R":
            book.clear()
        flags = int(record.flags)
        if flags & snapshot_flag and not flags & last_flag:
            # a snapshot ends where the live stream starts, flagged LAST or not
            following = mine[index + 1][1] if index + 1 < len(mine) else None
            if following is None or not int(following.flags) & snapshot_flag:
                flags |= last_flag
        if not flags & last_flag:
            continue
        top = book.top()
        if last.get(record.instrument_id) == top:
            continue
        last[record.instrument_id] = top
        stamp = record.ts_recv if flags & snapshot_flag else record.ts_event
        rows.append((n, stamp, *top))
    frame = (
        pl.DataFrame(
            rows,
            schema={
                "source_line": pl.Int64,
                "ts_event": pl.UInt64,
                "bid": pl.Int64,
                "ask": pl.Int64,
                "bid_size": pl.Float64,
                "ask_size": pl.Float64,
            },
            orient="row",
        )
        .with_columns(
            pl.col("ts_event").cast(pl.Int64),
            (pl.col("bid").cast(pl.Float64) / PRICE_DIVISOR).alias("bid_price"),
            (pl.col("ask").cast(pl.Float64) / PRICE_DIVISOR).alias("ask_price"),
        )
        .with_columns(
            pl.when(pl.col("bid_price").is_not_null()).then(pl.col("bid_size")).alias("bid_size"),
            pl.when(pl.col("ask_price").is_not_null()).then(pl.col("ask_size")).alias("ask_size"),
        )
    )
    return build_result(
        "quotes",
        frame,
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped + len(mine) - frame.height,
    )
