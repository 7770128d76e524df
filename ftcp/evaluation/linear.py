"""Exact linear regression on standardised features, streamed from chunks.

This reproduces ``make_pipeline(StandardScaler(), LinearRegression())`` (and ``Ridge``,
``RidgeCV``, ``PCA(k) + LinearRegression``) without ever holding the design matrix: two
passes over the training chunks collect the sufficient statistics, then one symmetric
eigendecomposition of the standardised Gram gives every model at once.

Definitions (Z = training features standardised with the training mean and population
standard deviation, as ``StandardScaler``; Z~ = Z centred; c = Z~' (y - mean y); the
intercept is never penalised):

* **Constant columns** (max == min over the training rows) standardise to exactly 0
  (StandardScaler gives them scale 1).  A zero column adds a zero row/column to the Gram,
  so the minimum-norm and ridge solutions give it coefficient 0 whatever the test values
  are.  Dropping those columns before accumulating is therefore *exact*, and it removes
  the ~18.2k structurally-zero FTCP columns (the Gram shrinks from 25,200^2 to ~6.5k^2).
* **OLS** is the minimum-norm least-squares solution
  ``beta = pinv(Z~'Z~) c`` with the pseudo-inverse taken over the eigenvalues
  ``lambda_i > rcond * lambda_max`` of ``Z~'Z~`` (default ``rcond = p * eps``, p = number
  of non-constant columns: eigenvalues below that are rounding noise of the Gram).  For a
  full-rank design this is the unique OLS solution; for a rank-deficient one (more columns
  than independent rows, duplicated or collinear columns) it is the solution of smallest
  Euclidean norm, which is what ``LinearRegression`` (LAPACK ``gelsd``) returns up to the
  choice of cutoff.  Columns that are almost constant in training (a rare element seen in
  a handful of rows) keep scale = their tiny standard deviation, so a test row that has
  the element gets a standardised value in the hundreds; multiplied by an unregularised
  coefficient this is the "catastrophic" OLS RMSE of upstream's Scenario 1.
* **Ridge(alpha)**: ``beta = (Z~'Z~ + alpha I)^-1 c``, alpha on the sum of squares as in
  scikit-learn's ``Ridge``.
* **RidgeCV**: alpha chosen on a log grid by exact leave-one-out error (the criterion of
  scikit-learn's ``RidgeCV`` default), ``e_i / (1 - h_ii)`` with
  ``h_ii = 1/n + z~_i' (Z~'Z~ + alpha I)^-1 z~_i``; one extra pass over the training
  chunks computes it for every alpha from the same eigendecomposition.  (A K-fold CV
  would need K more p x p factorisations, each the dominant cost.)
* **PCR(k)**: ``PCA(k)`` on Z then OLS on the k scores = the truncated pseudo-inverse over
  the k largest eigenvalues (exact principal components, where scikit-learn's 'auto'
  solver would pick a randomised approximation at this size).

Memory: the chunk (chunk_size x P float32 and its float64 copy of the p kept columns), the
Gram and its eigenvectors (2 x p^2 x 8 bytes) and LAPACK's workspace; never n x p.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .timing import measure

#: Default ridge grid: half decades from 1e-3 to 1e6 (19 values).
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 19))

ChunkSource = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def array_chunks(ids, x, chunk_size: int = 4096) -> ChunkSource:
    """Chunk source over an in-memory (n, p) array with its IDs."""
    ids = np.asarray(ids)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} IDs for {len(x)} feature rows")

    def source():
        for s in range(0, len(ids), chunk_size):
            yield ids[s:s + chunk_size], x[s:s + chunk_size]
    return source


def _checked(source: ChunkSource, ids: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """Iterate a chunk source, asserting that its IDs are exactly ``ids`` in order."""
    pos = 0
    for chunk_ids, x in source():
        k = len(chunk_ids)
        if len(x) != k:
            raise ValueError(f"chunk has {k} IDs but {len(x)} rows")
        x = np.asarray(x)
        if x.ndim != 2:
            x = x.reshape(k, -1)
        expect = ids[pos:pos + k]
        if len(expect) != k or not np.array_equal(np.asarray(chunk_ids, dtype=str), expect):
            bad = next((i for i in range(min(k, len(expect))) if str(chunk_ids[i]) != expect[i]), len(expect))
            raise ValueError(
                f"feature chunk IDs are not aligned with the label IDs at row {pos + bad}: "
                f"got {chunk_ids[bad] if bad < k else '<end>'!r}, expected "
                f"{expect[bad] if bad < len(expect) else '<end of labels>'!r}")
        yield pos, pos + k, x
        pos += k
    if pos != len(ids):
        raise ValueError(f"feature chunks ended after {pos} rows; {len(ids)} labelled rows expected")


@dataclass
class LinearFit:
    """Standardised least-squares problem, eigendecomposed; gives OLS/Ridge/PCR coefficients."""

    n: int
    n_features: int                 # columns before dropping constants
    active: np.ndarray              # indices of the non-constant training columns
    mean: np.ndarray                # (p,) training mean of the active columns
    scale: np.ndarray               # (p,) training std (population) of the active columns
    y_mean: np.ndarray              # (t,)
    eigvals: np.ndarray             # (p,) descending, of Z~'Z~
    eigvecs: np.ndarray             # (p, p) columns match eigvals
    proj_y: np.ndarray              # (p, t) = V' c
    y_ss: np.ndarray                # (t,) sum of squares of centred y
    rcond: float
    timings: dict = field(default_factory=dict)

    @property
    def cutoff(self) -> float:
        return self.rcond * float(self.eigvals[0]) if len(self.eigvals) else 0.0

    @property
    def rank(self) -> int:
        return int(np.sum(self.eigvals > self.cutoff))

    def _coef(self, weights: np.ndarray) -> np.ndarray:
        """Standardised coefficients V diag(weights) V' c, shape (p, t)."""
        return self.eigvecs @ (weights[:, None] * self.proj_y)

    def spectral_weights(self, model) -> np.ndarray:
        """The diagonal applied to V' c for ``model`` = "mean" | "ols" | ("ridge", a) | ("pcr", k)."""
        lam = self.eigvals
        keep = lam > self.cutoff
        if model == "mean":
            return np.zeros_like(lam)
        if model == "ols":
            return np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
        kind, value = model
        if kind == "ridge":
            if value <= 0:
                raise ValueError("ridge alpha must be > 0 (use 'ols' for alpha = 0)")
            return 1.0 / (np.maximum(lam, 0.0) + value)
        if kind == "pcr":
            k = int(value)
            top = np.zeros_like(keep)
            top[:k] = True      # eigvals are sorted in descending order
            sel = keep & top
            return np.where(sel, 1.0 / np.where(sel, lam, 1.0), 0.0)
        raise ValueError(f"unknown linear model {model!r}")

    def coefficients(self, model) -> np.ndarray:
        return self._coef(self.spectral_weights(model))

    def raw_coefficients(self, model) -> tuple[np.ndarray, np.ndarray]:
        """(w over all original columns (P, t), intercept (t,)) of ``model`` on unscaled input."""
        beta = self.coefficients(model) / self.scale[:, None]
        w = np.zeros((self.n_features, beta.shape[1]))
        w[self.active] = beta
        return w, self.y_mean - self.mean @ beta

    def explained_variance_ratio(self, k: int) -> float:
        """Share of the standardised total variance carried by the top ``k`` components.

        The total counts the active columns only (constant columns have zero variance).
        """
        lam = np.maximum(self.eigvals, 0.0)
        return float(lam[:k].sum() / lam.sum()) if lam.sum() > 0 else float("nan")

    # -- passes over data ---------------------------------------------------------------
    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x[:, self.active], dtype=np.float64) - self.mean) / self.scale

    def predict(self, source: ChunkSource, ids, models: dict) -> tuple[dict, dict]:
        """Predictions of several models over the rows of ``source`` (IDs asserted = ``ids``).

        Returns ({name: (n, t) predictions}, diagnostics) where the diagnostics hold the
        largest absolute standardised value of each row (``max_abs_z``): the quantity that
        explains an unregularised model's blow-ups.
        """
        ids = np.asarray(ids, dtype=str)
        names = list(models)
        t = len(self.y_mean)
        coef = np.concatenate([self.coefficients(models[m]) for m in names], axis=1) if names else \
            np.zeros((len(self.active), 0))
        out = np.empty((len(ids), coef.shape[1]))
        max_abs_z = np.empty(len(ids))
        for a, b, x in _checked(source, ids):
            z = self.standardise(x)
            out[a:b] = z @ coef
            max_abs_z[a:b] = np.abs(z).max(axis=1) if z.shape[1] else 0.0
        preds = {m: out[:, i * t:(i + 1) * t] + self.y_mean for i, m in enumerate(names)}
        return preds, {"max_abs_z": max_abs_z}

    def loo_mse(self, source: ChunkSource, ids, y: np.ndarray, alphas) -> np.ndarray:
        """Exact leave-one-out mean squared error of Ridge(alpha) for each alpha: (n_alphas, t)."""
        ids = np.asarray(ids, dtype=str)
        y = _as_2d(y)
        alphas = np.asarray(alphas, dtype=np.float64)
        lam = np.maximum(self.eigvals, 0.0)
        inv = 1.0 / (lam[None, :] + alphas[:, None])             # (a, p)
        g = inv[:, :, None] * self.proj_y[None, :, :]            # (a, p, t)
        sse = np.zeros((len(alphas), y.shape[1]))
        for a, b, x in _checked(source, ids):
            proj = self.standardise(x) @ self.eigvecs   # standardised columns have mean 0
            lev = 1.0 / self.n + (proj ** 2) @ inv.T                   # (c, a)
            yc = y[a:b] - self.y_mean
            for j in range(len(alphas)):
                resid = yc - proj @ g[j]
                denom = 1.0 - lev[:, j:j + 1]
                with np.errstate(divide="ignore", invalid="ignore"):
                    sse[j] += np.sum((resid / np.where(denom > 1e-12, denom, np.nan)) ** 2, axis=0)
        return sse / len(ids)


