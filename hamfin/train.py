"""Train a forecaster on walk-forward folds and score it against statistical baselines.

    python -m hamfin.train --instrument EURUSD            # built-in synthetic data, HML-D
    python -m hamfin.train --instrument EURUSD --store data --bar 1h --model lstm \
        --set d_model=64 --set lr=1e-3

Defaults live in the frozen configs (``DataConfig``, ``ModelConfig``, ``TrainConfig``); a few
flags plus ``--set key=value`` (``key`` a field name, or ``data.key`` / ``model.key`` /
``train.key``) override them, type-checked. Each run writes ``<out>/<instrument>/<timestamp>/``:
``config.json``, ``fold_<k>/`` (checkpoints, CSV logs, test predictions), ``metrics.json``,
``forecasts.parquet`` (FORECASTS schema) and prints a scorecard; the last line printed is the
run folder. The run is written into a hidden ``.<timestamp>.partial`` folder and renamed when
complete, so an interrupted run leaves no half-written run folder; ``--resume`` continues the
latest interrupted run (from its mid-epoch checkpoint) and gives the same result as an
uninterrupted run with the same seed.

Bad input (unknown instrument, empty or too-short range, non-finite features, a store without
the instrument, a bad ``--set``) prints one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import types
import typing
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch

from data_specs import FORECASTS, check_schema, conform
from hamfin.data import (
    DataConfig,
    DataError,
    FeatureSet,
    TickDataModule,
    load_features,
    make_folds,
)
from hamfin.metrics import diebold_mariano, direction_scores, qlike_loss, squared_error
from hamfin.models import ENERGY_MODELS, MODEL_NAMES, ModelConfig
from hamfin.statistical import BASELINES, fit_baselines
from hamfin.system import EnergyMonitor, ForecastSystem, TrainConfig, predict_rows

_QUIET_WARNINGS = (  # Lightning notes that say nothing about this run
    ".*does not have many workers.*",
    ".*is smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*exists and is not empty.*",
    ".*was configured so 100% of the batches.*",
)
RUN_DIR_ENV = "HAMFIN_RUN_DIR"  # lets DDP worker processes find the run folder of rank 0
RETURN_BASELINES = ("random_walk", "ar")  # DM on squared return error
VOLATILITY_BASELINES = ("har", "garch")  # DM on QLIKE


class UsageError(ValueError):
    """Bad command-line input; ``str()`` is one line."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written resolved to ``config.json``."""

    model: str = "hmld"
    data: DataConfig = field(default_factory=DataConfig)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> RunConfig:
        return cls(
            model=raw["model"],
            data=DataConfig(**raw["data"]),
            model_config=ModelConfig(**raw["model_config"]),
            train=TrainConfig(**raw["train"]),
            out=raw["out"],
        )


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
_SECTION_ATTR = {"data": "data", "model": "model_config", "train": "train"}


