"""ftcp: FTCP featurization, data store and multi-modal self-supervised embeddings of crystals.

Public API (stable):
    featurize(structures, phase="linear") -> (N, 400, 63) array
    to_structure(ftcp_array) -> pymatgen Structure
    layout: the FTCP row/column bands and the six SSL blocks
"""
from . import layout
from .featurizer import PHASES, RejectedStructure, check_structure, featurize, to_structure
from .normalize import RowMinMaxScaler

__version__ = "0.1.0"

__all__ = ["featurize", "to_structure", "check_structure", "RejectedStructure", "PHASES",
           "RowMinMaxScaler", "layout", "__version__"]
