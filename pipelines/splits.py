"""Walk-forward splits with purge and embargo (López de Prado, *Advances in Financial ML*, ch. 7).

Samples are FEATURES rows in time order. The label of sample ``i`` looks ``horizon`` bars ahead,
so a training sample whose label window reaches into an evaluation block leaks that block's
returns into training: it is *purged*. Serial correlation leaks a little further, so a further
``embargo`` bars are dropped too. In walk-forward every training sample precedes its evaluation
blocks, so López de Prado's embargo *after* a test block becomes a gap *before* each
evaluation block: the ``horizon + embargo`` samples just before validation are dropped from
training, and the ``horizon + embargo`` samples just before the test block are dropped from
validation (validation drives early stopping and model selection, so it must not see test
returns either).

Layout of fold ``k`` (time runs left to right; ``g = horizon + embargo``)::

    | train ............ | g | val ..... | g | test_k |

Test blocks tile the data after ``train_min`` into ``n_folds`` consecutive blocks; with
``window="expanding"`` training starts at the first sample, with ``"rolling"`` it keeps the
length of the first fold's training window.

Horizon and embargo count *distinct timestamps*: samples sharing a ``ts_event`` (several
instruments at the same bar) always land in the same block, and a gap of ``g`` bars is ``g``
timestamps wide for every instrument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True, eq=False)
class Fold:
    """Index arrays (into the input ``ts_event``) of one walk-forward fold."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def walk_forward(
    ts_event,
    *,
    n_folds: int = 5,
    horizon: int = 1,
    embargo: int = 0,
    train_min: float | int = 0.5,
    val_fraction: float = 0.2,
    window: Literal["expanding", "rolling"] = "expanding",
) -> list[Fold]:
    """Return ``n_folds`` time-ordered walk-forward folds with purge and embargo.

    Parameters
    ----------
    ts_event
        Sample timestamps (``np.ndarray`` or ``pl.Series``), non-decreasing.
    n_folds
        Number of consecutive test blocks.
    horizon
        Label horizon in bars: training/validation samples whose label reaches into a later
        block are purged.
    embargo
        Extra bars dropped before each evaluation block.
    train_min
        Where the first test block starts: a fraction of the distinct timestamps (float in
        (0, 1)) or a count of them (int). Validation is carved out of this region.
    val_fraction
        Fraction of the region before each test block used for validation (0 for none).
    window
        ``"expanding"`` (train from the start) or ``"rolling"`` (fixed-length train window).

    Returns
    -------
    list[Fold]
        Sorted int64 index arrays; blocks never overlap and are time-ordered
        (``train < val < test`` in time, fold ``k``'s test block before fold ``k + 1``'s).

    Raises
    ------
    ValueError
        Unsorted timestamps, bad options, or too few samples for the requested folds.
    """
    ts = np.asarray(ts_event.to_numpy() if hasattr(ts_event, "to_numpy") else ts_event)
    if ts.ndim != 1:
        raise ValueError(f"ts_event must be one-dimensional, got shape {ts.shape}")
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("ts_event must be sorted in time (non-decreasing)")
    if n_folds < 1 or horizon < 0 or embargo < 0:
        raise ValueError(f"need n_folds >= 1, horizon >= 0, embargo >= 0; got {n_folds}, "
                         f"{horizon}, {embargo}")  # fmt: skip
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if window not in ("expanding", "rolling"):
        raise ValueError(f"window must be 'expanding' or 'rolling', got {window!r}")

    _, step = np.unique(ts, return_inverse=True)  # sample -> index of its distinct timestamp
    n = int(step.max()) + 1 if ts.size else 0
    first = int(train_min * n) if isinstance(train_min, float) else int(train_min)
    if not 0 < first < n:
        raise ValueError(f"train_min={train_min} leaves no room for test blocks in {n} bars")
    block = (n - first) // n_folds
    gap = horizon + embargo
    if block < 1:
        raise ValueError(f"{n - first} bars after train_min cannot make {n_folds} test blocks")

    folds = []
    train_len = None
    for k in range(n_folds):
        test_lo = first + k * block
        test_hi = n if k == n_folds - 1 else test_lo + block
        pre = test_lo - gap  # validation and training live in [0, pre)
        val_len = int(round(val_fraction * pre))
        val_lo = pre - val_len
        train_hi = val_lo - gap if val_len else pre
        if train_len is None:
            train_len = train_hi
        train_lo = max(0, train_hi - train_len) if window == "rolling" else 0
        if train_hi - train_lo < 1 or (val_fraction and val_len < 1):
            raise ValueError(
                f"fold {k}: too few bars for train/val with horizon={horizon}, embargo={embargo}"
            )
        folds.append(
            Fold(
                train=_members(step, train_lo, train_hi),
                val=_members(step, val_lo, pre) if val_len else np.empty(0, np.int64),
                test=_members(step, test_lo, test_hi),
            )
        )
    return folds


def _members(step: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Return the sample indices whose distinct-timestamp index lies in ``[lo, hi)``."""
    return np.flatnonzero((step >= lo) & (step < hi)).astype(np.int64)