def _parse_value(raw: str, kind, key: str):
    """Convert ``raw`` to the annotated type ``kind`` of config field ``key``."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if raw not in [str(c) for c in choices]:
            raise UsageError(f"--set {key}={raw}: expected one of {', '.join(map(str, choices))}")
        return next(c for c in choices if str(c) == raw)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _parse_value(raw, args[0], key)
    if kind is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise UsageError(f"--set {key}={raw}: expected true or false")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise UsageError(f"--set {key}={raw}: expected {kind.__name__}") from None


def resolve_key(key: str) -> tuple[str, str]:
    """Return ``(section, field)`` of a ``--set`` key (``section.field`` or a bare field name).

    Raises ``UsageError`` for unknown and ambiguous keys.
    """
    if "." in key:
        section, name = key.split(".", 1)
        sections = [section] if section in SECTIONS else []
    else:
        name = key
        sections = [s for s, cls in SECTIONS.items() if name in cls.__dataclass_fields__]
    sections = [s for s in sections if name in SECTIONS[s].__dataclass_fields__]
    if len(sections) != 1:
        known = sorted({f for cls in SECTIONS.values() for f in cls.__dataclass_fields__})
        reason = "ambiguous" if sections else "unknown"
        raise UsageError(f"--set {key}: {reason} key; known keys: {', '.join(known)}")
    return sections[0], name


def apply_overrides(config: RunConfig, pairs: list[str]) -> RunConfig:
    """Apply ``key=value`` overrides, type-checked against the frozen config dataclasses.

    ``key`` is ``section.field`` (sections ``data``, ``model``, ``train``) or a bare field name
    found in exactly one section. Raises ``UsageError`` for unknown keys and bad values.
    """
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise UsageError(f"--set {pair}: expected key=value")
        section, name = resolve_key(key)
        hints = typing.get_type_hints(SECTIONS[section])
        value = _parse_value(raw, hints[name], key)
        attr = _SECTION_ATTR[section]
        config = dataclasses.replace(
            config, **{attr: dataclasses.replace(getattr(config, attr), **{name: value})}
        )
    return config


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ``UsageError`` (one line, exit 2 in ``main``)."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI parser (flags documented in the module docstring)."""
    parser = _Parser(prog="python -m hamfin.train", description=__doc__.split("\n")[0])
    parser.add_argument("--instrument", required=True, help="instrument id, e.g. EURUSD")
    parser.add_argument("--store", help="store root (default: the built-in synthetic store)")
    parser.add_argument("--start", help="first instant, ISO UTC (inclusive)")
    parser.add_argument("--end", help="last instant, ISO UTC (exclusive)")
    parser.add_argument("--bar", help="bar length, e.g. 5m, 15m, 1h (default 15m)")
    parser.add_argument("--model", choices=MODEL_NAMES, default="hmld")
    parser.add_argument("--horizon", type=int, help="label horizon in bars (default 1)")
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--devices", type=int)
    parser.add_argument("--strategy", help="Lightning strategy, e.g. ddp")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", default="runs", help="runs root (default: runs)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="continue an interrupted run: its .partial folder, or the latest one",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve defaults, flags and ``--set`` overrides into a ``RunConfig``."""
    data = {"instrument": args.instrument}
    for name in ("store", "start", "end", "bar", "horizon"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    train = {}
    for flag, name in (
        ("max_epochs", "max_epochs"),
        ("devices", "devices"),
        ("strategy", "strategy"),
        ("seed", "seed"),
    ):
        if getattr(args, flag) is not None:
            train[name] = getattr(args, flag)
    config = RunConfig(
        model=args.model, data=DataConfig(**data), train=TrainConfig(**train), out=args.out
    )
    return apply_overrides(config, args.set)


def validate(config: RunConfig) -> None:
    """Raise ``UsageError`` for option values no run can use."""
    d, t, m = config.data, config.train, config.model_config
    checks = [
        (d.window >= 2, f"window must be >= 2, got {d.window}"),
        (0 < d.span <= d.window, f"span must be in [1, window={d.window}], got {d.span}"),
        (d.n_folds >= 1, f"n_folds must be >= 1, got {d.n_folds}"),
        (d.batch_size >= 1, f"batch_size must be >= 1, got {d.batch_size}"),
        (t.max_epochs >= 1, f"max_epochs must be >= 1, got {t.max_epochs}"),
        (t.devices >= 1, f"devices must be >= 1, got {t.devices}"),
        (m.d_model >= 2 and m.n_layers >= 1, "d_model must be >= 2 and n_layers >= 1"),
        (t.lr > 0, f"lr must be > 0, got {t.lr}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


# ---- folders -----------------------------------------------------------------------------------


def _new_run_dirs(out: Path, instrument: str) -> tuple[Path, Path]:
    """Return (partial, final) folder paths for a new run, unique within ``out/instrument``."""
    base = out / instrument
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1000):
        name = stamp if i == 0 else f"{stamp}-{i}"
        final, partial = base / name, base / f".{name}.partial"
        if not final.exists() and not partial.exists():
            return partial, final
    raise UsageError(f"cannot find a free run folder name under {base}")


def _final_of(partial: Path) -> Path:
    return partial.parent / partial.name[1:].removesuffix(".partial")


def find_resumable(out: Path, instrument: str, which: str) -> Path:
    """Return the ``.partial`` folder to resume: ``which`` itself, or the latest under out."""
    if which != "latest":
        path = Path(which)
        if path.name.startswith(".") and path.name.endswith(".partial") and path.is_dir():
            return path
        hidden = path.parent / f".{path.name}.partial"
        if hidden.is_dir():
            return hidden
        if (path / "metrics.json").exists():
            raise UsageError(f"--resume {path}: that run is already complete")
        raise UsageError(f"--resume {path}: no interrupted run there")
    candidates = sorted((out / instrument).glob(".*.partial"))
    if not candidates:
        raise UsageError(f"--resume: no interrupted {instrument} run under {out}")
    return candidates[-1]


# ---- fitting -----------------------------------------------------------------------------------


class StepCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """Mid-epoch ``last.ckpt`` every n steps, except on an epoch's last batch.

    Lightning resumes a checkpoint taken on the last batch of an epoch (before validation) as
    if that epoch's validation had already run; skipping that one save keeps resumed runs
    identical to uninterrupted ones.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


