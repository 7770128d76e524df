#!/usr/bin/env python
"""Regenerate ``Supplemental Information/RESULTS.md`` and its figures from the scenario JSON.

    ftcp report --data Data                                   # results in Data/Results
    ftcp report --results runs/Results --report-dir out/
    python Evaluation_Scenarios/make_report.py --data Data    # the same
    # the committed report and the README's headline tables, from the committed JSON
    python Evaluation_Scenarios/make_report.py --results "Supplemental Information/results" --readme README.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftcp.errors import UserError, run_main
from ftcp.evaluation.report import make_report
from ftcp.evaluation.results import DEFAULT_REPORT_DIR
from ftcp.io_utils import add_data_argument, resolve_data_root
from ftcp.logs import configure


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_data_argument(p, top_level=True)
    p.add_argument("--results", metavar="DIR", default=None,
                   help="folder holding scenario1/, scenario2/, scenario3/ (default: <data root>/Results)")
    p.add_argument("--report-dir", metavar="DIR", default=str(DEFAULT_REPORT_DIR),
                   help="where RESULTS.md and the PNG figures go (default: %(default)s)")
    p.add_argument("--readme", metavar="FILE", default=None,
                   help="also write the headline tables between FILE's <!-- RESULTS SUMMARY --> markers")
    configure()
    args = p.parse_args(argv)
    results = Path(args.results) if args.results else resolve_data_root(args.data) / "Results"
    if not results.is_dir():
        raise UserError(f"no results folder {results}: run the scenario scripts first")
    if args.readme and not Path(args.readme).is_file():
        raise UserError(f"--readme {args.readme}: no such file")
    print(make_report(results, Path(args.report_dir), readme=args.readme))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
