"""Feature attribution for Scenario 2: SHAP shares, enrichment ratios, exact group Shapley.

Definitions used in the reports (per explained row x, per input column i, phi_i(x) is the
attribution; "share" always means a share of the summed mean absolute attribution):

* ``ssl_share`` = sum_{i in SSL} mean_x |phi_i| / sum_i mean_x |phi_i| (the paper's 32.81 %).
* ``ssl_dim_share`` = n_SSL / (n_FTCP + n_SSL) = 2,048 / 27,248 = 7.516 %.
* ``enrichment_ratio`` = ssl_share / ssl_dim_share: how many times more importance the SSL
  columns carry than their share of the dimensions (the paper's 4.36 = 32.81 / 7.516).
* ``per_dim_ratio_upstream`` = (SSL sum / 2,048) / (FTCP sum / 25,200): what upstream's code
  printed (~6.0x at 32.81 %); it equals ``enrichment_ratio * (1 - ssl_dim_share) / (1 -
  ssl_share)``, a different number for the same attributions.
* ``*_active`` variants count only the FTCP columns that vary in the data (the ~18.2k
  structurally-zero columns can never carry importance, so counting them inflates ratios).

Exact group Shapley values treat whole feature groups as players with the interventional
value function ``v(S)(x) = mean_b f(x_S, b_{not S})`` over a background set; they satisfy
``sum_g phi_g(x) = f(x) - mean_b f(b)`` exactly (efficiency).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..logs import progress_bar
from .metrics import bootstrap_ci


# ---------------------------------------------------------------------------------------
# SHAP
def gradient_shap(model, background: np.ndarray, explain: np.ndarray, nsamples: int = 200,
                  batch_size: int = 50, seed: int = 0, progress: bool = True) -> dict:
    """``shap.GradientExplainer`` (expected gradients) on a torch model, in batches.

    Returns {"values": (n_explain, p) float32, "explainer": the class that ran, ...}.  No
    silent fallback: if SHAP fails the error propagates (upstream switched explainers and
    kept reporting the original sample size).
    """
    import shap
    import torch

    model = model.cpu().eval()
    bg = torch.as_tensor(np.ascontiguousarray(background), dtype=torch.float32)
    explainer = shap.GradientExplainer(model, bg)
    chunks = progress_bar(range(0, len(explain), batch_size), progress, desc="SHAP batches", leave=False)
    out = []
    for s in chunks:
        xb = torch.as_tensor(np.ascontiguousarray(explain[s:s + batch_size]), dtype=torch.float32)
        vals = explainer.shap_values(xb, nsamples=nsamples, rseed=seed + s)
        vals = np.asarray(vals[0] if isinstance(vals, list) else vals)
        if vals.ndim == 3:          # (n, p, outputs)
            vals = vals[..., 0]
        out.append(vals.astype(np.float32))
    values = np.concatenate(out, axis=0)
    if values.shape != (len(explain), explain.shape[1]):
        raise RuntimeError(f"unexpected SHAP output shape {values.shape}")
    return {"values": values, "explainer": f"shap.{type(explainer).__name__}",
            "shap_version": shap.__version__, "nsamples": nsamples,
            "n_background": int(len(background)), "n_explained": int(len(explain))}


def share_summary(abs_mean: np.ndarray, ssl_cols: np.ndarray, n_ftcp: int, n_ssl: int,
                  n_ftcp_active: int) -> dict:
    """SSL share and the enrichment ratios from per-column importance (mean |phi| or MDI).

    ``abs_mean`` covers the model's input columns; ``ssl_cols`` indexes the SSL ones in it.
    ``n_ftcp``/``n_ssl`` are the nominal dimensions (25,200 / 2,048), ``n_ftcp_active`` the
    FTCP columns that vary in the data.
    """
    total = float(np.sum(abs_mean))
    ssl = float(np.sum(abs_mean[ssl_cols]))
    ftcp = total - ssl
    share = ssl / total if total > 0 else float("nan")
    dim_share = n_ssl / (n_ftcp + n_ssl)
    dim_share_active = n_ssl / (n_ftcp_active + n_ssl)

    def per_dim(n_f):
        return (ssl / n_ssl) / (ftcp / n_f) if ftcp > 0 else float("inf")

    return {"ssl_share": share, "ftcp_share": 1 - share if total > 0 else float("nan"),
            "ssl_dim_share": dim_share, "enrichment_ratio": share / dim_share,
            "ssl_dim_share_active": dim_share_active,
            "enrichment_ratio_active": share / dim_share_active,
            "per_dim_ratio_upstream": per_dim(n_ftcp),
            "per_dim_ratio_active": per_dim(n_ftcp_active),
            "n_ftcp": int(n_ftcp), "n_ssl": int(n_ssl), "n_ftcp_active": int(n_ftcp_active)}


def shap_share_ci(values: np.ndarray, ssl_cols: np.ndarray, n_ftcp: int, n_ssl: int,
                  n_ftcp_active: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """Bootstrap CIs (over explained rows) for the SSL share and the enrichment ratios."""
    absv = np.abs(np.asarray(values, dtype=np.float64))
    out = {}
    for key in ("ssl_share", "enrichment_ratio", "enrichment_ratio_active", "per_dim_ratio_upstream"):
        def stat(a, key=key):
            return share_summary(a.mean(axis=0), ssl_cols, n_ftcp, n_ssl, n_ftcp_active)[key]

        out[key] = bootstrap_ci(absv, stat, n_boot=n_boot, seed=seed)
    return out


def group_importance(values: np.ndarray, groups: dict[str, np.ndarray]) -> dict:
    """Per group: share of sum_i mean|phi_i| and share of mean_x |sum_{i in g} phi_i(x)|.

    The second form aggregates before taking the absolute value, which is what a group
    Shapley value measures; the two differ when columns of a group cancel each other.
    """
    absv = np.abs(values)
    col_sum = {g: float(absv[:, idx].mean(axis=0).sum()) for g, idx in groups.items()}
    grp_abs = {g: float(np.abs(values[:, idx].sum(axis=1)).mean()) for g, idx in groups.items()}
    t1, t2 = sum(col_sum.values()), sum(grp_abs.values())
    return {g: {"share_sum_abs": col_sum[g] / t1 if t1 else float("nan"),
                "share_abs_sum": grp_abs[g] / t2 if t2 else float("nan")} for g in groups}


# ---------------------------------------------------------------------------------------
# exact group Shapley
def shapley_from_values(values: dict[int, np.ndarray], n_players: int) -> np.ndarray:
    """Exact Shapley values from v(S) for every coalition S (bitmask -> (n_rows,) array).

    Returns (n_rows, n_players).
    """
    fact = math.factorial
    weights = [fact(k) * fact(n_players - k - 1) / fact(n_players) for k in range(n_players)]
    n_rows = len(values[0])
    phi = np.zeros((n_rows, n_players))
    for i in range(n_players):
        bit = 1 << i
        for mask in range(1 << n_players):
            if mask & bit:
                continue
            phi[:, i] += weights[bin(mask).count("1")] * (values[mask | bit] - values[mask])
    return phi


def interventional_values(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, background: np.ndarray,
                          groups: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Brute force v(S)(x) = mean_b f(x_S, b_rest) for any model ``f`` (small problems only)."""
    values = {}
    for mask in range(1 << len(groups)):
        cols = np.concatenate([groups[i] for i in range(len(groups)) if mask >> i & 1] or [np.zeros(0, int)])
        vals = np.empty(len(x))
        for r in range(len(x)):
            z = background.copy()
            z[:, cols] = x[r, cols]
            vals[r] = f(z).mean()
        values[mask] = vals
    return values


