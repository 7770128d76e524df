"""Command-line helpers of the evaluation package.

``register_cli(subparsers)`` adds ``standin-ssl`` to the ``ftcp`` command (when listed in
``ftcp.cli.COMMAND_MODULES``); ``python -m ftcp.evaluation.cli standin-ssl --data DIR`` works
without that.  The scenarios themselves are run by the scripts under
``Evaluation_Scenarios/`` (one per scenario) and ``Evaluation_Scenarios/make_report.py``.
"""
from __future__ import annotations

import argparse
import sys

from ..io_utils import add_data_argument, resolve_data_root


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "standin-ssl",
        help="write a clearly marked STAND-IN 2,048-d feature table (random projection of FTCP) "
             "for developing the evaluation before SSL features exist",
        description="Writes <root>/SSL/ssl_features.npy + ssl_material_ids.npy and "
                    "ssl_features_info.json marking them as a stand-in. Never report results made "
                    "from them as SSL results.")
    add_data_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace existing SSL features")
    p.set_defaults(func=_standin)


def _standin(args) -> int:
    from .features import STANDIN_INFO, write_standin_ssl

    root = resolve_data_root(getattr(args, "data", None))
    target = root / "SSL" / "ssl_features.npy"
    if target.exists() and not args.force and not (root / "SSL" / STANDIN_INFO).exists():
        raise FileExistsError(f"{target} exists and is not a stand-in; refusing to overwrite real features")
    if target.exists() and not args.force:
        raise FileExistsError(f"{target} exists (a stand-in); pass --force to rewrite it")
    path = write_standin_ssl(root, seed=args.seed)
    print(f"wrote STAND-IN features {path} (not SSL embeddings; marked in {STANDIN_INFO})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftcp.evaluation.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_cli(sub)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    from ..errors import run_main

    sys.exit(run_main(main, prog="python -m ftcp.evaluation.cli"))
