"""ftcp: FTCP featurization, data store and multi-modal self-supervised embeddings of crystals.

Public API (stable):
    featurize(structures, phase="linear") -> (N, 400, 63) array
    to_structure(ftcp_array) -> pymatgen Structure
    layout: the FTCP row/column bands and the six SSL blocks
    open_dataset(root=None) -> Dataset view of a native store or the upstream layout
    embed(structures, checkpoint_dir, device="cpu") -> (N, 2048) SSL features from trained encoders
"""
from . import layout
from .featurizer import PHASES, RejectedStructure, check_structure, featurize, to_structure
from .normalize import RowMinMaxScaler

__version__ = "0.1.0"


def __getattr__(name):
    # lazy: the dataset view pulls in pandas, which plain featurization does not need
    if name == "open_dataset":
        from .dataset import open_dataset
        return open_dataset
    if name == "embed":       # lazy: needs torch and the block encoders
        from .embedding import embed
        return embed
    raise AttributeError(f"module 'ftcp' has no attribute {name!r}")


__all__ = ["open_dataset", "embed", "featurize", "to_structure", "check_structure", "RejectedStructure", "PHASES",
           "RowMinMaxScaler", "layout", "__version__"]