def mlp_group_values(model, x: np.ndarray, background: np.ndarray, groups: list[np.ndarray],
                     rows_per_batch: int = 25, device=None, progress: bool = True) -> dict[int, np.ndarray]:
    """v(S)(x) for a torch MLP whose first layer is ``nn.Linear``, for all 2^G coalitions.

    The first layer is linear, so its pre-activation for a composite input is
    ``sum_{g in S} W_g x_g + sum_{g not in S} W_g b_g + bias``: the per-group products are
    computed once and every coalition costs only the (small) rest of the network.
    Groups must partition the model's input columns (checked).
    """
    import torch

    first, tail = split_first_linear(model)
    p = first.in_features
    allcols = np.sort(np.concatenate(groups))
    if not np.array_equal(allcols, np.arange(p)):
        raise ValueError("groups must partition the model's input columns exactly once")
    device = device or first.weight.device
    w = first.weight.detach().to(device, torch.float64)
    bias = first.bias.detach().to(device, torch.float64)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)
    bt = torch.as_tensor(np.asarray(background, dtype=np.float64), device=device)
    ax = torch.stack([xt[:, torch.as_tensor(g, device=device)] @ w[:, torch.as_tensor(g, device=device)].T
                      for g in groups])                                  # (G, n, h)
    bx = torch.stack([bt[:, torch.as_tensor(g, device=device)] @ w[:, torch.as_tensor(g, device=device)].T
                      for g in groups])                                  # (G, m, h)
    tail = tail.to(device).double().eval()
    masks = progress_bar(range(1 << len(groups)), progress, desc="group Shapley coalitions", leave=False)
    values = {}
    with torch.no_grad():
        for mask in masks:
            sel = torch.tensor([(mask >> i) & 1 for i in range(len(groups))], device=device, dtype=torch.float64)
            from_x = torch.einsum("g,gnh->nh", sel, ax)
            from_b = torch.einsum("g,gmh->mh", 1 - sel, bx) + bias
            vals = []
            for s in range(0, len(xt), rows_per_batch):
                pre = from_x[s:s + rows_per_batch, None, :] + from_b[None, :, :]   # (r, m, h)
                out = tail(pre.reshape(-1, pre.shape[-1])).reshape(pre.shape[0], pre.shape[1])
                vals.append(out.mean(dim=1))
            values[mask] = torch.cat(vals).cpu().numpy()
    return values


