"""Command-line options shared by the SSL commands (``ftcp ssl-*`` and the block and train-all scripts)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..io_utils import add_data_argument, read_id_list
from . import data as D
from .config import TrainConfig, add_config_arguments, config_from_args


def add_ssl_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", default=None,
                   help="SSL directory: prepared files and block outputs (default <data>/SSL)")


def add_data_args(p: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``--data``, ``--out`` (the SSL directory), ``--split-seed`` and the exclusion of a new SSL split."""
    add_data_argument(p, top_level=top_level)
    add_ssl_dir_argument(p)
    p.add_argument("--split-seed", type=int, metavar="N", default=None,
                   help="seed of a new SSL 80/10/10 split (default: the stored split's, else 42)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--protocol", choices=D.PROTOCOLS, default=None,
                   help="for a new SSL split: transductive (every material, upstream's) or inductive (the test "
                        "materials of every downstream split left out); default: the stored split, else transductive")
    g.add_argument("--exclude-test-of", metavar="SPLIT", default=None,
                   help="for a new SSL split: leave one downstream split's test IDs out (random_10 ... random_40, "
                        "group)")
    g.add_argument("--exclude-ids", metavar="FILE", default=None,
                   help="for a new SSL split: leave these IDs (one per line) out")


def exclusion(args) -> tuple[list[str] | None, str | None]:
    """The exclusion the command line asks for, or (None, None): then the stored split decides."""
    if getattr(args, "protocol", None):
        return D.protocol_exclusion(args.data, args.protocol)
    if args.exclude_test_of:
        return D.downstream_test_ids(args.data, args.exclude_test_of)
    if args.exclude_ids:
        return read_id_list(args.exclude_ids).tolist(), f"IDs listed in {Path(args.exclude_ids).name}"
    return None, None


def add_train_args(p: argparse.ArgumentParser, block=None, top_level: bool = False) -> None:
    """The data options and one option per ``TrainConfig`` field (``--split-seed`` is among the data options)."""
    add_data_args(p, top_level=top_level)
    add_config_arguments(p, block, exclude=("split_seed",))


def train_config(block, args) -> TrainConfig:
    return config_from_args(block, args)


__all__ = ["add_data_args", "add_ssl_dir_argument", "add_train_args", "exclusion", "train_config"]
