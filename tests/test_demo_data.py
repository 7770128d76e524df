"""The built-in synthetic demo dataset: deterministic, FTCP-eligible, physically labelled, diverse."""
from __future__ import annotations

import gzip
import hashlib
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from ftcp import demo_data as demo
from ftcp.featurizer import check_structure, featurize, to_structure

N = 48           # three 16-row schedule cycles: every prototype, three elemental lattices, hydrides
COULOMB = 14.3996454784   # e^2 / (4 pi eps0) in eV Angstrom


@pytest.fixture(scope="module")
def frame():
    return demo.generate_demo_dataset(n=N, seed=0, progress=False, n_jobs=1)


@pytest.fixture(scope="module")
def structures(frame):
    return demo.structures_from_frame(frame)


def test_columns_ids_and_synthetic_notes(frame):
    assert list(frame.columns) == demo.COLUMNS
    assert frame["material_id"].is_unique
    assert frame["material_id"].tolist() == [f"demo-{i:05d}" for i in range(1, N + 1)]
    assert (frame["notes"] == demo.NOTES).all()
    assert "synthetic" in demo.NOTES and "not DFT" in demo.NOTES
    assert {demo.FORMATION_ENERGY_LIKE, demo.BAND_GAP_LIKE} <= set(demo.LABELS)


def test_every_row_is_ftcp_eligible_and_featurizes(structures):
    assert [check_structure(s) for s in structures] == [None] * N
    assert max(len(s) for s in structures) <= demo.MAX_SITES
    assert max(len(s.composition.elements) for s in structures) <= demo.MAX_ELEMENTS
    x = featurize(structures)
    assert x.shape == (N, 400, 63) and np.isfinite(x).all()


def test_ftcp_round_trip_matches_structure(structures):
    from pymatgen.analysis.structure_matcher import ElementComparator, StructureMatcher

    matcher = StructureMatcher(comparator=ElementComparator(), primitive_cell=False)
    x = featurize(structures)
    hydrogen = 0
    for s, arr in zip(structures, x, strict=False):
        back = to_structure(arr)
        assert len(back) == len(s)
        assert back.composition.reduced_formula == s.composition.reduced_formula
        assert matcher.fit(s, back), s.composition.reduced_formula
        hydrogen += "H" in {e.symbol for e in back.composition.elements}
    assert hydrogen >= 3   # hydrides survive inversion (upstream turned empty rows into H)


def test_labels_finite_and_physically_plausible(frame):
    labels = frame[list(demo.LABELS)].to_numpy(dtype=float)
    assert np.isfinite(labels).all()
    elemental = frame["prototype"].str.startswith("elemental_").to_numpy()
    ewald = frame["ewald_energy_per_atom"].to_numpy()
    assert (ewald[~elemental] < 0).all() and (ewald[elemental] == 0).all()
    assert frame["density"].between(0.5, 25).all()
    assert frame["volume_per_atom"].between(4, 150).all()
    # a target the demo's regressors can learn: it must spread widely across the dataset
    assert ewald.std() > 5 and frame["density"].std() > 1


def test_labels_reproduce_from_the_stored_cif(frame, structures):
    for row, s in zip(frame.itertuples(), structures, strict=False):
        got = demo.compute_labels(s)
        for name in demo.LABELS:
            assert got[name] == getattr(row, name), (row.material_id, name)


@pytest.mark.parametrize("species, lattice, coords, madelung, nn", [
    (["Na+", "Cl-"], ("Fm-3m", 5.64), [[0, 0, 0], [0.5, 0.5, 0.5]], 1.747565, 2.82),
    (["Mg2+", "O2-"], ("Fm-3m", 4.21), [[0, 0, 0], [0.5, 0.5, 0.5]], 4 * 1.747565, 2.105),
    (["Cs+", "Cl-"], ("Pm-3m", 4.12), [[0, 0, 0], [0.5, 0.5, 0.5]], 1.762675, 4.12 * 3 ** 0.5 / 2),
])
def test_ewald_label_is_the_madelung_energy(species, lattice, coords, madelung, nn):
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup(lattice[0], Lattice.cubic(lattice[1]), species, coords)
    expected = -madelung * COULOMB / nn / 2   # per ion pair -> per atom
    assert demo.ewald_energy_per_atom(s) == pytest.approx(expected, rel=1e-5)
    assert demo.ewald_energy_per_atom(s * (2, 1, 1)) == pytest.approx(expected, rel=1e-5)


