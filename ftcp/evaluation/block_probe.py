"""Which blocks of an SSL table carry the signal: linear probes per block and leave-one-block-out.

    ftcp probe --data DATA --ssl SSL_DIR [--split random_10] [--target all]

On one downstream split (train -> test, joined by material ID), the same linear models as
Scenario 1 (StandardScaler + minimum-norm OLS at cond = eps, and RidgeCV with alpha by exact
leave-one-out) are fitted on column groups of the 2,048-d table: all blocks, each block alone
(``B1`` ... ``B6``) and all blocks but one (``-B1`` ... ``-B6``).  Run it on a trained SSL
directory and on a random-init control (``ftcp ssl-export --init random``) to see what SSL
training adds per block.  One JSON per (SSL run, split) goes to
``<out>/probes/<SSL run>/<split>.json`` with the run's protocol and a leak check.
"""
from __future__ import annotations

import logging
import sys

import numpy as np

from .. import layout as L
from ..io_utils import add_data_argument
from . import features as F
from .linear import DEFAULT_ALPHAS, array_chunks, evaluate_suite
from .results import provenance, results_dir, ssl_dir_of, write_result

log = logging.getLogger(__name__)


def column_groups() -> dict[str, np.ndarray]:
    """{"all": every column, "B<n>": block n alone, "-B<n>": every block but n} over the 2,048 columns."""
    bounds, start = {}, 0
    for b in L.BLOCKS:
        bounds[b.number] = np.arange(start, start + b.embed_dim)
        start += b.embed_dim
    groups = {"all": np.arange(start)}
    groups.update({f"B{n}": cols for n, cols in bounds.items()})
    groups.update({f"-B{n}": np.setdiff1d(groups["all"], cols) for n, cols in bounds.items()})
    return groups


def probe_split(ds, split: str, targets: list[str], alphas) -> dict:
    """Test metrics of OLS and RidgeCV on every column group for one split (see the module docstring)."""
    train, y_tr, _ = F.labelled(ds.part(split, "train"), targets)
    test, y_te, _ = F.labelled(ds.part(split, "test"), targets)
    x_tr, x_te = np.asarray(train.ssl_features()), np.asarray(test.ssl_features())
    if x_tr.shape[1] != L.SSL_DIM:
        raise ValueError(f"the SSL table has {x_tr.shape[1]} columns, the block layout {L.SSL_DIM}")
    rows = []
    for name, cols in column_groups().items():
        suite = evaluate_suite(array_chunks(train.ids, x_tr[:, cols]), train.ids, y_tr,
                               array_chunks(test.ids, x_te[:, cols]), test.ids, y_te, {"ols": "ols"}, alphas,
                               ols_sweep=())
        for model, m in suite["models"].items():
            for j, t in enumerate(targets):
                rows.append({"columns": name, "n_columns": int(len(cols)), "model": model, "target": t,
                             "test": m["test"][j], "train": m["train"][j]})
        log.info("probe %s %s: %s", split, name, ", ".join(
            f"{t} OLS RMSE {suite['models']['ols']['test'][j]['rmse']:.4g}" for j, t in enumerate(targets)))
    return {"split": split, "n_train": int(len(train)), "n_test": int(len(test)), "targets": targets,
            "rows": rows, "test_ids": test.ids}


def run(args) -> int:
    from ..dataset import open_dataset  # pandas: not loaded while the ftcp parser is built

    ds = open_dataset(args.data, ssl_dir_of(args))
    targets = F.resolve_targets(ds, args.target)
    ssl = F.ssl_info(ds.ssl_dir)
    prov = provenance(F.dataset_info(ds), 0, {"ssl": ssl}, command="ftcp " + " ".join(sys.argv[1:]))
    for split in F.resolve_splits(ds, args.split):
        out = probe_split(ds, split, targets, DEFAULT_ALPHAS)
        leak = F.leak_check(ds.ssl_dir, out.pop("test_ids"))
        payload = {"kind": "block_probe", "ssl_run": ssl["label"], "protocol": leak["protocol"], "leak_check": leak,
                   **out, "provenance": prov}
        path = write_result(results_dir(args), "probes", split, payload, run_label=ssl["label"])
        print(f"{split}: {len(out['rows'])} probe rows -> {path}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("probe", help="linear probes of an SSL table per block and leaving one block out")
    add_data_argument(p)
    p.add_argument("--ssl", metavar="DIR", default=None, help="SSL directory (default <data>/SSL)")
    p.add_argument("--split", metavar="SPLIT", default="10",
                   help="split(s): 10, 20, ..., a split name or all (default: 10)")
    p.add_argument("--target", metavar="NAMES", default="all",
                   help="label column(s), comma list, or all (default: all)")
    p.add_argument("--out", metavar="DIR", default=None, help="results folder (default <data>/Results)")
    p.set_defaults(func=lambda a: run(a))
