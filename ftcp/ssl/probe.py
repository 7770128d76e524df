"""A label probe and a collapse check of a block's embeddings during SSL training.

Why: a falling pretext loss does not say whether the embedding gets *better for properties*.
This probe answers that while training runs, without touching any downstream test crystal:

* crystals: a fixed, seeded subset of the SSL-*train* part (``probe_size``, default 4,000),
  cut 3/4 : 1/4 into probe-fit and probe-score;
* labels: every numeric label column of the data root's ``labels.csv`` (formation energy,
  band gap); the probe never feeds anything back into training;
* model: ridge regression on standardised embeddings, the ridge strength chosen by exact
  leave-one-out error on probe-fit (closed form through one SVD), scored as RMSE on
  probe-score;
* collapse: the effective rank of the probe-fit embeddings (exp of the entropy of the
  normalised singular values of the centred, standardised matrix; a collapsed embedding has a
  rank near 1, an isotropic one near its width).

The engine runs it before the first epoch (the random-init control of the same run, same
input statistics) and every ``probe_every`` epochs.  Only numpy and torch are used.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from .export import embed_positions

ALPHAS = tuple(10.0 ** k for k in np.arange(-3.0, 5.5, 0.5))


def read_labels(root, ids) -> dict[str, np.ndarray]:
    """Numeric label columns of ``<root>/labels.csv`` aligned to ``ids`` (NaN where missing)."""
    path = Path(root) / "labels.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "material_id" not in rows[0]:
        return {}
    by_id = {r["material_id"]: r for r in rows}
    out = {}
    for col in rows[0]:
        if col == "material_id":
            continue
        values = np.full(len(ids), np.nan)
        numeric = True
        for i, m in enumerate(ids):
            r = by_id.get(str(m))
            if r is None or r[col] in ("", None):
                continue
            try:
                values[i] = float(r[col])
            except ValueError:
                numeric = False
                break
        if numeric and np.isfinite(values).sum() > 10:
            out[col] = values
    return out


def ridge_loo(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray,
              alphas=ALPHAS) -> dict:
    """Ridge on standardised features, alpha by exact LOO on the fit part; RMSE on the score part."""
    mean, std = x_fit.mean(0), x_fit.std(0)
    keep = std > 1e-8
    xf = (x_fit[:, keep] - mean[keep]) / std[keep]
    xs = (x_score[:, keep] - mean[keep]) / std[keep]
    ym = y_fit.mean()
    u, s, vt = np.linalg.svd(xf, full_matrices=False)
    uty = u.T @ (y_fit - ym)
    best = None
    for a in alphas:
        shrink = s / (s ** 2 + a)
        w = vt.T @ (shrink * uty)
        resid = (y_fit - ym) - xf @ w
        hat = 1.0 / len(xf) + ((u ** 2) * (s ** 2 / (s ** 2 + a))).sum(1)
        loo = float(np.mean((resid / np.clip(1 - hat, 1e-9, None)) ** 2))
        if best is None or loo < best[0]:
            best = (loo, a, w)
    _, alpha, w = best
    pred = xs @ w + ym
    return {"rmse": float(np.sqrt(np.mean((pred - y_score) ** 2))), "alpha": float(alpha),
            "mean_predictor_rmse": float(np.sqrt(np.mean((ym - y_score) ** 2)))}


def effective_rank(x: np.ndarray) -> float:
    std = x.std(0)
    keep = std > 1e-8
    if not keep.any():
        return 0.0
    z = (x[:, keep] - x[:, keep].mean(0)) / std[keep]
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(math.exp(-(p * np.log(p)).sum()))


class LabelProbe:
    """The probe of one run: fixed crystals and labels (see the module docstring)."""

    def __init__(self, fit: np.ndarray, score: np.ndarray, labels: dict[str, np.ndarray]):
        self.fit, self.score, self.labels = fit, score, labels

    @classmethod
    def for_run(cls, data, train_positions: np.ndarray, size: int, seed: int) -> LabelProbe | None:
        labels = read_labels(data.root, data.ids)
        if not labels:
            return None
        rng = np.random.default_rng([seed, 11])
        pick = np.sort(rng.permutation(train_positions)[:min(size, len(train_positions))])
        cut = (3 * len(pick)) // 4
        order = rng.permutation(len(pick))
        return cls(np.sort(pick[order[:cut]]), np.sort(pick[order[cut:]]), labels)

    def run(self, block, model, dd, batch_size: int) -> dict:
        was_training = model.training
        with torch.no_grad():
            emb = embed_positions(block, model, dd, np.concatenate([self.fit, self.score]),
                                  batch_size).astype(np.float64)
        model.train(was_training)
        x_fit, x_score = emb[:len(self.fit)], emb[len(self.fit):]
        out = {"n_fit": int(len(self.fit)), "n_score": int(len(self.score)), "effective_rank": effective_rank(x_fit),
               "width": int(emb.shape[1]), "targets": {}}
        for name, y in self.labels.items():
            yf, ys = y[self.fit], y[self.score]
            okf, oks = np.isfinite(yf), np.isfinite(ys)
            if okf.sum() < 10 or oks.sum() < 2:
                continue
            out["targets"][name] = ridge_loo(x_fit[okf], yf[okf], x_score[oks], ys[oks])
        return out

    @staticmethod
    def summary(result: dict) -> str:
        parts = [f"{k} RMSE {v['rmse']:.4g}" for k, v in result["targets"].items()]
        return ", ".join(parts + [f"effective rank {result['effective_rank']:.1f}/{result['width']}"])
