"""The dashboard's figures, drawn with matplotlib's object API (``Figure``, no pyplot state).

Three figures per model: the timeline (price, energy, realized volatility shaded by the causal
regime of the bar), the per-regime statistics with their bootstrap intervals, and the
informativeness panel (transition matrix, volatility by energy decile, correlations against the
shifted-energy null). matplotlib is imported inside the functions: it is slow to import.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from strategies.dashboard.model_numbers import ModelDashboard


def _regime_colors(n_states: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["coolwarm"]
    return [cmap(0.1 + 0.8 * g / max(n_states - 1, 1)) for g in range(n_states)]


def plot_timeline(d: ModelDashboard, *, vol_window: int, title: str = ""):
    """Return price, energy (total and per layer) and realized volatility on one time axis,
    shaded by the causal energy regime of the bar."""
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    n_q = len(d.numbers["regimes"])
    colors = _regime_colors(n_q)
    bar_time = d.bars.get_column("ts_event").to_numpy().astype("datetime64[ns]")
    close_time = d.bars.get_column("ts_close").to_numpy().astype("datetime64[ns]")
    time = d.ts_event.astype("datetime64[ns]")
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(3, 1, sharex=True)
    axes[0].plot(close_time, d.bars.get_column("close").to_numpy(), color="black", lw=0.8)
    axes[0].set_ylabel("bar close")
    total = d.energy.sum(axis=1)
    axes[1].plot(time, total, color="black", lw=0.9, label="total energy")
    if d.energy.shape[1] > 1:
        for j in range(d.energy.shape[1]):
            axes[1].plot(time, d.energy[:, j], lw=0.6, alpha=0.8, label=f"layer {j}")
    axes[1].set_ylabel("HML-D energy")
    axes[1].legend(fontsize=7, ncol=4, loc="upper left")
    rv = d.realized_volatility
    axes[2].plot(time, rv, color="0.6", lw=0.4, label="realized volatility (label)")
    smooth = pl.Series(rv).rolling_mean(vol_window, min_samples=1).to_numpy()
    axes[2].plot(time, smooth, color="tab:purple", lw=1.0, label=f"{vol_window}-forecast mean")
    axes[2].set_ylabel("realized volatility")
    axes[2].legend(fontsize=7, loc="upper left")
    for ax in axes:
        for g in range(n_q):
            ax.fill_between(
                bar_time,
                0,
                1,
                where=d.bar_codes == g,
                step="post",
                color=colors[g],
                alpha=0.18,
                lw=0,
                transform=ax.get_xaxis_transform(),
                label=f"q{g + 1} (causal)" if ax is axes[0] else None,
            )
    axes[0].legend(fontsize=7, ncol=n_q, loc="upper left")
    axes[0].set_title(title, fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_regime_stats(numbers: dict, *, vol_window: int):
    """Return per-regime bars with bootstrap intervals: volatility after, AUC, MSE, Sharpe."""
    from matplotlib.figure import Figure

    rows = numbers["regimes"]
    panels = [
        ("forward_volatility", f"forward volatility ({vol_window} bars)"),
        ("realized_volatility", "realized volatility (label)"),
        ("auc", "direction AUC"),
        ("mse", "forecast MSE"),
    ]
    if numbers.get("strategy"):
        panels.append(("sharpe", f"Sharpe of {numbers['strategy']['strategy']}"))
    colors = _regime_colors(len(rows))
    fig = Figure(figsize=(2.6 * len(panels), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    names = [r["regime"] for r in rows]
    for ax, (key, label) in zip(axes, panels):
        value = np.array([r.get(key, math.nan) for r in rows], dtype=float)
        low = np.array([r.get(f"{key}_ci_low", math.nan) for r in rows], dtype=float)
        high = np.array([r.get(f"{key}_ci_high", math.nan) for r in rows], dtype=float)
        err = np.nan_to_num(np.vstack([np.maximum(value - low, 0), np.maximum(high - value, 0)]))
        ax.bar(range(len(rows)), np.nan_to_num(value), yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(rows)), names)
        ax.set_title(label, fontsize=9)
        if key == "auc":
            ax.axhline(0.5, color="black", lw=0.8)
            ax.set_ylim(
                min(0.4, np.nanmin(low, initial=0.5) - 0.02),
                max(0.6, np.nanmax(high, initial=0.5) + 0.02),
            )
        if key == "sharpe":
            ax.axhline(0.0, color="black", lw=0.8)
    fig.tight_layout()
    return fig


def plot_informativeness(numbers: dict):
    """Return the transition matrix, volatility by energy decile and the correlations with
    their intervals against the shuffled-energy null."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6))
    ax_t, ax_d, ax_c = fig.subplots(1, 3)
    matrix = np.array(numbers["transition_matrix"], dtype=float)
    names = [r["regime"] for r in numbers["regimes"]]
    ax_t.imshow(np.nan_to_num(matrix), cmap="Blues", vmin=0, vmax=1)
    for (i, j), p in np.ndenumerate(matrix):
        ax_t.text(j, i, "nan" if np.isnan(p) else f"{p:.2f}", ha="center", va="center", fontsize=8)
    ax_t.set_xticks(range(len(names)), names)
    ax_t.set_yticks(range(len(names)), names)
    ax_t.set_xlabel("to (next bar)")
    ax_t.set_ylabel("from")
    ax_t.set_title("regime transitions per bar", fontsize=9)
    deciles = numbers["energy_deciles"]
    ax_d.plot(deciles["decile"], deciles["forward_volatility"], "o-", label="forward volatility")
    ax_d.plot(deciles["decile"], deciles["realized_volatility"], "s--", label="realized (label)")
    ax_d.set_xlabel("energy decile within fold")
    ax_d.set_title("volatility after the forecast", fontsize=9)
    ax_d.legend(fontsize=7)
    corr = numbers["correlations"]
    for y, c in enumerate(corr.values()):
        ax_c.plot(
            [c["null_low"], c["null_high"]], [y, y], color="0.75", lw=8, solid_capstyle="butt"
        )
        ax_c.errorbar(
            c["spearman"],
            y,
            xerr=[[max(c["spearman"] - c["ci_low"], 0)], [max(c["ci_high"] - c["spearman"], 0)]],
            fmt="o",
            color="tab:blue",
            capsize=3,
        )
    ax_c.axvline(0.0, color="black", lw=0.8)
    ax_c.set_yticks(range(len(corr)), list(corr), fontsize=7)
    ax_c.set_title("Spearman(energy, target): CI (blue), shifted-energy null (grey)", fontsize=9)
    fig.tight_layout()
    return fig
