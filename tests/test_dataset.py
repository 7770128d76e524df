"""Dataset view: native and upstream layouts give the same arrays after the ID join."""
from __future__ import annotations

import numpy as np
import pytest
from store_helpers import make_native_store

from ftcp import layout as L
from ftcp.convert import write_upstream_layout
from ftcp.dataset import open_dataset
from ftcp.errors import UserError
from ftcp.io_utils import load_id_array
from ftcp.splitting import make_splits


@pytest.fixture()
def native(tmp_path):
    root = make_native_store(tmp_path / "native", n=80, with_ssl=True, ssl_dim=16)
    make_splits(root, seed=42)
    return root


def _truth(root):
    ids = np.load(root / "material_ids.npy")
    ftcp = np.load(root / "ftcp.npy")
    return {m: i for i, m in enumerate(ids)}, ftcp


def test_native_view(native, monkeypatch):
    monkeypatch.setenv("CRYS_REP_DATA", str(native))
    ds = open_dataset()
    assert ds.layout == "native" and len(ds.ids) == 80
    assert ds.ftcp_memmap.shape == (80, 400, 63)
    assert ds.label_names == ["formation_energy", "band_gap"]
    pos, ftcp = _truth(native)
    part = ds.part("random_20", "test")
    assert len(part) == 16
    x = part.ftcp()
    assert x.dtype == np.float32 and x.shape == (16, 400, 63)
    np.testing.assert_array_equal(x, ftcp[[pos[m] for m in part.ids]])
    flat = part.ftcp(flat=True)
    assert flat.shape == (16, L.N_VALUES)
    y = part.labels(["formation_energy", "band_gap"])
    assert y.shape == (16, 2) and y.dtype == np.float64
    with pytest.raises(KeyError):
        part.labels(["volume"])
    with pytest.raises(KeyError):
        ds.part("random_50", "train")
    with pytest.raises(ValueError):
        ds.part("random_20", "validation")


def test_iter_ftcp_yields_ids_with_chunks(native):
    ds = open_dataset(native)
    pos, ftcp = _truth(native)
    ids = ds.ids[::-1][:37]                 # reversed: storage order differs from request order
    part = ds.part(ids=ids)
    seen = []
    for chunk_ids, x in part.iter_ftcp(chunk_size=10, flat=True):
        assert x.shape == (len(chunk_ids), L.N_VALUES) and len(chunk_ids) <= 10
        np.testing.assert_array_equal(x, ftcp[[pos[m] for m in chunk_ids]].reshape(len(chunk_ids), -1))
        seen.extend(chunk_ids)
    assert sorted(seen) == sorted(ids) and len(seen) == 37
    assert [pos[m] for m in seen] == sorted(pos[m] for m in seen)   # storage order
    np.testing.assert_array_equal(part.ftcp(), ftcp[[pos[m] for m in ids]])   # ids order


def test_part_by_ids_errors(native):
    ds = open_dataset(native)
    with pytest.raises(ValueError, match="missing"):
        ds.part(ids=["mp-1000", "nope-1"])
    with pytest.raises(ValueError, match="duplicated"):
        ds.part(ids=[ds.ids[0], ds.ids[0]])


def test_ssl_features_join_by_id(native):
    ds = open_dataset(native)
    part = ds.part("random_10", "train")
    feats = part.ssl_features()
    sid = np.load(native / "SSL" / "ssl_material_ids.npy")
    sf = np.load(native / "SSL" / "ssl_features.npy")
    where = {m: i for i, m in enumerate(sid)}
    np.testing.assert_array_equal(feats, sf[[where[m] for m in part.ids]])
    # one ID without features -> clear error
    np.save(native / "SSL" / "ssl_material_ids.npy", sid[1:])
    np.save(native / "SSL" / "ssl_features.npy", sf[1:])
    ds = open_dataset(native)
    with pytest.raises(ValueError, match="missing from SSL features"):
        ds.part(ids=ds.ids).ssl_features()


def test_no_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ftcp build"):
        open_dataset(tmp_path)


def _stored_dtype(path) -> np.dtype:
    """The dtype a .npy header declares (read without loading the data)."""
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        return np.lib.format.read_array_header_1_0(fh)[2]