def split_first_linear(model):
    """(first nn.Linear, callable for the rest) of an MLP, unwrapping the target rescaling."""
    import copy

    from torch import nn

    core, mu, sd = model, 0.0, 1.0
    if hasattr(model, "core") and hasattr(model, "mu"):
        core, mu, sd = model.core, float(model.mu), float(model.sd)
    if not (isinstance(core, nn.Sequential) and isinstance(core[0], nn.Linear)):
        raise TypeError("expected an nn.Sequential MLP starting with nn.Linear")
    rest = copy.deepcopy(core[1:])      # converted to float64 by the caller; the model stays as is

    class _Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.rest = rest

        def forward(self, h):
            return self.rest(h).squeeze(-1) * sd + mu

    return core[0], _Tail()


def group_shapley(model, x, background, groups: dict[str, np.ndarray], device=None,
                  progress: bool = True) -> dict:
    """Exact group Shapley values of an MLP; checks efficiency and returns shares.

    Returns {"phi": (n, G), "names": [...], "base_value": mean_b f(b), "prediction": f(x),
    "efficiency_max_abs_error": ..., "share": {group: mean|phi_g| / sum_g mean|phi_g|}}.
    """
    names = list(groups)
    vals = mlp_group_values(model, x, background, [np.asarray(groups[g]) for g in names],
                            device=device, progress=progress)
    phi = shapley_from_values(vals, len(names))
    full = (1 << len(names)) - 1
    gap = vals[full] - vals[0]
    err = float(np.max(np.abs(phi.sum(axis=1) - gap))) if len(gap) else 0.0
    mean_abs = np.abs(phi).mean(axis=0)
    return {"phi": phi, "names": names, "base_value": float(vals[0].mean()),
            "prediction": vals[full], "efficiency_max_abs_error": err,
            "share": {g: float(mean_abs[i] / mean_abs.sum()) for i, g in enumerate(names)},
            "mean_abs": {g: float(mean_abs[i]) for i, g in enumerate(names)}}
