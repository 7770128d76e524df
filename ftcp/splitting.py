"""Split a native store: ``make_splits`` and the ``ftcp split`` command.

The split names, folders and algorithms are in ``ftcp.splits``; this module opens the store (``ftcp.dataset``)
and writes every split of it.
"""
from __future__ import annotations

import numpy as np

from .errors import UserError
from .io_utils import add_data_argument, resolve_data_root, sha256_file
from .splits import (
    DEFAULT_SEED,
    GROUP_NAME,
    GROUP_TEST_FRACTION,
    RANDOM_TEST_PERCENTS,
    check_split_arguments,
    group_split,
    planned_split,
    random_split,
    random_split_name,
    split_dir,
    write_planned,
)


def make_splits(root=None, seed: int = DEFAULT_SEED, test_percents=RANDOM_TEST_PERCENTS,
                group_test_fraction: float | None = GROUP_TEST_FRACTION,
                overwrite: bool = False) -> dict[str, dict]:
    """Write every random split and the formula-group split of the native store at ``root``.

    All arguments are checked and every split is computed (and checked against existing files) before
    the first file is written: a bad argument or a conflicting split leaves the store as it was.
    Returns {split name: split.json content (+ "status")}.
    """
    import sklearn  # its version goes into split.json (the splitting functions import it anyway)

    from .dataset import open_dataset  # pandas: not loaded while the ftcp parser is built

    test_percents = list(test_percents)
    check_split_arguments(test_percents, group_test_fraction or None)
    ds = open_dataset(root)
    if ds.layout != "native":
        raise ValueError(f"{ds.root} is an upstream-layout dataset; its splits are fixed. "
                         "Splits are made for native stores only.")
    ids = ds.ids
    store = {"material_ids_sha256": sha256_file(ds.root / "material_ids.npy"), "n": int(len(ids))}
    common = {"seed": int(seed), "store": store, "sklearn_version": sklearn.__version__,
              "id_order": "store order (material_ids.npy)"}
    planned = []    # (name, folder, train, test, split.json content, status)
    for pct in test_percents:
        train, test = random_split(ids, pct / 100.0, seed)
        info = dict(common, name=random_split_name(pct), method="random",
                    requested_test_fraction=pct / 100.0,
                    description="sklearn.model_selection.train_test_split(shuffle=True, random_state=seed)")
        folder = split_dir(ds.root, random_split_name(pct))
        planned.append((random_split_name(pct), folder, train, test,
                        *planned_split(folder, train, test, info, overwrite)))
    if group_test_fraction:
        formulas = ds.part(ids=ids).formulas()
        missing = formulas == ""
        # a crystal without a formula forms its own group (never happens for stores we build)
        groups = np.where(missing, np.char.add("id:", ids), formulas)
        train, test = group_split(ids, groups, group_test_fraction, seed)
        in_train = np.isin(ids, train)
        info = dict(common, name=GROUP_NAME, method="formula_group", group_key="reduced formula",
                    requested_test_fraction_of_groups=group_test_fraction,
                    n_groups_train=int(len(np.unique(groups[in_train]))),
                    n_groups_test=int(len(np.unique(groups[~in_train]))),
                    n_missing_formula=int(missing.sum()),
                    description="sklearn.model_selection.GroupShuffleSplit(n_splits=1, random_state=seed), "
                                "groups = reduced formula")
        folder = split_dir(ds.root, GROUP_NAME)
        planned.append((GROUP_NAME, folder, train, test, *planned_split(folder, train, test, info, overwrite)))
    results: dict[str, dict] = {}
    for name, folder, train, test, meta, status in planned:
        if status == "written":
            write_planned(folder, train, test, meta)
        results[name] = dict(meta, status=status)
    return results


# ---------------------------------------------------------------------------------------------
# CLI
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "split", help="write the random 10/20/30/40 %% and formula-group splits of a store",
        description="Write seeded train/test splits of the native store under the data root as "
                    "material-ID lists: Splitted_Data/Split_XXTest_YYTrain/ and Group_Splitting/.")
    add_data_argument(p)
    p.add_argument("--seed", metavar="N", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    p.add_argument("--test-percents", metavar="P,P,...", default=",".join(map(str, RANDOM_TEST_PERCENTS)),
                   help="comma-separated test percentages of the random splits (default %(default)s)")
    p.add_argument("--group-test-fraction", metavar="X", type=float, default=GROUP_TEST_FRACTION,
                   help="fraction of reduced formulas sent to test in the group split; 0 skips it "
                        "(default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing, different split files")
    p.set_defaults(func=_cli_split)


def _cli_split(args) -> int:
    try:
        percents = [int(x) for x in args.test_percents.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--test-percents expects comma-separated whole numbers, got {args.test_percents!r}") from None
    results = make_splits(resolve_data_root(getattr(args, "data", None)), seed=args.seed,
                          test_percents=percents, group_test_fraction=args.group_test_fraction or None,
                          overwrite=args.overwrite)
    print(f"{'split':<10} {'method':<14} {'train':>8} {'test':>8} {'test %':>7}  status")
    for name, meta in results.items():
        print(f"{name:<10} {meta['method']:<14} {meta['n_train']:>8} {meta['n_test']:>8} "
              f"{100 * meta['test_fraction']:>6.2f}%  {meta['status']}")
    return 0


__all__ = ["make_splits", "register_cli"]
