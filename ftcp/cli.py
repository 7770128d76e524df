"""The ``ftcp`` command line (``python -m ftcp ...`` or the ``ftcp`` console script).

Commands come from a registry: every module listed in ``COMMAND_MODULES`` exposes
``register_cli(subparsers)``, which adds its subcommand(s) and sets ``func(args) -> int``
as the handler.  Adding a command is a one-line change to this list.  Modules are imported
when the parser is built; keep heavy imports (pymatgen, torch) inside the handlers.
"""
from __future__ import annotations

import argparse
import importlib

from .errors import add_debug_argument, guarded_call, run_main
from .io_utils import DATA_ENV, add_data_argument
from .logs import configure

COMMAND_MODULES = [
    "ftcp.store",       # build, info
    "ftcp.splitting",   # split
    "ftcp.hub",         # download, publish, fetch
    "ftcp.ssl.cli",     # ssl-prepare, ssl-pack, ssl-train, ssl-train-all, ssl-assemble, ssl-pretext-table, ssl-export
    "ftcp.embedding",   # embed
    "ftcp.evaluation.block_probe",  # probe
    "ftcp.evaluation.collect",      # collect-results
    "ftcp.evaluation.cli",          # scenario1, scenario2, scenario3, report, standin-ssl
    "ftcp.pipeline",    # demo, reproduce
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ftcp",
        description="FTCP crystal representations: build data stores, splits, SSL embeddings and evaluations. "
                    f"The data root is --data DIR, else ${DATA_ENV}, else ./Data.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_data_argument(parser, top_level=True)
    add_debug_argument(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = []
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # a missing optional dependency (say, a minimal GPU image without the hub client)
            # must not take every other command down with it
            unavailable.append(f"{name} ({exc})")
            continue
        module.register_cli(subparsers)
    if unavailable:
        parser.epilog = "Commands not available here (missing dependency): " + "; ".join(unavailable)
    return parser


def main(argv=None) -> int:
    """The ``ftcp`` command: its exit status.  Errors go through ``ftcp.errors``: an expected one is a line
    ``ftcp <command>: error: ...``, Ctrl-C exits 130, a bug keeps its traceback (``--debug`` shows them all)."""
    return run_main(_main, argv, prog="ftcp")


def _main(argv: list[str]) -> int:
    configure()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):      # scenario1..3, report: the rest is the scenario's own arguments
        args.passthrough_argv = rest
    elif rest:
        parser.parse_args(argv)                  # argparse's usual error for the unknown arguments (exit 2)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    rc = guarded_call(args.func, args, prog=f"ftcp {args.command}")
    return rc if isinstance(rc, int) else 0
