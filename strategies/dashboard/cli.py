"""The dashboard's command line: ``python -m strategies.dashboard --run RUN [options]``.

Reads the run folder as files (``forecasts.parquet``, ``config.json``), picks the models with
energy, reads the bars (``--bars`` or the run's store), builds the page and writes
``dashboard.html`` and ``dashboard.json``. Bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.spec import SpecError, load_spec
from strategies.dashboard.model_numbers import DashboardConfig, DashboardInputError
from strategies.dashboard.page import build, correlation_verdict, write_dashboard
from strategies.inputs import BacktestInputError, read_forecasts, run_bars


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line on stderr, exit code 2 (argparse prints usage too)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m strategies.dashboard",
        description="Energy-regime dashboard of a run: one HTML page and a JSON of its numbers.",
    )
    parser.add_argument("--run", type=Path, required=True, help="run folder with forecasts.parquet")
    parser.add_argument("--out", type=Path, help="HTML path (default RUN/dashboard.html)")
    parser.add_argument("--model", help="one model with energy (default: every such model)")
    parser.add_argument("--quantiles", type=int, default=DashboardConfig.n_quantiles)
    parser.add_argument("--warmup", type=int, default=DashboardConfig.warmup)
    parser.add_argument("--vol-window", type=int, default=DashboardConfig.vol_window)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bars", type=Path, help="Parquet file of BARS rows")
    source.add_argument("--store", type=Path, help="store root (default: config.json's store)")
    parser.add_argument("--start", help="first forecast time, ISO UTC (inclusive)")
    parser.add_argument("--end", help="last forecast time, ISO UTC (exclusive)")
    parser.add_argument("--strategy", default=DashboardConfig.strategy)
    parser.add_argument("--no-backtest", action="store_true", help="skip per-regime Sharpe")
    parser.add_argument("--n-boot", type=int, default=DashboardConfig.n_boot)
    parser.add_argument("--n-perm", type=int, default=DashboardConfig.n_perm)
    parser.add_argument("--seed", type=int, default=DashboardConfig.seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 on bad input)."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        numbers, page, html_path = _run_cli(args)
        paths = write_dashboard(numbers, page, html_path)
    except (BacktestInputError, SpecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for model, m in numbers["models"].items():
        for name, c in m["correlations"].items():
            print(f"{model}: {correlation_verdict(name, c)}")
    print(f"wrote {paths[1]} in {time.perf_counter() - started:.1f}s")
    print(paths[0])
    return 0


def _run_cli(args: argparse.Namespace) -> tuple[dict, str, Path]:
    run: Path = args.run
    checks = [
        (args.quantiles < 2, f"--quantiles {args.quantiles}: need at least 2 regimes"),
        (args.warmup < 1, f"--warmup {args.warmup}: need at least 1 forecast"),
        (args.vol_window < 2, f"--vol-window {args.vol_window}: need at least 2 bars"),
        (args.n_boot < 10 or args.n_perm < 10, "--n-boot and --n-perm: need at least 10"),
        (not run.is_dir(), f"{run}: run folder not found"),
    ]
    for bad, message in checks:
        if bad:
            raise DashboardInputError(message)
    html_path = args.out or run / "dashboard.html"
    if html_path.is_dir():
        html_path = html_path / "dashboard.html"
    if not html_path.parent.is_dir():
        raise DashboardInputError(f"--out {html_path}: folder {html_path.parent} not found")
    path = run / "forecasts.parquet"
    forecasts = read_forecasts(path)
    forecasts = _time_range(forecasts, args.start, args.end, where=str(path))
    have = sorted(forecasts.get_column("model").unique().to_list())
    with_energy = sorted(
        forecasts.filter(pl.col("energy").list.len() > 0).get_column("model").unique().to_list()
    )
    if args.model is not None:
        if args.model not in have:
            raise DashboardInputError(f"{path}: no model '{args.model}' (have {have})")
        if args.model not in with_energy:
            message = (
                f"{path}: model '{args.model}' has no HML-D energy (with energy: {with_energy})"
            )
            raise DashboardInputError(message)
    if not with_energy:
        raise DashboardInputError(f"{path}: no model with HML-D energy (models: {have})")
    models = [args.model] if args.model else with_energy
    ids = forecasts.get_column("instrument_id").unique().to_list()
    if len(ids) != 1:
        raise DashboardInputError(f"{path}: forecasts of several instruments {sorted(ids)}")
    spec = load_spec(ids[0])
    bars = run_bars(run, spec.instrument_id, forecasts, bars_path=args.bars, store=args.store)
    config = DashboardConfig(
        n_quantiles=args.quantiles,
        warmup=args.warmup,
        vol_window=args.vol_window,
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        seed=args.seed,
        backtest=not args.no_backtest,
        strategy=args.strategy,
    )
    numbers, page = build(
        forecasts,
        bars,
        spec,
        models=models,
        config=config,
        run=str(run),
        where=str(path),
        run_has_backtest_json=(run / "backtest.json").is_file(),
        backtest_energy_edges=read_backtest_energy_edges(run / "backtest.json"),
    )
    return numbers, page, html_path


def read_backtest_energy_edges(path: Path) -> str | None:
    """Return how ``backtest.json`` cut its energy regimes: ``"per_fold"``, ``"pooled"`` (no
    ``energy_quantile_edges`` key: written before per-fold edges), ``None`` if unreadable."""
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return card.get("energy_quantile_edges", "pooled") if isinstance(card, dict) else None


def _time_range(forecasts: pl.DataFrame, start, end, *, where: str) -> pl.DataFrame:
    """Keep forecasts with ``start <= ts_event < end``; raise one line when none are left."""
    bounds = {}
    for name, value in (("--start", start), ("--end", end)):
        if value is None:
            continue
        try:
            bounds[name] = int(np.datetime64(value, "ns").astype(np.int64))
        except ValueError as err:
            raise DashboardInputError(f"{name} {value!r}: not an ISO time ({err})") from err
    if "--start" in bounds:
        forecasts = forecasts.filter(pl.col("ts_event") >= bounds["--start"])
    if "--end" in bounds:
        forecasts = forecasts.filter(pl.col("ts_event") < bounds["--end"])
    if forecasts.is_empty():
        span = f" in [{start}, {end})" if bounds else ""
        raise DashboardInputError(f"{where}: no forecasts{span}")
    return forecasts
