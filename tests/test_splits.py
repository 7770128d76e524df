"""Splits: sizes, determinism, no formula overlap (synthetic and real mp_36k formulas)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from store_helpers import make_native_store

from ftcp.dataset import open_dataset
from ftcp.errors import UserError
from ftcp.io_utils import read_id_list, read_json, sha256_file
from ftcp.splits import group_split, random_split, split_dir
from ftcp.splitting import make_splits


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ("Splitted_Data" in p.parts or "Group_Splitting" in p.parts)}


def test_make_splits_sizes_and_metadata(tmp_path):
    root = make_native_store(tmp_path / "s", n=200)
    res = make_splits(root, seed=42)
    assert list(res) == ["random_10", "random_20", "random_30", "random_40", "group"]
    ids = np.load(root / "material_ids.npy")
    pos = {m: i for i, m in enumerate(ids)}
    for pct in (10, 20, 30, 40):
        d = split_dir(root, f"random_{pct}")
        assert d.name == f"Split_{pct}Test_{100 - pct}Train"
        train, test = read_id_list(d / "train_ids.txt"), read_id_list(d / "test_ids.txt")
        assert len(test) == int(np.ceil(200 * pct / 100))
        assert len(train) + len(test) == 200
        assert set(train).isdisjoint(test) and set(train) | set(test) == set(ids)
        # written in store order
        assert np.all(np.diff([pos[m] for m in train]) > 0)
        meta = read_json(d / "split.json")
        assert meta["seed"] == 42 and meta["method"] == "random"
        assert meta["n_test"] == len(test) and meta["n_train"] == len(train)
        assert meta["sha256"]["train_ids.txt"] == sha256_file(d / "train_ids.txt")
        assert meta["sha256"]["test_ids.txt"] == sha256_file(d / "test_ids.txt")
        assert meta["store"]["material_ids_sha256"] == sha256_file(root / "material_ids.npy")
    ds = open_dataset(root)
    assert ds.split_names() == ["random_10", "random_20", "random_30", "random_40", "group"]
    tr, te = ds.part("group", "train"), ds.part("group", "test")
    assert set(tr.formulas()).isdisjoint(te.formulas())
    assert len(tr) + len(te) == 200 and len(te) > 0


def test_splits_are_deterministic_and_seeded(tmp_path):
    a = make_native_store(tmp_path / "a", n=120)
    b = make_native_store(tmp_path / "b", n=120)
    make_splits(a, seed=7)
    make_splits(b, seed=7)
    fa, fb = _files(a), _files(b)
    assert fa == fb and len(fa) == 15
    # rerunning is a no-op; a different seed differs and needs overwrite
    res = make_splits(a, seed=7)
    assert all(m["status"] == "unchanged" for m in res.values())
    with pytest.raises(FileExistsError):
        make_splits(a, seed=8)
    make_splits(a, seed=8, overwrite=True)
    assert _files(a) != fb


def test_random_split_in_input_order():
    ids = np.array([f"x{i}" for i in range(50)])
    tr, te = random_split(ids, 0.2, seed=1)
    assert len(te) == 10 and len(tr) == 40
    assert list(tr) == sorted(tr, key=lambda s: int(s[1:]))
    tr2, te2 = random_split(ids, 0.2, seed=1)
    assert list(te) == list(te2)
    assert list(random_split(ids, 0.2, seed=2)[1]) != list(te)


def test_group_split_never_shares_a_group():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 500).astype(str)
    ids = np.array([f"m{i}" for i in range(500)])
    tr, te = group_split(ids, groups, 0.1, seed=3)
    g = dict(zip(ids, groups, strict=False))
    assert {g[i] for i in tr}.isdisjoint({g[i] for i in te})
    assert len(tr) + len(te) == 500
    with pytest.raises(ValueError):
        group_split(ids[:3], ["a", "a", "a"], 0.1)


@pytest.mark.shared
def test_group_split_on_real_formulas(mp36k_csv):
    """All 36,737 real mp_36k crystals, grouped by their reduced formula."""
    df = pd.read_csv(mp36k_csv, usecols=["material_id", "formula"], dtype=str, keep_default_na=False)
    tr, te = group_split(df.material_id.to_numpy(), df.formula.to_numpy(), 0.1, seed=42)
    f = dict(zip(df.material_id, df.formula, strict=False))
    assert {f[i] for i in tr}.isdisjoint({f[i] for i in te})
    assert len(tr) + len(te) == len(df)
    assert 0.07 < len(te) / len(df) < 0.13


@pytest.mark.parametrize("kwargs,message", [
    ({"group_test_fraction": 2}, "group test fraction must be in"),
    ({"group_test_fraction": -0.1}, "group test fraction must be in"),
    ({"test_percents": (10, 100)}, "whole numbers in 1..99"),
    ({"test_percents": (10, 12.5)}, "whole numbers in 1..99"),
    ({"test_percents": (10, 10)}, "repeat"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, message):
    root = make_native_store(tmp_path / "s", n=40)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(UserError, match=message):
        make_splits(root, **kwargs)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_conflicting_split_is_found_before_any_file_is_written(tmp_path):
    root = make_native_store(tmp_path / "s", n=40)
    make_splits(root, test_percents=(30,), group_test_fraction=None, seed=1)
    mtime = {p: p.stat().st_mtime_ns for p in root.rglob("*.txt")}
    with pytest.raises(FileExistsError, match="Split_30Test"):
        make_splits(root, test_percents=(10, 30), seed=2)     # 30 % differs with seed 2; 10 % would be new
    assert not split_dir(root, "random_10").exists() and not split_dir(root, "group").exists()
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.txt")} == mtime
