"""Rebuild FTCP's reciprocal-space regions from its compact real-space regions (numpy only).

Block 6 reads the 92 x 59 structure-factor map (rows 306-397, columns 4-62): 21.7 kB per
crystal, ~730 MB for mp_36k, which compresses poorly.  Everything in it follows from regions
that are small and compress well: the element slots (rows 0-102), the cell (103-104), the site
coordinates (105-204) and occupancies (205-304) give ``ftcp.featurizer.Crystal`` records, and
the 92-d property vectors of the slots (rows 306-397, columns 0-3) give the elemental table.
``ftcp.featurizer.featurize_crystals`` then recomputes the map exactly as the store builder
did.  A region pack therefore carries those small regions (``ftcp ssl-pack --blocks
6``, ~2 MB more than Blocks 1-3 for mp_36k) and the map is rebuilt where training runs.

The rebuilt values equal the store's up to float32 rounding (the store computed them from the
float64 coordinates of the CIFs; a pack has the float32 coordinates of the store): checked on
mp_36k (max |difference| 3e-5 on values up to 452; k-distances 1e-6) and in the tests.
"""
from __future__ import annotations

import numpy as np

from .. import layout as L
from ..featurizer import Crystal, featurize_crystals
from .data import region_shape
from .losses import lattice_matrix

#: regions a rebuild needs (raw values)
RECORD_REGIONS = ("element_matrix", "lattice", "site_coords", "site_occupancy", "element_properties")


def property_table(element_matrix: np.ndarray, element_properties: np.ndarray) -> np.ndarray:
    """The (101, 92) elemental table (row Z) as far as these crystals use it, from their own
    property columns; rows of elements that never occur stay zero (they are never read)."""
    table = np.zeros((101, L.N_PROPERTIES))
    present = element_matrix.max(axis=1) > 0.5                     # (N, 4)
    z = element_matrix.argmax(axis=1) + 1
    for slot in range(L.MAX_ELEMENTS):
        ok = present[:, slot]
        table[z[ok, slot]] = element_properties[ok, :, slot]
    return table


def crystal_records(element_matrix, lattice, site_coords, site_occupancy) -> list[Crystal]:
    """``Crystal`` records of FTCP regions (raw values, first axis = materials)."""
    params = np.asarray(lattice, dtype=np.float64).reshape(-1, 6)
    matrices = lattice_matrix(params[:, :3], params[:, 3:])        # orientation does not enter FTCP
    slot_present = element_matrix.max(axis=1) > 0.5
    slot_z = element_matrix.argmax(axis=1) + 1
    site_present = site_occupancy.max(axis=-1) > 0.5
    site_slot = site_occupancy.argmax(axis=-1)
    records = []
    for i in range(len(params)):
        sites = np.nonzero(site_present[i])[0]
        records.append(Crystal(slot_z[i][slot_present[i]], site_slot[i, sites],
                               site_coords[i, sites].astype(np.float64), matrices[i]))
    return records


def rebuild_regions(regions: dict[str, np.ndarray], names=("structure_factors", "kpoint_distances"),
                    phase: str = "linear", chunk_size: int = 2048) -> dict[str, np.ndarray]:
    """The FTCP regions ``names`` (float32, store order) recomputed from ``regions``, a dict of
    the raw ``RECORD_REGIONS`` arrays."""
    missing = [r for r in RECORD_REGIONS if r not in regions]
    if missing:
        raise KeyError(f"rebuilding {list(names)} needs the regions {missing}")
    table = property_table(regions["element_matrix"], regions["element_properties"])
    n = len(regions["lattice"])
    out = {name: np.empty((n,) + region_shape(name), dtype=np.float32) for name in names}
    buffer = np.zeros((min(chunk_size, max(n, 1)),) + L.SHAPE, dtype=np.float32)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        part = {k: v[start:stop] for k, v in regions.items()}
        records = crystal_records(part["element_matrix"], part["lattice"], part["site_coords"], part["site_occupancy"])
        ftcp = featurize_crystals(records, phase=phase, out=buffer[:stop - start], properties=table,
                                  out_state="ftcp")
        for name in names:
            out[name][start:stop] = L.region(ftcp, name)
    return out

