"""Fixtures for the strategies tests (builders live in ``factories``)."""

import polars as pl
import pytest

from tests.strategies.factories import make_bars


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    """Two thousand hourly EURUSD bars of a random walk."""
    return make_bars()
