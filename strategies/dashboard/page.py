"""The dashboard page: numbers of every model, their HTML (plots embedded) and the writing.

:func:`build` computes each model's numbers (:func:`strategies.dashboard.model_numbers.
model_dashboard`), optionally backtesting the headline strategy for per-regime Sharpe, draws
the figures and renders one self-contained HTML string; :func:`write_dashboard` writes it and
its JSON via temporary names, then renames, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from data_specs.spec import InstrumentSpec
from strategies.dashboard.model_numbers import (
    DashboardConfig,
    DashboardInputError,
    model_dashboard,
)
from strategies.dashboard.plots import plot_informativeness, plot_regime_stats, plot_timeline

_REGIME_COLUMNS = (
    "regime n_forecasts share_of_time mean_duration_bars energy_min energy_max "
    "forward_volatility forward_volatility_ci_low forward_volatility_ci_high "
    "realized_volatility realized_volatility_ci_low realized_volatility_ci_high "
    "auc auc_ci_low auc_ci_high mse mse_ci_low mse_ci_high mse_zero_forecast"
).split()
_STRATEGY_COLUMNS = (
    "regime sharpe sharpe_ci_low sharpe_ci_high "
    "annual_return annual_return_ci_low annual_return_ci_high"
).split()
_CORRELATION_COLUMNS = "target spearman ci_low ci_high null_low null_high p_value n by_fold".split()


def correlation_verdict(name: str, c: dict) -> str:
    """Return one plain sentence on whether energy ranks ``name`` (CI vs zero, null p-value)."""
    if not np.isfinite(c["spearman"]):
        return f"{name}: not computable (constant or too few values)."
    interval = f"{c['spearman']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
    if c["ci_includes_zero"]:
        return (
            f"{name}: Spearman {interval}; the interval includes zero, so this sample gives no "
            f"evidence that energy ranks {name} (shifted-energy null p = {c['p_value']:.3f})."
        )
    sign = "positive" if c["spearman"] > 0 else "negative"
    return (
        f"{name}: Spearman {interval}; the interval excludes zero ({sign} relation; "
        f"shifted-energy null p = {c['p_value']:.3f})."
    )


def render(numbers: dict, images: dict[str, dict[str, str]]) -> str:
    """Return the dashboard as one HTML string.

    ``numbers`` is the JSON content; ``images`` maps model -> {caption: base64 PNG}.
    """
    from strategies.report import html_table

    esc = html.escape
    cfg = numbers["config"]
    parts = [
        f"<h1>{esc(numbers['title'])}</h1>",
        f"<p>run <code>{esc(numbers['run'])}</code>, instrument {esc(numbers['instrument_id'])}."
        f" Energy regimes q1..q{cfg['n_quantiles']} are causal: each forecast's total energy is"
        f" placed among the quantiles of the energies of the same fold's forecasts made up to"
        f" and including it (expanding window, per fold, first {cfg['warmup']} forecasts of"
        f" each fold unlabelled). Bars take the regime of the forecast in force. Intervals:"
        f" {100 * (1 - cfg['alpha']):.0f}% circular block bootstrap, {cfg['n_boot']}"
        f" resamples (blocks of {cfg['correlation_block']} bars for the correlations);"
        f" null: energy circularly shifted within each fold, {cfg['n_perm']} random shifts"
        f" (keeps its autocorrelation).</p>",
    ]
    if numbers["synthetic"]:
        parts.append("<p><b>SYNTHETIC DATA: these forecasts were made on synthetic bars.</b></p>")
    if numbers.get("run_has_backtest_json"):
        parts.append(f"<p>{backtest_json_note(numbers.get('backtest_energy_edges'))}</p>")
    for model, m in numbers["models"].items():
        parts.append(f"<h2>model {esc(model)}</h2>")
        parts.append(
            f"<p>{m['n_forecasts']} forecasts ({m['n_labelled']} past the warm-up), "
            f"{m['n_layers']} layer(s), folds {m['folds']}, horizon {m['horizon']} bar(s), "
            f"{esc(m['start'])} to {esc(m['end'])}, {m['n_bars']} bars.</p>"
        )
        parts.append("<h3>Is energy informative?</h3><ul>")
        for name, c in m["correlations"].items():
            parts.append(f"<li>{esc(correlation_verdict(name, c))}</li>")
        parts.append("</ul>")
        if m["realized_volatility_is_abs_return"]:
            parts.append(
                "<p>Here the forecasts' realized volatility equals |realized return| (one-bar "
                "horizon), so those two rows are the same test; the forward volatility over "
                f"{cfg['vol_window']} bars is the less noisy target.</p>"
            )
        rows = [
            {"target": k, **v, "by_fold": _by_fold(v["per_group"])}
            for k, v in m["correlations"].items()
        ]
        parts.append(html_table(rows, _CORRELATION_COLUMNS))
        parts.append("<h3>Per regime (causal labels)</h3>")
        parts.append(html_table(m["regimes"], _REGIME_COLUMNS))
        if m["strategy"]:
            s = m["strategy"]
            parts.append(
                f"<p>Strategy <b>{esc(s['strategy'])}</b> (strategies.backtest, costs included):"
                f" Sharpe {s['sharpe']:+.2f} [{s['sharpe_ci_low']:+.2f}, "
                f"{s['sharpe_ci_high']:+.2f}] over {s['n_bars']} bars, {s['n_trades']} trades."
                f" Per regime (bars labelled by the causal regime):</p>"
            )
            parts.append(html_table(m["regimes"], _STRATEGY_COLUMNS))
        else:
            parts.append("<p>No backtest: per-regime strategy returns not shown.</p>")
        names = [r["regime"] for r in m["regimes"]]
        matrix = [
            {"from": n, **dict(zip(names, row))} for n, row in zip(names, m["transition_matrix"])
        ]
        parts.append("<h3>Transition matrix (bar to next bar)</h3>")
        parts.append(html_table(matrix, ["from", *names]))
        for caption, png in images.get(model, {}).items():
            parts.append(
                f"<h3>{esc(caption)}</h3><img alt='{esc(caption)}' "
                f"src='data:image/png;base64,{png}'>"
            )
        parts.append(
            "<h3>Descriptive only: full-sample quantiles per fold (look-ahead within the"
            " fold)</h3>"
            f"<p>Not usable for trading or for the tests above. Agreement with the causal "
            f"labels: {m['full_sample_agreement']:.3f} of labelled forecasts.</p>"
        )
        columns = ["regime", "n_forecasts", "realized_volatility", "forward_volatility"]
        parts.append(html_table(m["descriptive_full_sample"], columns))
    body = "\n".join(parts)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{esc(numbers["title"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}</style>
</head><body>
{body}
</body></html>
"""


