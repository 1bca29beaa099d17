"""Tiny data for the hamfin tests: a store of synthetic 1-minute EUR/USD bars (10 days) and a
quotes-only GBP/USD store, built once per session in a temporary folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from data_specs import load_spec
from pipelines.bars import time_bars
from pipelines.store import Store
from pipelines.synthetic import SyntheticConfig, generate_quotes


def _quotes(instrument: str, days: int, seed: int):
    start = dt.date(2024, 1, 1)
    return generate_quotes(
        load_spec(instrument),
        start=start,
        end=start + dt.timedelta(days=days),
        seed=seed,
        config=SyntheticConfig(ticks_per_second=0.05),
    )


@pytest.fixture(scope="session")
def bars_store(tmp_path_factory) -> Path:
    """A store holding only 1-minute EURUSD bars (10 calendar days, 8 trading days)."""
    root = tmp_path_factory.mktemp("bars_store")
    quotes = _quotes("EURUSD", 10, seed=1)
    bars = time_bars(quotes.lazy(), every="1m", spec=load_spec("EURUSD"))
    Store(root).write("bars", bars, instrument_id="EURUSD")
    return root


@pytest.fixture(scope="session")
def quotes_store(tmp_path_factory) -> Path:
    """A store holding only GBPUSD quotes (6 calendar days)."""
    root = tmp_path_factory.mktemp("quotes_store")
    Store(root).write("quotes", _quotes("GBPUSD", 6, seed=2).lazy(), instrument_id="GBPUSD")
    return root


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (no oversubscription on the shared 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
