"""A tiny synthetic FTCP data root (real featurizer, symmetric random crystals) for tests and smoke runs.

Needs pymatgen (CPU side only).  ``make_synthetic_root(path, n)`` writes the native layout
(``ftcp.npy``, ``material_ids.npy``) of ``n`` crystals built with
``Structure.from_spacegroup`` from prototypes of all seven crystal systems (1-4 elements, one
with a site at the origin) with random elements and cell sizes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..featurizer import featurize
from .data import open_source
from .targets import CACHE_FILE, compute_crystal_systems

# prototypes: (space group, lattice kind, number of species, Wyckoff coordinates of the species)
_PROTOTYPES = [
    (225, "cubic", 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),                  # rock salt
    (221, "cubic", 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),                  # CsCl
    (221, "cubic", 3, [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),   # perovskite
    (216, "cubic", 2, [[0, 0, 0], [0.25, 0.25, 0.25]]),               # zinc blende
    (229, "cubic", 1, [[0, 0, 0]]),                                   # bcc
    (186, "hexagonal", 2, [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]]),  # wurtzite
    (194, "hexagonal", 1, [[1 / 3, 2 / 3, 0.25]]),                    # hcp
    (167, "hexagonal", 2, [[0, 0, 0.35], [0.31, 0, 0.25]]),           # corundum (trigonal)
    (136, "tetragonal", 2, [[0, 0, 0], [0.3, 0.3, 0]]),               # rutile
    (139, "tetragonal", 3, [[0, 0, 0], [0, 0, 0.35], [0, 0.5, 0.25]]),
    (62, "orthorhombic", 2, [[0.1, 0.25, 0.2], [0.3, 0.25, 0.6]]),
    (14, "monoclinic", 2, [[0.1, 0.2, 0.3], [0.35, 0.15, 0.4]]),
    (2, "triclinic", 3, [[0.1, 0.2, 0.3], [0.6, 0.1, 0.8], [0.3, 0.7, 0.5]]),
    (1, "triclinic", 4, [[0, 0, 0], [0.5, 0.1, 0.3], [0.2, 0.6, 0.1], [0.7, 0.8, 0.6]]),
]
_ELEMENTS = ["H", "Li", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "Ca", "Ti", "Fe",
             "Co", "Ni", "Cu", "Zn", "Ga", "Se", "Sr", "Zr", "Ag", "Sn", "Ba", "La", "Pb"]


def _expanded(sg, kind, k, coords):
    """Fractional coordinates and species slot of every site of a prototype (lattice-independent)."""
    from pymatgen.core import Lattice, Structure

    probe = {"cubic": Lattice.cubic(5), "hexagonal": Lattice.hexagonal(5, 8), "tetragonal": Lattice.tetragonal(5, 7),
             "orthorhombic": Lattice.orthorhombic(5, 6, 4), "monoclinic": Lattice.monoclinic(5, 6, 4, 100),
             "triclinic": Lattice.from_parameters(5, 6, 4, 85, 95, 100)}[kind]
    names = ["H", "He", "Li", "Be"][:k]
    s = Structure.from_spacegroup(sg, probe, names, coords)
    return s.frac_coords, [names.index(str(site.specie)) for site in s]


def _random_lattice(kind: str, a: float, rng):
    """A random cell of this crystal system with first edge ``a`` (only the system's own draws are made)."""
    from pymatgen.core import Lattice  # pymatgen is not needed on a training machine (this module is for tests)

    if kind == "cubic":
        return Lattice.cubic(a)
    if kind == "hexagonal":
        return Lattice.hexagonal(a, a * rng.uniform(1.2, 2.8))
    if kind == "tetragonal":
        return Lattice.tetragonal(a, a * rng.uniform(0.6, 1.6))
    if kind == "orthorhombic":
        return Lattice.orthorhombic(a, a * rng.uniform(1.1, 1.6), a * rng.uniform(0.6, 0.9))
    if kind == "monoclinic":
        return Lattice.monoclinic(a, a * rng.uniform(1.1, 1.5), a * rng.uniform(0.7, 0.9), rng.uniform(95, 115))
    if kind == "triclinic":
        return Lattice.from_parameters(a, a * rng.uniform(1.1, 1.4), a * rng.uniform(0.7, 0.9),
                                       *rng.uniform(75, 105, size=3))
    raise KeyError(kind)


def random_structures(n: int, seed: int = 0):
    """``n`` symmetric crystals: prototypes with random elements and cell sizes."""
    from pymatgen.core import Structure

    rng = np.random.default_rng(seed)
    expanded = [_expanded(*p) for p in _PROTOTYPES]
    out = []
    for i in range(n):
        _, kind, k, _ = _PROTOTYPES[i % len(_PROTOTYPES)]
        frac, slot = expanded[i % len(_PROTOTYPES)]
        a = rng.uniform(3.0, 6.5)
        lat = _random_lattice(kind, a, rng)
        species = [str(e) for e in rng.choice(_ELEMENTS, size=k, replace=False)]
        out.append(Structure(lat, [species[j] for j in slot], frac))
    return out


def make_synthetic_root(path, n: int = 96, seed: int = 0) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    structures = random_structures(n, seed)
    np.save(path / "ftcp.npy", featurize(structures))
    np.save(path / "material_ids.npy", np.array([f"syn-{i}" for i in range(n)]))
    return path


def synthetic_root_cached(base_dir, n: int = 112, seed: int = 0) -> Path:
    """A synthetic root under ``base_dir`` with its Block 2 crystal-system cache in ``SSL/``;
    built once, reused afterwards (tests share it across modules)."""

    path = Path(base_dir) / f"ssl_synthetic_{n}_{seed}"
    if not (path / "SSL" / CACHE_FILE).exists():
        make_synthetic_root(path, n, seed)
        compute_crystal_systems(open_source(path), path / "SSL", workers=1, progress=False)
    return path
