"""SSL data: split by material ID, normaliser on SSL-train only, region packs, cached targets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ftcp import layout as L
from ftcp.normalize import RowMinMaxScaler
from ftcp.ssl import data as D
from ftcp.ssl import targets as T
from ftcp.ssl.synthetic import synthetic_root_cached


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic_root_cached(tmp_path_factory.getbasetemp())


def test_split_is_seeded_disjoint_and_complete():
    ids = np.array([f"m-{i}" for i in range(1000)])
    a, b = D.make_ssl_split(ids, 42), D.make_ssl_split(ids, 42)
    assert a == b
    parts = [set(a[p]) for p in D.SPLIT_PARTS]
    assert sum(map(len, parts)) == len(ids) and set.union(*parts) == set(ids)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (800, 100, 100)
    assert D.make_ssl_split(ids, 43)["test"] != a["test"]
    # lists keep store order
    pos = {m: i for i, m in enumerate(ids)}
    assert all(np.all(np.diff([pos[m] for m in a[p]]) > 0) for p in D.SPLIT_PARTS)


def test_split_exclusion_and_refusal(tmp_path):
    ids = np.array([f"m-{i}" for i in range(200)])
    held_out = [f"m-{i}" for i in range(0, 200, 10)]
    split = D.load_or_make_split(tmp_path, ids, 42, exclude=held_out, exclude_source="test list")
    assert split["excluded"] == held_out and split["excluded_source"] == "test list"
    assert not set(held_out) & set(split["train"] + split["val"] + split["test"])
    assert sum(split["sizes"][p] for p in D.SPLIT_PARTS) == 180
    again = D.load_or_make_split(tmp_path, ids, 42, exclude=held_out)
    assert again["train"] == split["train"]
    with pytest.raises(ValueError, match="seed"):
        D.load_or_make_split(tmp_path, ids, 7, exclude=held_out)
    # the stored split is the authority: asking nothing reuses it, exclusion included
    assert D.load_or_make_split(tmp_path, ids)["excluded"] == held_out
    assert D.load_or_make_split(tmp_path, ids, 42)["train"] == split["train"]
    # an explicit, different request is refused (here: none at all, i.e. transductive)
    with pytest.raises(ValueError, match="excluded"):
        D.load_or_make_split(tmp_path, ids, 42, exclude=[])
    with pytest.raises(ValueError, match="another store"):
        D.load_or_make_split(tmp_path, ids[:-1], 42, exclude=held_out)


def test_normaliser_is_fitted_on_ssl_train_only(root, tmp_path):
    data = D.prepare(root, tmp_path)
    ftcp = np.load(root / "ftcp.npy")
    expected = RowMinMaxScaler().fit(ftcp, rows=data.index["train"])
    np.testing.assert_array_equal(data.scaler.row_max, expected.row_max)
    np.testing.assert_array_equal(data.scaler.row_min, expected.row_min)
    meta = json.loads((tmp_path / D.NORMALIZER_FILE).read_text())["fitted_on"]
    assert meta["n"] == len(data.split["train"])
    # reused, not refitted, on the next call
    assert D.prepare(root, tmp_path).split == data.split


def test_region_pack_round_trip(root, tmp_path):
    D.prepare(root, tmp_path / "ssl")
    regions = ["element_matrix", "lattice", "site_coords", "site_occupancy", "kpoint_distances"]
    pack = D.write_pack(D.open_source(root), tmp_path / "pack", regions, [tmp_path / "ssl", root / "SSL"])
    native, packed = D.open_source(root), D.open_source(pack)
    assert packed.kind == "pack" and list(packed.ids) == list(native.ids)
    for name in regions:
        np.testing.assert_array_equal(packed.region(name), native.region(name))
    with pytest.raises(KeyError, match="not in the pack"):
        packed.region("structure_factors")
    data = D.prepare(pack)                    # split + normaliser travel with the pack
    assert data.split == json.loads((tmp_path / "ssl" / D.SPLIT_FILE).read_text())
    codes, _ = T.load_crystal_systems(packed.ids, data.search_dirs())
    assert (codes >= 0).all()
    manifest = json.loads((pack / D.PACK_MANIFEST).read_text())
    assert manifest["regions"] == regions and manifest["n_materials"] == len(native.ids)


def test_kpoint_region_normalises_like_the_full_array(root, tmp_path):
    data = D.prepare(root, tmp_path)
    raw = data.source.region("kpoint_distances")
    full = data.scaler.transform(np.load(root / "ftcp.npy"))
    np.testing.assert_allclose(D.normalise_region(data.scaler, "kpoint_distances", raw),
                               L.region(full, "kpoint_distances"), rtol=1e-6)


def test_crystal_systems_join_by_id(root):
    ids = D.open_source(root).ids
    codes, meta = T.load_crystal_systems(ids, [root / "SSL"])
    assert meta["symprec"] == T.SYMPREC and set(np.unique(codes)) <= set(range(len(T.CRYSTAL_SYSTEMS)))
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(T.load_crystal_systems(ids[perm], [root / "SSL"])[0], codes[perm])
    with pytest.raises(ValueError, match="no crystal system"):
        T.load_crystal_systems(np.append(ids, "mp-unknown"), [root / "SSL"])
    with pytest.raises(FileNotFoundError, match="prepare"):
        T.load_crystal_systems(ids, [root])


def test_bad_roots_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no FTCP data"):
        D.open_source(tmp_path)
    np.save(tmp_path / "ftcp.npy", np.zeros((3, 400, 63), dtype=np.float32))
    np.save(tmp_path / "material_ids.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="2 material IDs for 3"):
        D.open_source(tmp_path)
    np.save(tmp_path / "material_ids.npy", np.array(["a", "b", "a"]))
    with pytest.raises(ValueError, match="duplicated"):
        D.open_source(tmp_path)


def test_downstream_test_ids_for_the_inductive_check(tmp_path):
    folder = tmp_path / "Splitted_Data" / "Split_10Test_90Train"
    folder.mkdir(parents=True)
    (folder / "test_ids.txt").write_text("mp-1\nmp-7\n\n")
    ids, source = D.downstream_test_ids(tmp_path, "random_10")
    assert ids == ["mp-1", "mp-7"] and source == "test IDs of random_10"
    with pytest.raises(FileNotFoundError, match="exclude-ids"):
        D.downstream_test_ids(tmp_path, "group")
    with pytest.raises(KeyError, match="unknown split name"):
        D.downstream_test_ids(tmp_path, "nonsense")


def test_inductive_protocol_leaves_out_every_downstream_test_set(tmp_path):
    for folder, test in (("Splitted_Data/Split_10Test_90Train", "mp-1\nmp-7\n"),
                         ("Splitted_Data/Split_20Test_80Train", "mp-1\nmp-7\nmp-9\n"), ("Group_Splitting", "mp-3\n")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "test_ids.txt").write_text(test)
    ids, source = D.protocol_exclusion(tmp_path, "inductive")
    assert ids == ["mp-1", "mp-3", "mp-7", "mp-9"]
    assert source == "inductive: test IDs of random_10, random_20, group"
    assert D.protocol_exclusion(tmp_path, "transductive")[0] == []
    store = np.array([f"mp-{i}" for i in range(40)])
    split = D.make_ssl_split(store, 42, ids, source)
    assert split["protocol"] == "inductive" and split["sizes"]["excluded"] == 4
    assert not D.ssl_seen_ids(split) & set(ids)
    summary = D.split_summary(split)
    assert summary["protocol"] == "inductive" and summary["excluded_digest"] == D.ids_digest(sorted(ids))
    assert D.split_summary(D.make_ssl_split(store, 42))["protocol"] == "transductive"
    with pytest.raises(FileNotFoundError, match="ftcp split"):
        D.protocol_exclusion(tmp_path / "empty", "inductive")
