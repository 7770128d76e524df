"""Two one-structure-at-a-time FTCP implementations: the baselines of the featurizer benchmark.

``upstream_procedure_ftcp``
    The straightforward implementation the speed goal is stated against: it follows, step by
    step, the procedure of the FTCP reference generator (PV-Lab/FTCP ``data.py::FTCP_represent``,
    which produced the upstream dataset; ~4 ms per crystal beyond CIF parsing): per crystal a
    scikit-learn ``OneHotEncoder`` for the site occupancy, the elemental properties from a
    ``{Z: list}`` dict, each sub-matrix padded with ``np.pad`` and the real and reciprocal
    parts joined with ``np.concatenate``, reciprocal points from pymatgen's
    ``get_points_in_sphere``, structure factors with the site list padded to 100.  Written
    here from the algorithm (not copied); CIF parsing is left out, as in the goal.
``reference_ftcp``
    A lean per-crystal version of the same algorithm (preallocated array, slices, one matmul):
    a stricter baseline that is already several times faster than the procedure above.

Both reproduce ``ftcp.featurize(..., phase="linear")`` (checked by the benchmark) and are used
only by ``benchmarks/``; the library never imports them.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ftcp import layout as L
from ftcp.elements import cgcnn_properties


def _reciprocal_points(lattice):
    """The reference k-point rule: sphere 1.297 1/A (1.4 if it holds < 59 besides the origin),
    order (|h|+|k|+|l|, -h, -k, -l), first 59."""
    recip = lattice.reciprocal_lattice_crystallographic
    hkl, g, _, _ = recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], 1.297, zip_results=False)
    if len(hkl) < L.N_KPOINTS + 1:
        hkl, g, _, _ = recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], 1.4, zip_results=False)
    keep = g != 0
    hkl, g = np.rint(hkl[keep]).astype(int), g[keep]
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], np.abs(hkl).sum(1)))[: L.N_KPOINTS]
    if len(order) < L.N_KPOINTS:
        raise ValueError(f"only {len(order)} reciprocal points within 1.4 1/A (the reference fails here)")
    return hkl[order], g[order]


@lru_cache(maxsize=1)
def _upstream_tables():
    """What the reference generator prepares once: the element one-hot rows and a {Z: list}
    property dict (it reads CGCNN's atom_init.json into such a dict)."""
    from sklearn.preprocessing import OneHotEncoder

    element_onehot = OneHotEncoder().fit_transform(np.arange(1, L.N_ELEMENT_TYPES + 1)[:, None]).toarray()
    table = cgcnn_properties()
    properties = {z: table[z].tolist() for z in range(1, len(table))}
    return element_onehot, properties


def upstream_procedure_ftcp(structure) -> np.ndarray:
    from sklearn.preprocessing import OneHotEncoder

    element_onehot, properties = _upstream_tables()
    cols = L.MAX_ELEMENTS
    site_z = np.array(structure.atomic_numbers)
    _, first = np.unique(site_z, return_index=True)
    slot_z = site_z[np.sort(first)]

    elements = np.zeros((L.N_ELEMENT_TYPES, cols))
    elements[:, : len(slot_z)] = element_onehot[slot_z - 1].T
    lattice = structure.lattice
    lattice_part = np.pad(np.array((lattice.abc, lattice.angles)), ((0, 0), (0, cols - 3)))
    coords = np.array([site.frac_coords for site in structure])
    coords_part = np.pad(coords, ((0, L.MAX_SITES - len(coords)), (0, cols - 3)))
    site_slot = np.zeros(len(structure), dtype=int)
    for slot, z in enumerate(slot_z):
        site_slot[np.argwhere(site_z == z)] = slot
    occupancy = OneHotEncoder().fit_transform(site_slot[:, None]).toarray()
    occupancy = np.pad(occupancy, ((0, L.MAX_SITES - len(occupancy)), (0, cols - occupancy.shape[1])))
    slot_properties = np.zeros((L.N_PROPERTIES, cols))
    slot_properties[:, : len(slot_z)] = np.array([properties[z] for z in slot_z]).T
    real = np.concatenate((elements, lattice_part, coords_part, occupancy, np.zeros((1, cols)),
                           slot_properties), axis=0)

    hkl, g = _reciprocal_points(lattice)
    k_dot_r = np.einsum("kx,sx->ks", hkl, coords_part[:, :3])                  # (59, 100)
    site_properties = np.pad(slot_properties[:, site_slot], ((0, 0), (0, L.MAX_SITES - len(site_slot))))
    factors = site_properties @ (np.pi * k_dot_r.T)                             # (92, 59)
    recip = np.zeros((real.shape[0], L.N_KPOINTS))
    recip[-L.N_PROPERTIES - 1] = g
    recip[-L.N_PROPERTIES:] = factors
    ftcp = np.concatenate((real, recip), axis=1)                                # (398, 63)
    return np.pad(ftcp, ((0, L.N_PAD_ROWS), (0, 0)))                            # upstream's 2 pad rows


def reference_ftcp(structure) -> np.ndarray:
    props = cgcnn_properties()
    z = np.array(structure.atomic_numbers)
    _, first = np.unique(z, return_index=True)
    slot_z = z[np.sort(first)]
    site_slot = np.array([int(np.nonzero(slot_z == zz)[0][0]) for zz in z])
    x = np.zeros(L.SHAPE)
    for slot, zz in enumerate(slot_z):
        x[zz - 1, slot] = 1.0
        x[L.PROPERTY_ROWS.start:L.PROPERTY_ROWS.stop, slot] = props[zz]
    latt = structure.lattice
    x[L.LATTICE_LENGTH_ROW, :3] = latt.abc
    x[L.LATTICE_ANGLE_ROW, :3] = latt.angles
    coords = np.array([site.frac_coords for site in structure])
    x[L.SITE_COORD_ROWS.start:L.SITE_COORD_ROWS.start + len(z), :3] = coords
    for i, slot in enumerate(site_slot):
        x[L.SITE_OCC_ROWS.start + i, slot] = 1.0
    hkl, g = _reciprocal_points(latt)
    x[L.KDIST_ROW, L.RECIP_COLS] = g
    site_props = props[slot_z[site_slot]].T                     # (92, n_sites)
    x[L.PROPERTY_ROWS, L.RECIP_COLS] = site_props @ (np.pi * coords @ hkl.T)
    return x