@dataclass
class FitResult:
    """What ``fit`` returns."""

    system: ForecastSystem
    best_checkpoint: Path | None
    epochs: int
    best_val_loss: float | None
    trainer: L.Trainer


def _accelerator(config: TrainConfig) -> str:
    if config.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return config.accelerator


def fit(
    config: RunConfig,
    datamodule: TickDataModule,
    *,
    fold_dir: Path,
    seed: int | None = None,
    callbacks: typing.Sequence[L.Callback] = (),
    resume: bool = False,
) -> FitResult:
    """Train ``config.model`` on one fold's datamodule and return the best (val-loss) system.

    Shared by ``hamfin.train``, tuning and notebooks. Checkpoints go to
    ``fold_dir/checkpoints`` (``last.ckpt`` every ``checkpoint_every_n_steps`` steps, for
    mid-epoch resume; ``best.ckpt`` on val_loss); CSV logs to ``fold_dir/logs``.
    """
    t = config.train
    seed = t.seed if seed is None else seed
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    L.seed_everything(seed, workers=True, verbose=False)
    if t.threads:
        torch.set_num_threads(t.threads)
    system = ForecastSystem(config.model, config.model_config, t, n_features=datamodule.n_features)
    ckpt_dir = fold_dir / "checkpoints"
    has_val = len(datamodule.sets["val"]) > 0
    last = StepCheckpoint(
        dirpath=ckpt_dir,
        filename="step{step}",
        every_n_train_steps=t.checkpoint_every_n_steps,
        save_top_k=0,
        save_last=True,
        save_on_train_epoch_end=True,
    )
    cbs: list[L.Callback] = [last, EnergyMonitor(), *callbacks]
    best = None
    if has_val:
        best = L.pytorch.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor="val_loss",
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        )
        stop = L.pytorch.callbacks.EarlyStopping(
            "val_loss", patience=t.patience, check_on_train_epoch_end=False
        )
        cbs += [best, stop]
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=_accelerator(t),
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        deterministic=True,
        gradient_clip_val=t.gradient_clip or None,
        callbacks=cbs,
        logger=L.pytorch.loggers.CSVLogger(fold_dir, name="logs", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the datamodule shards training batches by rank itself
        limit_val_batches=1.0 if has_val else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    ckpt_path = ckpt_dir / "last.ckpt"
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        resume_from = str(ckpt_path) if resume and ckpt_path.exists() else None
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume_from)
    best_path = Path(best.best_model_path) if best is not None and best.best_model_path else None
    if best_path is not None and best_path.exists():
        state = torch.load(best_path, map_location="cpu", weights_only=False)
        system.load_state_dict(state["state_dict"])
    best_score = best.best_model_score if best is not None else None
    return FitResult(
        system=system,
        best_checkpoint=best_path,
        epochs=trainer.current_epoch,
        best_val_loss=float(best_score) if best_score is not None else None,
        trainer=trainer,
    )


# ---- scoring -----------------------------------------------------------------------------------


def _qlike_mean(realized_vol: np.ndarray, predicted_vol: np.ndarray) -> float:
    keep = realized_vol > 0  # QLIKE needs a positive realized variance (zero-return bars)
    return float(np.mean(qlike_loss(realized_vol[keep], predicted_vol[keep])))


def score_fold(
    forecasts: dict[str, dict],
    realized_return: np.ndarray,
    realized_vol: np.ndarray,
    *,
    horizon: int,
    seed: int,
) -> dict[str, dict]:
    """Score each model's forecasts of one fold; DM p-values against each baseline.

    ``dm_pvalue[b]`` uses squared return error for return baselines (random_walk, ar) and QLIKE
    for volatility baselines (har, garch); ``dm_stat[b] < 0`` means the model's loss is lower.
    """
    positive_vol = realized_vol > 0
    losses = {}
    for name, f in forecasts.items():
        losses[name] = {
            "return": squared_error(realized_return, f["predicted_return"]),
            "volatility": qlike_loss(
                realized_vol[positive_vol], f["predicted_volatility"][positive_vol]
            ),
        }
    scores = {}
    for name, f in forecasts.items():
        row = direction_scores(realized_return, f["direction_prob"], seed=seed)
        row["mse"] = float(np.mean(losses[name]["return"]))
        row["qlike"] = _qlike_mean(realized_vol, f["predicted_volatility"])
        row["n"] = int(realized_return.size)
        row["dm_pvalue"], row["dm_stat"] = {}, {}
        for base in BASELINES:
            if base == name or base not in forecasts:
                continue
            kind = "return" if base in RETURN_BASELINES else "volatility"
            dm = diebold_mariano(losses[name][kind], losses[base][kind], horizon=horizon)
            row["dm_pvalue"][base] = dm.pvalue
            row["dm_stat"][base] = dm.statistic
        scores[name] = row
    return scores


