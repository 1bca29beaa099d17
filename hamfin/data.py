"""From the store to training windows: bars → features/labels → checks → walk-forward folds →
normalized windows (``TickDataModule``).

Reading goes through ``pipelines`` (``Store.scan``, ``time_bars``, ``build_features``,
``walk_forward``); nothing here parses vendor files. The built-in synthetic store
(``pipelines.synthetic.default_store``) is used when no store is given, and everything made from
it is flagged ``synthetic``.

Windows. A sample is the window of ``window`` bars ending at row ``e``; its loss (or its
predictions) count only on the last ``span`` positions whose rows belong to the split, so each
row of a split is scored exactly once, with at least ``window − span`` bars of context. Inputs
are features (known at their row's ``ts_event``), so context reaching back before a split's
first row is legitimate; labels of rows outside the split are never used.

Normalization (feature mean/std, return and volatility scales) is fit on the fold's training
rows only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

from data_specs import SpecError, load_spec
from pipelines.bars import resample_bars, time_bars
from pipelines.errors import PipelineError
from pipelines.features import build_features, feature_columns
from pipelines.splits import Fold, walk_forward
from pipelines.store import Store

_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86_400 * 10**9}


class DataError(ValueError):
    """Bad input data or options; ``str()`` is one line naming what is wrong."""


class LeakageError(DataError):
    """A feature (nearly) reproduces or perfectly predicts a label."""


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is cut (bars, windows, folds)."""

    instrument: str = "EURUSD"
    store: str | None = None  # store root; None = the built-in synthetic store
    start: str | None = None  # ISO date/time, UTC, inclusive
    end: str | None = None  # exclusive
    bar: str = "15m"  # bar length: a Polars duration "Nm", "Nh", "Nd"
    horizon: int = 1  # label horizon in bars
    window: int = 64  # bars per sample
    span: int = 32  # scored positions per window (the rest is context)
    n_folds: int = 3
    train_min: float = 0.6  # share of the data before the first test block
    val_fraction: float = 0.2
    embargo: int = 2  # bars dropped before each evaluation block (besides the horizon)
    batch_size: int = 32
    min_bars: int = 300  # fewer bars than this after features is "too short"
    leakage_threshold: float = 0.98  # |corr| or AUC distance from 0.5 (×2) that counts as leak


