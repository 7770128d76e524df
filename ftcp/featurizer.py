"""Crystal -> FTCP featurization (and back), vectorised over batches.

The algorithm reproduces the FTCP reference (Ren et al., PV-Lab/FTCP ``FTCP_represent``,
``max_elms=4, max_sites=100``, plus upstream's two zero pad rows) bit for bit up to
float rounding, but does the work for a whole batch of crystals at once:

* Reciprocal points.  The reference asks pymatgen for every reciprocal-lattice point in a
  sphere (radius 1.297 1/Angstrom, 1.4 if that holds fewer than 59 besides the origin),
  sorts them by ``(|h|+|k|+|l|, -h, -k, -l)`` and keeps the first 59.  That order does not
  depend on the lattice, so we precompute every integer triple up to a maximum L1 norm in
  that order once, evaluate ``|g|^2`` for all of them and all crystals of a batch in one
  matrix product, and keep the first 59 inside the sphere.  Crystals whose sphere can
  reach beyond the table (tiny cells) fall back to a wider table.
* Structure factors.  ``F = P[:, site_slot] @ phase(hkl . r)`` is computed per element slot:
  the waves of each slot's sites are summed first (4 x 59 per crystal; for the linear phase
  it is enough to sum the slot's coordinates), then weighted by the slot's 92 properties in
  one batched einsum.

Phase modes (the ``phase`` argument):

``linear`` (default)
    ``F = P @ (pi * hkl . r)``: what the reference code computes and what the upstream
    Hugging Face dataset was built with.  Not a structure factor physically (no complex
    exponential; it depends on the unit-cell origin and is not periodic in ``r``).
``cos`` / ``sin``
    Real / imaginary part of the physical structure factor with the 92 CGCNN properties as
    scattering factors: ``P @ cos(2 pi hkl . r)`` and ``P @ sin(2 pi hkl . r)``.
``abs``
    Its modulus ``|P @ exp(2 pi i hkl . r)|``: invariant to the choice of origin.
"""
from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import chain
from operator import attrgetter

import numpy as np

from . import layout as L
from .elements import ELEMENT_SYMBOLS, MAX_PROPERTY_Z, cgcnn_properties

PHASES = ("linear", "cos", "sin", "abs")

#: Reference sphere radii (1/Angstrom, crystallographic reciprocal lattice, no 2 pi).
K_RADIUS = 1.297
K_RADIUS_WIDE = 1.4
#: Tolerance on the sphere test, matching pymatgen's ``find_points_in_spheres(tol=1e-8)``.
K_RADIUS_TOL = 1e-8
_TABLE_L1 = 6  # L1 norm of the first table tried (376 triples; doubled while needed)


