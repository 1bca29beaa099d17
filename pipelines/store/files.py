"""Partition files on disk: how they are encoded, and how they are made durable.

Every partition file is written by :func:`write_parquet`. Durability is bought in bulk: staged
files start their write-back as soon as they are written (:func:`_start_writeback`), and a
commit makes a whole folder tree durable with one ``syncfs(2)`` on Linux, else with an
``fsync`` per file and folder (:func:`_make_durable`).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

COMPRESSION = "lz4"
WRITE_THREADS = max(2, min(4, os.cpu_count() or 1))


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write one partition file: int64 columns delta-encoded, every other column dictionary-encoded.

    Tick timestamps and line numbers grow steadily, so ``DELTA_BINARY_PACKED`` stores them in a
    few bits per row; prices repeat (a day of EUR/USD quotes has a few thousand distinct
    prices) and lineage paths repeat, so dictionaries suit them (Parquet falls back to plain
    pages where a dictionary grows too large). Then LZ4. Compared with Polars' writer
    (dictionary or plain only): files about 2.5x smaller for the same write time or less.
    Statistics are written, so ``ts_event`` filters prune row groups.
    """
    table = frame.to_arrow()
    ints = [f.name for f in table.schema if pa.types.is_int64(f.type)]
    others = [f.name for f in table.schema if f.name not in ints]
    pq.write_table(
        table,
        path,
        compression=COMPRESSION,
        use_dictionary=others,
        column_encoding=dict.fromkeys(ints, "DELTA_BINARY_PACKED"),
        write_statistics=True,
    )


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_all(paths: Iterable[Path]) -> None:
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        list(pool.map(_fsync_path, paths))


def _syncfs(folder: Path) -> bool:
    """Flush the whole file system holding ``folder`` with one ``syncfs(2)``; False if unavailable.

    One call makes every staged file and folder durable at once: much cheaper than one
    ``fsync`` per file (each forces a journal commit of its own) when a transaction stages
    dozens of partitions.
    """
    if _LIBC is None:
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        return _LIBC.syncfs(fd) == 0
    finally:
        os.close(fd)


def _start_writeback(path: Path) -> None:
    """Ask the kernel to start writing ``path`` to disk now, without waiting (Linux).

    ``POSIX_FADV_DONTNEED`` on dirty pages starts their write-back asynchronously, so by the
    commit's ``syncfs`` most staged bytes are already on disk while the other partitions were
    being built; elsewhere this is a no-op and the commit's sync does all the work.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _make_durable(folder: Path, paths: Iterable[Path]) -> None:
    """Make ``paths`` (files and folders under ``folder``) durable: syncfs, else one fsync each."""
    if not _syncfs(folder):
        _fsync_all(paths)


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs  # noqa: B018 - AttributeError where the C library lacks it
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()