def bar_ns(bar: str) -> int:
    """Return the length of a bar string like ``"15m"`` in nanoseconds."""
    unit = bar[-1:]
    if unit not in _NS or not bar[:-1].isdigit() or int(bar[:-1]) < 1:
        message = f"bad bar length '{bar}': expected e.g. 1m, 5m, 15m, 1h, 1d"
        raise DataError(message)
    return int(bar[:-1]) * _NS[unit]


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features and labels of one instrument, rows in time order (N rows, F features)."""

    instrument: str
    ts_event: np.ndarray  # (N,) int64 ns, the instant the row's features are known
    features: np.ndarray  # (N, F) float64
    feature_names: tuple[str, ...]
    label_return: np.ndarray  # (N,) log return over the next `horizon` bars
    label_volatility: np.ndarray  # (N,) realized volatility of the next `horizon` bars
    returns: np.ndarray  # (N,) one-bar log return known at the row (for the baselines)
    horizon: int
    bar: str
    synthetic: bool
    absent_features: tuple[str, ...] = ()  # features the source cannot provide (all null)

    @property
    def label_direction(self) -> np.ndarray:
        """Return 1.0 where the forward return is positive, else 0.0 (N,)."""
        return (self.label_return > 0).astype(np.float64)

    @property
    def bars_per_day(self) -> int:
        """Return the bars in 24 hours at this bar length."""
        return max(1, _NS["d"] // bar_ns(self.bar))


def _store_root(config: DataConfig) -> tuple[Path, bool]:
    if config.store is None:
        from pipelines.synthetic import default_store

        root = Path(default_store(instrument_id=config.instrument))
    else:
        root = Path(config.store)
        if not root.is_dir():
            message = f"--store {root}: no such directory"
            raise DataError(message)
    return root, (root / "SYNTHETIC").exists()


def _load_bars(config: DataConfig, root: Path, spec) -> pl.DataFrame:
    """Return BARS at ``config.bar``: stored bars (resampled if coarser) or bars from quotes."""
    store = Store(root)
    want = bar_ns(config.bar)
    instrument = config.instrument
    tables = [t for t in ("bars", "quotes") if instrument in store.instruments(t)]
    if not tables:
        message = f"store {root} has no bars or quotes for instrument {instrument}"
        raise DataError(message)
    if "bars" in tables:
        bars = store.scan("bars", instrument, start=config.start, end=config.end).collect()
        if bars.height:
            native = int(np.median((bars["ts_close"] - bars["ts_event"]).to_numpy()))
            if want == native:
                return bars.sort("ts_event")
            if want % native == 0:
                return resample_bars(bars.lazy(), every=config.bar).collect().sort("ts_event")
            if "quotes" not in tables:
                message = (
                    f"--bar {config.bar} is not a multiple of the stored {native // 10**9}s bars "
                    f"of {instrument} and the store has no quotes to build it from"
                )
                raise DataError(message)
    quotes = store.scan("quotes", instrument, start=config.start, end=config.end)
    return time_bars(quotes, every=config.bar, spec=spec).collect().sort("ts_event")


def load_features(config: DataConfig) -> FeatureSet:
    """Read bars for ``config`` from the store, build features and labels, and check them.

    Raises
    ------
    DataError
        Unknown instrument, missing store/instrument, empty or too-short range, non-finite
        features; ``LeakageError`` when a feature reproduces a label.
    """
    try:
        spec = load_spec(config.instrument)
    except (SpecError, FileNotFoundError) as error:
        message = f"unknown instrument '{config.instrument}': {str(error).splitlines()[0]}"
        raise DataError(message) from error
    root, synthetic = _store_root(config)
    try:
        bars = _load_bars(config, root, spec)
    except PipelineError as error:
        raise DataError(str(error).splitlines()[0]) from error
    rng = f"[{config.start or 'start'}, {config.end or 'end'})"
    if bars.height == 0:
        message = f"no {config.instrument} data in {root} for {rng}"
        raise DataError(message)
    h = config.horizon
    if h < 1:
        message = f"horizon must be >= 1 bar, got {h}"
        raise DataError(message)
    frame = build_features(bars.lazy(), spec=spec, horizons=(h,)).collect()
    one_bar = bars.select(
        pl.col("ts_close").alias("ts_event"), pl.col("close").log().diff().alias("_r1")
    )
    frame = frame.join(one_bar, on="ts_event", how="left").filter(
        pl.col(f"label_return_h{h}").is_not_null()
    )
    if frame.height < config.min_bars:
        message = (
            f"only {frame.height} usable {config.bar} bars of {config.instrument} in {rng} "
            f"(need at least {config.min_bars}); widen --start/--end or use a shorter --bar"
        )
        raise DataError(message)
    names = tuple(feature_columns(frame.drop("_r1")))
    # Columns the source cannot provide (vendor bars carry no tick counts, spreads or intrabar
    # variance) are null in every row: leave them out. Partial gaps are an error (below).
    absent = tuple(n for n in names if frame[n].is_null().all() or frame[n].is_nan().all())
    names = tuple(n for n in names if n not in absent)
    if not names:
        message = f"no usable features for {config.instrument}: every feature column is empty"
        raise DataError(message)
    features = frame.select(names).to_numpy().astype(np.float64)
    check_finite(features, names, frame["ts_event"].to_numpy())
    fs = FeatureSet(
        instrument=config.instrument,
        ts_event=frame["ts_event"].to_numpy().astype(np.int64),
        features=features,
        feature_names=names,
        label_return=frame[f"label_return_h{h}"].to_numpy().astype(np.float64),
        label_volatility=frame[f"label_volatility_h{h}"].to_numpy().astype(np.float64),
        returns=np.nan_to_num(frame["_r1"].to_numpy().astype(np.float64)),
        horizon=h,
        bar=config.bar,
        synthetic=synthetic,
        absent_features=absent,
    )
    check_leakage(fs, threshold=config.leakage_threshold)
    return fs


def check_finite(features: np.ndarray, names, ts_event: np.ndarray) -> None:
    """Raise ``DataError`` naming the first feature with a NaN/inf/null and where it is."""
    bad = ~np.isfinite(features)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        when = np.datetime64(int(ts_event[row]), "ns")
        message = (
            f"feature '{names[col]}' has {int(bad[:, col].sum())} NaN/inf values "
            f"(first at {when} UTC); clean the bars or the date range"
        )
        raise DataError(message)


def _auc_distance(score: np.ndarray, positive: np.ndarray) -> float:
    """Return |AUC − 0.5| × 2 (1 = the score separates the classes perfectly)."""
    from hamfin.metrics import auc

    value = auc(positive, score)
    return 0.0 if math.isnan(value) else abs(value - 0.5) * 2


def check_leakage(fs: FeatureSet, *, threshold: float = 0.98) -> None:
    """Fail loudly when a feature (nearly) equals a label or perfectly predicts the direction.

    For every feature: |Pearson corr| with the forward return and with the forward volatility,
    and the direction AUC's distance from 0.5 (×2), must stay below ``threshold``.

    Raises
    ------
    LeakageError
        Naming the feature, the label and the statistic.
    """
    labels = {
        "label_return": fs.label_return,
        "label_volatility": fs.label_volatility,
    }
    positive = fs.label_return > 0
    for j, name in enumerate(fs.feature_names):
        x = fs.features[:, j]
        if np.std(x) == 0:
            continue
        for label, y in labels.items():
            ok = np.isfinite(y)
            if np.std(y[ok]) == 0:
                continue
            corr = float(np.corrcoef(x[ok], y[ok])[0, 1])
            if abs(corr) >= threshold:
                message = (
                    f"leakage: feature '{name}' reproduces {label}_h{fs.horizon} "
                    f"(corr {corr:+.3f}); features must use information up to ts_event only"
                )
                raise LeakageError(message)
        distance = _auc_distance(x, positive)
        if distance >= threshold:
            message = (
                f"leakage: feature '{name}' separates label_direction_h{fs.horizon} "
                f"(AUC {0.5 + distance / 2:.3f} or its mirror); features must not see the future"
            )
            raise LeakageError(message)


def make_folds(fs: FeatureSet, config: DataConfig) -> list[Fold]:
    """Return purged/embargoed walk-forward folds (``pipelines.splits.walk_forward``)."""
    try:
        return walk_forward(
            fs.ts_event,
            n_folds=config.n_folds,
            horizon=fs.horizon,
            embargo=config.embargo,
            train_min=config.train_min,
            val_fraction=config.val_fraction,
        )
    except ValueError as error:
        message = f"cannot cut {config.n_folds} walk-forward folds from {fs.ts_event.size} bars: "
        raise DataError(message + str(error)) from error


def cover_windows(rows: np.ndarray, *, n: int, window: int, span: int):
    """Choose window ends so each row in ``rows`` is scored once, with ≥ window − span context.

    Rows earlier than ``window − 1`` (not enough history) are dropped.

    Returns
    -------
    ends : ndarray of shape (n_windows,)
        Last row of each window.
    weights : ndarray of shape (n_windows, window)
        1.0 where the position's row is in ``rows`` and scored by this window, else 0.0.
    """
    member = np.zeros(n, dtype=bool)
    member[rows[rows >= window - 1]] = True
    covered = np.zeros(n, dtype=bool)
    ends, weights = [], []
    for i in np.flatnonzero(member):
        if covered[i]:
            continue
        end = min(i + span - 1, n - 1)
        pos = np.arange(end - window + 1, end + 1)
        scored = member[pos] & ~covered[pos] & (pos >= end - span + 1)
        covered[pos[scored]] = True
        ends.append(end)
        weights.append(scored.astype(np.float32))
    if not ends:
        return np.empty(0, np.int64), np.empty((0, window), np.float32)
    return np.asarray(ends, np.int64), np.stack(weights)


@dataclass(frozen=True, eq=False)
class Scales:
    """Normalization fit on a fold's training rows."""

    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)
    return_scale: float  # std of the forward return
    volatility_scale: float  # root mean square of the forward volatility


