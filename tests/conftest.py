"""Shared fixtures: paths to the real data in ../shared/data (skipped when absent) and to tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.paths import REPO_ROOT, SHARED_DATA_DIR

TESTS_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def tests_data() -> Path:
    return TESTS_DATA
