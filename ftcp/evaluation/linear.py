"""Exact linear regression on standardised features, streamed from chunks.

This reproduces ``make_pipeline(StandardScaler(), LinearRegression())`` (and ``Ridge``,
``RidgeCV``, ``PCA(k) + LinearRegression``) without ever holding the design matrix: one
pass collects column statistics, a second pass folds the standardised rows into a
triangular factor R (streamed QR: ``[Z~ | y~] = Q R``), and one SVD of R gives the singular
values and right singular vectors of the design, from which every model follows.  Working
on R (not the Gram Z~'Z~) keeps small singular values accurate to ~eps * s_max, as in
LAPACK's ``gelsd`` behind ``LinearRegression``; the Gram would square the condition number
and lose every singular value below ~1e-8 * s_max.

Definitions (Z = training features standardised with the training mean and population
standard deviation, as ``StandardScaler``; Z~ = Z centred = U S V'; the intercept is never
penalised; ``u = U' (y - mean y)``):

* **Constant columns** (max == min over the training rows, or a spread at float-rounding
  level, see :func:`constant_columns`) standardise to exactly 0, on the training rows and at
  predict time alike (StandardScaler gives them scale 1; a column that is 0 on every training
  row but for float noise such as 1e-16 would get a scale of ~1e-17 and turn a test value of
  0.5 into z ~ 1e16, which even Ridge cannot absorb).  A zero column has no part in any singular vector,
  so the minimum-norm and ridge solutions give it coefficient 0 whatever the test values
  are.  Dropping those columns first is therefore *exact*, and it removes the ~18.2k
  structurally-zero FTCP columns (R shrinks from 25,200^2 to ~6.5k^2).
* **OLS(cond)** is the minimum-norm least-squares solution ``beta = V S^+ u`` where the
  pseudo-inverse keeps the singular values ``s_i > cond * s_max``.  For a full-rank design
  this is the unique OLS solution; for a rank-deficient one it is the solution of smallest
  Euclidean norm, i.e. ``scipy.linalg.lstsq(Z~, y~, cond)``.  The default ``cond = eps``
  (2.2e-16) is scipy's default, which ``LinearRegression`` used up to scikit-learn 1.8
  (scikit-learn 1.9 passes its ``tol = 1e-6``).  FTCP is extremely rank-deficient (with the
  linear-phase structure factors every row of the 92 x 59 map is a combination of three
  coordinate sums) and those exact dependencies survive only up to float32 rounding, so
  the singular values fall from ~1e-6 * s_max to rounding noise: which of them ``cond``
  keeps decides whether OLS is sane or "catastrophic".  ``evaluate_suite`` can report the
  whole sweep over ``cond``.
* **Ridge(alpha)**: ``beta = V diag(s / (s^2 + alpha)) u``, alpha on the sum of squares as
  in scikit-learn's ``Ridge``.
* **RidgeCV**: alpha chosen on a log grid by exact leave-one-out error (the criterion of
  scikit-learn's ``RidgeCV`` default), ``e_i / (1 - h_ii)`` with
  ``h_ii = 1/n + z~_i' V diag(1 / (s^2 + alpha)) V' z~_i``; one extra pass over the training
  chunks gives it for every alpha.  (A K-fold CV would need K more factorisations, each the
  dominant cost.)
* **PCR(k)**: ``PCA(k)`` on Z then OLS on the k scores = the pseudo-inverse over the k
  largest singular values (exact principal components, where scikit-learn's 'auto' solver
  would pick a randomised approximation at this size).

Memory: the read chunk (chunk_size x P float32), a QR block of (p + block_rows) x (p + t)
float64 with block_rows = max(16384, 2p), R, and the SVD's U, V and workspace: about
10 p^2 x 8 bytes in all (~3.4 GB for p = 6.5k active FTCP columns, whatever n is).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .timing import measure

#: Default ridge grid: half decades from 1e-3 to 1e6 (19 values).
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 19))
EPS = float(np.finfo(np.float64).eps)
#: Cutoffs reported in the OLS sweep: scipy/LAPACK default ... scikit-learn 1.9's tol ... 1e-4.
OLS_CONDS = (EPS, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4)

ChunkSource = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
#: A training column counts as constant when its spread (max - min) is at most this fraction of
#: its magnitude, taken as at least 1: float-rounding noise (features are stored as float32, whose
#: resolution is ~6e-8 relative) and nothing else, for features in physical or O(1) units such as
#: FTCP, SSL embeddings and Magpie descriptors.
CONSTANT_RTOL = 1e-6


def constant_columns(lo: np.ndarray, hi: np.ndarray, rtol: float = CONSTANT_RTOL) -> np.ndarray:
    """Boolean mask of the columns whose training range [lo, hi] is constant up to float noise.

    Shared by the linear solver and the MLPs' standardiser (``ftcp.evaluation.mlp``), so both
    give such columns no influence, at fit and at predict time alike.
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    magnitude = np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
    return (hi - lo) <= rtol * magnitude


