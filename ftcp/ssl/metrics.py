"""Pretext tasks: loss, evaluation metric with its direction, and a trivial baseline.

A task is evaluated from *sums* accumulated on the device (no host sync per batch); the sums of
all ranks are added with one all_reduce, then ``eval_finish`` turns them into a metrics dict:

    {"metric": "accuracy", "higher_is_better": true, "model": 0.61, "baseline": 0.18,
     "baseline_kind": "majority class of SSL-train", "beats_baseline": true, "n": 3371, ...}

Baselines are fitted on the SSL-train split (targets drawn with the fixed evaluation masks)
before training starts.  Regression tasks also take their target standardisation from that
pass, so losses are O(1) whatever the physical units.

Task kinds: ``ClassificationTask`` (CE; majority baseline), ``RegressionTask`` (MSE on
standardised targets, optionally per group; group-mean baseline), ``PeriodicCoordinateTask``
(fractional coordinates on the torus; best constant point baseline), ``BarlowTwinsTask``
(redundancy reduction between two views; view-retrieval metric against chance).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import losses as Lf


def _zeros(device, *shape):
    return torch.zeros(shape, dtype=torch.float64, device=device)


class Task:
    """Base class.  ``pred``/``target`` are dicts of tensors produced by the block."""

    metric = "loss"
    higher_is_better = False
    baseline_kind = "none"

    def __init__(self, name: str, weight: float = 1.0):
        self.name = name
        self.weight = float(weight)
        self.fitted: dict[str, torch.Tensor] = {}

    # -- training --------------------------------------------------------------------------
    def loss(self, pred: dict, target: dict, gather: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- baseline (and target statistics) from SSL-train ------------------------------------
    def fit_init(self, device) -> dict:
        return {}

    def fit_update(self, state: dict, target: dict) -> None:
        pass

    def fit_finish(self, state: dict) -> None:
        pass

    def fitted_state(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.fitted.items()}

    def load_fitted(self, state: dict, device) -> None:
        self.fitted = {k: v.to(device) for k, v in state.items()}

    # -- evaluation -------------------------------------------------------------------------
    def eval_init(self, device) -> dict:  # pragma: no cover
        raise NotImplementedError

    def eval_update(self, state: dict, pred: dict, target: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def eval_finish(self, state: dict) -> dict:  # pragma: no cover
        raise NotImplementedError

    def _result(self, model: float, baseline: float, **extra) -> dict:
        better = model > baseline if self.higher_is_better else model < baseline
        return {"metric": self.metric, "higher_is_better": self.higher_is_better, "model": model,
                "baseline": baseline, "baseline_kind": self.baseline_kind, "beats_baseline": bool(better), **extra}


# ------------------------------------------------------------------------------------------
class ClassificationTask(Task):
    """Cross-entropy over ``n_classes``; targets of -1 are ignored (unknown/not applicable).

    pred: ``{"logits": (..., C)}``; target: ``{"label": (...) long}``.
    """

    metric = "accuracy"
    higher_is_better = True
    baseline_kind = "majority class of SSL-train"

    def __init__(self, name, n_classes: int, weight=1.0, class_names=None, topk: int = 0):
        super().__init__(name, weight)
        self.n_classes = n_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.topk = topk

    def loss(self, pred, target, gather=False):
        logits = pred["logits"].float().reshape(-1, self.n_classes)
        label = target["label"].reshape(-1)
        ce = F.cross_entropy(logits, label, ignore_index=-1, reduction="none")
        return ce.sum() / (label >= 0).sum().clamp_min(1)

    def fit_init(self, device):
        return {"counts": _zeros(device, self.n_classes)}

    def fit_update(self, state, target):
        label = target["label"].reshape(-1)
        state["counts"].index_add_(0, label.clamp_min(0), (label >= 0).double())

    def fit_finish(self, state):
        self.fitted = {"counts": state["counts"].clone(), "majority": state["counts"].argmax().reshape(1)}

    def eval_init(self, device):
        c = self.n_classes
        return {"n": _zeros(device), "hit": _zeros(device), "hit_topk": _zeros(device), "hit_base": _zeros(device),
                "ce": _zeros(device), "class_n": _zeros(device, c), "class_hit": _zeros(device, c)}

    def eval_update(self, state, pred, target):
        logits = pred["logits"].float().reshape(-1, self.n_classes)
        label = target["label"].reshape(-1)
        ok = (label >= 0).double()
        safe = label.clamp_min(0)
        hit = (logits.argmax(1) == safe).double() * ok
        state["n"] += ok.sum()
        state["hit"] += hit.sum()
        state["hit_base"] += ((safe == self.fitted["majority"]).double() * ok).sum()
        state["ce"] += (F.cross_entropy(logits, label, ignore_index=-1, reduction="none").double()).sum()
        state["class_n"].index_add_(0, safe, ok)
        state["class_hit"].index_add_(0, safe, hit)
        if self.topk:
            top = logits.topk(min(self.topk, self.n_classes), dim=1).indices
            state["hit_topk"] += ((top == safe[:, None]).any(1).double() * ok).sum()

    def eval_finish(self, state):
        n = max(float(state["n"]), 1.0)
        present = state["class_n"] > 0
        per_class = torch.where(present, state["class_hit"] / state["class_n"].clamp_min(1),
                                torch.zeros_like(state["class_n"]))
        balanced = float(per_class[present].mean()) if present.any() else float("nan")
        majority = int(self.fitted["majority"])
        extra = {"n": int(state["n"]), "cross_entropy": float(state["ce"]) / n,
                 "balanced_accuracy": balanced,
                 "baseline_balanced_accuracy": 1.0 / int(present.sum()) if present[majority] else 0.0,
                 "baseline_prediction": self.class_names[majority] if self.class_names else majority}
        if self.topk:
            extra[f"top{self.topk}_accuracy"] = float(state["hit_topk"]) / n
        if self.class_names and self.n_classes <= 20:
            extra["per_class_accuracy"] = {name: (float(per_class[k]) if present[k] else None)
                                           for k, name in enumerate(self.class_names)}
            extra["class_counts"] = {name: int(state["class_n"][k]) for k, name in enumerate(self.class_names)}
        return self._result(float(state["hit"]) / n, float(state["hit_base"]) / n, **extra)


# ------------------------------------------------------------------------------------------
class RegressionTask(Task):
    """MSE on targets standardised with SSL-train statistics (per group, e.g. per parameter).

    pred: ``{"value": (...)}`` in standardised units; target: ``{"value": (...)}`` in physical
    units, optional ``"group": (...) long`` and ``"valid": (...) bool``.  Metrics: ``rmse`` in
    physical units, or ``nmse`` (mean squared error / group variance, i.e. the fraction of
    variance unexplained; the group-mean baseline scores about 1).  ``min_std`` floors the fitted
    per-group standard deviation: a group that happens to be (nearly) constant in the baseline
    pass (a rare bin, a k-point that was only hidden where it is zero) would otherwise turn any
    later deviation into a loss of ~1e12.
    """

    higher_is_better = False
    baseline_kind = "mean of SSL-train targets (per group)"

    def __init__(self, name, weight=1.0, n_groups: int = 1, group_names=None, metric: str = "rmse", units: str = "",
                 min_std: float = 1e-6):
        super().__init__(name, weight)
        self.min_std = float(min_std)   # floor of the fitted per-group std (groups that are nearly constant)
        if metric not in ("rmse", "nmse"):
            raise ValueError("metric must be 'rmse' or 'nmse'")
        self.metric = metric
        self.n_groups = n_groups
        self.group_names = list(group_names) if group_names is not None else None
        self.units = units

    def _flat(self, target):
        value = target["value"].reshape(-1).float()
        group = target["group"].reshape(-1) if "group" in target else torch.zeros_like(value, dtype=torch.long)
        valid = target["valid"].reshape(-1) if "valid" in target else torch.ones_like(value, dtype=torch.bool)
        return value, group, valid

    def loss(self, pred, target, gather=False):
        value, group, valid = self._flat(target)
        mean, std = self.fitted["mean"].float()[group], self.fitted["std"].float()[group]
        z = (value - mean) / std
        err = (pred["value"].reshape(-1).float() - z).pow(2)
        return torch.where(valid, err, torch.zeros_like(err)).sum() / valid.sum().clamp_min(1)

    def fit_init(self, device):
        g = self.n_groups
        return {"n": _zeros(device, g), "sum": _zeros(device, g), "sumsq": _zeros(device, g)}

    def fit_update(self, state, target):
        value, group, valid = self._flat(target)
        w = valid.double()
        v = torch.where(valid, value, torch.zeros_like(value)).double()
        state["n"].index_add_(0, group, w)
        state["sum"].index_add_(0, group, v * w)
        state["sumsq"].index_add_(0, group, v * v * w)

    def fit_finish(self, state):
        n = state["n"].clamp_min(1)
        mean = state["sum"] / n
        var = (state["sumsq"] / n - mean ** 2).clamp_min(0)
        std = torch.where(state["n"] > 1, var.sqrt(), torch.ones_like(var)).clamp_min(self.min_std)
        self.fitted = {"mean": mean, "std": std, "n": state["n"].clone()}

    def eval_init(self, device):
        g = self.n_groups
        return {"n": _zeros(device, g), "sse": _zeros(device, g), "sse_base": _zeros(device, g)}

    def eval_update(self, state, pred, target):
        value, group, valid = self._flat(target)
        mean, std = self.fitted["mean"][group], self.fitted["std"][group]
        physical = pred["value"].reshape(-1).double() * std + mean
        w = valid.double()
        v = torch.where(valid, value, torch.zeros_like(value)).double()
        state["n"].index_add_(0, group, w)
        state["sse"].index_add_(0, group, (physical - v).pow(2) * w)
        state["sse_base"].index_add_(0, group, (mean - v).pow(2) * w)

    def eval_finish(self, state):
        n_all = max(float(state["n"].sum()), 1.0)
        ng = state["n"].clamp_min(1)
        var = self.fitted["std"].double() ** 2
        if self.metric == "rmse":
            model = math.sqrt(float(state["sse"].sum()) / n_all)
            base = math.sqrt(float(state["sse_base"].sum()) / n_all)
        else:
            model = float((state["sse"] / var).sum()) / n_all
            base = float((state["sse_base"] / var).sum()) / n_all
        sse_base = float(state["sse_base"].sum())
        extra = {"n": int(state["n"].sum()), "units": self.units,
                 "r2_vs_baseline": 1.0 - float(state["sse"].sum()) / sse_base if sse_base > 0 else float("nan")}
        if self.n_groups > 1:
            names = self.group_names or [str(k) for k in range(self.n_groups)]
            extra["per_group_rmse"] = {nm: {"model": math.sqrt(float(state["sse"][k] / ng[k])),
                                            "baseline": math.sqrt(float(state["sse_base"][k] / ng[k])),
                                            "n": int(state["n"][k])} for k, nm in enumerate(names)}
        return self._result(model, base, **extra)


# ------------------------------------------------------------------------------------------
class PeriodicCoordinateTask(Task):
    """Fractional coordinates predicted as points on three circles (periodic, shift-invariant).

    pred: ``{"vectors": (..., 3, 2)}``; target: ``{"frac": (..., 3), "valid": (...)}``.
    Metric: the periodic error ``mean over axes of 1 - cos 2 pi (x_pred - x)`` (the training loss:
    0 when exact, 1 for a random guess, (2 pi^2 / 3) d^2 for a small torus distance d), against the
    constant point that minimises it on SSL-train.  Also reported: the RMS minimum-image torus
    distance (fractional units; its own best constant as baseline) and the share of sites placed
    within 0.05 of the truth (a multi-modal target, e.g. a site at 0 or 1/2, is scored fairly by
    this one).
    """

    metric = "periodic_error"
    higher_is_better = False
    baseline_kind = "best constant point on the torus (SSL-train)"
    n_bins = 400
    hit_radius = 0.05

    def loss(self, pred, target, gather=False):
        per_site = Lf.periodic_vector_loss(pred["vectors"], target["frac"])
        valid = target["valid"]
        return torch.where(valid, per_site, torch.zeros_like(per_site)).sum() / valid.sum().clamp_min(1)

    def fit_init(self, device):
        return {"hist": _zeros(device, 3, self.n_bins)}

    def fit_update(self, state, target):
        frac = torch.remainder(target["frac"].reshape(-1, 3).double(), 1.0)
        w = target["valid"].reshape(-1).double()
        bins = (frac * self.n_bins).long().clamp(0, self.n_bins - 1)
        for axis in range(3):
            state["hist"][axis].index_add_(0, bins[:, axis], w)

    def fit_finish(self, state):
        centers = (torch.arange(self.n_bins, device=state["hist"].device, dtype=torch.float64) + 0.5) / self.n_bins
        diff = centers[:, None] - centers[None, :]                                # candidate x bin
        sq = Lf.wrap_delta(diff).pow(2) @ state["hist"].T
        cos = (1 - torch.cos(2 * math.pi * diff)) @ state["hist"].T
        self.fitted = {"constant": centers[cos.argmin(0)], "constant_rms": centers[sq.argmin(0)]}

    def eval_init(self, device):
        return {k: _zeros(device) for k in ("n", "err", "err_base", "sq", "sq_base", "hit", "hit_base")}

    def eval_update(self, state, pred, target):
        frac = target["frac"].double()
        w = target["valid"].double()
        guess = Lf.vectors_to_frac(pred["vectors"].float()).double()
        const = self.fitted["constant"].expand_as(frac)
        const_rms = self.fitted["constant_rms"].expand_as(frac)
        state["n"] += w.sum()
        state["err"] += (Lf.periodic_vector_loss(pred["vectors"], frac).double() * w).sum()
        state["err_base"] += ((1 - torch.cos(2 * math.pi * (const - frac))).mean(-1) * w).sum()
        sq, sq_base = Lf.torus_sq_distance(guess, frac), Lf.torus_sq_distance(const_rms, frac)
        state["sq"] += (sq * w).sum()
        state["sq_base"] += (sq_base * w).sum()
        r2 = self.hit_radius ** 2
        state["hit"] += ((sq <= r2).double() * w).sum()
        state["hit_base"] += ((Lf.torus_sq_distance(const, frac) <= r2).double() * w).sum()

    def eval_finish(self, state):
        n = max(float(state["n"]), 1.0)
        return self._result(float(state["err"]) / n, float(state["err_base"]) / n, n=int(state["n"]),
                            rms_torus_distance=math.sqrt(float(state["sq"]) / n),
                            baseline_rms_torus_distance=math.sqrt(float(state["sq_base"]) / n),
                            within_005=float(state["hit"]) / n, baseline_within_005=float(state["hit_base"]) / n,
                            baseline_point=[float(v) for v in self.fitted["constant"]])


# ------------------------------------------------------------------------------------------
class BarlowTwinsTask(Task):
    """Barlow Twins between two views (``pred = {"z1", "z2"}``, projector outputs).

    Metric: top-1 retrieval of a sample's other view among ``pool`` consecutive evaluation
    samples (cosine similarity, both directions); baseline: chance (1/pool).  If the target
    holds the raw views (``{"input1", "input2"}``), retrieval on those is reported beside it as
    ``input_retrieval`` (how far the raw views alone go).
    """

    metric = "retrieval_top1"
    higher_is_better = True
    baseline_kind = "chance (1 / pool size)"

    def __init__(self, name, weight=1.0, lambd: float = 5e-3, pool: int = 256):
        super().__init__(name, weight)
        self.lambd = lambd
        self.pool = pool

    def loss(self, pred, target, gather=False):
        return Lf.barlow_twins(pred["z1"], pred["z2"], self.lambd, gather=gather)

    def eval_init(self, device):
        return {"hits": _zeros(device), "trials": _zeros(device), "chance": _zeros(device),
                "input_hits": _zeros(device)}

    def eval_update(self, state, pred, target):
        hits, trials, chance = Lf.retrieval_hits(pred["z1"], pred["z2"], self.pool)
        state["hits"] += hits
        state["trials"] += trials
        state["chance"] += chance
        if "input1" in target:
            state["input_hits"] += Lf.retrieval_hits(target["input1"].flatten(1), target["input2"].flatten(1),
                                                     self.pool)[0]

    def eval_finish(self, state):
        t = max(float(state["trials"]), 1.0)
        return self._result(float(state["hits"]) / t, float(state["chance"]) / t, n=int(state["trials"]) // 2,
                            pool=self.pool, input_retrieval=float(state["input_hits"]) / t)
