"""FTCP featurizer: golden compatibility, the reference algorithm, phases, rejections, inversion."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import DummySpecies, Lattice, Species, Structure

import ftcp
from benchmarks.reference_ftcp import reference_ftcp, upstream_procedure_ftcp
from ftcp import layout as L
from ftcp.featurizer import (
    MIN_SITE_DISTANCE,
    RejectedStructure,
    check_structure,
    closest_sites_below,
    crystal_from_structure,
    featurize_crystals,
    reciprocal_points,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def rocksalt(a=5.64, a_el="Na", b_el="Cl"):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [a_el, b_el], [[0, 0, 0], [0.5, 0.5, 0.5]])


def sample_structures():
    """Small, varied, hand-made crystals: cubic, hexagonal, triclinic, long cells, hydrogen."""
    tri = Structure(Lattice.from_parameters(4.1, 5.3, 6.7, 81, 97, 112),
                    ["Li", "Fe", "P", "O", "O", "O"],
                    [[0, 0, 0], [0.3, 0.2, 0.1], [0.6, 0.7, 0.4], [0.1, 0.9, 0.5], [0.8, 0.4, 0.3], [0.45, 0.55, 0.95]])
    long_cell = Structure(Lattice.tetragonal(3.1, 41.0), ["Mo", "S", "S"],
                          [[0, 0, 0.1], [1 / 3, 2 / 3, 0.14], [1 / 3, 2 / 3, 0.06]])
    lih = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    water_like = Structure(Lattice.hexagonal(4.5, 7.3), ["O", "H", "H", "O", "H", "H"],
                           [[1 / 3, 2 / 3, 0.06], [1 / 3, 2 / 3, 0.19], [0.45, 0.9, 0.02],
                            [2 / 3, 1 / 3, 0.56], [2 / 3, 1 / 3, 0.69], [0.55, 0.1, 0.52]])
    big = rocksalt(5.64, "Mg", "O") * (2, 2, 3)   # 96 sites
    return [rocksalt(), tri, long_cell, lih, water_like, big,
            Structure(Lattice.hexagonal(2.51, 4.07), ["Co", "Co"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])]


# ------------------------------------------------------------------------------------------
def test_golden_arrays_all_300(golden_dir):
    ref = np.load(golden_dir / "expected_ftcp.npz", allow_pickle=False)
    df = pd.read_csv(golden_dir / "structures.csv.gz")
    assert list(df.material_id) == list(ref["material_id"])
    structures = [Structure.from_str(c, fmt="cif") for c in df.cif]
    x = ftcp.featurize(structures, phase="linear")
    assert x.shape == (300, 400, 63) and x.dtype == np.float32
    expected = ref["ftcp"]
    rel = np.abs(x - expected).max(axis=(1, 2)) / np.abs(expected).max(axis=(1, 2))
    assert rel.max() <= 1e-5, f"worst crystal {df.material_id[int(rel.argmax())]}: {rel.max():.2e}"
    # float64 output reproduces the reference to rounding
    x64 = ftcp.featurize(structures[:20], dtype=np.float64)
    assert np.abs(x64 - expected[:20]).max() <= 1e-9 * np.abs(expected[:20]).max()


@pytest.mark.parametrize("straightforward", [reference_ftcp, upstream_procedure_ftcp])
def test_matches_straightforward_references_on_varied_cells(straightforward):
    # both one-at-a-time baselines of the speed benchmark compute the same FTCP as the library
    structures = sample_structures()
    x = ftcp.featurize(structures, dtype=np.float64)
    for s, got in zip(structures, x, strict=False):
        want = straightforward(s)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_layout_bands_are_filled_as_documented():
    s = sample_structures()[1]                       # LiFePO3-like, 6 sites, 4 elements
    x = ftcp.featurize([s])[0]
    assert L.region(x, L.ELEMENT_MATRIX).sum() == 4
    assert [ftcp.elements.ELEMENT_SYMBOLS[i] for i in L.region(x, L.ELEMENT_MATRIX).argmax(0)] == ["Li", "Fe", "P", "O"]
    np.testing.assert_allclose(x[L.LATTICE_LENGTH_ROW, :3], s.lattice.abc, rtol=1e-6)
    np.testing.assert_allclose(x[L.LATTICE_ANGLE_ROW, :3], s.lattice.angles, rtol=1e-6)
    assert L.region(x, L.SITE_OCCUPANCY).sum() == 6
    assert L.region(x, L.SITE_OCCUPANCY)[:6].argmax(1).tolist() == [0, 1, 2, 3, 3, 3]
    assert np.all(x[L.PAD_ROWS] == 0)
    assert np.all(x[: L.KDIST_ROW, L.RECIP_COLS] == 0)          # reciprocal part of real-space rows
    assert np.all(x[L.KDIST_ROW, L.REAL_COLS] == 0)
    assert np.all(L.region(x, L.KPOINT_DISTANCES) > 0)


def test_kpoint_order_and_radius_rule():
    # order: |h|+|k|+|l| ascending, then h, k, l descending -- independent of the lattice
    hkl, g = reciprocal_points(np.stack([rocksalt().lattice.matrix, Lattice.cubic(30.0).matrix]))
    for row in hkl:
        key = [(abs(h) + abs(k) + abs(l), -h, -k, -l) for h, k, l in row]
        assert key == sorted(key) and len(set(map(tuple, row))) == 59
    # a cubic cell whose 1.297 sphere holds < 59 points switches to 1.4 like the reference
    a = 1.85
    hkl, g = reciprocal_points(Lattice.cubic(a).matrix[None])
    n_small = sum(1 for h in range(-4, 5) for k in range(-4, 5) for l in range(-4, 5)
                  if 0 < np.sqrt(h * h + k * k + l * l) / a <= 1.297)
    assert n_small < 59 and 1.297 < g.max() <= 1.4 + 1e-9
    he = Structure(Lattice.cubic(a), ["He"], [[0, 0, 0]])
    np.testing.assert_allclose(ftcp.featurize([he], dtype=np.float64)[0], reference_ftcp(he), atol=1e-12)


def test_tiny_cell_beyond_reference_widens_sphere():
    # The reference crashes when even the 1.4 sphere holds < 59 points; we widen it and say so.
    s = Structure(Lattice.cubic(1.6), ["He"], [[0, 0, 0]])
    with pytest.raises(ValueError):
        reference_ftcp(s)
    x = ftcp.featurize([s])[0]
    g = L.region(x, L.KPOINT_DISTANCES)
    assert np.all(g > 0) and g.max() > 1.4


@pytest.mark.parametrize("phase", ["cos", "sin", "abs"])
def test_physical_phases_match_direct_sum(phase):
    s = sample_structures()[1]
    x = ftcp.featurize([s], phase=phase, dtype=np.float64)[0]
    lin = ftcp.featurize([s], dtype=np.float64)[0]
    hkl, _ = reciprocal_points(s.lattice.matrix[None])
    props = ftcp.elements.cgcnn_properties()[np.array(s.atomic_numbers)].T      # (92, n)
    arg = 2 * np.pi * s.frac_coords @ hkl[0].T
    want = {"cos": props @ np.cos(arg), "sin": props @ np.sin(arg),
            "abs": np.abs(props @ np.exp(1j * arg))}[phase]
    np.testing.assert_allclose(L.region(x, L.STRUCTURE_FACTORS), want, atol=1e-9)
    # everything outside the structure-factor map is identical to the linear phase
    mask = np.ones(L.SHAPE, bool)
    mask[L.STRUCTURE_FACTORS] = False
    assert np.array_equal(x[mask], lin[mask])


def test_abs_phase_is_origin_invariant_linear_is_not():
    s = sample_structures()[1]
    shifted = s.copy()
    shifted.translate_sites(list(range(len(s))), [0.13, -0.21, 0.37], frac_coords=True, to_unit_cell=True)
    a, b = ftcp.featurize([s, shifted], phase="abs", dtype=np.float64)
    np.testing.assert_allclose(L.region(a, L.STRUCTURE_FACTORS), L.region(b, L.STRUCTURE_FACTORS), atol=1e-8)
    a, b = ftcp.featurize([s, shifted], phase="linear", dtype=np.float64)
    assert not np.allclose(L.region(a, L.STRUCTURE_FACTORS), L.region(b, L.STRUCTURE_FACTORS))


def test_unknown_phase_is_rejected():
    with pytest.raises(ValueError, match="phase must be one of"):
        ftcp.featurize([rocksalt()], phase="exp")


# ------------------------------------------------------------------------------------------
def _disordered():
    s = rocksalt()
    s.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    return s


def _vacancy():
    s = rocksalt()
    s.replace_species({"Na": {"Na": 0.9}})
    return s


@pytest.mark.parametrize("make, code", [
    (_disordered, "disordered"),
    (_vacancy, "disordered"),
    (lambda: Structure(Lattice.cubic(4), [{}], [[0, 0, 0]]), "disordered"),      # a site without species
    (lambda: Structure(Lattice.cubic(8), ["Li", "Na", "K", "Rb", "Cs"],
                       [[0, 0, 0], [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]]), "too_many_elements"),
    (lambda: Structure(Lattice.cubic(20), ["Cu"] * 101, np.random.default_rng(0).random((101, 3))), "too_many_sites"),
    (lambda: Structure(Lattice.cubic(5), ["Md", "O"], [[0, 0, 0], [.5, .5, .5]]), "unsupported_element"),
    (lambda: Structure(Lattice.cubic(5), ["Lr"], [[0, 0, 0]]), "unsupported_element"),
    (lambda: Structure(Lattice.cubic(5), [], []), "empty_structure"),
    (lambda: Structure(Lattice.cubic(4), [DummySpecies("X"), "Na"], [[0, 0, 0], [.5, .5, .5]]), "unsupported_element"),
    (lambda: Structure(Lattice([[1, 0, 0], [1, 0, 0], [0, 0, 1]]), ["Na"], [[0, 0, 0]]), "bad_lattice"),
    (lambda: Structure(Lattice([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]), ["Na"], [[0, 0, 0]]), "bad_lattice"),
    (lambda: Structure(Lattice([[np.inf, 0, 0], [0, 1, 0], [0, 0, 1]]), ["Na"], [[0, 0, 0]]), "bad_lattice"),
    (lambda: Structure(Lattice.cubic(4), ["Na"], [[np.nan, 0, 0]]), "bad_coordinates"),
    (lambda: Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.0001 / 4, 0, 0]]), "overlapping_sites"),
    (lambda: Structure(Lattice.cubic(4), ["Na", "Na"], [[0.99999, 0.5, 0.5], [0.00001, 0.5, 0.5]]),
     "overlapping_sites"),                                                      # across the cell boundary
    (lambda: Structure(Lattice([[5, 0, 0], [4.9, 0.3, 0], [0, 0, 5]]), ["Na"], [[0, 0, 0]]),
     "overlapping_sites"),                            # a_2 - a_1 is 0.32 Angstrom: the site overlaps its image
])
def test_rejections_have_reasons(make, code):
    s = make()
    assert check_structure(s) == code
    with pytest.raises(RejectedStructure) as info:
        crystal_from_structure(s)
    assert info.value.code == code and info.value.message
    with pytest.raises(RejectedStructure, match=rf"^{code}: structure 1 "):
        ftcp.featurize([rocksalt(), s])


def _closest_by_brute_force(frac, matrix, reach=4):
    shifts = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    best = np.inf
    for i in range(len(frac)):
        for j in range(i, len(frac)):
            cart = (frac[i] - frac[j] + shifts) @ matrix
            dist = np.sqrt((cart ** 2).sum(1))
            if i == j:
                dist = dist[shifts.any(1)]
            best = min(best, dist.min())
    return best


def test_closest_sites_matches_brute_force_on_skewed_cells():
    rng = np.random.default_rng(7)
    for trial in range(60):
        skew = rng.normal(0, 1.5 if trial % 2 else 0.3, (3, 3))
        matrix = np.diag(rng.uniform(1.0, 4.0, 3)) + np.triu(skew, 1)     # some cells very oblique
        frac = rng.uniform(-1.5, 1.5, (int(rng.integers(1, 7)), 3))       # not wrapped into the cell
        truth = _closest_by_brute_force(frac, matrix)
        for cutoff in (0.5, 1.0, 2.5):
            got = closest_sites_below(frac, matrix, cutoff)
            assert (got is not None) == (truth < cutoff), (trial, cutoff, got, truth)
            if got is not None:        # the closest pair, or a lattice vector shorter than the cutoff
                assert got[2] == pytest.approx(truth, abs=1e-9) or (got[0] == got[1] and truth <= got[2] < cutoff)


def test_closest_sites_on_oblique_and_nearly_flat_bases():
    # an unreduced basis of a plain 5 Angstrom cubic lattice: same answer as the cubic basis, no image explosion
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    cubic = np.eye(3) * 5.0
    oblique = np.array([[5.0, 0, 0], [5000.0, 5.0, 0], [0, 0, 5.0]])       # a_2 + 1000 a_1
    on_oblique = frac @ cubic @ np.linalg.inv(oblique)
    assert closest_sites_below(frac, cubic, 5.0)[2] == pytest.approx(5 * np.sqrt(3) / 2)
    assert closest_sites_below(on_oblique, oblique, 5.0)[2] == pytest.approx(5 * np.sqrt(3) / 2)
    assert closest_sites_below(on_oblique, oblique, 0.5) is None
    # vectors of 3.5 Angstrom spanning a cell of 2.5e-4 A^3: a lattice vector of 2e-5 Angstrom, found at once
    flat = np.array([[5.0, 0, 0], [0, 5.0, 0], [2.5, 2.5, 1e-5]])
    i, j, distance = closest_sites_below(np.random.default_rng(0).random((100, 3)), flat, 0.5)
    assert i == j and distance == pytest.approx(2e-5)
    assert check_structure(Structure(Lattice(flat), ["Na"], [[0, 0, 0]])) == "overlapping_sites"


def test_genuine_short_bonds_are_not_overlaps():
    # H2-like pair at 0.74 Angstrom, the shortest bond there is: kept
    h2 = Structure(Lattice.cubic(5), ["H", "H"], [[0, 0, 0], [0.74 / 5, 0, 0]])
    assert MIN_SITE_DISTANCE < 0.74 and check_structure(h2) is None


def test_oxidation_state_species_featurize_like_elements():
    ions = Structure(Lattice.cubic(5.64), [Species("Na", 1), Species("Cl", -1)], [[0, 0, 0], [.5, .5, .5]])
    plain = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [.5, .5, .5]])
    np.testing.assert_array_equal(ftcp.featurize([ions]), ftcp.featurize([plain]))


def test_eligible_limits_are_inclusive():
    four = Structure(Lattice.cubic(8), ["Li", "Na", "K", "H"], [[0, 0, 0], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
    grid = [[i / 5, j / 5, k / 4] for i in range(5) for j in range(5) for k in range(4)]   # no two sites overlap
    hundred = Structure(Lattice.cubic(20), ["Cu"] * 100, grid)
    fm = Structure(Lattice.cubic(5), ["Fm", "O"], [[0, 0, 0], [.5, .5, .5]])
    assert [check_structure(s) for s in (four, hundred, fm)] == [None, None, None]
    assert ftcp.featurize([four, hundred, fm]).shape == (3, 400, 63)


# ------------------------------------------------------------------------------------------
def test_round_trip_varied_cells_including_hydrogen():
    matcher = StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)
    structures = sample_structures()
    for s, x in zip(structures, ftcp.featurize(structures), strict=False):
        back = ftcp.to_structure(x)
        assert len(back) == len(s)
        assert back.composition == s.composition, (back.composition, s.composition)
        assert matcher.fit(s, back)


def test_round_trip_golden_structures(golden_dir):
    df = pd.read_csv(golden_dir / "structures.csv.gz")
    matcher = StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)
    structures = [Structure.from_str(c, fmt="cif") for c in df.cif]
    failures = [mid for mid, s, x in zip(df.material_id, structures, ftcp.featurize(structures), strict=False)
                if not (ftcp.to_structure(x).composition == s.composition and matcher.fit(s, ftcp.to_structure(x)))]
    assert failures == []
    assert any("H" in s.composition for s in structures)


def test_inversion_never_invents_hydrogen():
    x = ftcp.featurize([rocksalt()])[0]
    s = ftcp.to_structure(x)
    assert "H" not in s.composition and len(s) == len(rocksalt())
    # a site at the origin is a real site
    assert np.allclose(s.frac_coords[0], 0)
    with pytest.raises(ValueError, match="no occupied site"):
        ftcp.to_structure(np.zeros(L.SHAPE))
    with pytest.raises(ValueError, match="expected one FTCP array"):
        ftcp.to_structure(np.zeros((2, 400, 63)))


def test_batch_composition_does_not_change_results():
    # tiny cells (sphere widened), small cells (bigger k-table) and ordinary ones in one batch
    structures = [Structure(Lattice.cubic(1.6), ["He"], [[0, 0, 0]]),
                  Structure(Lattice.cubic(1.85), ["He"], [[0, 0, 0]]),
                  Structure(Lattice.orthorhombic(1.9, 2.2, 30.0), ["Li", "H"], [[0, 0, 0], [.5, .5, .5]]),
                  *sample_structures()]
    together = ftcp.featurize(structures, dtype=np.float64)
    alone = np.concatenate([ftcp.featurize([s], dtype=np.float64) for s in structures])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_allclose(together[1], reference_ftcp(structures[1]), atol=1e-12)
    np.testing.assert_allclose(together[2], reference_ftcp(structures[2]), atol=1e-9 * np.abs(together[2]).max())


@pytest.mark.parametrize("out_state", ["any", "ftcp"])
def test_reused_output_buffer_is_cleared_as_its_state_allows(out_state):
    # a buffer that held larger crystals (more sites and elements) must not leak them
    big = [sample_structures()[5], sample_structures()[1]]          # 96 sites; 4 elements
    small = [rocksalt(), sample_structures()[3]]
    fresh = ftcp.featurize(small)
    buffer = ftcp.featurize(big)
    if out_state == "any":
        buffer[:] = np.random.default_rng(0).random(buffer.shape)   # arbitrary contents
    crystals = [crystal_from_structure(s) for s in small]
    assert featurize_crystals(crystals, out=buffer, out_state=out_state) is buffer
    np.testing.assert_array_equal(buffer, fresh)
    with pytest.raises(ValueError, match="out_state must be one of"):
        featurize_crystals(crystals, out=buffer, out_state="dirty")