def backtest_json_note(energy_edges: str | None) -> str:
    """Return the page's sentence on the energy regimes of the run folder's ``backtest.json``.

    ``energy_edges`` is its ``energy_quantile_edges``: ``"per_fold"`` (written since the
    edges are cut per fold), ``"pooled"`` (an older file without the key), ``None`` (unread).
    """
    causal = "every per-regime number on this page uses the causal labels instead."
    if energy_edges == "per_fold":
        return (
            "The run folder's backtest.json scores energy regimes cut at each fold's"
            " full-sample quantiles (look-ahead within the fold: a description, not a trading"
            f" rule); {causal}"
        )
    if energy_edges == "pooled":
        return (
            "The run folder's backtest.json predates per-fold energy edges: its energy regimes"
            " are cut at full-sample quantiles pooled over all folds (look-ahead, and the folds'"
            " energy scales mixed); rerun strategies.backtest to refresh it. Here "
            f"{causal}"
        )
    return (
        "The run folder's backtest.json scores energy regimes cut at full-sample quantiles"
        f" (look-ahead); {causal}"
    )


def _by_fold(per_group: dict) -> str:
    return " ".join(f"{g}:{r:+.3f}" for g, r in per_group.items())


def build(
    forecasts: pl.DataFrame,
    bars: pl.DataFrame,
    spec: InstrumentSpec,
    *,
    models: list[str],
    config: DashboardConfig,
    run: str = "",
    where: str = "forecasts",
    run_has_backtest_json: bool = False,
    backtest_energy_edges: str | None = None,
) -> tuple[dict, str]:
    """Return the dashboard's numbers (JSON content) and its HTML for ``models``.

    ``run_has_backtest_json`` and ``backtest_energy_edges`` (see :func:`backtest_json_note`)
    describe the run folder's ``backtest.json`` for the page's note on it.
    """
    from strategies.report import figure_png

    synthetic = bool(forecasts.get_column("synthetic").fill_null(False).any())
    title = f"Energy-regime dashboard {spec.instrument_id}" + (
        " (SYNTHETIC DATA)" if synthetic else ""
    )
    numbers: dict = {
        "title": title,
        "run": run,
        "instrument_id": spec.instrument_id,
        "synthetic": synthetic,
        "config": asdict(config),
        "run_has_backtest_json": run_has_backtest_json,
        "backtest_energy_edges": backtest_energy_edges,
        "models": {},
    }
    images: dict[str, dict[str, str]] = {}
    for model in models:
        result = None
        if config.backtest:
            result = _backtest(forecasts, bars, spec, model, config)
        d = model_dashboard(
            forecasts, bars, spec, model=model, config=config, backtest=result, where=where
        )
        numbers["models"][model] = d.numbers
        label = f"{spec.instrument_id} {model}" + (" (SYNTHETIC)" if synthetic else "")
        images[model] = {
            "Energy, price and realized volatility by causal regime": figure_png(
                plot_timeline(d, vol_window=config.vol_window, title=label)
            ),
            "Per regime (95% intervals)": figure_png(
                plot_regime_stats(d.numbers, vol_window=config.vol_window)
            ),
            "Transitions and informativeness": figure_png(plot_informativeness(d.numbers)),
        }
    return numbers, render(numbers, images)


def _backtest(forecasts, bars, spec, model, config):
    from strategies.backtest import STRATEGIES, BacktestConfig, run_backtest

    if config.strategy not in STRATEGIES:
        message = f"--strategy {config.strategy!r}: unknown (have {sorted(STRATEGIES)})"
        raise DashboardInputError(message)
    bt_config = BacktestConfig(n_boot=config.n_boot, n_boot_regime=50, n_random=20)
    strategies = {config.strategy: STRATEGIES[config.strategy]}
    return run_backtest(forecasts, bars, spec, strategies=strategies, model=model, config=bt_config)


def write_dashboard(numbers: dict, page: str, html_path: Path) -> tuple[Path, Path]:
    """Write the HTML and its JSON (beside it, ``.json``) via temporary names, then rename."""
    from strategies.report import jsonable

    json_path = html_path.with_suffix(".json")
    tmp_html = html_path.with_name(f".{html_path.name}.tmp")
    tmp_json = json_path.with_name(f".{json_path.name}.tmp")
    try:
        tmp_json.write_text(json.dumps(jsonable(numbers), indent=2))
        tmp_html.write_text(page)
        tmp_json.replace(json_path)
        tmp_html.replace(html_path)
    finally:
        tmp_json.unlink(missing_ok=True)
        tmp_html.unlink(missing_ok=True)
    return html_path, json_path
