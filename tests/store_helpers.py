"""Helpers for the store/split/dataset tests: tiny synthetic native stores and upstream copies."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ftcp import layout as L

FORMULAS = ["NaCl", "MgO", "Fe2O3", "LiCoO2", "SiO2", "GaAs", "TiO2", "ZnS", "CsPbI3", "Al2O3"]


def make_native_store(root, n: int = 60, seed: int = 0, with_ssl: bool = False,
                      ssl_dim: int = L.SSL_DIM) -> Path:
    """Write a small native-layout store with random FTCP values (not real crystals).

    Formulas repeat (n / 10 crystals per formula) so group splits have something to group.
    IDs are deliberately not sorted.  Optionally writes SSL features in a shuffled ID order.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.array([f"mp-{i}" for i in rng.permutation(np.arange(1000, 1000 + n))], dtype=str)
    ftcp = rng.standard_normal((n, L.N_ROWS, L.N_COLS)).astype(np.float32)
    np.save(root / "ftcp.npy", ftcp)
    np.save(root / "material_ids.npy", ids)
    fe = rng.normal(-1.5, 1.0, n)
    bg = np.abs(rng.normal(1.0, 1.0, n))
    with open(root / "labels.csv", "w") as fh:
        fh.write("material_id,formula,formation_energy,band_gap\n")
        for i in range(n):
            fh.write(f"{ids[i]},{FORMULAS[i % len(FORMULAS)]},{float(fe[i])!r},{float(bg[i])!r}\n")
    if with_ssl:
        (root / "SSL").mkdir(exist_ok=True)
        perm = rng.permutation(n)
        feats = rng.standard_normal((n, ssl_dim)).astype(np.float32)
        np.save(root / "SSL" / "ssl_features.npy", feats[perm])
        np.save(root / "SSL" / "ssl_material_ids.npy", ids[perm])
    return root
