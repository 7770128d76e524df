"""Train/test splits of a store, written as material-ID lists: the split names and folders (the one definition,
used by the dataset view, the store, the SSL split and the hub) and the split algorithms.  ``ftcp.splitting``
opens a store and writes all of its splits (``make_splits``, ``ftcp split``).

* Random splits with 10/20/30/40 % test (scikit-learn ``train_test_split``), under
  ``<root>/Splitted_Data/Split_XXTest_YYTrain/``.
* A formula-group split (all crystals with one reduced formula on the same side; scikit-learn
  ``GroupShuffleSplit`` with ``test_size`` = fraction of *formulas*, so the sample fraction is
  only approximately 10 %), under ``<root>/Group_Splitting/``.

Each folder holds ``train_ids.txt``, ``test_ids.txt`` (one ID per line, in store order) and
``split.json`` (method, seed, sizes, fractions, sha256 of both lists, the store it came from).
Same store + same seed -> byte-identical files (no timestamps are written).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from .errors import UserError
from .io_utils import atomic_write_json, json_dumps, read_json, sha256_file, write_id_list

DEFAULT_SEED = 42
RANDOM_TEST_PERCENTS = (10, 20, 30, 40)
GROUP_TEST_FRACTION = 0.10
RANDOM_DIR = "Splitted_Data"
GROUP_DIR = "Group_Splitting"
GROUP_NAME = "group"
_RANDOM_RE = re.compile(r"^Split_(\d+)Test_(\d+)Train$")
_NAME_RE = re.compile(r"^random_(\d+)$")


# ---------------------------------------------------------------------------------------------
# names <-> folders (shared with ftcp.dataset)
def random_split_name(test_percent: int) -> str:
    return f"random_{int(test_percent)}"


def random_split_dirname(test_percent: int) -> str:
    p = int(test_percent)
    if not 0 < p < 100:
        raise ValueError(f"test percent must be in 1..99, got {test_percent}")
    return f"Split_{p}Test_{100 - p}Train"


def split_dir(root, name: str) -> Path:
    """Folder of split ``name`` ("random_10" ... or "group") under data root ``root``."""
    root = Path(root)
    if name == GROUP_NAME:
        return root / GROUP_DIR
    m = _NAME_RE.match(name)
    if not m:
        raise KeyError(f"unknown split name {name!r}; expected 'random_<test percent>' or '{GROUP_NAME}'")
    return root / RANDOM_DIR / random_split_dirname(int(m.group(1)))


def find_split_dirs(root, marker) -> dict[str, Path]:
    """{split name: folder} for the split folders under ``root`` that satisfy ``marker(folder)``.

    Random splits come first, by test percent, then the group split.
    """
    root = Path(root)
    found: list[tuple[int, str, Path]] = []
    base = root / RANDOM_DIR
    if base.is_dir():
        for d in base.iterdir():
            m = _RANDOM_RE.match(d.name)
            if m and int(m.group(1)) + int(m.group(2)) == 100 and d.is_dir() and marker(d):
                found.append((int(m.group(1)), random_split_name(int(m.group(1))), d))
    found.sort()
    out = {name: d for _, name, d in found}
    if (root / GROUP_DIR).is_dir() and marker(root / GROUP_DIR):
        out[GROUP_NAME] = root / GROUP_DIR
    return out


# ---------------------------------------------------------------------------------------------
# making splits
def _in_store_order(ids: np.ndarray, take: np.ndarray) -> np.ndarray:
    return ids[np.sort(take)]


def random_split(ids, test_fraction: float, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``ids`` -> (train_ids, test_ids), each in the order of ``ids``."""
    from sklearn.model_selection import train_test_split

    ids = np.asarray(ids, dtype=str)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if len(ids) < 2:
        raise ValueError(f"need at least 2 crystals to split, got {len(ids)}")
    train, test = train_test_split(np.arange(len(ids)), test_size=test_fraction,
                                   random_state=seed, shuffle=True)
    return _in_store_order(ids, train), _in_store_order(ids, test)


