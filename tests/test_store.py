"""Store builder: inputs, every rejection reason, manifest, resume after interruption."""
from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from ftcp import featurize
from ftcp.dataset import open_dataset
from ftcp.errors import UserError
from ftcp.io_utils import sha256_file
from ftcp.splitting import make_splits
from ftcp.store import STORE_FILES, BuildInterrupted, build_store, read_manifest, resolve_label_columns, verify_store

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# small crystals made with pymatgen (no network, no ../shared)
def good_structures() -> list[Structure]:
    out = [
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]),
        Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"],
                                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
        Structure(Lattice.hexagonal(3.2, 5.2), ["Zn", "Zn", "O", "O"],
                  [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.38], [2 / 3, 1 / 3, 0.88]]),
        Structure(Lattice.tetragonal(4.6, 2.96), ["Ti", "Ti", "O", "O", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.3, 0.3, 0], [0.7, 0.7, 0], [0.8, 0.2, 0.5], [0.2, 0.8, 0.5]]),
        Structure(Lattice.orthorhombic(4.1, 5.2, 6.3), ["Li", "Co", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]]),
        Structure(Lattice.cubic(4.2), ["Cs", "Pb", "I", "I", "I"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
        Structure(Lattice.monoclinic(5.1, 6.2, 7.3, 100), ["Ba", "Fe", "As", "H"],
                  [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9], [0.15, 0.65, 0.45]]),
    ]
    return out


def cif(s: Structure) -> str:
    return s.to(fmt="cif")


def bad_structures() -> dict[str, Structure]:
    disordered = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Co": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    five = Structure(Lattice.cubic(8), ["Li", "Na", "K", "Rb", "Cs"],
                     [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])
    grid = [[i / 5, j / 5, k / 5] for i in range(5) for j in range(5) for k in range(5)][:101]
    many = Structure(Lattice.cubic(20), ["C"] * 101, grid)
    md = Structure(Lattice.cubic(4.5), ["Md", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    # 0.1 Angstrom apart (a CIF parser merges sites closer than ~1e-4 of the cell into one over-occupied site)
    overlap = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1 / 4.0, 0, 0]])
    return {"disordered": disordered, "too_many_elements": five, "too_many_sites": many,
            "unsupported_element": md, "overlapping_sites": overlap}


