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
``databento_dbn`` decodes the metadata (schema, symbology); the fixed-size records of the
file's one record type are then read as a NumPy structured array, which is ~50x faster than
walking ``databento_dbn`` record objects. ``engine="records"`` walks the record objects
instead: it is the reference the NumPy path is tested against, and the fallback for files that
mix record types.
Records are mapped to the spec through the file's symbology: raw symbols such as ``ESU4`` must
be the spec's futures root plus a contract month (``ES`` + ``U4``) or a parent/continuous symbol
(``ES.FUT``, ``ES.c.0``; a parent symbol also maps spreads, which are then kept); records of other
instruments are skipped (counted in ``skipped``), and a file with no symbol of the spec's root is
refused. Of several contracts of the root only the most active is read unless ``contract=`` says
``"all"`` or names one (``"ESU4"``). Trade aggressor: ``B`` buy, ``A`` (ask side
initiated a sell) -> ``S``, else ``N``. ``source_line`` is the 1-based record number.
"""

from __future__ import annotations

import bisect
import re
import struct
from operator import attrgetter
from pathlib import Path

import databento_dbn as dbn
import numpy as np
import polars as pl
import pyarrow as pa

from data_specs.spec import InstrumentSpec
from pipelines.errors import PipelineError
from pipelines.readers.ohlc import finish_bars
from pipelines.readers.result import ReadResult, build_result
from pipelines.readers.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_MINUTE, NS_PER_S

PRICE_DIVISOR = 1e9  # int64 nano-units; dividing rounds exactly (4800.25, not 4800.2500000000005)
UNDEF_PRICE = dbn.UNDEF_PRICE
QUOTE_SCHEMAS = ("mbp-1", "tbbo", "bbo-1s", "bbo-1m", "mbp-10")
TRADE_SCHEMAS = ("trades", "mbo", "mbp-1", "tbbo", "mbp-10")
BAR_SCHEMAS = {
    "ohlcv-1s": NS_PER_S,
    "ohlcv-1m": NS_PER_MINUTE,
    "ohlcv-1h": NS_PER_HOUR,
    "ohlcv-1d": NS_PER_DAY,
}
_AGGRESSOR = {"B": "B", "A": "S"}

# DBN v2/v3 record layouts (little-endian, packed), by schema
_HEADER = [
    ("length", "u1"),  # record length in 4-byte words
    ("rtype", "u1"),
    ("publisher_id", "<u2"),
    ("instrument_id", "<u4"),
    ("ts_event", "<u8"),
]
_TRADE = [
    *_HEADER,
    ("price", "<i8"),
    ("size", "<u4"),
    ("action", "S1"),
    ("side", "S1"),
    ("flags", "u1"),
    ("depth", "u1"),
    ("ts_recv", "<u8"),
    ("ts_in_delta", "<i4"),
    ("sequence", "<u4"),
]


def _levels(count: int) -> list[tuple[str, str]]:
    fields = []
    for level in range(count):
        for name, kind in (("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4")):
            fields.append((f"{name}_{level:02d}", kind))
        for name in ("ask_sz", "bid_ct", "ask_ct"):
            fields.append((f"{name}_{level:02d}", "<u4"))
    return fields


_MBO = [
    *_HEADER,
    ("order_id", "<u8"),
    ("price", "<i8"),
    ("size", "<u4"),
    ("flags", "u1"),
    ("channel_id", "u1"),
    ("action", "S1"),
    ("side", "S1"),
    ("ts_recv", "<u8"),
    ("ts_in_delta", "<i4"),
    ("sequence", "<u4"),
]
_BBO = [
    *_HEADER,
    ("price", "<i8"),
    ("size", "<u4"),
    ("reserved1", "u1"),
    ("side", "S1"),
    ("flags", "u1"),
    ("reserved2", "u1"),
    ("ts_recv", "<u8"),
    ("reserved3", "V4"),
    ("sequence", "<u4"),
    *_levels(1),
]
_OHLCV = [*_HEADER, *((name, "<i8") for name in ("open", "high", "low", "close"))]
_OHLCV.append(("volume", "<u8"))
RECORD_DTYPES = {
    "mbo": np.dtype(_MBO),
    "trades": np.dtype(_TRADE),
    "mbp-1": np.dtype(_TRADE + _levels(1)),
    "tbbo": np.dtype(_TRADE + _levels(1)),
    "mbp-10": np.dtype(_TRADE + _levels(10)),
    "bbo-1s": np.dtype(_BBO),
    "bbo-1m": np.dtype(_BBO),
    **{schema: np.dtype(_OHLCV) for schema in BAR_SCHEMAS},
}
_OBJECT_DTYPES = {"ts_event": np.uint64, "ts_recv": np.uint64, "order_id": np.uint64}
# the columns each use needs
_BOOK = ("bid_px_00", "ask_px_00", "bid_sz_00", "ask_sz_00")
COLUMNS = {
    "mbo": ("ts_event", "ts_recv", "order_id", "price", "size", "flags", "action", "side"),
    "trades": ("ts_event", "price", "size", "action", "side"),
    "mbp-1": ("ts_event", "price", "size", "action", "side", *_BOOK),
    "tbbo": ("ts_event", "price", "size", "action", "side", *_BOOK),
    "mbp-10": ("ts_event", "price", "size", "action", "side", *_BOOK),
    "bbo-1s": ("ts_event", *_BOOK),
    "bbo-1m": ("ts_event", *_BOOK),
    **{schema: ("ts_event", "open", "high", "low", "close", "volume") for schema in BAR_SCHEMAS},
}


def _raw_bytes(path: Path) -> bytes:
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
    if raw[:3] != b"DBN" or len(raw) < 8:
        raise PipelineError("not a DBN file (no DBN header)", path=path)
    return raw


def _decode_objects(raw: bytes, path: Path) -> list:
    decoder = dbn.DBNDecoder()
    try:
        decoder.write(raw)
        records = decoder.decode()
    except (dbn.DBNError, ValueError) as err:
        raise PipelineError(f"not a readable DBN file ({err})", path=path) from err
    if not records or not isinstance(records[0], dbn.Metadata):
        raise PipelineError("not a DBN file (no metadata header)", path=path)
    leftover = len(decoder.buffer())
    if leftover:
        raise PipelineError(f"truncated DBN file ({leftover} bytes of a partial record)", path=path)
    return records


def decode_columns(
    path: str | Path, *, engine: str = "numpy"
) -> tuple[dbn.Metadata, dict[str, np.ndarray]]:
    """Return the metadata and the records of a DBN file as columns (NumPy arrays).

    Columns are ``instrument_id`` plus those ``COLUMNS[schema]`` lists; ``action`` and ``side``
    are one-character strings. ``engine="numpy"`` views the records as a structured array (one
    record type per file; otherwise it falls back to ``"records"``, which walks the
    ``databento_dbn`` record objects: the reference).
    """
    path = Path(path)
    raw = _raw_bytes(path)
    (length,) = struct.unpack_from("<I", raw, 4)
    start = 8 + length
    metadata = _decode_objects(raw[:start], path)[0]
    schema = str(metadata.schema) if metadata.schema is not None else ""
    names = ("instrument_id", *COLUMNS.get(schema, ("ts_event",)))
    dtype = RECORD_DTYPES.get(schema)
    body = raw[start:]
    if engine == "numpy" and dtype is not None:
        columns = _numpy_columns(body, dtype, names, path)
        if columns is not None:
            return metadata, columns
    records = _decode_objects(raw, path)[1:]
    return metadata, _object_columns(records, names)


def _numpy_columns(body: bytes, dtype: np.dtype, names, path: Path) -> dict | None:
    if len(body) % dtype.itemsize:
        if body and body[0] * 4 == dtype.itemsize:  # right record type, cut short
            partial = len(body) % dtype.itemsize
            message = f"truncated DBN file ({partial} bytes of a partial record)"
            raise PipelineError(message, path=path)
        return None
    records = np.frombuffer(body, dtype=dtype)
    if len(records) and (
        (records["length"].astype(np.int64) * 4 != dtype.itemsize).any()
        or (records["rtype"] != records["rtype"][0]).any()
    ):
        return None  # mixed record types: let databento_dbn walk them
    columns = {}
    for name in names:
        values = records[name]
        if values.dtype.kind == "S":
            values = values.astype("U1")
        columns[name] = values
    return columns


def _object_columns(records: list, names) -> dict[str, np.ndarray]:
    get = attrgetter(*names)
    rows = [get(record) for record in records]
    columns = {}
    for position, name in enumerate(names):
        values = [row[position] for row in rows]
        if name in ("action", "side"):
            columns[name] = np.array([str(v) for v in values], dtype="U1")
        else:
            columns[name] = np.array(values, dtype=_OBJECT_DTYPES.get(name, np.int64))
    return columns


def instrument_ids(
    metadata: dbn.Metadata, spec: InstrumentSpec, path: str | Path
) -> dict[str, set[int]]:
    """Return symbol -> DBN instrument ids for the symbols of ``spec``; refuse if there are none.

    An empty id set means the file has no symbology to map through (its records are taken as
    that symbol's).
    """
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
    ids: dict[str, set[int]] = {}
    for symbol in matching:
        ids[symbol] = set()
        for interval in mappings.get(symbol, []):
            value = interval["symbol"] if isinstance(interval, dict) else interval.symbol
            if str(value).isdigit():
                ids[symbol].add(int(value))
    return ids


def choose_symbols(
    ids: dict[str, set[int]], instrument: np.ndarray, contract: str | None, path: str | Path
) -> set[int]:
    """Return the instrument ids to keep: one contract unless ``contract="all"``.

    ``contract=None`` keeps the symbol with the most records (the most active contract), so
    prices of different expiries are never mixed under one instrument id; ``"all"`` keeps every
    symbol of the spec's root; a raw symbol (``"ESU4"``) keeps that one.
    """
    if contract == "all":
        return set().union(*ids.values())
    if contract is not None:
        if contract not in ids:
            have = ", ".join(sorted(ids))
            raise PipelineError(f"no symbol {contract} in the file (has {have})", path=path)
        return ids[contract]
    if len(ids) == 1:
        return next(iter(ids.values()))
    counts = {s: int(np.isin(instrument, np.fromiter(v, np.int64)).sum()) for s, v in ids.items()}
    return ids[max(sorted(counts), key=lambda s: counts[s])]


def read_databento(
    path: str | Path,
    *,
    spec: InstrumentSpec,
    table: str | None = None,
    contract: str | None = None,
    engine: str = "numpy",
) -> ReadResult:
    """Read a DBN file into QUOTES, TRADES or BARS (see the module doc).

    ``contract`` picks among several symbols of the spec's root (see ``choose_symbols``).
    """
    metadata, columns = decode_columns(path, engine=engine)
    schema = str(metadata.schema) if metadata.schema is not None else ""
    ids = choose_symbols(
        instrument_ids(metadata, spec, path), columns["instrument_id"], contract, path
    )
    total = len(columns["instrument_id"])
    line = np.arange(1, total + 1, dtype=np.int64)
    if ids:  # without symbology to map through, every record is the spec's symbol
        mask = np.isin(columns["instrument_id"], np.fromiter(ids, dtype=np.int64))
        columns = {name: values[mask] for name, values in columns.items()}
        line = line[mask]
    columns["source_line"] = line
    skipped = total - len(line)
    if schema in BAR_SCHEMAS:
        if table not in (None, "bars"):
            raise PipelineError(f"an OHLCV file reads only as bars, not {table!r}", path=path)
        return _bars(columns, spec, path, BAR_SCHEMAS[schema], skipped)
    want = table or ("trades" if schema == "trades" else "quotes")
    if want not in {"quotes", "trades"}:
        raise PipelineError(f"table must be 'quotes' or 'trades', got {table!r}", path=path)
    if want == "trades":
        if schema not in TRADE_SCHEMAS:
            raise PipelineError(f"DBN schema {schema!r} holds no trades", path=path)
        trade = columns["action"] == "T"
        kept = {name: values[trade] for name, values in columns.items()}
        return _trades(kept, spec, path, skipped + len(line) - int(trade.sum()))
    if schema in QUOTE_SCHEMAS:
        return _quotes(columns, spec, path, skipped)
    if schema == "mbo":
        return _mbo_quotes(columns, spec, path, skipped)
    raise PipelineError(f"DBN schema {schema!r} holds no quotes, trades or bars", path=path)


def _price(column: str) -> pl.Expr:
    return (
        pl.when(pl.col(column) != UNDEF_PRICE)
        .then(pl.col(column).cast(pl.Float64) / PRICE_DIVISOR)
        .alias(column)
    )


def _frame(columns: dict[str, np.ndarray], names: dict[str, str]) -> pl.DataFrame:
    """Build a frame of ``source_line`` and ``columns[source]`` renamed to ``target``."""
    data = {"source_line": columns["source_line"]}
    data |= {target: columns[source] for source, target in names.items()}
    return pl.DataFrame(data).with_columns(pl.col("ts_event").cast(pl.Int64))


def _sizes_where_priced(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.col("bid_price").is_not_null())
        .then(pl.col("bid_size").cast(pl.Float64))
        .alias("bid_size"),
        pl.when(pl.col("ask_price").is_not_null())
        .then(pl.col("ask_size").cast(pl.Float64))
        .alias("ask_size"),
    )


def _quotes(columns, spec, path, skipped) -> ReadResult:
    names = {"ts_event": "ts_event", "bid_px_00": "bid", "ask_px_00": "ask"}
    names |= {"bid_sz_00": "bid_size", "ask_sz_00": "ask_size"}
    frame = _frame(columns, names).with_columns(
        _price("bid").alias("bid_price"), _price("ask").alias("ask_price")
    )
    return build_result(
        "quotes",
        _sizes_where_priced(frame),
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped,
    )


def _trades(columns, spec, path, skipped) -> ReadResult:
    names = {"ts_event": "ts_event", "price": "price", "size": "size", "side": "side"}
    frame = _frame(columns, names).with_columns(
        _price("price"),
        pl.col("size").cast(pl.Float64),
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


def _bars(columns, spec, path, duration_ns, skipped) -> ReadResult:
    names = {name: name for name in ("ts_event", "open", "high", "low", "close", "volume")}
    frame = _frame(columns, names).with_columns(
        *(_price(c) for c in ("open", "high", "low", "close")), pl.col("volume").cast(pl.Float64)
    )
    return build_result(
        "bars",
        finish_bars(frame, duration_ns=duration_ns),
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped,
    )


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


def _mbo_quotes(columns, spec, path, skipped) -> ReadResult:
    books: dict[int, _Book] = {}
    last: dict[int, tuple] = {}
    rows = []
    last_flag, snapshot_flag = dbn.F_LAST, dbn.F_SNAPSHOT
    flags_all = columns["flags"].astype(np.int64).tolist()
    snapshot = [bool(f & snapshot_flag) for f in flags_all]
    fields = zip(
        columns["source_line"].tolist(),
        columns["instrument_id"].tolist(),
        columns["action"].tolist(),
        columns["side"].tolist(),
        columns["order_id"].tolist(),
        columns["price"].tolist(),
        columns["size"].tolist(),
        flags_all,
        columns["ts_event"].tolist(),
        columns["ts_recv"].tolist(),
        strict=True,
    )
    count = len(flags_all)
    for index, (n, instrument, action, side, order_id, price, size, flags, ts, recv) in enumerate(
        fields
    ):
        book = books.get(instrument)
        if book is None:
            book = books[instrument] = _Book()
        if action == "A":
            book.add(order_id, side, price, size)
        elif action == "C":
            book.cancel(order_id, size)
        elif action == "M":
            book.modify(order_id, side, price, size)
        elif action == "R":
            book.clear()
        if snapshot[index] and not flags & last_flag:
            # a snapshot ends where the live stream starts, flagged LAST or not
            if index + 1 == count or not snapshot[index + 1]:
                flags |= last_flag
        if not flags & last_flag:
            continue
        top = book.top()
        if last.get(instrument) == top:
            continue
        last[instrument] = top
        rows.append((n, recv if snapshot[index] else ts, *top))
    frame = pl.DataFrame(
        rows,
        schema={
            "source_line": pl.Int64,
            "ts_event": pl.Int64,
            "bid": pl.Int64,
            "ask": pl.Int64,
            "bid_size": pl.Float64,
            "ask_size": pl.Float64,
        },
        orient="row",
    ).with_columns(
        (pl.col("bid").cast(pl.Float64) / PRICE_DIVISOR).alias("bid_price"),
        (pl.col("ask").cast(pl.Float64) / PRICE_DIVISOR).alias("ask_price"),
    )
    return build_result(
        "quotes",
        _sizes_where_priced(frame),
        instrument_id=spec.instrument_id,
        source_file=str(path),
        rows_in=frame.height,
        skipped=skipped + len(flags_all) - frame.height,
    )
