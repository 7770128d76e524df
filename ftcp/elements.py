"""Element tables: the 103-element one-hot list and CGCNN's 92-d property vectors."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from .layout import N_ELEMENT_TYPES, N_PROPERTIES

#: Highest atomic number that has a CGCNN property vector (Fm). Md, No, Lr have none.
MAX_PROPERTY_Z = 100

# Symbols of Z = 1..103, the rows of the FTCP element one-hot (H..Lr).
ELEMENT_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf "
    "Es Fm Md No Lr"
).split()
assert len(ELEMENT_SYMBOLS) == N_ELEMENT_TYPES


@lru_cache(maxsize=1)
def cgcnn_properties() -> np.ndarray:
    """CGCNN's ``atom_init.json`` as a (101, 92) float64 table indexed by Z (row 0 unused, NaN).

    Loaded from the copy shipped, unchanged, inside the matminer wheel
    (``matminer/utils/data_files/cgcnn_atom_feature.json``); never retyped here.
    """
    try:
        path = resources.files("matminer.utils.data_files").joinpath("cgcnn_atom_feature.json")
        raw = json.loads(path.read_text())
    except ModuleNotFoundError as exc:  # pragma: no cover - matminer is a hard dependency
        raise ImportError("matminer is required: it ships CGCNN's elemental property table") from exc
    table = np.full((MAX_PROPERTY_Z + 1, N_PROPERTIES), np.nan)
    for key, vector in raw.items():
        table[int(key)] = vector
    if np.isnan(table[1:]).any():
        raise RuntimeError("CGCNN table in matminer is incomplete: expected Z = 1..100 with 92 values each")
    return table