def write_csv(path: Path, rows: list[dict]) -> Path:
    df = pd.DataFrame(rows)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", newline="") as fh:
            df.to_csv(fh, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def good_rows(n_repeat: int = 1):
    rows = []
    for r in range(n_repeat):
        for i, s in enumerate(good_structures()):
            rows.append({"material_id": f"mp-{r * 100 + i}", "formation_energy_per_atom": -1.0 - 0.1 * i,
                         "band_gap": 0.5 * i, "volume": s.volume, "cif": cif(s)})
    return rows


@pytest.fixture(scope="module")
def mixed_csv(tmp_path_factory):
    """Good crystals interleaved with one input row for every rejection reason."""
    rows = good_rows()
    bad = bad_structures()
    ok_cif = rows[0]["cif"]
    extra = [
        {"material_id": "bad-disordered", "cif": cif(bad["disordered"])},
        {"material_id": "bad-5el", "cif": cif(bad["too_many_elements"])},
        {"material_id": "bad-101", "cif": cif(bad["too_many_sites"])},
        {"material_id": "bad-md", "cif": cif(bad["unsupported_element"])},
        {"material_id": "bad-garbage", "cif": "data_nothing\nthis is not a CIF at all\n_cell_length_a ???\n"},
        {"material_id": "bad-overlap", "cif": cif(bad["overlapping_sites"])},
        {"material_id": "bad-empty", "cif": ""},
        {"material_id": "bad-nan", "cif": ok_cif, "formation_energy_per_atom": "nan"},
        {"material_id": "bad-text", "cif": ok_cif, "band_gap": "abc"},
        {"material_id": "bad-missing-label", "cif": ok_cif, "band_gap": ""},
        {"material_id": "mp-3", "cif": ok_cif},                      # duplicate of a good row
        {"material_id": "", "cif": ok_cif},                          # missing ID
    ]
    for e in extra:
        e.setdefault("formation_energy_per_atom", -2.0)
        e.setdefault("band_gap", 1.0)
        e.setdefault("volume", 1.0)
    # interleave so rejections fall in different chunks
    mixed = []
    for i in range(max(len(rows), len(extra))):
        if i < len(rows):
            mixed.append(rows[i])
        if i < len(extra):
            mixed.append(extra[i])
    path = tmp_path_factory.mktemp("inp") / "mixed.csv.gz"
    return write_csv(path, mixed), mixed


EXPECTED_REASONS = {
    "bad-disordered": "disordered", "bad-5el": "too_many_elements", "bad-101": "too_many_sites",
    "bad-md": "unsupported_element", "bad-overlap": "overlapping_sites",
    "bad-garbage": "unparsable_cif", "bad-empty": "unparsable_cif",
    "bad-nan": "nonfinite_label", "bad-text": "nonfinite_label", "bad-missing-label": "missing_label",
    "mp-3": "duplicate_id", "": "missing_id",
}


def store_bytes(root: Path) -> dict[str, bytes]:
    return {f: (root / f).read_bytes() for f in STORE_FILES}


# ---------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_build_from_csv_records_every_rejection(mixed_csv, tmp_path):
    path, rows = mixed_csv
    root = tmp_path / "store"
    m = build_store(path, root, workers=1, chunk_size=4, progress=False)
    rej = pd.read_csv(root / "rejects.csv", dtype=str, keep_default_na=False)
    assert list(rej.columns) == ["material_id", "reason", "detail", "input_row"]
    got = dict(zip(rej.material_id, rej.reason, strict=False))
    assert got == EXPECTED_REASONS
    assert (rej.detail != "").all()
    # manifest counts and checksums
    c = m["counts"]
    assert c["input"] == len(rows) == c["accepted"] + c["rejected"]
    assert c["accepted"] == len(good_structures())
    expect_counts = pd.Series(list(EXPECTED_REASONS.values())).value_counts().to_dict()
    assert c["rejected_by_reason"] == expect_counts
    for f in STORE_FILES:
        assert m["files"][f]["sha256"] == sha256_file(root / f)
    assert all(verify_store(root).values())
    assert m["targets"] == ["formation_energy", "band_gap"]
    assert m["label_columns"] == {"formation_energy": "formation_energy_per_atom", "band_gap": "band_gap"}
    assert m["source"]["sha256"] == sha256_file(path) and m["phase"] == "linear"
    assert m["ignored_columns"] == ["volume"]
    assert not (root / ".build").exists()

    # the store: IDs in input order, FTCP equal to featurize() of the parsed CIFs, labels mapped
    good, seen = [], set()
    for r in rows:                                  # first occurrences of the good IDs
        if r["material_id"].startswith("mp-") and r["material_id"] not in seen:
            good.append(r)
            seen.add(r["material_id"])
    ids = np.load(root / "material_ids.npy")
    assert list(ids) == [r["material_id"] for r in good]
    ftcp = np.load(root / "ftcp.npy")
    assert ftcp.dtype == np.float32 and ftcp.shape == (len(good), 400, 63)
    expected = featurize([Structure.from_str(r["cif"], fmt="cif") for r in good])
    np.testing.assert_array_equal(ftcp, expected)
    labels = pd.read_csv(root / "labels.csv")
    assert list(labels.columns) == ["material_id", "formula", "formation_energy", "band_gap"]
    np.testing.assert_array_equal(labels.formation_energy, [r["formation_energy_per_atom"] for r in good])
    assert labels.formula[0] == "NaCl" and labels.formula[2] == "SrTiO3"
    # np.save-compatible: the finalised header equals numpy's own
    assert (root / "ftcp.npy").read_bytes()[:128] == _np_save_header(ftcp)


def _np_save_header(arr) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr))
    return buf.getvalue()[:128]


def test_resume_after_interruption_is_byte_identical(mixed_csv, tmp_path):
    path, _ = mixed_csv
    ref = tmp_path / "ref"
    build_store(path, ref, workers=1, chunk_size=3, progress=False)

    def stop_at(stage, when):
        def hook(s, k):
            if s == stage and k == when:
                raise BuildInterrupted(f"simulated stop at {s} {k}")
        return hook

    for stage, k in [("chunk_written", 2), ("chunk_committed", 4), ("finalizing", -1), ("moved", 1)]:
        root = tmp_path / f"cut_{stage}"
        with pytest.raises(BuildInterrupted):
            build_store(path, root, workers=1, chunk_size=3, progress=False, _test_hook=stop_at(stage, k))
        assert (root / ".build" / "journal.json").exists()
        assert not (root / "manifest.json").exists()
        m = build_store(path, root, workers=1, chunk_size=3, progress=False)
        assert store_bytes(root) == store_bytes(ref), stage
        assert not (root / ".build").exists()
        if stage.startswith("chunk"):
            assert m["build"]["resumed_at_chunk"] == [k + (stage == "chunk_committed")]