def array_chunks(ids, x, chunk_size: int = 4096) -> ChunkSource:
    """Chunk source over an in-memory (n, p) array with its IDs."""
    ids = np.asarray(ids)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} IDs for {len(x)} feature rows")

    def source():
        for s in range(0, len(ids), chunk_size):
            yield ids[s:s + chunk_size], x[s:s + chunk_size]
    return source


def _aligned(source: ChunkSource, ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate a chunk source in whatever order it yields, joining each chunk to ``ids``.

    Yields (positions into ``ids``, x chunk 2-D).  Raises ValueError when a chunk carries
    an ID that is not in ``ids``, an ID comes twice, or some ID never comes.
    """
    import pandas as pd

    index = pd.Index(ids)
    if not index.is_unique:
        raise ValueError("the labelled IDs contain duplicates")
    seen = np.zeros(len(ids), dtype=bool)
    for chunk_ids, x in source():
        k = len(chunk_ids)
        if len(x) != k:
            raise ValueError(f"chunk has {k} IDs but {len(x)} rows")
        x = np.asarray(x)
        if x.ndim != 2:
            x = x.reshape(k, -1)
        pos = index.get_indexer(np.asarray(chunk_ids, dtype=str))
        if (pos < 0).any():
            raise ValueError(f"feature rows for IDs that are not among the labelled IDs, e.g. "
                             f"{list(np.asarray(chunk_ids)[pos < 0][:3])}")
        if seen[pos].any() or len(np.unique(pos)) != k:
            raise ValueError(f"feature rows repeated for IDs, e.g. {list(np.asarray(chunk_ids)[seen[pos]][:3])}")
        seen[pos] = True
        yield pos, x
    if not seen.all():
        raise ValueError(f"no feature rows for {int((~seen).sum())} of {len(ids)} labelled IDs, "
                         f"e.g. {list(ids[~seen][:3])}")


@dataclass
class LinearFit:
    """A standardised least-squares problem in SVD form; gives OLS/Ridge/PCR coefficients."""

    n: int
    n_features: int                 # columns before dropping constants
    active: np.ndarray              # indices of the non-constant training columns
    mean: np.ndarray                # (p,) training mean of the active columns
    scale: np.ndarray               # (p,) training std (population) of the active columns
    y_mean: np.ndarray              # (t,)
    sv: np.ndarray                  # (r,) singular values of Z~, descending
    v: np.ndarray                   # (p, r) right singular vectors
    u_y: np.ndarray                 # (r, t) = U' (y - mean y)
    cond: float = EPS               # default OLS cutoff (relative to s_max)
    timings: dict = field(default_factory=dict)

    def rank(self, cond: float | None = None) -> int:
        c = self.cond if cond is None else cond
        return int(np.sum(self.sv > c * self.sv[0])) if len(self.sv) else 0

    @property
    def eigvals(self) -> np.ndarray:
        """Eigenvalues of Z~'Z~ (= squared singular values)."""
        return self.sv ** 2

    def spectral_filter(self, model) -> np.ndarray:
        """g with beta = V diag(g) u for ``model``.

        ``"mean"``, ``"ols"`` (default cutoff), ``("ols", cond)``, ``("ridge", alpha)``,
        ``("pcr", k)``.
        """
        s = self.sv
        if model == "mean":
            return np.zeros_like(s)
        if model == "ols":
            model = ("ols", self.cond)
        kind, value = model
        if kind == "ols":
            keep = s > value * (s[0] if len(s) else 0.0)
            return np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
        if kind == "ridge":
            if value <= 0:
                raise ValueError("ridge alpha must be > 0 (use 'ols' for alpha = 0)")
            return s / (s * s + value)
        if kind == "pcr":
            keep = s > self.cond * (s[0] if len(s) else 0.0)
            keep[int(value):] = False          # singular values are sorted in descending order
            return np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
        raise ValueError(f"unknown linear model {model!r}")

    def coefficients(self, model) -> np.ndarray:
        """Standardised coefficients (p, t)."""
        return self.v @ (self.spectral_filter(model)[:, None] * self.u_y)

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
        lam = self.eigvals
        return float(lam[:k].sum() / lam.sum()) if lam.sum() > 0 else float("nan")

    # -- passes over data ---------------------------------------------------------------
    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x[:, self.active], dtype=np.float64) - self.mean) / self.scale

    def predict(self, source: ChunkSource, ids, models: dict) -> tuple[dict, dict]:
        """Predictions of several models over the rows of ``source`` (joined by ID to ``ids``).

        Returns ({name: (n, t) predictions}, diagnostics) where the diagnostics hold the
        largest absolute standardised value of each row (``max_abs_z``): the quantity that
        explains an unregularised model's blow-ups.
        """
        ids = np.asarray(ids, dtype=str)
        names = list(models)
        t = len(self.y_mean)
        coef = (np.concatenate([self.coefficients(models[m]) for m in names], axis=1) if names
                else np.zeros((len(self.active), 0)))
        out = np.empty((len(ids), coef.shape[1]))
        max_abs_z = np.empty(len(ids))
        for pos, x in _aligned(source, ids):
            z = self.standardise(x)
            out[pos] = z @ coef
            max_abs_z[pos] = np.abs(z).max(axis=1) if z.shape[1] else 0.0
        preds = {m: out[:, i * t:(i + 1) * t] + self.y_mean for i, m in enumerate(names)}
        return preds, {"max_abs_z": max_abs_z}

    def train_pass(self, source: ChunkSource, ids, y: np.ndarray, alphas=(), models: dict | None = None) -> dict:
        """One pass over the training rows: exact leave-one-out errors of Ridge(alpha) for each
        alpha, in-sample predictions for each alpha and for ``models``.

        Returns {"loo_mse": (n_alphas, t), "fitted_by_alpha": (n_alphas, n, t),
        "fitted": {name: (n, t)}}.
        """
        ids = np.asarray(ids, dtype=str)
        y = _as_2d(y)
        models = models or {}
        alphas = np.asarray(alphas, dtype=np.float64)
        s2 = self.eigvals
        inv = 1.0 / (s2[None, :] + alphas[:, None])                              # (a, r)
        g = (self.sv[None, :] * inv)[:, :, None] * self.u_y[None, :, :]          # (a, r, t)
        gm = {m: self.spectral_filter(spec)[:, None] * self.u_y for m, spec in models.items()}
        t = y.shape[1]
        sse = np.zeros((len(alphas), t))
        fitted_a = np.empty((len(alphas), len(ids), t))
        fitted = {m: np.empty((len(ids), t)) for m in models}
        for pos, x in _aligned(source, ids):
            proj = self.standardise(x) @ self.v          # standardised columns have mean 0
            lev = 1.0 / self.n + (proj ** 2) @ inv.T      # (c, a)
            yc = y[pos] - self.y_mean
            for j in range(len(alphas)):
                fit_c = proj @ g[j]
                fitted_a[j, pos] = fit_c + self.y_mean
                denom = 1.0 - lev[:, j:j + 1]
                with np.errstate(divide="ignore", invalid="ignore"):
                    sse[j] += np.sum(((yc - fit_c) / np.where(denom > 1e-12, denom, np.nan)) ** 2, axis=0)
            for m in models:
                fitted[m][pos] = proj @ gm[m] + self.y_mean
        return {"loo_mse": sse / len(ids), "fitted_by_alpha": fitted_a, "fitted": fitted}

    def loo_mse(self, source: ChunkSource, ids, y: np.ndarray, alphas) -> np.ndarray:
        """Exact leave-one-out mean squared error of Ridge(alpha) for each alpha: (n_alphas, t)."""
        return self.train_pass(source, ids, y, alphas)["loo_mse"]


