"""The committed results regenerate the committed report byte for byte (the report is never edited by hand)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcp.evaluation.collect import _absolute_strings
from ftcp.evaluation.report import make_report

REPORT_DIR = Path(__file__).resolve().parents[1] / "Supplemental Information"
committed = pytest.mark.skipif(not (REPORT_DIR / "results").is_dir(), reason="no committed results in this checkout")


@committed
def test_committed_json_regenerates_results_md_and_the_readme_headline_byte_for_byte(tmp_path):
    readme = REPORT_DIR.parent / "README.md"
    copy = tmp_path / "README.md"
    copy.write_bytes(readme.read_bytes())
    make_report(REPORT_DIR / "results", tmp_path / "report", readme=copy)
    assert (tmp_path / "report" / "RESULTS.md").read_bytes() == (REPORT_DIR / "RESULTS.md").read_bytes()
    assert copy.read_bytes() == readme.read_bytes()


@committed
def test_committed_results_name_no_machine_paths():
    # the check `ftcp collect-results` applies before it writes a file
    offenders = [s for path in sorted((REPORT_DIR / "results").rglob("*.json"))
                 for s in _absolute_strings(json.loads(path.read_text(encoding="utf-8")), path.name)]
    assert offenders == []


def test_the_readme_block_is_replaced_in_place(tmp_path):
    from ftcp.evaluation.report import SUMMARY_END, SUMMARY_START, _write_summary

    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{SUMMARY_START}\nold\n{SUMMARY_END}\n\n## Next\n", encoding="utf-8")
    _write_summary(readme, ["| a |", "|---|"])
    _write_summary(readme, ["| b |", "|---|"])                     # idempotent: one block, the latest
    assert readme.read_text(encoding="utf-8") == f"# T\n\n{SUMMARY_START}\n| b |\n|---|\n{SUMMARY_END}\n\n## Next\n"
