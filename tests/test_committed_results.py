"""The committed results regenerate the committed report byte for byte (the report is never edited by hand)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ftcp.evaluation.report import make_report

REPORT_DIR = Path(__file__).resolve().parents[1] / "Supplemental Information"


@pytest.mark.skipif(not (REPORT_DIR / "results").is_dir(), reason="no committed results in this checkout")
def test_committed_json_regenerates_results_md_byte_for_byte(tmp_path):
    make_report(REPORT_DIR / "results", tmp_path)
    assert (tmp_path / "RESULTS.md").read_bytes() == (REPORT_DIR / "RESULTS.md").read_bytes()


@pytest.mark.skipif(not (REPORT_DIR / "results").is_dir(), reason="no committed results in this checkout")
def test_committed_results_name_no_machine_paths():
    offenders = []
    for path in sorted((REPORT_DIR / "results").rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {bad}" for bad in ("/tmp/", "/home/", "/work/", "/root/") if bad in text]
    assert offenders == []


@pytest.mark.skipif(not (REPORT_DIR / "results").is_dir(), reason="no committed results in this checkout")
def test_committed_json_regenerates_the_readme_headline_tables(tmp_path):
    readme = REPORT_DIR.parent / "README.md"
    copy = tmp_path / "README.md"
    copy.write_bytes(readme.read_bytes())
    make_report(REPORT_DIR / "results", tmp_path / "report", readme=copy)
    assert copy.read_bytes() == readme.read_bytes()


def test_the_readme_block_is_replaced_in_place(tmp_path):
    from ftcp.evaluation.report import SUMMARY_END, SUMMARY_START, _write_summary

    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{SUMMARY_START}\nold\n{SUMMARY_END}\n\n## Next\n", encoding="utf-8")
    _write_summary(readme, ["| a |", "|---|"])
    _write_summary(readme, ["| b |", "|---|"])                     # idempotent: one block, the latest
    assert readme.read_text(encoding="utf-8") == f"# T\n\n{SUMMARY_START}\n| b |\n|---|\n{SUMMARY_END}\n\n## Next\n"
