"""Tune the training config with Optuna: TPE over a few fields, walk-forward validation loss.

    python -m hamfin.tune --instrument EURUSD                 # built-in synthetic data, HML-D
    python -m hamfin.tune --instrument EURUSD --store data --n-trials 40 --timeout 3600 \
        --storage sqlite:///runs/optuna.db --study-name eurusd-hmld --set bar=1h

Objective: the mean over folds of the best validation loss ``fit`` reaches (the loss it
early-stops and checkpoints on: return MSE + direction BCE + volatility QLIKE, standardized
per fold on training rows, so values compare across trials). It is preferred to validation
AUC because it scores all three heads and is much less noisy on a few hundred validation bars;
the loss weights are therefore not searched (they would change the objective's scale).

No test-set snooping. With an expanding window the validation part of walk-forward fold
``k >= 1`` overlaps the test blocks of earlier folds, so the outer folds cannot be used as
they are. Tuning sees only the *development region*: the bars before the first test block,
less the purge/embargo gap (fold 0's train + val). That region is cut again into walk-forward
folds (``make_folds``, same options); each trial trains with ``hamfin.train.fit`` on a fold's
train + validation parts and is validated (early stopping, checkpoint and objective) on the
fold's block after the purge gap. The bars of every test block (features and labels) are never
read.

Defaults live in code (``SEARCH_SPACE``); ``--set key=value`` overrides the base config, and a
searched key given with ``--set`` is pinned (left out of the search). TPE is seeded with
``--seed``; the MedianPruner sees the running mean after each fold. The study lives in
``--storage`` (default ``sqlite:///<out>/<instrument>/optuna.db``) under ``--study-name``
(default ``<instrument>-<model>-tune-<timestamp>``), which is what
``python -m strategies.backtest --optuna-storage URL --optuna-study NAME`` reads for the
number of trials of the deflated Sharpe ratio.

Each tuning writes ``<out>/<instrument>/tune-<timestamp>/``: ``study.json``,
``best_config.json`` (a resolved ``RunConfig``) and ``optimization_history.png``, and prints
one line per trial, the ``hamfin.train`` command that reproduces the best config, the storage
and study name; the last line printed is the tune folder. Bad input (unknown instrument, bad
``--set``, ``--n-trials`` < 1, a bad storage URL) prints one line on stderr and exits with
code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
import time
import typing
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hamfin import train
from hamfin.data import DataError, FeatureSet, TickDataModule, load_features, make_folds
from hamfin.models import MODEL_NAMES
from pipelines.splits import Fold

# Searched fields, ``section.field`` -> distribution. ``model.hmld_mode`` only for ``hmld``.
SEARCH_SPACE: typing.Mapping[str, BaseDistribution] = MappingProxyType(
    {
        "model.d_model": CategoricalDistribution((16, 32, 64)),
        "model.n_layers": IntDistribution(1, 3),
        "model.hmld_mode": CategoricalDistribution(("dissipative", "conservative", "selective")),
        "train.lr": FloatDistribution(3e-4, 1e-2, log=True),
        "train.weight_decay": FloatDistribution(1e-4, 1e-1, log=True),
        "data.window": CategoricalDistribution((32, 64, 128)),
    }
)
MODEL_ONLY = {"model.hmld_mode": "hmld"}  # searched only for this model


def search_space(model: str, pinned: typing.Iterable[str] = ()) -> dict[str, BaseDistribution]:
    """Return the searched fields for ``model``, less the ``pinned`` ``section.field`` keys."""
    pinned = set(pinned)
    return {
        key: dist
        for key, dist in SEARCH_SPACE.items()
        if key not in pinned and MODEL_ONLY.get(key, model) == model
    }


def suggest(trial: optuna.Trial, space: typing.Mapping[str, BaseDistribution]) -> dict:
    """Draw one value per searched field from ``trial``."""
    params = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            params[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    return params


def with_params(config: train.RunConfig, params: typing.Mapping) -> train.RunConfig:
    """Return ``config`` with ``section.field`` values applied (``span`` clipped to ``window``)."""
    sections: dict[str, dict] = {}
    for key, value in params.items():
        section, name = train.resolve_key(key)
        sections.setdefault(section, {})[name] = value
    for section, values in sections.items():
        attr = train._SECTION_ATTR[section]
        config = dataclasses.replace(
            config, **{attr: dataclasses.replace(getattr(config, attr), **values)}
        )
    if config.data.span > config.data.window:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, span=config.data.window)
        )
    return config


def development_region(fs: FeatureSet, folds: typing.Sequence[Fold]) -> FeatureSet:
    """Return the rows before the first test block less the purge gap (fold 0's train + val).

    Labels of these rows end before the first test block, so nothing in it depends on a test bar.
    """
    first = folds[0]
    cut = int(max(first.train.max(initial=-1), first.val.max(initial=-1))) + 1
    arrays = ("ts_event", "features", "label_return", "label_volatility", "returns")
    return dataclasses.replace(fs, **{name: getattr(fs, name)[:cut] for name in arrays})


def tuning_folds(dev: FeatureSet, config: train.RunConfig) -> list[Fold]:
    """Return walk-forward folds of the development region for tuning.

    ``make_folds`` cuts ``dev`` with the run's options; each tuning fold trains on that fold's
    train and validation parts and is validated on its test block (purged and embargoed like
    any test block), so the validation blocks tile the latest bars of the development region.
    """
    try:
        folds = make_folds(dev, config.data)
    except DataError as error:
        message = f"development region before the first test block too short: {error}"
        raise DataError(message) from None
    empty = np.empty(0, np.int64)
    return [Fold(train=np.union1d(f.train, f.val), val=f.test, test=empty) for f in folds]


def objective(
    trial: optuna.Trial,
    base: train.RunConfig,
    dev: FeatureSet,
    folds: typing.Sequence[Fold],
    space: typing.Mapping[str, BaseDistribution],
) -> float:
    """Return the mean over ``folds`` of ``fit``'s best validation loss for the trial's config.

    Reports the running mean after each fold; raises ``optuna.TrialPruned`` when the pruner says.
    """
    config = with_params(base, suggest(trial, space))
    train.validate(config)
    losses = []
    for k, fold in enumerate(folds):
        seed = config.train.seed + k
        dm = TickDataModule(dev, fold, config.data, seed=seed)
        with tempfile.TemporaryDirectory(prefix="hamfin-tune-") as fold_dir:
            result = train.fit(config, dm, fold_dir=Path(fold_dir), seed=seed)
        if result.best_val_loss is None or not np.isfinite(result.best_val_loss):
            return float("inf")
        losses.append(result.best_val_loss)
        trial.set_user_attr("fold_val_loss", losses)
        trial.report(float(np.mean(losses)), step=k)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return float(np.mean(losses))


# ---- the CLI -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser (flags documented in the module docstring)."""
    parser = train._Parser(prog="python -m hamfin.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--instrument", required=True, help="instrument id, e.g. EURUSD")
    parser.add_argument("--store", help="store root (default: the built-in synthetic store)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="hmld")
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--timeout", type=float, help="stop starting trials after S seconds")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite in <out>)")
    parser.add_argument("--study-name", help="Optuna study name (an existing one is continued)")
    parser.add_argument("--seed", type=int, default=0, help="TPE sampler seed")
    parser.add_argument("--out", default="runs", help="runs root (default: runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def _arg_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def train_command(config: train.RunConfig) -> list[str]:
    """Return the ``hamfin.train`` argv that resolves to ``config`` (non-default fields)."""
    argv = ["--instrument", config.data.instrument, "--model", config.model, "--out", config.out]
    defaults = train.RunConfig()
    for section, attr in train._SECTION_ATTR.items():
        ours, theirs = getattr(config, attr), getattr(defaults, attr)
        for name in type(ours).__dataclass_fields__:
            if name == "instrument" and section == "data":
                continue
            value = getattr(ours, name)
            if value != getattr(theirs, name):
                argv += ["--set", f"{section}.{name}={_arg_value(value)}"]
    return argv


def _open_study(args, out: Path, instrument: str, stamp: str) -> tuple[optuna.Study, str, str]:
    storage = args.storage
    if storage is None:
        (out / instrument).mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / instrument / 'optuna.db').resolve()}"
    name = args.study_name or f"{instrument}-{args.model}-tune-{stamp}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=args.seed)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="minimize",
            sampler=sampler,
            pruner=optuna.pruners.MedianPruner(),
            load_if_exists=True,
        )
    except Exception as error:  # noqa: BLE001 - any failure to open the storage is bad input
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        message = f"--storage {storage}: cannot open Optuna storage ({first})"
        raise train.UsageError(message) from None
    return study, storage, name


