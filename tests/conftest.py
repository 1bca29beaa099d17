"""Shared fixtures: where the real vendor samples live (never copied into the repo)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HAMFIN_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return ``../shared/data``; skip with a reason where the samples are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real vendor samples not found at {SHARED_DATA} (set HAMFIN_SHARED_DATA)")
    return SHARED_DATA
