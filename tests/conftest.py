"""Shared test fixtures.  Tests that need ../shared (real data, golden arrays) skip without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    """``$CRYS_SHARED``, else the first ``shared/`` beside the checkout or one of its parents
    (a git worktree may sit a level deeper than the main checkout)."""
    if os.environ.get("CRYS_SHARED"):
        return Path(os.environ["CRYS_SHARED"])
    for parent in REPO.parents:
        if (parent / "shared").is_dir():
            return parent / "shared"
    return REPO.parent / "shared"


SHARED = _find_shared()
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
