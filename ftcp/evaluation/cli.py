"""The evaluation commands of ``ftcp``: ``scenario1``, ``scenario2``, ``scenario3``, ``report`` and ``standin-ssl``.

The scenarios are the installed ``Evaluation_Scenarios`` package (``Scenario<N>_*/run_scenario<N>.py``, each a
``main(argv)``); ``ftcp scenarioN ARGS`` hands ``ARGS`` to that ``main`` (``ftcp scenario1 --help`` lists them),
``ftcp demo`` / ``ftcp reproduce`` call it in-process through ``run_scenario``, and the scripts are the same
``main``.  ``standin-ssl`` writes a marked stand-in SSL table for developing the evaluation before SSL features
exist.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from pathlib import Path

from ..io_utils import add_data_argument, resolve_data_root
from .features import STANDIN_INFO, write_standin_ssl
from .results import release_quick_limits, results_dir

SCENARIO_MODULES = {
    1: "Evaluation_Scenarios.Scenario1_Linear_Regression.run_scenario1",
    2: "Evaluation_Scenarios.Scenario2_Hybrid_Enrichment.run_scenario2",
    3: "Evaluation_Scenarios.Scenario3_Sample_Efficiency.run_scenario3",
}
REPORT_MODULE = "Evaluation_Scenarios.make_report"
SCENARIO_HELP = {1: "Scenario 1: linear regression on raw FTCP vs SSL features (the paper's first claim)",
                 2: "Scenario 2: hybrid FTCP + SSL features, MLPs and attribution (SHAP, group Shapley)",
                 3: "Scenario 3: sample efficiency and residual learning with SSL features"}


def scenario_main(number: int):
    """The ``main(argv)`` of scenario ``number`` (1..3)."""
    return importlib.import_module(SCENARIO_MODULES[int(number)]).main


@contextmanager
def _process_settings_restored():
    """Undo what a ``--quick`` scenario set for the whole process (single-threaded BLAS and torch)."""
    import torch  # the scenarios import it anyway

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        release_quick_limits()
        torch.set_num_threads(threads)


def run_scenario(number: int, argv: list[str]) -> int:
    """Scenario ``number`` with these arguments, in this process; its exit status."""
    with _process_settings_restored():
        rc = scenario_main(number)(list(argv))
    return rc if isinstance(rc, int) else 0


def regenerate_report(args) -> None:
    """Rebuild RESULTS.md + figures from every scenario's JSON (unless ``--no-report``)."""
    if getattr(args, "no_report", False):
        return
    from .report import make_report  # matplotlib

    path = make_report(results_dir(args), Path(args.report_dir))
    print(f"report: {path}")


# ---------------------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    for number, help_text in SCENARIO_HELP.items():
        p = subparsers.add_parser(f"scenario{number}", add_help=False, help=help_text,
                                  description=f"{help_text}. Every argument goes to "
                                              f"{SCENARIO_MODULES[number]}.main (--help lists them).")
        p.set_defaults(func=_passthrough(f"ftcp scenario{number}",
                                         lambda argv, prog, n=number: scenario_main(n)(argv, prog)),
                       passthrough=True)
    p = subparsers.add_parser("report", add_help=False,
                              help="regenerate RESULTS.md and its figures from the scenario JSON (--help: options)")
    p.set_defaults(func=_passthrough("ftcp report",
                                     lambda argv, prog: importlib.import_module(REPORT_MODULE).main(argv, prog)),
                   passthrough=True)

    p = subparsers.add_parser(
        "standin-ssl",
        help="write a clearly marked STAND-IN 2,048-d feature table (random projection of FTCP) "
             "for developing the evaluation before SSL features exist",
        description="Writes <root>/SSL/ssl_features.npy + ssl_material_ids.npy and "
                    "ssl_features_info.json marking them as a stand-in. Never report results made "
                    "from them as SSL results.")
    add_data_argument(p)
    p.add_argument("--seed", type=int, metavar="N", default=0, help="seed of the random projection (default 0)")
    p.add_argument("--force", action="store_true", help="replace existing SSL features")
    p.set_defaults(func=_standin)


def _passthrough(prog: str, main):
    """A handler that runs ``main(argv, prog)`` on the arguments after the command (``ftcp --data X cmd`` passes
    ``--data X`` on)."""
    def handler(args) -> int:
        argv = list(args.passthrough_argv)
        if getattr(args, "data", None) is not None:
            argv = ["--data", str(args.data), *argv]
        rc = main(argv, prog)
        return rc if isinstance(rc, int) else 0
    return handler


def _standin(args) -> int:
    root = resolve_data_root(getattr(args, "data", None))
    target = root / "SSL" / "ssl_features.npy"
    if target.exists() and not args.force and not (root / "SSL" / STANDIN_INFO).exists():
        raise FileExistsError(f"{target} exists and is not a stand-in; refusing to overwrite real features")
    if target.exists() and not args.force:
        raise FileExistsError(f"{target} exists (a stand-in); pass --force to rewrite it")
    path = write_standin_ssl(root, seed=args.seed)
    print(f"wrote STAND-IN features {path} (not SSL embeddings; marked in {STANDIN_INFO})")
    return 0


__all__ = ["register_cli", "run_scenario", "scenario_main", "regenerate_report", "SCENARIO_MODULES"]
