"""A straightforward, one-structure-at-a-time FTCP implementation (the benchmark baseline).

It follows the reference algorithm literally (pymatgen's ``get_points_in_sphere`` for the
reciprocal points, per-structure numpy), the way the upstream dataset was produced, and is
used only to (a) time the vectorised featurizer against and (b) cross-check it on data
beyond the 300 golden arrays.  Not used by the library.
"""
from __future__ import annotations

import numpy as np

from ftcp import layout as L
from ftcp.elements import cgcnn_properties


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
    recip = latt.reciprocal_lattice_crystallographic
    hkl, g, _, _ = recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], 1.297, zip_results=False)
    if len(hkl) < 60:
        hkl, g, _, _ = recip.get_points_in_sphere([[0, 0, 0]], [0, 0, 0], 1.4, zip_results=False)
    keep = g != 0
    hkl, g = np.rint(hkl[keep]).astype(int), g[keep]
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], np.abs(hkl).sum(1)))[: L.N_KPOINTS]
    hkl, g = hkl[order], g[order]
    if len(g) < L.N_KPOINTS:
        raise ValueError(f"only {len(g)} reciprocal points within 1.4 1/A (the reference fails here)")
    x[L.KDIST_ROW, L.RECIP_COLS] = g
    site_props = props[slot_z[site_slot]].T                     # (92, n_sites)
    x[L.PROPERTY_ROWS, L.RECIP_COLS] = site_props @ (np.pi * coords @ hkl.T)
    return x
