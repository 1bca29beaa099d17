"""``python -m pipelines {ingest,bars,info,bench}``: the store from the command line.

Every command takes ``--store PATH`` (default ``./data``). Bad input -- an unknown instrument,
a missing or unreadable file, a bad flag, an empty time range, a store without the data --
prints one line on stderr and exits with code 2; nothing is half-written (writes are store
transactions).

Examples::

    python -m pipelines ingest --instrument EURUSD --format lean ../shared/data/.../*_quote.zip
    python -m pipelines bars --instrument EURUSD --every 1m --start 2014-05-05 --end 2014-05-07
    python -m pipelines info --instrument EURUSD
    python -m pipelines bench --json bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

import polars as pl

from data_specs.spec import SpecError, load_spec
from pipelines.errors import PipelineError
from pipelines.readers import FORMATS
from pipelines.store import NO_DATE, Store, ns_to_iso

PROG = "python -m pipelines"


class UsageError(Exception):
    """Bad command-line input (reported as one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _scalar(text: str) -> object:
    """``true``/``false``/``null``/numbers as JSON (``True``/``False`` too), else the string."""
    lowered = {"True": "true", "False": "false", "None": "null"}.get(text, text)
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text


def _column_map(text: str | None) -> dict[str, str] | None:
    """Parse ``--column-map`` as a JSON object or ``target=source,target=source``.

    In the second form values that read as JSON scalars (``false``, ``1``) are converted;
    list-valued options (``columns``) need the JSON form.
    """
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--column-map: not valid JSON ({err.msg})") from err
        if not isinstance(value, dict):
            raise UsageError("--column-map: expected a JSON object")
        return value
    pairs = [p for p in text.split(",") if p.strip()]
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--column-map: expected target=source, got {pair!r}")
        target, source = (part.strip() for part in pair.split("=", 1))
        out[target] = _scalar(source)
    return out


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (subcommands ingest, bars, info, bench)."""
    parser = _Parser(prog=PROG, description="Vendor ticks -> clean Parquet store -> bars.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", default="data", help="store root (default ./data)")

    p = sub.add_parser("ingest", help="read, clean and store vendor files")
    common(p)
    p.add_argument("--instrument", required=True, help="instrument id, e.g. EURUSD")
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        dest="fmt",
        metavar="FORMAT",
        help=f"one of: {', '.join(FORMATS)}",
    )
    p.add_argument("--column-map", help="csv formats: JSON object or target=source,...")
    p.add_argument("--tz", help="override the vendor clock, e.g. UTC-05 or America/New_York")
    p.add_argument("--trailing", action="store_true", help="trailing (not centered) spike window")
    p.add_argument(
        "--contract",
        help="futures files with several contracts (lean, lean-bars, databento): YYYYMM or "
        "symbol, or 'all' (default: the most active contract of each file)",
    )
    p.add_argument(
        "--batch-mb",
        type=float,
        default=None,
        help="memory bound: clean files in batches of about this many MB of decompressed input "
        "(default 128; one transaction either way)",
    )
    p.add_argument(
        "--bars",
        help="also build these bars in the same transaction, comma-separated lengths that "
        "divide a day, e.g. 1m or 1m,5m,1h (each touched day is rebuilt in full)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")

    p = sub.add_parser("bars", help="build time bars from stored quotes")
    common(p)
    p.add_argument("--instrument", required=True)
    p.add_argument("--every", default="1m", help="Polars duration, e.g. 1m, 5m, 1h")
    p.add_argument("--start", help="UTC, ISO 8601 (inclusive)")
    p.add_argument("--end", help="UTC, ISO 8601 (exclusive)")
    p.add_argument("--table", default="bars", help="target table (default bars)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)

    p = sub.add_parser("info", help="coverage, counts and quarantine summary")
    common(p)
    p.add_argument("--instrument", required=True)
    p.add_argument("--json", dest="as_json", action="store_true", help="print JSON")

    p = sub.add_parser("bench", help="end-to-end ingest benchmark on the FXCM LEAN ticks")
    common(p)
    p.add_argument("--json", dest="json_path", help="write the figures to this JSON file")
    p.add_argument("--data", help="shared data folder (default ../shared/data)")
    p.add_argument("--repeat", type=int, default=1, help="runs per job; the best is kept")
    p.add_argument("--skip-pandas", action="store_true", help="skip the (slow) pandas job")
    return parser


def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _cmd_ingest(args: argparse.Namespace) -> int:
    from pipelines.ingest import ingest

    spec = load_spec(args.instrument)
    report = ingest(
        args.paths,
        fmt=args.fmt,
        spec=spec,
        store=Store(args.store),
        column_map=_column_map(args.column_map),
        tz=args.tz,
        progress=_progress(args.progress),
        center=not args.trailing,
        bars=[b.strip() for b in args.bars.split(",") if b.strip()] if args.bars else (),
        contract=args.contract,
        **({} if args.batch_mb is None else {"batch_mb": args.batch_mb}),
    )
    summary = json.loads(report.read_text())
    reasons = ", ".join(f"{k}={v}" for k, v in summary["quarantined_by_reason"].items())
    print(
        f"{summary['instrument_id']}: {summary['rows_in']} rows in, {summary['rows_stored']} "
        f"stored ({summary['rows_new']} new), {summary['rows_quarantined']} quarantined"
        + (f" ({reasons})" if reasons else "")
        + f", {summary['rows_flagged']} flagged"
        + (
            f", {summary['tables']['bars']['rows_stored']} bars"
            if "bars" in summary["tables"] and args.bars
            else ""
        )
    )
    print(report)
    return 0


def _cmd_bars(args: argparse.Namespace) -> int:
    from pipelines.ingest import build_bars

    spec = load_spec(args.instrument)
    summary = build_bars(
        Store(args.store),
        spec=spec,
        every=args.every,
        start=args.start,
        end=args.end,
        table=args.table,
        progress=_progress(args.progress),
    )
    print(
        f"{spec.instrument_id}: {summary.rows} {args.every} bars written to table "
        f"'{args.table}' ({summary.rows_new} new) in {len(summary.partitions)} partitions"
    )
    return 0


def coverage(store: Store, instrument_id: str) -> dict:
    """Return per-table coverage of one instrument: partitions, rows, first/last ts, reasons."""
    out: dict = {"store": str(store.root), "instrument_id": instrument_id, "tables": {}}
    store.recover()
    for table in store.tables():
        parts = store.partitions(table, instrument_id)
        if not parts:
            continue
        files = [str(f) for p in parts for f in p.files]
        stats = (
            pl.scan_parquet(files)
            .select(
                pl.len().alias("rows"),
                pl.col("ts_event").min().alias("first"),
                pl.col("ts_event").max().alias("last"),
            )
            .collect()
            .row(0, named=True)
        )
        entry = {
            "partitions": len(parts),
            "dated_partitions": sum(p.date != NO_DATE for p in parts),
            "rows": stats["rows"],
            "first_ts_event": stats["first"],
            "last_ts_event": stats["last"],
            "first": ns_to_iso(stats["first"]),
            "last": ns_to_iso(stats["last"]),
        }
        if table in ("quarantine", "flagged"):
            reasons = pl.scan_parquet(files).group_by("reason").len().sort("reason").collect()
            entry["by_reason"] = {r: int(n) for r, n in reasons.iter_rows()}
        if table == "bars" or "ts_close" in pl.scan_parquet(files[0]).collect_schema():
            lengths = (
                pl.scan_parquet(files)
                .select((pl.col("ts_close") - pl.col("ts_event")).alias("ns"))
                .group_by("ns")
                .len()
                .sort("ns")
                .collect()
            )
            entry["bar_lengths_s"] = {str(ns / 1e9): int(n) for ns, n in lengths.iter_rows()}
        out["tables"][table] = entry
    out["reports"] = [str(p) for p in store.reports() if p.name.endswith(f"-{instrument_id}.json")]
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    spec = load_spec(args.instrument)
    store = Store(args.store)
    info = coverage(store, spec.instrument_id)
    if not info["tables"]:
        raise PipelineError(f"store {store.root} has no data for instrument {spec.instrument_id}")
    if args.as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"store {info['store']}  instrument {spec.instrument_id}")
    for table, e in info["tables"].items():
        print(
            f"  {table:<11} {e['rows']:>10} rows  {e['partitions']:>4} partitions  "
            f"{e['first'] or '-'} .. {e['last'] or '-'}"
        )
        for reason, n in e.get("by_reason", {}).items():
            print(f"      {reason:<22} {n:>10}")
        for seconds, n in e.get("bar_lengths_s", {}).items():
            print(f"      bars of {seconds} s: {n}")
    print(
        f"  reports: {len(info['reports'])}"
        + (f", last {info['reports'][-1]}" if info["reports"] else "")
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pipelines.bench import run_bench

    run_bench(
        data=args.data,
        json_path=args.json_path,
        repeat=args.repeat,
        skip_pandas=args.skip_pandas,
    )
    return 0


COMMANDS = {"ingest": _cmd_ingest, "bars": _cmd_bars, "info": _cmd_info, "bench": _cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 2 bad input)."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, SpecError, PipelineError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"error: {err.filename}: file not found", file=sys.stderr)
        return 2
    except OSError as err:  # permissions, disk full...: the transaction left the store as it was
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "error: interrupted; the store is unchanged by the unfinished command", file=sys.stderr
        )
        return 130
