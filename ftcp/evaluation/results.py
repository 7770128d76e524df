"""Scenario results as JSON files with provenance, and the shared command-line options."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..io_utils import add_data_argument, atomic_write_json, read_json, resolve_data_root, to_jsonable, utc_now
from ..provenance import REPO, command_line, git_commit, hardware_summary, versions

#: RESULTS.md and the figures: the repository's folder in a checkout, else ./Supplemental Information
DEFAULT_REPORT_DIR = (REPO / "Supplemental Information" if (REPO / "Supplemental Information").is_dir()
                      else Path("Supplemental Information"))


def add_common_arguments(parser: argparse.ArgumentParser, default_seed: int = 42) -> None:
    """--data, --out, --report-dir, --seed, --quick, --device, --no-report for every scenario."""
    add_data_argument(parser, top_level=True)
    parser.add_argument("--ssl", metavar="DIR", default=None,
                        help="SSL directory holding ssl_features.npy, i.e. which SSL run (default: <data root>/SSL); "
                             "results go under a folder named after it")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="results folder for the JSON files (default: <data root>/Results)")
    parser.add_argument("--report-dir", metavar="DIR", default=str(DEFAULT_REPORT_DIR),
                        help="where RESULTS.md and the figures are regenerated (default: %(default)s)")
    parser.add_argument("--no-report", action="store_true",
                        help="only write the JSON; do not regenerate RESULTS.md and figures")
    parser.add_argument("--seed", type=int, default=default_seed, help="base seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small subsample and fewer repeats: an end-to-end smoke run, not a benchmark")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="torch device for the MLPs (auto = CUDA when available)")


_THREAD_LIMITS = []


def apply_quick_caps(args, caps: dict) -> None:
    """With ``--quick``: lower each named option to at most its cap (a smoke run, not a benchmark),
    and run BLAS/OpenMP/torch single-threaded: on tiny problems thread start-up and spinning
    cost more than they save, badly so on a busy machine (``release_quick_limits`` undoes the BLAS part)."""
    if getattr(args, "quick", False):
        for name, cap in caps.items():
            setattr(args, name, min(getattr(args, name), cap))
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        _THREAD_LIMITS.append(threadpool_limits(limits=1))     # kept until release_quick_limits()
        try:
            import torch  # optional here: only the MLP scenarios need it

            torch.set_num_threads(1)
        except ImportError:
            pass


def release_quick_limits() -> None:
    """Restore the BLAS/OpenMP thread limits that ``apply_quick_caps`` set (a scenario run in-process)."""
    while _THREAD_LIMITS:
        _THREAD_LIMITS.pop().restore_original_limits()


def results_dir(args) -> Path:
    return Path(args.out) if args.out else resolve_data_root(args.data) / "Results"


def provenance(dataset: dict, seed: int, extra: dict | None = None, command: str | None = None) -> dict:
    """Everything needed to say where a number came from (``command``: see :func:`command_line`)."""
    return {
        "dataset": dataset,
        "seed": int(seed),
        "command": command or command_line(sys.argv[0] if sys.argv else "-"),
        "hardware": hardware_summary(),
        "versions": versions(),
        "date_utc": utc_now(),
        "git": git_commit(),
        **(extra or {}),
    }


def ssl_dir_of(args) -> Path:
    return Path(args.ssl) if getattr(args, "ssl", None) else resolve_data_root(args.data) / "SSL"


def write_result(out_dir, scenario: int | str, name: str, payload: dict, run_label: str | None = None) -> Path:
    """``<out>/scenario<N>/<run label>/<name>.json`` (the label names the SSL run; 'baselines' when
    the result uses no SSL features); a string ``scenario`` names the folder itself (e.g. ``probes``)."""
    folder = Path(out_dir) / (f"scenario{scenario}" if isinstance(scenario, int) else scenario)
    if run_label:
        folder = folder / run_label
    path = folder / f"{name}.json"
    atomic_write_json(path, to_jsonable(payload))
    return path


def load_results(results_root, scenario: int | str) -> list[dict]:
    folder = Path(results_root) / (f"scenario{scenario}" if isinstance(scenario, int) else scenario)
    out = []
    for p in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        d = read_json(p)
        d["_file"] = str(p.relative_to(results_root))
        out.append(d)
    return out