class RejectedStructure(ValueError):
    """A crystal that FTCP cannot represent.  ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


#: Two sites closer than this (Angstrom, periodic images included) overlap: a data error (a duplicated atom,
#: coordinates in the wrong unit), never a crystal; the shortest interatomic distance in any solid, H-H in H2,
#: is 0.74 Angstrom.
MIN_SITE_DISTANCE = 0.5

# Reasons a crystal is rejected (also the ``reason`` codes of a store's rejects CSV).
REJECT_REASONS = {
    "disordered": "partially occupied or mixed-species site(s); FTCP needs fully ordered sites",
    "too_many_elements": f"more than {L.MAX_ELEMENTS} distinct elements",
    "too_many_sites": f"more than {L.MAX_SITES} sites in the cell",
    "unsupported_element": f"element without a CGCNN property vector (Z > {MAX_PROPERTY_Z}, e.g. Md, No, Lr, or a "
                           "dummy species)",
    "empty_structure": "structure has no sites",
    "bad_lattice": "lattice is degenerate or not finite",
    "bad_coordinates": "site coordinates are not finite",
    "overlapping_sites": f"two sites (periodic images included) closer than {MIN_SITE_DISTANCE} Angstrom",
}


@dataclass
class Crystal:
    """The compact arrays FTCP needs from one crystal (cheap to pickle between processes)."""

    slot_z: np.ndarray       # (n_elements,) atomic numbers of the element slots, first-appearance order
    site_slot: np.ndarray    # (n_sites,) element slot of each site
    frac_coords: np.ndarray  # (n_sites, 3) as stored in the structure (not wrapped)
    matrix: np.ndarray       # (3, 3) lattice vectors as rows, Angstrom

    @property
    def n_sites(self) -> int:
        return len(self.site_slot)


def _reject(code: str, detail: str = "") -> RejectedStructure:
    return RejectedStructure(code, REJECT_REASONS[code] + (f" ({detail})" if detail else ""))


# C-level attribute getters: the per-site loops below run over every site of every crystal
_SPECIES_DICT = attrgetter("_species._data")
_Z = attrgetter("Z")
_FRAC_COORDS = attrgetter("frac_coords")


def _site_species(sites) -> list:
    """{species: occupancy} of every site.  Reads pymatgen's internal dicts when they are
    there: going through the public Composition API costs more than all of the featurization."""
    try:
        return list(map(_SPECIES_DICT, sites))
    except AttributeError:  # pragma: no cover - other pymatgen versions
        return [dict(site.species.items()) for site in sites]


def _atomic_numbers(elements: list) -> list:
    """Z of each site's species; 0 for a dummy species (e.g. "X": pymatgen reports a hash as
    its Z), which then becomes an ``unsupported_element`` rejection."""
    if set(map(type, elements)) == {_element_class()}:      # the common case: plain elements
        return list(map(_Z, elements))
    return [0 if type(e).__name__ == "DummySpecies" else int(e.Z) for e in elements]


@lru_cache(maxsize=1)
def _element_class():
    from pymatgen.core.periodic_table import Element

    return Element


def _determinant(m: list) -> float:
    (a, b, c), (d, e, f), (g, h, i) = m
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def crystal_from_structure(structure) -> Crystal:
    """Extract the arrays FTCP needs from a pymatgen ``Structure``; raise ``RejectedStructure``.

    Plain Python over the sites and no per-site numpy call: this runs once per crystal and
    used to cost more than the whole vectorised featurization.
    """
    sites = structure.sites
    n = len(sites)
    if n == 0:
        raise _reject("empty_structure")
    species = _site_species(sites)
    # an ordered site holds exactly one species at occupancy 1 (pymatgen stores exactly 1 or 1.0)
    pairs = list(chain.from_iterable(map(dict.items, species)))      # (species, occupancy) per site
    elements, occupancies = zip(*pairs, strict=False) if len(pairs) == n else ((), ())
    if len(pairs) != n or (set(occupancies) != {1} and any(abs(o - 1.0) > 1e-8 for o in occupancies)):
        disordered = sum(len(sp) != 1 or abs(next(iter(sp.values())) - 1.0) > 1e-8 for sp in species)
        raise _reject("disordered", f"{disordered} of {n} sites")
    if n > L.MAX_SITES:
        raise _reject("too_many_sites", f"{n} sites")
    z = _atomic_numbers(elements)
    slot_of_z = {zz: slot for slot, zz in enumerate(dict.fromkeys(z))}   # first-appearance order
    if len(slot_of_z) > L.MAX_ELEMENTS:
        raise _reject("too_many_elements", f"{len(slot_of_z)} elements")
    if min(slot_of_z) < 1 or max(slot_of_z) > MAX_PROPERTY_Z:
        names = sorted({str(e) for e, zz in zip(elements, z, strict=False) if zz < 1 or zz > MAX_PROPERTY_Z})
        raise _reject("unsupported_element", ", ".join(names))
    matrix = np.array(structure.lattice.matrix, dtype=np.float64)
    # a non-finite entry makes the determinant non-finite (NaN compares False): one test for both
    if not 1e-6 <= abs(_determinant(matrix.tolist())) < math.inf:
        raise _reject("bad_lattice")
    frac = np.array(list(map(_FRAC_COORDS, sites)), dtype=np.float64)
    if not np.isfinite(frac).all():
        raise _reject("bad_coordinates")
    close = closest_sites_below(frac, matrix, MIN_SITE_DISTANCE)
    if close is not None:
        i, j, distance = close
        raise _reject("overlapping_sites", f"sites {i} and {j} are {distance:.4g} Angstrom apart"
                                           if i != j else f"site {i} is {distance:.4g} Angstrom from its own image")
    return Crystal(np.array(list(slot_of_z), dtype=np.int64),
                   np.array([slot_of_z[zz] for zz in z], dtype=np.int64), frac, matrix)


def closest_sites_below(frac: np.ndarray, matrix: np.ndarray, cutoff: float) -> tuple[int, int, float] | None:
    """The closest pair of sites ``(i, j, distance)`` if closer than ``cutoff`` (periodic images included), else
    None.  ``i == j`` is a site and its own image; when a lattice vector is shorter than ``cutoff`` (every site
    overlaps its own image) that is what is reported.

    Exact, and for real cells one cheap vectorised pass over the (n, n) minimum-image pairs: with the fractional
    difference ``d = f_i - f_j`` wrapped into [-0.5, 0.5], an image ``d + s`` can be closer than ``cutoff`` only
    if ``|d_k + s_k| < cutoff * |b_k|`` on every axis (``b_k``: reciprocal basis vectors, since ``f_k = x . b_k``),
    so ``|s_k| <= floor(cutoff * |b_k| + 0.5)``.  That is 0 unless a spacing between lattice planes is below
    ``2 * cutoff``; only such cells look at neighbouring images (and at a site's own images: a lattice vector
    shorter than ``cutoff`` is an overlap of a site with itself).
    """
    n = len(frac)
    rows = matrix.tolist()
    reach = _image_reach(rows, abs(_determinant(rows)), cutoff)
    if max(reach) > 1:
        # a very oblique basis (or a nearly flat cell): enumerating its images could take any amount of memory.
        # An LLL-reduced basis of the same lattice keeps every reach <= 3 unless a lattice vector is shorter than
        # the cutoff, and then each site overlaps its own image (the formula above stays exact in any basis).
        from pymatgen.core import Lattice

        reduced = Lattice(matrix).get_lll_reduced_lattice().matrix
        shortest = float(np.linalg.norm(reduced, axis=1).min())
        if shortest < cutoff:
            return 0, 0, shortest
        frac, matrix = frac @ matrix @ np.linalg.inv(reduced), reduced
        rows = matrix.tolist()
        reach = _image_reach(rows, abs(_determinant(rows)), cutoff)
    axes = np.ascontiguousarray(frac.T)
    d = axes[:, :, None] - axes[:, None, :]            # (3, n, n): one plane per axis, cheap to broadcast
    d -= np.rint(d)
    cart = matrix.T @ d.reshape(3, -1)                 # (3, n * n) minimum-image differences, pair i * n + j
    dist2 = np.einsum("ki,ki->i", cart, cart)
    if not any(reach):
        dist2[::n + 1] = np.inf                        # a site and itself
    else:
        shifts = np.stack(np.meshgrid(*(np.arange(-k, k + 1) for k in reach), indexing="ij"), -1).reshape(-1, 3)
        shift_cart = shifts @ matrix                   # (S, 3)
        all2 = dist2[:, None] + 2.0 * (cart.T @ shift_cart.T) + np.einsum("sk,sk->s", shift_cart, shift_cart)
        all2[::n + 1, np.flatnonzero(~shifts.any(axis=1))[0]] = np.inf
        dist2 = all2.min(axis=1)
    best = dist2.min()
    if not best < cutoff * cutoff:
        return None
    i, j = divmod(int(dist2.argmin()), n)
    return min(i, j), max(i, j), math.sqrt(max(float(best), 0.0))


def _image_reach(rows: list, volume: float, cutoff: float) -> list[int]:
    """Per axis k, ``floor(cutoff * |b_k| + 0.5)`` with ``|b_k| = |a_j x a_l| / volume`` (plain floats: cheaper
    than numpy for one 3 x 3 matrix)."""
    reach = []
    for j, l in ((1, 2), (2, 0), (0, 1)):
        (a1, a2, a3), (b1, b2, b3) = rows[j], rows[l]
        area = math.sqrt((a2 * b3 - a3 * b2) ** 2 + (a3 * b1 - a1 * b3) ** 2 + (a1 * b2 - a2 * b1) ** 2)
        reach.append(math.floor(cutoff * area / volume + 0.5))
    return reach


def lattice_parameters(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, 3, 3) lattice matrices -> lengths (B, 3) in Angstrom and angles (B, 3) in degrees,
    computed exactly as pymatgen's ``Lattice.abc`` / ``Lattice.angles`` do."""
    lengths = np.sqrt(np.sum(matrices ** 2, axis=2))
    cos = np.empty_like(lengths)
    for dim in range(3):
        j, k = (dim + 1) % 3, (dim + 2) % 3
        dot = np.einsum("bx,bx->b", matrices[:, j], matrices[:, k])
        cos[:, dim] = np.clip(dot / (lengths[:, j] * lengths[:, k]), -1, 1)
    return lengths, np.rad2deg(np.arccos(cos))