def _trial_row(t: optuna.trial.FrozenTrial) -> dict:
    duration = t.duration.total_seconds() if t.duration is not None else None
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": t.params,
        "fold_val_loss": t.user_attrs.get("fold_val_loss"),
        "duration_s": duration,
    }


def plot_history(trials: typing.Sequence[dict], path: Path) -> None:
    """Plot each trial's objective value and the best so far (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    done = [t for t in trials if t["state"] == "COMPLETE" and np.isfinite(t["value"])]
    if done:
        x = [t["number"] for t in done]
        y = [t["value"] for t in done]
        ax.plot(x, y, "o", label="trial (mean validation loss)")
        ax.step(x, np.minimum.accumulate(y), where="post", color="C3", label="best so far")
    pruned = [t for t in trials if t["state"] == "PRUNED" and t["fold_val_loss"]]
    if pruned:
        x = [t["number"] for t in pruned]
        y = [float(np.mean(t["fold_val_loss"])) for t in pruned]
        ax.plot(x, y, "x", color="grey", label="pruned (running mean)")
    ax.set_xlabel("trial")
    ax.set_ylabel("mean validation loss")
    ax.set_title("Optimization history")
    if done or pruned:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(argv: typing.Sequence[str] | None = None) -> Path:
    """Run the CLI in-process and return the finished tune folder.

    Raises
    ------
    UsageError, DataError
        Bad input, before the tune folder is written.
    """
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.n_trials < 1:
        raise train.UsageError(f"--n-trials must be >= 1, got {args.n_trials}")
    if args.timeout is not None and not args.timeout > 0:
        raise train.UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    data = {"instrument": args.instrument}
    if args.store is not None:
        data["store"] = args.store
    base = train.RunConfig(model=args.model, data=train.DataConfig(**data), out=args.out)
    base = train.apply_overrides(base, args.set)
    pinned = {".".join(train.resolve_key(pair.partition("=")[0])) for pair in args.set}
    space = search_space(args.model, pinned)
    train.validate(base)
    fs = load_features(base.data)
    outer = make_folds(fs, base.data)
    dev = development_region(fs, outer)
    folds = tuning_folds(dev, base)
    out = Path(args.out)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    study, storage, study_name = _open_study(args, out, base.data.instrument, stamp)
    # validated: from here on we write
    final = out / base.data.instrument / f"tune-{stamp}"
    for i in range(1, 1000):
        if not final.exists():
            break
        final = out / base.data.instrument / f"tune-{stamp}-{i}"
    partial = final.parent / f".{final.name}.partial"
    partial.mkdir(parents=True)
    print(  # noqa: T201
        f"tuning {args.model} on {fs.instrument} ({'synthetic' if fs.synthetic else 'real'} data):"
        f" {len(folds)} folds in the {dev.ts_event.size} bars before the first test block;"
        f" searching {', '.join(space) or 'nothing'}",
        flush=True,
    )
    print(f"optuna storage {storage} study {study_name}", flush=True)  # noqa: T201

    def report(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        value = "-" if t.value is None else f"{t.value:.5f}"
        best = f"{study.best_value:.5f}" if _has_complete(study) else "-"
        params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        seconds = t.duration.total_seconds() if t.duration else 0.0
        print(  # noqa: T201
            f"trial {t.number:>3} {t.state.name:<8} value {value} best {best} "
            f"({seconds:.1f} s) {params}",
            flush=True,
        )

    study.optimize(
        lambda trial: objective(trial, base, dev, folds, space),
        n_trials=args.n_trials,
        timeout=args.timeout,
        callbacks=[report],
        catch=(),
    )
    trials = [_trial_row(t) for t in study.trials]
    summary = {
        "instrument": fs.instrument,
        "synthetic": fs.synthetic,
        "model": args.model,
        "storage": storage,
        "study_name": study_name,
        "objective": "mean over tuning folds of the best validation loss (fit's val_loss)",
        "direction": "minimize",
        "development_bars": int(dev.ts_event.size),
        "first_test_row": int(min(f.test.min() for f in outer)),
        "search_space": {k: repr(v) for k, v in space.items()},
        "pinned": sorted(pinned),
        "seed": args.seed,
        "n_trials": len(trials),
        "n_complete": sum(t["state"] == "COMPLETE" for t in trials),
        "n_pruned": sum(t["state"] == "PRUNED" for t in trials),
        "best_value": study.best_value if _has_complete(study) else None,
        "best_params": study.best_params if _has_complete(study) else None,
        "trials": trials,
    }
    best = with_params(base, study.best_params) if _has_complete(study) else base
    command = ["python", "-m", "hamfin.train", *train_command(best)]
    summary["train_command"] = shlex.join(command)
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    (partial / "study.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (partial / "best_config.json").write_text(json.dumps(best.to_dict(), indent=2) + "\n")
    plot_history(trials, partial / "optimization_history.png")
    partial.rename(final)
    if summary["best_value"] is not None:
        print(f"best value {summary['best_value']:.5f} (trial {study.best_trial.number})")  # noqa: T201
    else:
        print("no trial completed")  # noqa: T201
    print(f"reproduce: {summary['train_command']}")  # noqa: T201
    print(  # noqa: T201
        f"deflated Sharpe: python -m strategies.backtest --run <run> "
        f"--optuna-storage {storage} --optuna-study {study_name}"
    )
    return final


def _has_complete(study: optuna.Study) -> bool:
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the CLI; print the tune folder last. Returns the exit code (2 on bad input)."""
    try:
        final = run(argv)
    except (train.UsageError, DataError) as error:
        print(f"hamfin.tune: error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    print(final, flush=True)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
