"""The documents: a README a newcomer reads in minutes, and no words about the machines the work ran on."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: fragments that only a description of the machines or the way the work was organised would contain
MACHINE_WORDS = ("/work/", "/tmp/w", ".carry", "$OUT", "GPU box", "lent ", "this session", "scratch folder")


def test_readme_is_at_most_15_kb():
    assert (REPO / "README.md").stat().st_size <= 15_000


def _tracked_documents() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / line for line in out.stdout.splitlines() if line]


def test_no_document_describes_the_machines_it_was_made_on():
    offenders = []
    for path in _tracked_documents():
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(REPO)}: {w!r}" for w in MACHINE_WORDS if w in text]
    assert offenders == []