def check_structure(structure) -> str | None:
    """``None`` if FTCP can represent the structure, else the rejection reason code."""
    try:
        crystal_from_structure(structure)
    except RejectedStructure as exc:
        return exc.code
    return None


# ---------------------------------------------------------------------------------------------
# reciprocal points
@cache
def _hkl_table(max_l1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All integer triples with 0 < |h|+|k|+|l| <= max_l1 in the reference order.

    Returns (hkl (M, 3) int, quadratic monomials (M, 6) float, L1 norm (M,) int).
    """
    r = np.arange(-max_l1, max_l1 + 1)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    l1 = np.abs(hkl).sum(1)
    hkl = hkl[(l1 > 0) & (l1 <= max_l1)]
    l1 = np.abs(hkl).sum(1)
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], l1))
    hkl, l1 = hkl[order], l1[order]
    h, k, l = hkl.T.astype(np.float64)
    mono = np.stack([h * h, k * k, l * l, 2 * h * k, 2 * h * l, 2 * k * l], 1)
    return hkl, mono, l1


def _metric_coefficients(recip: np.ndarray) -> np.ndarray:
    """(B, 3, 3) reciprocal lattice matrices -> (B, 6) coefficients of |g|^2 in the monomials."""
    g = recip @ recip.transpose(0, 2, 1)
    return np.stack([g[:, 0, 0], g[:, 1, 1], g[:, 2, 2], g[:, 0, 1], g[:, 0, 2], g[:, 1, 2]], 1)


def _first_inside(q: np.ndarray, radius, count: int) -> tuple[np.ndarray, np.ndarray]:
    """For |g|^2 values q (B, M) in table order and a radius (scalar or per crystal (B,)): per
    crystal, the number of points inside the sphere (B,) and the table indices of the first
    ``count`` of them (B, count; -1 if missing)."""
    limit = (np.asarray(radius, dtype=np.float64) + K_RADIUS_TOL) ** 2
    inside = q <= (limit[:, None] if limit.ndim else limit)
    crystal, point = np.nonzero(inside)                 # sorted by crystal, then table order
    n_inside = np.bincount(crystal, minlength=len(q))
    rank = np.arange(len(crystal)) - np.repeat(np.cumsum(n_inside) - n_inside, n_inside)
    keep = rank < count
    out = np.full((len(q), count), -1, dtype=np.int64)
    out[crystal[keep], rank[keep]] = point[keep]
    return n_inside, out


def reciprocal_points(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 59 FTCP k-points of each lattice.

    matrices: (B, 3, 3) real-space lattice vectors as rows.
    Returns hkl (B, 59, 3) int and |g_hkl| (B, 59) in 1/Angstrom.
    """
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    recip = np.linalg.inv(matrices).transpose(0, 2, 1)  # crystallographic (no 2 pi), rows b1..b3
    coef = _metric_coefficients(recip)
    lengths = np.linalg.norm(matrices, axis=2).sum(1)  # |h|+|k|+|l| <= r * sum |a_i| inside the sphere
    n = len(matrices)
    hkl_out = np.zeros((n, L.N_KPOINTS, 3), dtype=np.int64)
    g_out = np.zeros((n, L.N_KPOINTS))
    todo = np.arange(n)
    max_l1 = _TABLE_L1
    radius_wide = np.full(n, K_RADIUS_WIDE)   # grows only for cells the reference cannot handle
    while len(todo):
        hkl, mono, _ = _hkl_table(max_l1)
        # (b, M) |g|^2 as an explicit sum rather than a GEMM, so a crystal's value does not
        # depend on which other crystals share its batch (BLAS blocking changes the last bit)
        c = coef[todo]
        q = c[:, :1] * mono[:, 0]
        for j in range(1, 6):
            q += c[:, j:j + 1] * mono[:, j]
        complete_small = K_RADIUS * lengths[todo] < max_l1   # table holds the whole small sphere
        complete_wide = radius_wide[todo] * lengths[todo] < max_l1
        n_small, idx = _first_inside(q, K_RADIUS, L.N_KPOINTS)
        # Reference rule: the small sphere if it holds >= 59 points besides the origin.
        use_small = n_small >= L.N_KPOINTS
        done = use_small.copy()
        wide = np.nonzero(~use_small & complete_small)[0]
        if len(wide):
            n_wide, idx_wide = _first_inside(q[wide], radius_wide[todo[wide]], L.N_KPOINTS)
            ok = n_wide >= L.N_KPOINTS
            idx[wide[ok]] = idx_wide[ok]
            done[wide[ok]] = True
        idx = idx[done]
        rows = todo[done]
        hkl_out[rows] = hkl[idx]
        g_out[rows] = np.sqrt(q[np.nonzero(done)[0][:, None], idx])
        # Still missing: the table was too short (grow it), or even the wide sphere holds
        # fewer than 59 points (tiny cell; the reference fails here) -> widen the sphere.
        left = ~done
        radius_wide[todo[left & complete_small & complete_wide]] *= 1.1
        if (left & ~(complete_small & complete_wide)).any():
            max_l1 *= 2
        todo = todo[left]
    return hkl_out, g_out


# ---------------------------------------------------------------------------------------------
# featurization
#: What ``featurize_crystals`` may assume about a caller's ``out`` buffer (see there).
OUT_STATES = ("any", "zero", "ftcp")


def featurize_crystals(crystals: Sequence[Crystal], phase: str = "linear", dtype=np.float32,
                       out: np.ndarray | None = None, properties: np.ndarray | None = None,
                       out_state: str = "any") -> np.ndarray:
    """FTCP (B, 400, 63) for already-extracted ``Crystal`` records (the vectorised core).

    Needs only numpy: ``properties`` (the (101, 92) CGCNN table, default
    ``elements.cgcnn_properties()``) lets it run where matminer is not installed.

    ``out_state`` says what a given ``out`` holds, so that no more of it is cleared than needed
    (FTCP is 72 % structural zeros, and clearing 100 KB per crystal costs as much as computing it):
    ``"any"`` — arbitrary values, cleared completely; ``"zero"`` — all zeros (a fresh
    ``np.zeros``), nothing is cleared; ``"ftcp"`` — FTCP arrays written by this function (or
    zeros), whose structural zeros are still zero: only the real-space band it rewrites
    sparsely (rows 0-304, columns 0-3) is cleared.  The k-distance and property rows are
    overwritten in full either way.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if out_state not in OUT_STATES:
        raise ValueError(f"out_state must be one of {OUT_STATES}, got {out_state!r}")
    b = len(crystals)
    if out is None:
        out = np.zeros((b, L.N_ROWS, L.N_COLS), dtype=dtype)
    else:
        if out.shape != (b, L.N_ROWS, L.N_COLS):
            raise ValueError(f"out has shape {out.shape}, expected {(b, L.N_ROWS, L.N_COLS)}")
        if out_state == "any":
            out[...] = 0
        elif out_state == "ftcp":
            out[:, : L.KDIST_ROW, L.REAL_COLS] = 0
    if b == 0:
        return out
    props = cgcnn_properties() if properties is None else np.asarray(properties, dtype=np.float64)

    n_sites = np.array([c.n_sites for c in crystals])
    site_batch = np.repeat(np.arange(b), n_sites)                 # (T,) flat over all sites
    site_pos = np.arange(len(site_batch)) - np.repeat(np.cumsum(n_sites) - n_sites, n_sites)
    site_slot = np.concatenate([c.site_slot for c in crystals])
    site_coords = np.concatenate([c.frac_coords for c in crystals])
    slot_z = np.zeros((b, L.MAX_ELEMENTS), dtype=np.int64)        # 0 = empty slot
    for i, c in enumerate(crystals):
        slot_z[i, : len(c.slot_z)] = c.slot_z
    matrices = np.stack([c.matrix for c in crystals])

    # real-space part
    bi, si = np.nonzero(slot_z)
    out[bi, slot_z[bi, si] - 1, si] = 1.0                                      # element one-hot
    abc, angles = lattice_parameters(matrices)
    out[:, L.LATTICE_LENGTH_ROW, L.XYZ_COLS] = abc
    out[:, L.LATTICE_ANGLE_ROW, L.XYZ_COLS] = angles
    out[site_batch, L.SITE_COORD_ROWS.start + site_pos, L.XYZ_COLS.start:L.XYZ_COLS.stop] = site_coords
    out[site_batch, L.SITE_OCC_ROWS.start + site_pos, site_slot] = 1.0
    slot_props = np.where(slot_z[..., None] > 0, props[np.maximum(slot_z, 1)], 0.0)  # (B, 4, 92)
    prop_columns = slot_props.transpose(0, 2, 1)                     # (B, 92, 4)
    out[:, L.PROPERTY_ROWS, L.REAL_COLS] = prop_columns

    # reciprocal-space part
    hkl, g = reciprocal_points(matrices)
    out[:, L.KDIST_ROW, L.RECIP_COLS] = g
    hkl = hkl.astype(np.float64)
    if phase == "linear":
        # pi * hkl . r is linear in r: sum each slot's coordinates first (B, 4, 3), then project.
        slot_coords = np.zeros((b, L.MAX_ELEMENTS, 3))
        np.add.at(slot_coords, (site_batch, site_slot), site_coords)
        waves = [np.pi * np.einsum("bex,bkx->bek", slot_coords, hkl, optimize=True)]
    else:
        # physical phases need every site's wave: (T, 59), summed per element slot.
        angle = 2.0 * np.pi * np.einsum("tx,tkx->tk", site_coords, hkl[site_batch], optimize=True)
        per_site = {"cos": [np.cos(angle)], "sin": [np.sin(angle)], "abs": [np.cos(angle), np.sin(angle)]}[phase]
        waves = []
        for w in per_site:
            per_slot = np.zeros((b, L.MAX_ELEMENTS, L.N_KPOINTS))
            np.add.at(per_slot, (site_batch, site_slot), w)
            waves.append(per_slot)
    # weight each slot's (4 x 59) wave sums by its 92 CGCNN properties -> (B, 92, 59)
    factors = out[:, L.PROPERTY_ROWS, L.RECIP_COLS]
    if len(waves) == 1:
        np.matmul(prop_columns, waves[0], out=factors, casting="same_kind")   # cast to out's dtype on the fly
    else:
        factors[...] = np.hypot(*[prop_columns @ w for w in waves])
    return out


def featurize(structures: Iterable, phase: str = "linear", dtype=np.float32,
              batch_size: int = 64) -> np.ndarray:
    """pymatgen ``Structure``s -> FTCP array (N, 400, 63).

    Raises ``RejectedStructure`` (naming the structure's index and the reason) for a crystal
    FTCP cannot represent; use ``ftcp.store`` to build datasets that record rejections instead.
    """
    crystals = extract_crystals(structures)
    return featurize_crystal_list(crystals, phase=phase, dtype=dtype, batch_size=batch_size)


@contextmanager
def paused_gc():
    """Pause Python's cyclic garbage collector for an allocation-heavy loop that creates no
    reference cycles.  Right after a large parse (tens of thousands of Structures, millions
    of site objects) every few thousand new objects trigger a full collection that walks
    them all: extracting mp_36k measured 0.054 ms per crystal with the collector on and
    0.023 ms paused (benchmarks/bench_featurize.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def extract_crystals(structures: Iterable, first_index: int = 0) -> list[Crystal]:
    """``crystal_from_structure`` over many structures; a ``RejectedStructure`` names the
    structure's index (counted from ``first_index``), formula and reason."""
    crystals = []
    with paused_gc():
        for i, s in enumerate(structures, start=first_index):
            try:
                crystals.append(crystal_from_structure(s))
            except RejectedStructure as exc:
                formula = s.composition.reduced_formula if len(s) else "empty"
                raise RejectedStructure(exc.code, f"structure {i} ({formula}): {exc.message}") from None
    return crystals


def featurize_crystal_list(crystals: Sequence[Crystal], phase: str = "linear", dtype=np.float32,
                           batch_size: int = 64) -> np.ndarray:
    """FTCP (N, 400, 63) of any number of extracted ``Crystal`` records, in batches of ``batch_size``
    (small batches keep each batch's 6 MB of output and temporaries in cache: 64 is ~1.5x faster
    per crystal than 1024 on a 32 MB-L3 EPYC)."""
    out = np.zeros((len(crystals), L.N_ROWS, L.N_COLS), dtype=dtype)
    for start in range(0, len(crystals), batch_size):
        stop = min(start + batch_size, len(crystals))
        featurize_crystals(crystals[start:stop], phase=phase, dtype=dtype, out=out[start:stop], out_state="zero")
    return out


# ---------------------------------------------------------------------------------------------
# inversion
def to_structure(ftcp: np.ndarray, threshold: float = 0.5):
    """FTCP (400, 63) -> pymatgen ``Structure`` (elements, lattice, coordinates, occupancy).

    A site exists where its occupancy row holds a one; an element slot exists where its
    element column holds a one.  (Upstream took ``argmax`` of every row, which turns empty
    rows into hydrogen; presence is tested explicitly here, so hydrogen survives and empty
    slots never become hydrogen.)  ``threshold`` applies to (possibly reconstructed) values.
    """
    from pymatgen.core import Lattice, Structure

    x = np.asarray(ftcp, dtype=np.float64)
    if x.shape != L.SHAPE:
        raise ValueError(f"expected one FTCP array of shape {L.SHAPE}, got {x.shape}")
    elements = L.region(x, L.ELEMENT_MATRIX)                    # (103, 4)
    present_slots = elements.max(0) >= threshold
    slot_symbols = [ELEMENT_SYMBOLS[int(i)] if ok else None
                    for i, ok in zip(elements.argmax(0), present_slots, strict=False)]
    occ = L.region(x, L.SITE_OCCUPANCY)                         # (100, 4)
    sites = np.nonzero(occ.max(1) >= threshold)[0]
    if len(sites) == 0:
        raise ValueError("FTCP holds no occupied site (occupancy rows are all below threshold)")
    slots = occ[sites].argmax(1)
    missing = sorted({int(s) for s in slots if slot_symbols[s] is None})
    if missing:
        raise ValueError(f"sites refer to empty element slot(s) {missing}")
    abc = x[L.LATTICE_LENGTH_ROW, L.XYZ_COLS]
    angles = x[L.LATTICE_ANGLE_ROW, L.XYZ_COLS]
    lattice = Lattice.from_parameters(*abc, *angles)
    coords = L.region(x, L.SITE_COORDS)[sites]
    return Structure(lattice, [slot_symbols[s] for s in slots], coords)
