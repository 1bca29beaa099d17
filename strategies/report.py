"""The HTML backtest report: scorecard tables and embedded PNG plots (one self-contained file).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``): no pyplot state,
no backend switch, so they display in notebooks and render to PNG anywhere.

Plots: equity curves (strategies and baselines), drawdown of the headline strategy, Sharpe per
regime with bootstrap intervals, and the robustness plot (per regime family and per fold).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from strategies.regimes import plot_robustness

if TYPE_CHECKING:
    from strategies.backtest import BacktestResult

_HEADLINE = (
    "sharpe",
    "sortino",
    "psr",
    "deflated_sharpe",
    "max_drawdown",
    "calmar",
    "turnover",
    "hit_rate",
    "auc",
    "f1",
)


def figure_png(fig: Figure) -> str:
    """Return ``fig`` as a base64 PNG string."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_equity(result: BacktestResult) -> Figure:
    """Return equity curves ``1 + cumsum(returns)`` of strategies and baselines."""
    sim = result.simulation
    time = sim.ts_event.astype("datetime64[ns]")
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    for j, name in enumerate(sim.columns):
        if name.startswith("random_"):
            continue
        equity = 1.0 + np.cumsum(sim.returns[:, j])
        ax.plot(time, equity, lw=1.6 if j == 0 else 0.9, label=name)
    ax.set_ylabel("equity (x capital)")
    ax.set_title(f"{result.card['instrument_id']} {result.card['model']}: equity, costs included")
    ax.legend(fontsize=8, ncol=3)
    fig.autofmt_xdate()
    return fig


def plot_drawdown(result: BacktestResult) -> Figure:
    """Return the headline strategy's drawdown from its running peak."""
    sim = result.simulation
    equity = 1.0 + np.cumsum(sim.returns[:, 0])
    drawdown = equity / np.maximum.accumulate(np.maximum(equity, 1.0)) - 1.0
    fig = Figure(figsize=(9, 2.4))
    ax = fig.subplots()
    ax.fill_between(sim.ts_event.astype("datetime64[ns]"), drawdown, 0.0, color="tab:red")
    ax.set_ylabel("drawdown")
    ax.set_title(f"drawdown of {sim.columns[0]}")
    fig.autofmt_xdate()
    return fig


def plot_regimes(result: BacktestResult) -> Figure:
    """Return the robustness plot: Sharpe per regime and per fold with intervals."""
    card = result.card
    return plot_robustness(
        card["by_regime"], card["by_fold"], title=f"{card['strategy']}: Sharpe by regime and fold"
    )