def test_ewald_needs_oxidation_states():
    from pymatgen.core import Lattice, Structure

    mixed = Structure(Lattice.cubic(4.0), ["Na+", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="oxidation states"):
        demo.ewald_energy_per_atom(mixed)
    assert demo.ewald_energy_per_atom(Structure(Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])) == 0.0


def test_diversity(frame, structures):
    protos = set(frame["prototype"])
    assert {p.name for p in demo.PROTOTYPES} <= protos
    assert len(protos & {p.name for p in demo.ELEMENTAL}) == 3
    assert {len(s.composition.elements) for s in structures} == {1, 2, 3, 4}
    sites = [len(s) for s in structures]
    assert min(sites) <= 4 and max(sites) >= 40
    assert frame["cell"].str.startswith("primitive").any() and frame["cell"].str.startswith("supercell").any()
    assert frame["cell"].str.contains(" on ").any()   # ordered substitutions
    assert frame["formula"].nunique() > 0.8 * N


def test_lattices_are_sensible(structures):
    # no two atoms closer than 1.4 Angstrom (C-C in diamond is the shortest contact: ~1.5)
    for s in structures:
        d = s.distance_matrix[np.triu_indices(len(s), 1)] if len(s) > 1 else np.array([min(s.lattice.abc)])
        assert d.min() > 1.4, s.composition.reduced_formula


def test_rows_depend_only_on_seed_and_index(frame):
    head = demo.generate_demo_dataset(n=8, seed=0, progress=False)
    pd.testing.assert_frame_equal(head, frame.iloc[:8].reset_index(drop=True))
    other = demo.generate_demo_dataset(n=8, seed=1, progress=False)
    assert (other["cif"] != head["cif"]).any()
    parallel = demo.generate_demo_dataset(n=8, seed=0, progress=False, n_jobs=2)
    pd.testing.assert_frame_equal(parallel, head)


def test_csv_is_byte_identical_and_has_a_provenance_sidecar(tmp_path):
    first, side = demo.write_demo_csv(tmp_path / "a" / "demo_dataset.csv.gz", n=6, seed=3, progress=False)
    second, side2 = demo.write_demo_csv(tmp_path / "b" / "other.csv.gz", n=6, seed=3, progress=False)
    assert first.read_bytes() == second.read_bytes()
    assert side.name == "demo_dataset.json" and side2.name == "other.json"
    assert side.read_text() == side2.read_text()
    info = json.loads(side.read_text())
    assert info["synthetic"] is True and "not" in info["statement"].lower() and "DFT" in info["statement"]
    assert info["csv_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert info["seed"] == 3 and info["n"] == 6 and set(info["labels"]) == set(demo.LABELS)
    # readable by a plain CSV reader, labels as floats, CIFs parse
    with gzip.open(first, "rt") as fh:
        df = pd.read_csv(fh)
    assert list(df.columns) == demo.COLUMNS and len(df) == 6
    assert df["ewald_energy_per_atom"].dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert all(check_structure(s) is None for s in demo.structures_from_frame(df))


def test_command_line(tmp_path, capsys):
    """The generator's command line is the demo's first stage: ``ftcp demo --stages demo-data``."""
    from ftcp.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-crystals", "60", "--stages", "demo-data", "--no-progress"]) == 0
    assert (out / "demo_dataset.csv.gz").exists() and (out / "demo_dataset.json").exists()
    assert "SYNTHETIC demo data" in capsys.readouterr().out


def test_rejects_empty_request():
    with pytest.raises(ValueError, match="positive"):
        demo.generate_demo_dataset(n=0, progress=False)


def test_store_built_from_the_demo_csv_is_marked_synthetic(tmp_path):
    import shutil

    from ftcp.store import build_store

    csv_path, side = demo.write_demo_csv(tmp_path / "a" / "demo.csv.gz", n=6, seed=3, progress=False)
    labels = {k: k for k in demo.LABELS}
    m = build_store(csv_path, tmp_path / "root", label_map=labels, workers=1, progress=False)
    assert m["synthetic"]["generator"] == "ftcp.demo_data" and "DFT" in m["synthetic"]["statement"]
    # the sidecar vouches only for the exact file it describes: no sidecar, or another file's -> not marked
    lone = tmp_path / "b" / "demo.csv.gz"
    lone.parent.mkdir()
    shutil.copyfile(csv_path, lone)
    assert "synthetic" not in build_store(lone, tmp_path / "root_b", label_map=labels, workers=1, progress=False)
    info = json.loads(side.read_text())
    info["csv_sha256"] = "0" * 64
    (tmp_path / "b" / "demo.json").write_text(json.dumps(info))
    assert "synthetic" not in build_store(lone, tmp_path / "root_c", label_map=labels, workers=1, progress=False)
