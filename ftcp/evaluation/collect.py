"""Gather result JSON from run folders into the repository's results tree, machine paths removed.

    ftcp collect-results --from RESULTS_DIR [--from ...] --ssl-runs DIR [--ssl-runs ...] \
        --to "Supplemental Information/results" --path OLD=NEW [--path ...]

* ``--from``: results folders written by the scenario scripts and ``ftcp probe``
  (``scenario1/``, ``scenario2/``, ``scenario3/``, ``probes/``, each with one folder per SSL run);
* ``--ssl-runs``: folders holding SSL run directories; of each run its record (``ssl_run.json``),
  feature-table record (``ssl_features.json``), pretext table and every block's ``config.json``,
  ``metrics.json`` and ``train_all.json`` are kept (no ID lists, no arrays, no checkpoints);
* ``--path OLD=NEW``: every string that contains the path prefix OLD gets NEW instead (e.g. the
  data root becomes ``Data``), so a committed record names data by its manifest digest and a
  relative name.  After rewriting, a string that still holds an absolute path is an error.
* ``--commit OLD=NEW``: a record made in a copy of the tree whose ``.git`` was stale says commit
  OLD (and "dirty", measured against OLD); the tree that ran was commit NEW.  Its ``git`` entry
  becomes ``{"commit": NEW, "dirty": null, "corrected_from": OLD}``.

Files are written with sorted keys and a trailing newline (``io_utils.json_dumps``), so
collecting the same inputs twice gives the same bytes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserError
from ..io_utils import atomic_write_text, json_dumps

RESULT_KINDS = ("scenario1", "scenario2", "scenario3", "probes")
SSL_RUN_FILES = ("ssl_run.json", "ssl_features.json", "pretext_tasks.json", "train_all_summary.json")
SSL_BLOCK_FILES = ("config.json", "metrics.json", "train_all.json")
#: an absolute path left in a record (the paths a collected record may hold are relative)
_ABSOLUTE = re.compile(r"(^|[\s'\"=:(])/(?!/)[\w.-]+/[\w./-]+")


def _rewrite(obj, pairs: list[tuple[str, str]], commits: dict[str, str] | None = None):
    if isinstance(obj, dict):
        if commits and set(obj) >= {"commit", "dirty"} and obj.get("commit") in commits:
            return {"commit": commits[obj["commit"]], "dirty": None, "corrected_from": obj["commit"]}
        return {k: _rewrite(v, pairs, commits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, pairs, commits) for v in obj]
    if isinstance(obj, str):
        for old, new in pairs:
            obj = obj.replace(old, new)
    return obj


def _absolute_strings(obj, where: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in _absolute_strings(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [s for i, v in enumerate(obj) for s in _absolute_strings(v, f"{where}[{i}]")]
    if isinstance(obj, str) and _ABSOLUTE.search(obj):
        return [f"{where}: {obj[:160]}"]
    return []


def _copy(src: Path, dst: Path, pairs, commits=None) -> None:
    data = _rewrite(json.loads(src.read_text()), pairs, commits)
    left = _absolute_strings(data)
    if left:
        raise UserError(f"{src}: absolute paths remain after rewriting ({len(left)}), e.g. {left[0]}; "
                        f"add a --path OLD=NEW for them")
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst, json_dumps(data))


def collect(sources: list[Path], ssl_runs: list[Path], dest: Path, pairs: list[tuple[str, str]],
            commits: dict[str, str] | None = None) -> dict:
    """Copy (and rewrite) every result and SSL run record; returns counts per kind."""
    pairs = sorted(pairs, key=lambda p: -len(p[0]))          # longest prefix first
    counts: dict[str, int] = {}
    for src in sources:
        for kind in RESULT_KINDS:
            for f in sorted((src / kind).rglob("*.json")) if (src / kind).is_dir() else []:
                _copy(f, dest / kind / f.relative_to(src / kind), pairs, commits)
                counts[kind] = counts.get(kind, 0) + 1
    for base in ssl_runs:
        for run in sorted(p for p in base.iterdir() if p.is_dir() and any((p / n).exists() for n in SSL_RUN_FILES)):
            for name in SSL_RUN_FILES:
                if (run / name).exists():
                    _copy(run / name, dest / "ssl" / run.name / name, pairs, commits)
            for block in sorted(run.glob("block*_*")):
                for name in SSL_BLOCK_FILES:
                    if (block / name).exists():
                        _copy(block / name, dest / "ssl" / run.name / block.name / name, pairs, commits)
            counts["ssl runs"] = counts.get("ssl runs", 0) + 1
    return counts


def _pair(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise UserError(f"--path expects OLD=NEW, got {text!r}")
    old, new = text.split("=", 1)
    return old, new


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("collect-results", help="gather scenario, probe and SSL-run JSON into the repository's "
                                                      "results tree, with machine paths rewritten")
    p.add_argument("--from", dest="sources", metavar="DIR", action="append", default=[],
                   help="a results folder (scenario1/, scenario2/, scenario3/, probes/); repeatable")
    p.add_argument("--ssl-runs", metavar="DIR", action="append", default=[],
                   help="a folder of SSL run directories (their records, not their arrays); repeatable")
    p.add_argument("--to", metavar="DIR", required=True, help="destination, e.g. 'Supplemental Information/results'")
    p.add_argument("--path", metavar="OLD=NEW", action="append", default=[], type=_pair,
                   help="replace the path prefix OLD by NEW in every string; repeatable")
    p.add_argument("--commit", metavar="OLD=NEW", action="append", default=[], type=_pair,
                   help="records that say commit OLD ran from a tree at commit NEW (a stale .git beside a copied "
                        "tree); repeatable")

    def run(args) -> int:
        counts = collect([Path(s) for s in args.sources], [Path(s) for s in args.ssl_runs], Path(args.to), args.path,
                         dict(args.commit))
        print(", ".join(f"{k}: {v}" for k, v in counts.items()) or "nothing collected")
        return 0

    p.set_defaults(func=run)