def fit_scales(fs: FeatureSet, train: np.ndarray) -> Scales:
    """Fit feature mean/std and label scales on ``train`` rows only."""
    x = fs.features[train]
    std = x.std(axis=0)
    std[std == 0] = 1.0
    vol = fs.label_volatility[train]
    return Scales(
        mean=x.mean(axis=0),
        std=std,
        return_scale=float(np.std(fs.label_return[train])) or 1.0,
        volatility_scale=float(np.sqrt(np.mean(vol**2))) or 1.0,
    )


class WindowSet(Dataset):
    """Windows over a normalized feature matrix; items ``(x (W, F), y (W, 3), w (W,))``.

    ``y[..., 0]`` standardized return, ``y[..., 1]`` direction (0/1), ``y[..., 2]``
    standardized volatility.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, ends: np.ndarray, weights: np.ndarray, window: int
    ) -> None:
        self.x, self.y, self.window = x, y, window
        self.ends = torch.as_tensor(ends)
        self.weights = torch.as_tensor(weights)

    def __len__(self) -> int:
        return int(self.ends.numel())

    def rows(self, i: int) -> torch.Tensor:
        """Return the row index of each position of window ``i``, shape (W,)."""
        end = int(self.ends[i])
        return torch.arange(end - self.window + 1, end + 1)

    def __getitem__(self, i: int):
        end = int(self.ends[i])
        sl = slice(end - self.window + 1, end + 1)
        return self.x[sl], self.y[sl], self.weights[i]


class ResumableBatchSampler:
    """Shuffled batches whose order is a function of (seed, epoch, rank) only, resumable
    mid-epoch: ``skip`` batches already trained are not yielded again after a restart."""

    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch = 0
        self.skip = 0
        self.rank, self.world = 0, 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        per_rank = -(-self.n // self.world)
        order = np.resize(order, per_rank * self.world)[self.rank :: self.world]
        starts = range(0, order.size, self.batch_size)
        return [order[i : i + self.batch_size].tolist() for i in starts]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world)
        return -(-per_rank // self.batch_size)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        yield from self._batches()[skip:]


class ResumableLoader(DataLoader):
    """A DataLoader Lightning can checkpoint mid-epoch (it implements ``state_dict``).

    The state is the number of batches the trainer has processed in the current epoch, read from
    ``progress()``; on restore the batch sampler skips that many.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableBatchSampler, progress) -> None:
        super().__init__(dataset, batch_sampler=sampler, num_workers=0)
        self.progress = progress

    def state_dict(self) -> dict:
        return {"processed": int(self.progress())}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.skip = int(state.get("processed", 0))