def group_split(ids, groups, test_fraction: float = GROUP_TEST_FRACTION,
                seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split that never puts one group (e.g. reduced formula) on both sides.

    ``test_fraction`` is the fraction of *groups* sent to test (``GroupShuffleSplit``); the
    fraction of crystals is close to it but not exact.  Returns (train_ids, test_ids) in the
    order of ``ids``.
    """
    from sklearn.model_selection import GroupShuffleSplit

    ids = np.asarray(ids, dtype=str)
    groups = np.asarray(groups, dtype=str)
    if len(groups) != len(ids):
        raise ValueError(f"{len(ids)} IDs but {len(groups)} group keys")
    if len(np.unique(groups)) < 2:
        raise ValueError("need at least 2 distinct groups to make a group split")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(ids)), groups=groups))
    overlap = np.intersect1d(groups[train], groups[test])
    assert len(overlap) == 0, f"group split put {len(overlap)} groups on both sides"
    return _in_store_order(ids, train), _in_store_order(ids, test)


def _ids_sha(ids) -> str:
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def planned_split(directory, train_ids, test_ids, info: dict, overwrite: bool) -> tuple[dict, str]:
    """The split.json content of a split and what writing it would do ("written" or "unchanged"); raises
    before anything is written when the split is invalid or would replace a different one without ``overwrite``."""
    directory = Path(directory)
    train_ids, test_ids = list(train_ids), list(test_ids)
    both = set(train_ids)
    if len(both) != len(train_ids) or len(set(test_ids)) != len(test_ids):
        raise ValueError("duplicated IDs inside a split side")
    if both.intersection(test_ids):
        raise ValueError("an ID is on both sides of the split")
    n = len(train_ids) + len(test_ids)
    meta = dict(info)
    meta.update({
        "n_train": len(train_ids), "n_test": len(test_ids), "n_total": n,
        "train_fraction": round(len(train_ids) / n, 6), "test_fraction": round(len(test_ids) / n, 6),
        "sha256": {"train_ids.txt": _ids_sha(train_ids), "test_ids.txt": _ids_sha(test_ids)},
    })
    meta_path = directory / "split.json"
    if meta_path.exists():
        old = meta_path.read_text(encoding="utf-8")
        if old == json_dumps(meta) and all(
                (directory / f).exists() and sha256_file(directory / f) == meta["sha256"][f]
                for f in ("train_ids.txt", "test_ids.txt")):
            return meta, "unchanged"
        if not overwrite:
            raise FileExistsError(f"{directory} holds a different split; pass overwrite=True "
                                  "(CLI: --overwrite) to replace it")
    return meta, "written"


def write_split(directory, train_ids, test_ids, info: dict, overwrite: bool = False) -> tuple[dict, str]:
    """Write ``train_ids.txt``, ``test_ids.txt`` and ``split.json`` into ``directory``.

    Returns (the split.json content, status) where status is "written" or "unchanged".
    Refuses to replace a different existing split unless ``overwrite``.
    """
    meta, status = planned_split(directory, train_ids, test_ids, info, overwrite)
    if status == "written":
        write_planned(Path(directory), train_ids, test_ids, meta)
    return meta, status


def write_planned(directory: Path, train_ids, test_ids, meta: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_id_list(directory / "train_ids.txt", train_ids)
    write_id_list(directory / "test_ids.txt", test_ids)
    atomic_write_json(directory / "split.json", meta)


def check_split_arguments(test_percents, group_test_fraction) -> None:
    """Refuse bad split arguments before anything is computed or written."""
    bad = [p for p in test_percents if isinstance(p, bool) or int(p) != p or not 0 < p < 100]
    if bad:
        raise UserError(f"test percents must be whole numbers in 1..99, got {bad}")
    if len(set(test_percents)) != len(test_percents):
        raise UserError(f"test percents repeat: {list(test_percents)}")
    if group_test_fraction is not None and not 0.0 < group_test_fraction < 1.0:
        raise UserError(f"the group test fraction must be in (0, 1) (or 0 to skip the group split), "
                        f"got {group_test_fraction}")


def read_split_info(root, name: str) -> dict:
    return read_json(split_dir(root, name) / "split.json")


__all__ = ["DEFAULT_SEED", "RANDOM_TEST_PERCENTS", "GROUP_TEST_FRACTION", "RANDOM_DIR", "GROUP_DIR", "GROUP_NAME",
           "random_split", "group_split", "write_split", "check_split_arguments", "split_dir", "find_split_dirs",
           "random_split_name", "random_split_dirname", "read_split_info"]