def test_resume_after_kill_9(mixed_csv, tmp_path):
    """A real SIGKILL in a subprocess after rows were written but before the journal commit."""
    path, _ = mixed_csv
    ref, root = tmp_path / "ref", tmp_path / "killed"
    build_store(path, ref, workers=1, chunk_size=4, progress=False)
    script = textwrap.dedent(f"""
        import os, signal
        from ftcp.store import build_store
        def hook(stage, k):
            if stage == "chunk_written" and k == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        build_store({str(path)!r}, {str(root)!r}, workers=2, chunk_size=4, progress=False, _test_hook=hook)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    journal = json.loads((root / ".build" / "journal.json").read_text())
    assert journal["chunks_done"] == 2
    # rows of chunk 2 were written past the committed size: resume must cut them off
    assert (root / ".build" / "ftcp.npy").stat().st_size > 128 + journal["rows_written"] * 100800
    m = build_store(path, root, workers=1, chunk_size=4, progress=False)
    assert store_bytes(root) == store_bytes(ref)
    assert m["build"]["resumed_at_chunk"] == [2]


def test_journal_of_other_options_is_not_resumed(mixed_csv, tmp_path):
    path, _ = mixed_csv
    root = tmp_path / "s"

    def hook(s, k):
        if s == "chunk_committed":
            raise BuildInterrupted("stop")
    with pytest.raises(BuildInterrupted):
        build_store(path, root, workers=1, chunk_size=4, progress=False, _test_hook=hook)
    with pytest.raises(ValueError, match="restart"):
        build_store(path, root, workers=1, chunk_size=4, phase="cos", progress=False)
    m = build_store(path, root, workers=1, chunk_size=4, phase="cos", progress=False, restart=True)
    assert m["phase"] == "cos" and m["build"]["resumed_at_chunk"] == []


def test_workers_give_identical_files(mixed_csv, tmp_path):
    path, _ = mixed_csv
    a, b = tmp_path / "a", tmp_path / "b"
    build_store(path, a, workers=1, chunk_size=5, progress=False)
    build_store(path, b, workers=2, chunk_size=5, progress=False)
    assert store_bytes(a) == store_bytes(b)


def test_existing_store_needs_overwrite_and_stale_splits_go(tmp_path):
    rows = good_rows(n_repeat=3)
    path = write_csv(tmp_path / "in.csv", rows)
    root = tmp_path / "s"
    build_store(path, root, workers=1, progress=False)
    make_splits(root, test_percents=(10,), group_test_fraction=None)
    with pytest.raises(FileExistsError):
        build_store(path, root, workers=1, progress=False)
    m = build_store(path, root, workers=1, progress=False, overwrite=True, phase="abs")
    assert m["phase"] == "abs" and read_manifest(root)["phase"] == "abs"
    assert open_dataset(root).split_names() == []


def _good_store(tmp_path) -> Path:
    root = tmp_path / "good"
    build_store(write_csv(tmp_path / "good.csv", good_rows()), root, workers=1, progress=False)
    return root


def test_header_only_input_is_refused_and_never_replaces_a_store(tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("material_id,cif,formation_energy_per_atom\n")
    with pytest.raises(UserError, match="header.csv holds no crystals"):
        build_store(header_only, tmp_path / "new", workers=1, progress=False)
    assert not (tmp_path / "new").exists()
    root = _good_store(tmp_path)
    before = store_bytes(root)
    with pytest.raises(UserError, match="holds no crystals"):
        build_store(header_only, root, workers=1, progress=False, overwrite=True)
    assert store_bytes(root) == before and read_manifest(root)["counts"]["accepted"] == len(good_structures())


def test_a_build_that_accepts_nothing_leaves_the_store_alone(tmp_path):
    root = _good_store(tmp_path)
    make_splits(root, test_percents=(10,), group_test_fraction=None)
    before = store_bytes(root)
    rows = [{"material_id": f"x-{i}", "cif": "not a cif", "formation_energy_per_atom": 1.0} for i in range(5)]
    with pytest.raises(UserError, match=r"none of the 5 input rows .* was accepted \(unparsable_cif 5\); "
                                        r"e\.g\. input row 0 \(x-0\)"):
        build_store(write_csv(tmp_path / "bad.csv", rows), root, workers=1, progress=False, overwrite=True)
    assert store_bytes(root) == before and (root / "manifest.json").exists()
    assert open_dataset(root).split_names() == ["random_10"]      # its splits were not removed either
    assert not (root / ".build").exists()


def test_truncated_gzip_is_one_error_naming_the_file(tmp_path):
    path = write_csv(tmp_path / "in.csv.gz", good_rows(n_repeat=4))
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(path.read_bytes()[:len(path.read_bytes()) * 2 // 3])
    with pytest.raises(UserError, match=r"cut\.csv\.gz: the file ends early: it is truncated"):
        build_store(cut, tmp_path / "s", workers=1, progress=False)
    assert not (tmp_path / "s").exists()       # checked before the first row is processed: no row is lost
    not_gzip = tmp_path / "plain.csv.gz"
    not_gzip.write_bytes(b"material_id,cif\nx,y\n")
    with pytest.raises(UserError, match=r"plain\.csv\.gz: corrupt or not compressed as its name says"):
        build_store(not_gzip, tmp_path / "s", workers=1, progress=False)


def test_csv_cut_inside_a_cif_is_one_error_naming_the_file(tmp_path):
    text = write_csv(tmp_path / "in.csv", good_rows()).read_text()
    cut = tmp_path / "cut.csv"
    cut.write_text(text[:text.rindex("_cell_length_a")])        # ends inside the last row's quoted CIF
    with pytest.raises(UserError, match=r"cut\.csv: not a readable CSV"):
        build_store(cut, tmp_path / "s", workers=1, progress=False)


def test_a_carriage_return_in_an_id_keeps_rejects_csv_readable(tmp_path):
    rows = good_rows()[:2] + [dict(good_rows()[0], material_id="x\ry")]
    pd.DataFrame(rows).to_csv(tmp_path / "in.csv", index=False, quoting=csv.QUOTE_ALL)   # the "\r" stays in the ID
    m = build_store(tmp_path / "in.csv", tmp_path / "s", workers=1, progress=False)
    rej = pd.read_csv(tmp_path / "s" / "rejects.csv", dtype=str, keep_default_na=False)
    assert m["counts"]["rejected"] == 1 and rej.material_id.tolist() == ["x\ry"]
    assert rej.reason.tolist() == ["missing_id"] and rej.input_row.tolist() == ["2"]


def test_data_root_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(UserError, match="data root .*afile is a file, not a folder"):
        build_store(write_csv(tmp_path / "in.csv", good_rows()), afile, workers=1, progress=False)


def test_build_from_cif_folder_matches_csv(tmp_path):
    rows = good_rows()
    rows.sort(key=lambda r: r["material_id"])             # folder order = sorted file names
    csv_root = tmp_path / "from_csv"
    build_store(write_csv(tmp_path / "in.csv", rows), csv_root, workers=1, progress=False)
    folder = tmp_path / "cifs"
    folder.mkdir()
    for r in rows:
        (folder / f"{r['material_id']}.cif").write_text(r["cif"])
    (folder / "mp-broken.cif").write_text("garbage")
    labels = pd.DataFrame([{k: r[k] for k in ("material_id", "formation_energy_per_atom", "band_gap")}
                           for r in rows[1:]]                     # first crystal has no labels
                          + [{"material_id": "mp-broken", "formation_energy_per_atom": 0.0, "band_gap": 0.0}])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    root = tmp_path / "from_dir"
    m = build_store(folder, root, labels_csv=tmp_path / "labels.csv", workers=1, progress=False)
    assert m["source"]["kind"] == "cif_dir" and m["source"]["labels_csv"]["sha256"]
    rej = pd.read_csv(root / "rejects.csv", dtype=str, keep_default_na=False)
    assert dict(zip(rej.material_id, rej.reason, strict=False)) == {rows[0]["material_id"]: "missing_label",
                                                     "mp-broken": "unparsable_cif"}
    ids = np.load(root / "material_ids.npy")
    assert list(ids) == [r["material_id"] for r in rows[1:]]
    np.testing.assert_array_equal(np.load(root / "ftcp.npy"), np.load(csv_root / "ftcp.npy")[1:])
    # without required labels the unlabelled crystal is kept with empty labels
    root2 = tmp_path / "from_dir_nolabels"
    m2 = build_store(folder, root2, labels_csv=tmp_path / "labels.csv", require_labels="none",
                     workers=1, progress=False)
    assert m2["counts"]["accepted"] == len(rows) and m2["blank_labels"] == {"band_gap": 1, "formation_energy": 1}
    lab = open_dataset(root2).part(ids=[rows[0]["material_id"]]).labels(["band_gap"])
    assert np.isnan(lab).all()


def test_build_from_json_list_and_dict(tmp_path):
    structs = good_structures()
    bad = bad_structures()
    records = [{"material_id": f"js-{i}", "structure": s.as_dict(), "formation_energy": -float(i),
                "labels": {"band_gap": 0.1 * i}} for i, s in enumerate(structs)]
    records.append({"material_id": "js-dis", "structure": bad["disordered"].as_dict(),
                    "formation_energy": 0.0, "band_gap": 0.0})
    records.append({"material_id": "js-broken", "structure": {"lattice": "nope"},
                    "formation_energy": 0.0, "band_gap": 0.0})
    records.append({"material_id": "js-none", "formation_energy": 0.0, "band_gap": None})
    (tmp_path / "list.json").write_text(json.dumps(records))
    m = build_store(tmp_path / "list.json", tmp_path / "a", workers=1, progress=False)
    rej = pd.read_csv(tmp_path / "a" / "rejects.csv", dtype=str, keep_default_na=False)
    assert dict(zip(rej.material_id, rej.reason, strict=False)) == {
        "js-dis": "disordered", "js-broken": "unparsable_structure", "js-none": "missing_label"}
    assert m["targets"] == ["formation_energy", "band_gap"]
    np.testing.assert_allclose(np.load(tmp_path / "a" / "ftcp.npy"), featurize(structs), rtol=1e-6)
    y = open_dataset(tmp_path / "a").part(ids=["js-3"]).labels(["formation_energy", "band_gap"])
    np.testing.assert_allclose(y, [[-3.0, 0.3]])

    as_dict = {f"d-{i}": s.as_dict() for i, s in enumerate(structs)}
    (tmp_path / "dict.json").write_text(json.dumps(as_dict))
    m = build_store(tmp_path / "dict.json", tmp_path / "b", workers=1, progress=False)
    assert m["targets"] == [] and m["counts"]["accepted"] == len(structs)
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "ftcp.npy"), np.load(tmp_path / "a" / "ftcp.npy"))


def test_label_mapping(tmp_path):
    rows = [{"material_id": f"x{i}", "heat_ref": -0.5 * i, "ind_gap": 0.2 * i, "cif": cif(s)}
            for i, s in enumerate(good_structures()[:3])]
    path = write_csv(tmp_path / "p.csv", rows)
    m = build_store(path, tmp_path / "s", label_map={"formation_energy": "heat_ref", "band_gap": "ind_gap"},
                    workers=1, progress=False)
    assert m["targets"] == ["formation_energy", "band_gap"]
    np.testing.assert_allclose(open_dataset(tmp_path / "s").part(ids=["x2"]).labels(["band_gap"]), [[0.4]])
    with pytest.raises(ValueError, match="no column"):
        resolve_label_columns(["a", "b"], {"band_gap": "gap"})
    with pytest.raises(ValueError, match="not among"):
        build_store(path, tmp_path / "t", require_labels="band_gap", workers=1, progress=False)


@pytest.mark.shared
def test_store_reproduces_golden_ftcp(golden_dir, tmp_path):
    """End to end through the builder: CIF text -> store == the reference FTCP arrays."""
    m = build_store(golden_dir / "structures.csv.gz", tmp_path / "g", workers=1, progress=False)
    assert m["counts"]["rejected"] == 0
    ref = np.load(golden_dir / "expected_ftcp.npz")
    ds = open_dataset(tmp_path / "g")
    np.testing.assert_array_equal(ds.ids, ref["material_id"])
    got = ds.ftcp_memmap[:]
    scale = np.abs(ref["ftcp"]).max(axis=(1, 2), keepdims=True)
    assert np.max(np.abs(got - ref["ftcp"]) / scale) < 1e-6


@pytest.mark.shared
def test_real_mp36k_rows_rejected_for_the_right_reasons(mp36k_csv, tmp_path):
    df = pd.read_csv(mp36k_csv, dtype=str, keep_default_na=False, nrows=400)
    path = tmp_path / "mp400.csv.gz"
    with gzip.open(path, "wt", newline="") as fh:
        df.to_csv(fh, index=False)
    m = build_store(path, tmp_path / "s", workers=2, chunk_size=128, progress=False)
    n_el, n_sites = df.n_elements.astype(int), df.n_sites.astype(int)
    eligible = (n_el <= 4) & (n_sites <= 100)
    assert m["counts"]["accepted"] == int(eligible.sum())
    ds = open_dataset(tmp_path / "s")
    assert list(ds.ids) == list(df.material_id[eligible])
    rej = pd.read_csv(tmp_path / "s" / "rejects.csv", dtype=str, keep_default_na=False)
    expect = np.where(n_sites[~eligible] > 100, "too_many_sites", "too_many_elements")
    assert list(rej.reason) == list(expect)
    np.testing.assert_array_equal(ds.part(ids=ds.ids).formulas(), df.formula[eligible])
    np.testing.assert_array_equal(ds.part(ids=ds.ids).labels(["formation_energy"])[:, 0],
                                  df.formation_energy_per_atom[eligible].astype(float))