def _fmt(value: float, spec: str = ".3f") -> str:
    return "nan" if value is None or not np.isfinite(value) else format(value, spec)


def scorecard(metrics: dict) -> str:
    """Render metrics.json's per-model, per-fold scores as a text table."""
    header = (
        f"{'model':<14}{'fold':>4}{'n':>7}  {'AUC [95% CI]':<22}{'acc':>6}{'F1':>6}"
        f"{'MSE':>10}{'QLIKE':>7}  DM p-value vs " + " / ".join(BASELINES)
    )
    lines = [header, "-" * len(header)]
    for model, folds in metrics["models"].items():
        for fold, row in folds.items():
            ci = f"{_fmt(row['auc'])} [{_fmt(row['auc_ci_low'])}, {_fmt(row['auc_ci_high'])}]"
            dm = " / ".join(
                _fmt(row["dm_pvalue"].get(b), ".3f") if b in row["dm_pvalue"] else "  -  "
                for b in BASELINES
            )
            lines.append(
                f"{model:<14}{fold:>4}{row['n']:>7}  {ci:<22}{_fmt(row['accuracy']):>6}"
                f"{_fmt(row['f1'], '.2f'):>6}{_fmt(row['mse'], '.2e'):>10}"
                f"{_fmt(row['qlike'], '.3f'):>7}  {dm}"
            )
    lines.append(
        "DM: two-sided Diebold-Mariano p-value (Newey-West variance); against random_walk and ar "
        "on squared return error, against har and garch on QLIKE. AUC CI: moving-block bootstrap."
    )
    return "\n".join(lines)


# ---- the run -----------------------------------------------------------------------------------


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _fold_forecasts(fs: FeatureSet, dm: TickDataModule, pred: dict, config: RunConfig) -> dict:
    rows = pred["rows"]
    forecasts = {config.model: pred}
    baselines = fit_baselines(
        fs.returns,
        fs.label_volatility,
        dm.fold.train,
        rows,
        horizon=fs.horizon,
        bars_per_day=fs.bars_per_day,
    )
    for name, b in baselines.items():
        forecasts[name] = {
            "rows": rows,
            "predicted_return": b.predicted_return,
            "direction_prob": b.direction_prob,
            "predicted_volatility": b.predicted_volatility,
            "energy": None,
        }
    return forecasts


def _forecast_frame(fs: FeatureSet, fold: int, forecasts: dict, config: RunConfig) -> pl.DataFrame:
    frames = []
    for name, f in forecasts.items():
        rows = f["rows"]
        if name in ENERGY_MODELS and f.get("energy") is not None:
            energy = [list(map(float, e)) for e in f["energy"]]
        else:
            energy = [[] for _ in rows]
        frames.append(
            pl.DataFrame(
                {
                    "ts_event": fs.ts_event[rows],
                    "instrument_id": [fs.instrument] * rows.size,
                    "model": [name] * rows.size,
                    "fold": [fold] * rows.size,
                    "horizon": [fs.horizon] * rows.size,
                    "predicted_return": f["predicted_return"],
                    "direction_prob": f["direction_prob"],
                    "predicted_volatility": f["predicted_volatility"],
                    "energy": pl.Series("energy", energy, dtype=pl.List(pl.Float64)),
                    "realized_return": fs.label_return[rows],
                    "realized_volatility": fs.label_volatility[rows],
                    "synthetic": [fs.synthetic] * rows.size,
                }
            )
        )
    return pl.concat(frames)