def _as_2d(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y[:, None] if y.ndim == 1 else y


def column_ranges(source: ChunkSource, ids) -> dict:
    """Pass 1: per-column min, max and sum over the rows of ``source``."""
    ids = np.asarray(ids, dtype=str)
    lo = hi = total = None
    for _, _, x in _checked(source, ids):
        x64 = np.asarray(x, dtype=np.float64)
        if lo is None:
            lo, hi, total = x64.min(axis=0), x64.max(axis=0), x64.sum(axis=0)
        else:
            np.minimum(lo, x64.min(axis=0), out=lo)
            np.maximum(hi, x64.max(axis=0), out=hi)
            total += x64.sum(axis=0)
    if lo is None:
        raise ValueError("no training rows")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        bad = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
        raise ValueError(f"non-finite feature values in {len(bad)} columns (first: {bad[:5].tolist()})")
    return {"min": lo, "max": hi, "sum": total, "n": len(ids)}


def fit_linear(source: ChunkSource, ids, y, rcond: float | None = None) -> LinearFit:
    """Two streamed passes + one eigendecomposition -> :class:`LinearFit`.

    ``source()`` yields (ids_chunk, x_chunk) with x_chunk (c, P) (any float dtype, or
    (c, ...) which is flattened); the concatenated IDs must equal ``ids`` (raises otherwise).
    ``y`` is (n,) or (n, t), aligned to ``ids``.
    """
    ids = np.asarray(ids, dtype=str)
    y = _as_2d(y)
    if len(y) != len(ids):
        raise ValueError(f"{len(ids)} IDs but {len(y)} label rows")
    if not np.all(np.isfinite(y)):
        raise ValueError("labels contain non-finite values; drop those rows first")
    timings = {}
    with measure("column_stats") as t1:
        rng = column_ranges(source, ids)
    timings["column_stats"] = t1
    n = rng["n"]
    active = np.flatnonzero(rng["max"] > rng["min"])
    shift = rng["sum"][active] / n                 # provisional mean: keeps the Gram well scaled
    p, t = len(active), y.shape[1]
    y_mean = y.mean(axis=0)
    with measure("gram") as t2:
        gram = np.zeros((p, p))
        colsum = np.zeros(p)
        xty = np.zeros((p, t))
        for a, b, x in _checked(source, ids):
            xa = np.asarray(x[:, active], dtype=np.float64)
            xa -= shift
            gram += xa.T @ xa
            colsum += xa.sum(axis=0)
            xty += xa.T @ (y[a:b] - y_mean)
        # centre: C = G - s s'/n (shifted data, so the correction is tiny)
        gram -= np.outer(colsum, colsum) / n
        xty -= np.outer(colsum, (y - y_mean).sum(axis=0)) / n
        var = np.diag(gram).copy() / n
        if np.any(var <= 0):
            raise ValueError("a non-constant column has zero variance after centring (precision loss)")
        scale = np.sqrt(var)
        gram /= scale[:, None]
        gram /= scale[None, :]
        c = xty / scale[:, None]
    timings["gram"] = t2
    with measure("eigh") as t3:
        if p:
            lam, vec = np.linalg.eigh(gram)
            del gram
            lam, vec = lam[::-1].copy(), vec[:, ::-1].copy()
        else:
            lam, vec = np.zeros(0), np.zeros((0, 0))
        proj_y = vec.T @ c
    timings["eigh"] = t3
    return LinearFit(n=n, n_features=len(rng["min"]), active=active, mean=shift + colsum / n,
                    scale=scale, y_mean=y_mean, eigvals=lam, eigvecs=vec, proj_y=proj_y,
                    y_ss=((y - y_mean) ** 2).sum(axis=0),
                    rcond=float(rcond if rcond is not None else max(p, 1) * np.finfo(np.float64).eps),
                    timings=timings)


def select_alpha(loo: np.ndarray, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Per target: (index into alphas, chosen alpha) with the smallest LOO error."""
    loo = np.where(np.isfinite(loo), loo, np.inf)
    idx = np.argmin(loo, axis=0)
    return idx, np.asarray(alphas)[idx]
