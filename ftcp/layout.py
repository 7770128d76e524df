"""The FTCP tensor layout: every row/column band, defined once.

FTCP (Ren et al., Matter 2021) with ``max_elms=4, max_sites=100`` plus the two
zero-padding rows that upstream appends gives a 400 x 63 float tensor.  Columns
0-3 are the "real-space" part, columns 4-62 the "reciprocal-space" part (one
column per k-point).  Every other module takes its slices from here by name.

    rows      cols  content                                   block
    0-102     0-3   element one-hot (H..Lr) per element slot  B1 element_matrix
    103       0-2   a, b, c (Angstrom)                        B2 crystal_system
    104       0-2   alpha, beta, gamma (degrees)              B2 crystal_system
    105-204   0-2   fractional coordinates of sites 0..99     B3 atomic_sites
    205-304   0-3   site -> element-slot one-hot              B4 site_occupancy
    305       4-62  |g_hkl| of the 59 k-points                B5 reciprocal_space
    306-397   0-3   92-d CGCNN property vector per slot       B6 structure_factors
    306-397   4-62  structure-factor map F_hkl (92 x 59)      B6 structure_factors
    398-399   all   zero padding                              -
"""
from __future__ import annotations

from dataclasses import dataclass

#: Version of this layout; written into every manifest so stores can be checked.
LAYOUT_VERSION = "ftcp-400x63-v1"

MAX_ELEMENTS = 4        # element slots (columns of the real-space part)
MAX_SITES = 100         # site rows
N_ELEMENT_TYPES = 103   # H (Z=1) .. Lr (Z=103): rows of the element one-hot
N_PROPERTIES = 92       # length of the CGCNN elemental property vector
N_KPOINTS = 59          # reciprocal points (columns of the reciprocal part)
N_PAD_ROWS = 2

N_ROWS = 400
N_COLS = MAX_ELEMENTS + N_KPOINTS   # 63
N_VALUES = N_ROWS * N_COLS          # 25,200
SHAPE = (N_ROWS, N_COLS)

# ---- column bands ---------------------------------------------------------
REAL_COLS = slice(0, MAX_ELEMENTS)            # 0-3: element slots
XYZ_COLS = slice(0, 3)                        # 0-2: three coordinates / lattice values
RECIP_COLS = slice(MAX_ELEMENTS, N_COLS)      # 4-62: k-points
ALL_COLS = slice(0, N_COLS)

# ---- row bands ------------------------------------------------------------
ELEMENT_ROWS = slice(0, 103)
LATTICE_ROWS = slice(103, 105)
LATTICE_LENGTH_ROW = 103
LATTICE_ANGLE_ROW = 104
SITE_COORD_ROWS = slice(105, 205)
SITE_OCC_ROWS = slice(205, 305)
KDIST_ROW = 305
PROPERTY_ROWS = slice(306, 398)
PAD_ROWS = slice(398, 400)

assert ELEMENT_ROWS.stop - ELEMENT_ROWS.start == N_ELEMENT_TYPES
assert SITE_COORD_ROWS.stop - SITE_COORD_ROWS.start == MAX_SITES
assert SITE_OCC_ROWS.stop - SITE_OCC_ROWS.start == MAX_SITES
assert PROPERTY_ROWS.stop - PROPERTY_ROWS.start == N_PROPERTIES
assert PAD_ROWS.stop == N_ROWS and PROPERTY_ROWS.stop == PAD_ROWS.start

# ---- named (row, col) regions ---------------------------------------------
ELEMENT_MATRIX = (ELEMENT_ROWS, REAL_COLS)          # (103, 4)
LATTICE = (LATTICE_ROWS, XYZ_COLS)                  # (2, 3)
SITE_COORDS = (SITE_COORD_ROWS, XYZ_COLS)           # (100, 3)
SITE_OCCUPANCY = (SITE_OCC_ROWS, REAL_COLS)         # (100, 4)
KPOINT_DISTANCES = (KDIST_ROW, RECIP_COLS)          # (59,)
ELEMENT_PROPERTIES = (PROPERTY_ROWS, REAL_COLS)     # (92, 4)
STRUCTURE_FACTORS = (PROPERTY_ROWS, RECIP_COLS)     # (92, 59)


def region(x, name_or_region):
    """Slice a named region out of FTCP arrays shaped (..., 400, 63).

    ``region(ftcp, "site_coords")`` or ``region(ftcp, SITE_COORDS)``; works for
    numpy arrays, memmaps and torch tensors alike.
    """
    rows, cols = REGIONS[name_or_region] if isinstance(name_or_region, str) else name_or_region
    return x[..., rows, cols]


REGIONS = {
    "element_matrix": ELEMENT_MATRIX,
    "lattice": LATTICE,
    "site_coords": SITE_COORDS,
    "site_occupancy": SITE_OCCUPANCY,
    "kpoint_distances": KPOINT_DISTANCES,
    "element_properties": ELEMENT_PROPERTIES,
    "structure_factors": STRUCTURE_FACTORS,
}


# ---- the six SSL blocks ---------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One physical modality of FTCP: a row band (and column band) + its embedding size."""

    number: int
    name: str
    rows: slice
    cols: slice
    embed_dim: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)

    def take(self, x):
        """The block's slice of FTCP arrays shaped (..., 400, 63)."""
        return x[..., self.rows, self.cols]

    @property
    def dirname(self) -> str:
        """The block's folder inside an SSL directory (checkpoints, metrics, embeddings)."""
        return f"block{self.number}_{self.name}"


BLOCKS = (
    Block(1, "element_matrix", ELEMENT_ROWS, REAL_COLS, 256),
    Block(2, "crystal_system", LATTICE_ROWS, XYZ_COLS, 256),
    Block(3, "atomic_sites", SITE_COORD_ROWS, XYZ_COLS, 256),
    Block(4, "site_occupancy", SITE_OCC_ROWS, REAL_COLS, 256),
    Block(5, "reciprocal_space", slice(KDIST_ROW, KDIST_ROW + 1), RECIP_COLS, 256),
    Block(6, "structure_factors", PROPERTY_ROWS, ALL_COLS, 768),
)
BLOCKS_BY_NAME = {b.name: b for b in BLOCKS}
BLOCKS_BY_NUMBER = {b.number: b for b in BLOCKS}
SSL_DIM = sum(b.embed_dim for b in BLOCKS)
assert SSL_DIM == 2048


def block(key: int | str) -> Block:
    """Look a block up by number (1..6) or name ("site_occupancy")."""
    table = BLOCKS_BY_NUMBER if isinstance(key, int) else BLOCKS_BY_NAME
    try:
        return table[key]
    except KeyError:
        raise KeyError(f"unknown FTCP block {key!r}; known: {[b.name for b in BLOCKS]}") from None


def flat_index(rows: slice | int, cols: slice) -> list[int]:
    """Indices into the flattened 25,200-vector covered by a (rows, cols) region."""
    if isinstance(rows, int):
        rows = slice(rows, rows + 1)
    return [r * N_COLS + c for r in range(rows.start, rows.stop) for c in range(cols.start, cols.stop)]