def test_upstream_layout_gives_the_same_view(native, tmp_path):
    nat = open_dataset(native)
    up_root = write_upstream_layout(nat, tmp_path / "upstream", seed=3, ftcp_dtype=np.float64)
    # the fixture really shuffles: FTCP, label and SSL ID orders differ
    f = up_root / "Splitted_Data" / "Split_10Test_90Train" / "Train"
    a = load_id_array(f / "Train_FTCP_Material_IDs.npy")
    b = load_id_array(f / "Train_Material_IDs.npy")
    c = load_id_array(f / "Train_Extracted_Features_Material_IDs.npy")
    assert _stored_dtype(f / "Train_FTCP_Material_IDs.npy") == np.dtype(object)      # pickled, like upstream's
    assert list(a) != list(b) and list(a) != list(c) and set(a) == set(b) == set(c)

    up = open_dataset(up_root)
    assert up.layout == "upstream"
    assert up.split_names() == nat.split_names()
    assert sorted(up.label_names) == ["band_gap", "formation_energy"]
    assert sorted(up.ids) == sorted(nat.ids)
    for split in nat.split_names():
        for side in ("train", "test"):
            pu, pn = up.part(split, side), nat.part(split, side)
            assert sorted(pu.ids) == sorted(pn.ids)
            pn = nat.part(ids=pu.ids)      # same order
            np.testing.assert_array_equal(pu.ftcp(), pn.ftcp())
            np.testing.assert_array_equal(pu.labels(["band_gap", "formation_energy"]),
                                          pn.labels(["band_gap", "formation_energy"]))
            np.testing.assert_array_equal(pu.ssl_features(), pn.ssl_features())
            for ids_chunk, x in pu.iter_ftcp(chunk_size=7):
                np.testing.assert_array_equal(x, nat.part(ids=ids_chunk).ftcp(flat=True))
    # any IDs of the reference split, across its Train and Test files
    some = nat.ids[::3]
    np.testing.assert_array_equal(up.part(ids=some).ftcp(), nat.part(ids=some).ftcp())
    np.testing.assert_array_equal(up.part(ids=some).labels(["formation_energy"]),
                                  nat.part(ids=some).labels(["formation_energy"]))
    with pytest.raises(AttributeError):
        _ = up.ftcp_memmap


def test_upstream_id_mismatch_raises(native, tmp_path):
    up_root = write_upstream_layout(open_dataset(native), tmp_path / "up", splits=["random_10"], seed=1)
    f = up_root / "Splitted_Data" / "Split_10Test_90Train" / "Test"
    lab = load_id_array(f / "Test_Material_IDs.npy").astype(object)
    # a label-ID array that lacks one FTCP ID (replaced by a stranger)
    bad = lab.copy()
    bad[0] = "mp-999999"
    np.save(f / "Test_Material_IDs.npy", bad, allow_pickle=True)
    part = open_dataset(up_root).part("random_10", "test")
    with pytest.raises(ValueError, match="missing"):
        part.labels(["formation_energy"])
    # duplicated IDs in the FTCP ID array
    ftcp_ids = load_id_array(f / "Test_FTCP_Material_IDs.npy").astype(object)
    dup = ftcp_ids.copy()
    dup[1] = dup[0]
    np.save(f / "Test_FTCP_Material_IDs.npy", dup, allow_pickle=True)
    with pytest.raises(ValueError, match="duplicated"):
        open_dataset(up_root).part("random_10", "test")
    # more IDs than rows
    np.save(f / "Test_FTCP_Material_IDs.npy", np.concatenate([ftcp_ids, ["mp-1"]]).astype(object),
            allow_pickle=True)
    with pytest.raises(ValueError, match="rows but"):
        open_dataset(up_root).part("random_10", "test").ftcp()


class _RunsCode:
    """Unpickling this runs a shell command: what a crafted upstream ID file could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("victim", ["Test_Material_IDs.npy", "Test_FTCP_Material_IDs.npy"])
def test_crafted_pickle_in_an_upstream_id_file_is_refused_and_never_run(native, tmp_path, victim):
    up_root = write_upstream_layout(open_dataset(native), tmp_path / "up", splits=["random_10"], seed=1)
    f = up_root / "Splitted_Data" / "Split_10Test_90Train" / "Test"
    marker = tmp_path / "code_ran"
    ids = load_id_array(f / victim)
    np.save(f / victim, np.array([_RunsCode(marker), *ids[1:]], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match=f"{victim}: refused to read the material IDs.*posix.system"):
        open_dataset(up_root).part("random_10", "test").labels(["formation_energy"])
    assert not marker.exists()
    # a pickle that is not even an array, and an object array holding something other than strings
    np.save(f / victim, np.array([3, *ids[1:]], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="element 0 is of type int"):
        load_id_array(f / victim)


def test_native_material_ids_are_never_unpickled(native, tmp_path):
    marker = tmp_path / "code_ran"
    ids = np.load(native / "material_ids.npy")
    np.save(native / "material_ids.npy", np.array([_RunsCode(marker), *ids[1:]], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="material_ids.npy"):
        open_dataset(native)
    assert not marker.exists()