def _as_2d(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return y[:, None] if y.ndim == 1 else y


def column_stats(source: ChunkSource, ids) -> dict:
    """Pass 1: per-column min, max, mean and population variance over the rows of ``source``."""
    ids = np.asarray(ids, dtype=str)
    lo = hi = shift = s1 = s2 = None
    for _, x in _aligned(source, ids):
        x64 = np.asarray(x, dtype=np.float64)
        if lo is None:      # shift by the first chunk's mean: sums of squares stay well scaled
            lo, hi, shift = x64.min(axis=0), x64.max(axis=0), x64.mean(axis=0)
            s1, s2 = np.zeros_like(shift), np.zeros_like(shift)
        else:
            np.minimum(lo, x64.min(axis=0), out=lo)
            np.maximum(hi, x64.max(axis=0), out=hi)
        d = x64 - shift
        s1 += d.sum(axis=0)
        s2 += np.einsum("ij,ij->j", d, d)
    if lo is None:
        raise ValueError("no training rows")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        bad = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
        raise ValueError(f"non-finite feature values in {len(bad)} columns (first: {bad[:5].tolist()})")
    n = len(ids)
    m = s1 / n
    return {"min": lo, "max": hi, "mean": shift + m, "var": np.maximum(s2 / n - m * m, 0.0), "n": n}


def fit_linear(source: ChunkSource, ids, y, cond: float = EPS, block_rows: int | None = None) -> LinearFit:
    """Two streamed passes + one SVD -> :class:`LinearFit`.

    ``source()`` yields (ids_chunk, x_chunk) with x_chunk (c, P) (any float dtype, or
    (c, ...) which is flattened), in any order; every ID of ``ids`` must come exactly once
    (joined by ID; raises otherwise).  ``y`` is (n,) or (n, t), aligned to ``ids``.
    ``cond``: default cutoff of ``"ols"`` (see the module docstring).
    """
    ids = np.asarray(ids, dtype=str)
    y = _as_2d(y)
    if len(y) != len(ids):
        raise ValueError(f"{len(ids)} IDs but {len(y)} label rows")
    if not np.all(np.isfinite(y)):
        raise ValueError("labels contain non-finite values; drop those rows first")
    timings = {}
    with measure("column_stats") as rec:
        st = column_stats(source, ids)
    timings["column_stats"] = rec
    n = st["n"]
    active = np.flatnonzero(~constant_columns(st["min"], st["max"]))
    mean, var = st["mean"][active], st["var"][active]
    if np.any(var <= 0):
        raise ValueError("a non-constant column has zero variance (precision loss)")
    scale = np.sqrt(var)
    p, t = len(active), y.shape[1]
    y_mean = y.mean(axis=0)
    block_rows = block_rows or max(16384, 2 * p)   # large blocks: less re-factoring of R
    with measure("qr") as rec:
        r_aug = np.zeros((0, p + t))      # triangular factor of [Z~ | y~] so far
        pending, n_pending = [], 0

        def fold(r_aug, pending):
            return np.linalg.qr(np.vstack([r_aug] + pending), mode="r")

        for pos, x in _aligned(source, ids):
            block = np.empty((len(pos), p + t))
            block[:, :p] = (np.asarray(x[:, active], dtype=np.float64) - mean) / scale
            block[:, p:] = y[pos] - y_mean
            pending.append(block)
            n_pending += len(pos)
            if n_pending >= block_rows:
                r_aug, pending, n_pending = fold(r_aug, pending), [], 0
        if pending:
            r_aug = fold(r_aug, pending)
    timings["qr"] = rec
    with measure("svd") as rec:
        if p:
            u, sv, vt = np.linalg.svd(r_aug[:, :p], full_matrices=False)
            u_y = u.T @ r_aug[:, p:]
            v = vt.T.copy()
            del u, vt
        else:
            sv, v, u_y = np.zeros(0), np.zeros((0, 0)), np.zeros((0, t))
    timings["svd"] = rec
    return LinearFit(n=n, n_features=len(st["min"]), active=active, mean=mean, scale=scale, y_mean=y_mean,
                     sv=sv, v=v, u_y=u_y, cond=float(cond), timings=timings)


def select_alpha(loo: np.ndarray, alphas) -> tuple[np.ndarray, np.ndarray]:
    """Per target: (index into alphas, chosen alpha) with the smallest LOO error."""
    loo = np.where(np.isfinite(loo), loo, np.inf)
    idx = np.argmin(loo, axis=0)
    return idx, np.asarray(alphas)[idx]


def evaluate_suite(train_source: ChunkSource, train_ids, y_train, test_source: ChunkSource, test_ids,
                   y_test, models: dict, alphas=DEFAULT_ALPHAS, cond: float = EPS,
                   ols_sweep=OLS_CONDS) -> dict:
    """Fit once, then score several linear models (and RidgeCV over ``alphas``) per target.

    ``models``: {name: "mean" | "ols" | ("ols", cond) | ("ridge", a) | ("pcr", k)}.  With a
    non-empty ``alphas`` a model named ``ridgecv`` is added (alpha chosen per target by
    exact LOO).  ``ols_sweep``: OLS cutoffs whose test metrics go to ``"ols_sweep"``.
    Returns {"fit": facts about the design, "timing": {phase: measure record},
    "models": {name: {"spec", "train": [metrics per target], "test": [...],
    "test_pred": (n_test, t)}}, "ridgecv": {...}, "ols_sweep": [...], "test_max_abs_z": (n_test,)}.
    """
    from .metrics import regression_metrics  # it loads the demo-target units (pandas, pymatgen): not at parser build
    y_train, y_test = _as_2d(y_train), _as_2d(y_test)
    t = y_train.shape[1]
    fit = fit_linear(train_source, train_ids, y_train, cond=cond)
    timing = dict(fit.timings)
    alphas = np.asarray(alphas if alphas is not None else (), dtype=np.float64)
    sweep = {f"ols_sweep_{c:g}": ("ols", float(c)) for c in (ols_sweep or ())}
    with measure("train_pass") as tp_rec:
        tp = fit.train_pass(train_source, train_ids, y_train, alphas, {**models, **sweep})
    timing["train_pass"] = tp_rec
    specs = {m: [spec] * t for m, spec in {**models, **sweep}.items()}
    fitted = dict(tp["fitted"])
    ridgecv = None
    if len(alphas):
        idx, chosen = select_alpha(tp["loo_mse"], alphas)
        specs["ridgecv"] = [("ridge", float(a)) for a in chosen]
        fitted["ridgecv"] = np.stack([tp["fitted_by_alpha"][idx[j], :, j] for j in range(t)], axis=1)
        ridgecv = {"alphas": alphas, "loo_mse": tp["loo_mse"], "alpha": chosen,
                   "at_grid_edge": [bool(i in (0, len(alphas) - 1)) for i in idx]}
    # one prediction pass: every (model, target) pair as its own coefficient column
    flat = {f"{m}#{j}": specs[m][j] for m in specs for j in range(t)}
    with measure("predict") as pr_rec:
        preds, diag = fit.predict(test_source, test_ids, flat)
    timing["predict"] = pr_rec
    scored = {}
    for m in specs:
        test_pred = np.stack([preds[f"{m}#{j}"][:, j] for j in range(t)], axis=1)
        scored[m] = {
            "spec": [list(s) if isinstance(s, tuple) else s for s in specs[m]],
            "train": [regression_metrics(y_train[:, j], fitted[m][:, j]) for j in range(t)],
            "test": [regression_metrics(y_test[:, j], test_pred[:, j]) for j in range(t)],
            "test_pred": test_pred,
        }
    sweep_out = [{"cond": spec[1], "rank": fit.rank(spec[1]),
                  "train": scored[m]["train"], "test": scored.pop(m)["test"]} for m, spec in sweep.items()]
    sv = fit.sv
    facts = {"n_train": fit.n, "n_features": fit.n_features, "n_active": int(len(fit.active)),
             "n_constant_dropped": int(fit.n_features - len(fit.active)), "ols_cond": fit.cond,
             "rank": fit.rank(), "largest_singular_value": float(sv[0]) if len(sv) else 0.0,
             "singular_values_relative": (sv / sv[0]).tolist() if len(sv) else [],
             "method": "streamed QR of [Z~|y~] + SVD of R"}
    pcr = [spec[1] for spec in models.values() if isinstance(spec, tuple) and spec[0] == "pcr"]
    if pcr:
        facts["pca_explained_variance_ratio"] = {int(k): fit.explained_variance_ratio(int(k)) for k in pcr}
    return {"fit": facts, "timing": timing, "models": scored, "ridgecv": ridgecv, "ols_sweep": sweep_out,
            "test_max_abs_z": diag["max_abs_z"]}
