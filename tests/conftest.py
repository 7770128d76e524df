"""Shared test fixtures.  Tests that need ../shared (real data, golden arrays) skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRYS_SHARED", REPO.parent / "shared"))
GOLDEN_DIR = SHARED / "reference" / "ftcp_golden"
MP36K_CSV = SHARED / "data" / "mp_36k" / "mp_36k.csv.gz"


def need_shared(path: Path):
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent on a fresh clone)")
    return path


@pytest.fixture(scope="session")
def golden_dir():
    return need_shared(GOLDEN_DIR)


@pytest.fixture(scope="session")
def mp36k_csv():
    return need_shared(MP36K_CSV)