def html_table(rows: list[dict], columns: list[str]) -> str:
    """Return ``rows`` as an HTML table of ``columns`` (floats to 4 significant digits)."""
    return _table(rows, columns)


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def render(result: BacktestResult) -> str:
    """Return the report as one HTML string with embedded PNG images."""
    card = result.card
    headline = [
        {
            "metric": name,
            "value": card[name],
            "ci_low": card[f"{name}_ci_low"],
            "ci_high": card[f"{name}_ci_high"],
        }
        for name in _HEADLINE
    ]
    strategies = [{"strategy": k, **v} for k, v in card["strategies"].items()]
    regime_rows = [
        {"family": family, "regime": regime, **metrics}
        for family, groups in {**card["by_regime"], "fold": card["by_fold"]}.items()
        for regime, metrics in groups.items()
    ]
    images = {
        "Equity": figure_png(plot_equity(result)),
        "Drawdown": figure_png(plot_drawdown(result)),
        "Regime robustness": figure_png(plot_regimes(result)),
    }
    img_html = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'>"
        for t, b in images.items()
    )
    synthetic = " (SYNTHETIC DATA)" if card.get("synthetic") else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>backtest {html.escape(card["instrument_id"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>Backtest {html.escape(card["instrument_id"])}{synthetic}</h1>
<p>model <b>{html.escape(str(card["model"]))}</b>, strategy <b>{html.escape(card["strategy"])}</b>,
{html.escape(card["start"])} to {html.escape(card["end"])}, {card["n_bars"]} bars of
{card["bar_seconds"]:g} s; {card["n_trades"]} trades; {card["n_trials"]} trials;
random-signal p-value {card["random_pvalue"]:.3f}; costs {card["total_costs"]:.2f}
{html.escape(card["account_currency"])}.</p>
<h2>Scorecard (95% block-bootstrap intervals)</h2>
{_table(headline, ["metric", "value", "ci_low", "ci_high"])}
<h2>Strategies</h2>
{
        _table(
            strategies,
            [
                "strategy",
                "sharpe",
                "sharpe_ci_low",
                "sharpe_ci_high",
                "psr",
                "max_drawdown",
                "n_trades",
                "random_pvalue",
            ],
        )
    }
<h2>Baselines</h2>
{
        _table(
            [{"baseline": k, **v} for k, v in card["baselines"].items()],
            [
                "baseline",
                "sharpe",
                "annual_return",
                "max_drawdown",
                "n_trades",
                "sharpe_mean",
                "sharpe_std",
                "p_value",
            ],
        )
    }
<h2>Robustness</h2>
{
        _table(
            card["robustness_table"],
            [
                "family",
                "n_groups",
                "worst_group",
                "worst_sharpe",
                "best_sharpe",
                "sharpe_std",
                "sharpe_range",
            ],
        )
    }
<h2>By regime and fold</h2>
{
        _table(
            regime_rows,
            [
                "family",
                "regime",
                "n_bars",
                "sharpe",
                "sharpe_ci_low",
                "sharpe_ci_high",
                "hit_rate",
                "auc",
                "max_drawdown",
            ],
        )
    }
{img_html}
</body></html>
"""


def write_report(result: BacktestResult, path: Path) -> Path:
    """Write the HTML report to ``path`` and return it."""
    path.write_text(render(result))
    return path


def format_scorecard(card: dict) -> str:
    """Return the headline scorecard as aligned text lines."""
    lines = [
        f"backtest {card['instrument_id']} model={card['model']} strategy={card['strategy']} "
        f"{card['start']} .. {card['end']} ({card['n_bars']} bars of {card['bar_seconds']:g}s"
        f"{', synthetic' if card.get('synthetic') else ''})"
    ]
    for name in ("sharpe", "sortino", "psr", "deflated_sharpe", "max_drawdown", "calmar"):
        lines.append(_metric_line(card, name))
    for name in ("turnover", "hit_rate", "auc", "f1"):
        lines.append(_metric_line(card, name))
    lines.append(f"  {'n_trades':<16}{card['n_trades']}")
    lines.append(f"  {'n_trials':<16}{card['n_trials']}")
    lines.append(f"  {'random p-value':<16}{card['random_pvalue']:.3f}")
    rob = card["robustness"]
    lines.append(
        f"  {'worst regime':<16}{rob['worst_regime_sharpe']:+.2f} Sharpe "
        f"(dispersion {rob['regime_sharpe_dispersion']:.2f}); worst fold "
        f"{rob['worst_fold_sharpe']:+.2f}"
    )
    for name, c in card["strategies"].items():
        lines.append(
            f"  strategy {name:<14} sharpe {c['sharpe']:+.2f} "
            f"[{c['sharpe_ci_low']:+.2f}, {c['sharpe_ci_high']:+.2f}]  "
            f"trades {c['n_trades']}  p {c['random_pvalue']:.3f}"
        )
    for name, c in card["baselines"].items():
        if name == "random":
            lines.append(
                f"  baseline {name:<14} sharpe {c['sharpe_mean']:+.2f} +- {c['sharpe_std']:.2f}"
                f" over {c['n_seeds']} seeds matched to {c['matched_to']}"
            )
        else:
            lines.append(f"  baseline {name:<14} sharpe {c['sharpe']:+.2f}")
    return "\n".join(lines)


def _metric_line(card: dict, name: str) -> str:
    value, low, high = card[name], card[f"{name}_ci_low"], card[f"{name}_ci_high"]
    return f"  {name:<16}{value:+.4f}  [{low:+.4f}, {high:+.4f}]"


def write_outputs(result: BacktestResult, out_dir: Path) -> dict[str, Path]:
    """Write ``backtest.json``, ``trades.parquet`` and ``report.html`` into ``out_dir``.

    Files are written to temporary names first and renamed, so a failure leaves no
    half-written output.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "backtest": out_dir / "backtest.json",
        "trades": out_dir / "trades.parquet",
        "report": out_dir / "report.html",
    }
    tmp = {k: p.with_name(p.name + ".tmp") for k, p in paths.items()}
    tmp["backtest"].write_text(json.dumps(_jsonable(result.card), indent=2, allow_nan=True))
    trades = result.simulation.trades
    if trades is None:
        trades = pl.DataFrame(schema={"strategy": pl.String})
    trades.write_parquet(tmp["trades"])
    write_report(result, tmp["report"])
    for key, path in paths.items():
        tmp[key].replace(path)
    return paths


def jsonable(obj):
    """Return ``obj`` with NumPy scalars as Python numbers and NaN/inf as None (for JSON)."""
    return _jsonable(obj)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
