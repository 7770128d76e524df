"""Per-row min-max normalisation of FTCP, as upstream trained its SSL encoders.

For every one of the 400 row indices, the minimum and maximum are taken across all
samples and all 63 columns of the fitting set; ``transform`` maps them to [0, 1].
Rows with zero range (the padding, never-used element rows) map to 0.  Fitting streams
over chunks, so it works on a memory-mapped store of any size.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import layout as L


class RowMinMaxScaler:
    def __init__(self, row_min: np.ndarray | None = None, row_max: np.ndarray | None = None):
        self.row_min = None if row_min is None else np.asarray(row_min, dtype=np.float64)
        self.row_max = None if row_max is None else np.asarray(row_max, dtype=np.float64)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, ftcp, rows=None, chunk_size: int = 4096) -> RowMinMaxScaler:
        """Fit on ``ftcp`` (N, 400, 63), optionally only on the sample indices ``rows``."""
        idx = np.arange(len(ftcp)) if rows is None else np.sort(np.asarray(rows))
        if len(idx) == 0:
            raise ValueError("cannot fit a RowMinMaxScaler on zero samples")
        lo = np.full(L.N_ROWS, np.inf)
        hi = np.full(L.N_ROWS, -np.inf)
        for start in range(0, len(idx), chunk_size):
            part = np.asarray(ftcp[idx[start:start + chunk_size]], dtype=np.float64)
            lo = np.minimum(lo, part.min(axis=(0, 2)))
            hi = np.maximum(hi, part.max(axis=(0, 2)))
        self.row_min, self.row_max = lo, hi
        return self

    def _check(self):
        if self.row_min is None:
            raise RuntimeError("RowMinMaxScaler is not fitted")

    @property
    def scale(self) -> np.ndarray:
        self._check()
        span = self.row_max - self.row_min
        return np.where(span > 0, span, 1.0)

    # -- mapping ---------------------------------------------------------------------------
    def transform(self, x, rows: slice | None = None, dtype=np.float32):
        """Normalise FTCP (..., 400, 63) or a row band of it (..., n_rows, n_cols) given ``rows``."""
        self._check()
        r = slice(0, L.N_ROWS) if rows is None else rows
        lo, sc = self.row_min[r][:, None], self.scale[r][:, None]
        out = (np.asarray(x, dtype=np.float64) - lo) / sc
        out = np.where((self.row_max - self.row_min)[r][:, None] > 0, out, 0.0)
        return out.astype(dtype)

    def inverse_transform(self, x, rows: slice | None = None, dtype=np.float32):
        self._check()
        r = slice(0, L.N_ROWS) if rows is None else rows
        return (np.asarray(x, dtype=np.float64) * self.scale[r][:, None] + self.row_min[r][:, None]).astype(dtype)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path) -> Path:
        self._check()
        path = Path(path)
        path.write_text(json.dumps({"kind": "RowMinMaxScaler", "layout": L.LAYOUT_VERSION,
                                    "row_min": self.row_min.tolist(), "row_max": self.row_max.tolist()}))
        return path

    @classmethod
    def load(cls, path) -> RowMinMaxScaler:
        data = json.loads(Path(path).read_text())
        if data.get("kind") != "RowMinMaxScaler" or data.get("layout") != L.LAYOUT_VERSION:
            raise ValueError(f"{path} is not a RowMinMaxScaler for layout {L.LAYOUT_VERSION}")
        return cls(data["row_min"], data["row_max"])