class TickDataModule(L.LightningDataModule):
    """Windows of one walk-forward fold, normalized on its training rows.

    Parameters
    ----------
    features : FeatureSet
        From ``load_features`` (or built by hand in tests).
    fold : Fold
        Index arrays from ``make_folds``.
    config : DataConfig
    seed : int
        Seeds the shuffling of training batches.
    """

    def __init__(self, features: FeatureSet, fold: Fold, config: DataConfig, *, seed: int = 0):
        super().__init__()
        self.fs, self.fold, self.config, self.seed = features, fold, config, seed
        self.scales = fit_scales(features, fold.train)
        x = (features.features - self.scales.mean) / self.scales.std
        y = np.column_stack(
            [
                features.label_return / self.scales.return_scale,
                features.label_direction,
                features.label_volatility / self.scales.volatility_scale,
            ]
        )
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = torch.as_tensor(np.nan_to_num(y), dtype=torch.float32)
        self.sets = {
            split: self._windows(getattr(fold, split)) for split in ("train", "val", "test")
        }
        if len(self.sets["train"]) == 0:
            message = f"fold has no training windows of {config.window} bars"
            raise DataError(message)

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    def _windows(self, rows: np.ndarray) -> WindowSet:
        ends, weights = cover_windows(
            rows, n=self.x.shape[0], window=self.config.window, span=self.config.span
        )
        return WindowSet(self.x, self.y, ends, weights, self.config.window)

    def _progress(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        sampler = ResumableBatchSampler(
            len(self.sets["train"]), self.config.batch_size, seed=self.seed
        )
        if self.trainer is not None:
            sampler.rank, sampler.world = self.trainer.global_rank, self.trainer.world_size
        return ResumableLoader(self.sets["train"], sampler, self._progress)

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.sets[split], batch_size=4 * self.config.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
