"""Energy-regime dashboards of a trained run: one self-contained HTML page and its numbers.

CLI::

    python -m strategies.dashboard --run runs/EURUSD/<stamp> [--out PATH] [--model NAME]
        [--quantiles N] [--warmup N] [--bars PATH | --store PATH] [--start ISO] [--end ISO]
        [--no-backtest]

writes ``dashboard.html`` (plots embedded as base64 PNG, drawn with matplotlib's object API on
the Agg canvas) and ``dashboard.json`` (every number on the page) into the run folder, or to
``--out`` (the HTML path; the JSON goes beside it), and prints the HTML path on its last line.
Bad input prints one line on stderr and exits with code 2; both files are written to temporary
names and renamed, so a failure leaves nothing half-written.

The run folder is read as files (``forecasts.parquet``, ``config.json``): ``strategies`` never
imports ``hamfin``. A model "has energy" when its FORECASTS ``energy`` lists are non-empty: one
value per layer, the layer's channel-mean Hamiltonian ``H_t = p^2/(2m) + k q^2/2`` at the
forecast's last bar (``../shared/HMLD.md``). Total energy is the sum over layers; the layers
are its parts.

Regimes without look-ahead (the labels every per-regime number uses). Energy regimes
``q1`` .. ``qN`` are *expanding-window, per fold*: the forecast made at ``t`` is labelled by
comparing its total energy with the N-quantile edges (``numpy.quantile``, linear) of the
total energies of the same fold's forecasts made up to and including ``t``. The first
``warmup`` forecasts of every fold (default 100) are unlabelled. Per fold, because each
walk-forward fold is a separately trained model whose energy has its own scale; the run folder
holds no energies of the training bars. A bar takes the label of the forecast in force
(:func:`strategies.inputs.forecast_in_force`). The full-sample quantile labels
(:func:`strategies.regimes.energy_labels`, edges per fold over the fold's whole sample, as in
``backtest.json``) look ahead and appear only in a table marked descriptive.

Per regime: forecasts, share of labelled bars, mean run length in bars, the bar-to-bar
transition matrix, realized volatility after the forecast (the forecast's own label and the
forward volatility of the next ``vol_window`` bars), direction AUC, forecast MSE, and the
headline strategy's Sharpe and annual return from :func:`strategies.backtest.run_backtest`.
Intervals are 95% circular block-bootstrap intervals (:func:`strategies.metrics.block_bootstrap`)
over the regime's rows in time order (rows of a regime are not contiguous: an approximation).

Is energy informative? Spearman correlation of total energy with the realized volatility, with
``|realized_return|`` and with the forward bar volatility, stratified by fold (energy and
target replaced by their percentile within the fold, then pooled), with a block-bootstrap
interval (blocks of ``correlation_block`` = 64 bars: energy and volatility are persistent and the
forward volatility windows overlap) and a null from energy circularly shifted within each fold
(:func:`rank_correlation`).
Both targets are later than the energy they are paired with; the within-fold percentiles
describe the sample and are not a trading rule.

Modules: :mod:`~strategies.dashboard.stats` (causal regime codes, run lengths, transitions,
intervals, rank correlations, forward volatility), :mod:`~strategies.dashboard.model_numbers`
(the config and one model's numbers), :mod:`~strategies.dashboard.plots` (the figures),
:mod:`~strategies.dashboard.page` (HTML, build, write) and :mod:`~strategies.dashboard.cli`
(the command line); their public names are re-exported here.
"""

from strategies.dashboard.cli import build_parser, main, read_backtest_energy_edges
from strategies.dashboard.model_numbers import (
    DashboardConfig,
    DashboardInputError,
    ModelDashboard,
    energy_matrix,
    model_dashboard,
)
from strategies.dashboard.page import (
    backtest_json_note,
    build,
    correlation_verdict,
    render,
    write_dashboard,
)
from strategies.dashboard.plots import plot_informativeness, plot_regime_stats, plot_timeline
from strategies.dashboard.stats import (
    forward_volatility,
    mean_durations,
    mean_with_ci,
    rank_correlation,
    transition_matrix,
    within_group_percentile,
)
from strategies.regimes import causal_energy_codes, expanding_quantile_codes

__all__ = [
    "DashboardConfig",
    "DashboardInputError",
    "ModelDashboard",
    "backtest_json_note",
    "build",
    "build_parser",
    "causal_energy_codes",
    "correlation_verdict",
    "energy_matrix",
    "expanding_quantile_codes",
    "forward_volatility",
    "main",
    "mean_durations",
    "mean_with_ci",
    "model_dashboard",
    "plot_informativeness",
    "plot_regime_stats",
    "plot_timeline",
    "rank_correlation",
    "read_backtest_energy_edges",
    "render",
    "transition_matrix",
    "within_group_percentile",
    "write_dashboard",
]