def run(argv: typing.Sequence[str] | None = None, *, callbacks=()) -> Path:
    """Run the CLI in-process and return the finished run folder.

    ``callbacks`` are extra Lightning callbacks passed to every fold's trainer.

    Raises
    ------
    UsageError, DataError
        Bad input, before anything is written.
    """
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    env_dir = os.environ.get(RUN_DIR_ENV)
    if env_dir:  # a DDP worker started by rank 0, which wrote the resolved config already
        partial = Path(env_dir)
        config = RunConfig.from_dict(json.loads((partial / "config.json").read_text()))
        resume = args.resume is not None
    elif args.resume is not None:
        partial = find_resumable(out, args.instrument, args.resume)
        config = RunConfig.from_dict(json.loads((partial / "config.json").read_text()))
        resume = True
    else:
        config = config_from_args(args)
        partial, resume = None, False
    validate(config)
    fs = load_features(config.data)
    folds = make_folds(fs, config.data)
    modules = [
        TickDataModule(fs, fold, config.data, seed=config.train.seed + k)
        for k, fold in enumerate(folds)
    ]
    # validated: from here on we write
    rank = _rank()
    if partial is None:
        partial, _ = _new_run_dirs(out, config.data.instrument)
    final = _final_of(partial)
    if rank == 0:
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    os.environ[RUN_DIR_ENV] = str(partial)  # DDP workers re-run this script: same folder
    try:
        fold_meta = []
        for k, dm in enumerate(modules):
            fold_dir = partial / f"fold_{k}"
            done = fold_dir / "predictions.npz"
            if done.exists():
                saved = np.load(done)
                pred = {key: saved[key] for key in saved.files}
                meta = json.loads((fold_dir / "fit.json").read_text())
            else:
                result = fit(
                    config,
                    dm,
                    fold_dir=fold_dir,
                    seed=config.train.seed + k,
                    callbacks=callbacks,
                    resume=resume,
                )
                pred = predict_rows(result.system.model.cpu(), dm.sets["test"], dm.scales)
                meta = {
                    "epochs": result.epochs,
                    "best_val_loss": result.best_val_loss,
                    "world_size": result.trainer.world_size,
                }
                if rank == 0:
                    np.savez(done, **pred)
                    (fold_dir / "fit.json").write_text(json.dumps(meta) + "\n")
            fold_meta.append(meta)
        if rank != 0:
            return final
        metrics = {
            "instrument": fs.instrument,
            "synthetic": fs.synthetic,
            "bar": fs.bar,
            "horizon": fs.horizon,
            "model": config.model,
            "n_bars": int(fs.ts_event.size),
            "features": list(fs.feature_names),
            "absent_features": list(fs.absent_features),
            "folds": [],
            "models": {},
        }
        frames = []
        for k, (dm, pred) in enumerate(zip(modules, _saved_predictions(partial, len(modules)))):
            forecasts = _fold_forecasts(fs, dm, pred, config)
            rows = pred["rows"]
            scores = score_fold(
                forecasts,
                fs.label_return[rows],
                fs.label_volatility[rows],
                horizon=fs.horizon,
                seed=config.train.seed + k,
            )
            for name, row in scores.items():
                metrics["models"].setdefault(name, {})[str(k)] = row
            metrics["folds"].append(
                {
                    "fold": k,
                    "train_rows": int(dm.fold.train.size),
                    "val_rows": int(dm.fold.val.size),
                    "test_rows": int(rows.size),
                    "test_start": _iso(fs.ts_event[rows[:1]]),
                    "test_end": _iso(fs.ts_event[rows[-1:]]),
                    **fold_meta[k],
                }
            )
            frames.append(_forecast_frame(fs, k, forecasts, config))
        forecasts_frame = conform(pl.concat(frames), FORECASTS)
        check_schema(forecasts_frame, FORECASTS, what="forecasts.parquet")
        forecasts_frame.write_parquet(partial / "forecasts.parquet")
        metrics["wall_time_s"] = round(time.perf_counter() - started, 1)
        (partial / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json) + "\n")
        kind = "synthetic" if fs.synthetic else "real"
        title = f"{fs.instrument} {fs.bar} h={fs.horizon} ({kind} data), model {config.model}"
        print(title)  # noqa: T201
        print(scorecard(metrics))  # noqa: T201
        partial.rename(final)
    finally:
        if os.environ.get(RUN_DIR_ENV) == str(partial) and not env_dir:
            del os.environ[RUN_DIR_ENV]
    return final


def _saved_predictions(partial: Path, n: int):
    for k in range(n):
        saved = np.load(partial / f"fold_{k}" / "predictions.npz")
        yield {key: saved[key] for key in saved.files}


def _iso(ts: np.ndarray) -> str | None:
    return str(np.datetime64(int(ts[0]), "ns")) if ts.size else None


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the CLI; print the run folder last. Returns the exit code (2 on bad input)."""
    try:
        final = run(argv)
    except (UsageError, DataError) as error:
        print(f"hamfin.train: error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    if _rank() == 0:
        print(final, flush=True)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
