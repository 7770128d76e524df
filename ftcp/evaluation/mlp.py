"""The scenarios' PyTorch regressors and one training loop with early stopping.

* :func:`hybrid_mlp` — upstream's Scenario-2 network: in -> 512 -> 256 -> 128 -> 1 with ReLU
  and dropout 0.2 / 0.2 / 0.1.
* :func:`regularized_mlp` — upstream's Scenario-3 "RegularizedMLP": every hidden layer is
  Linear -> BatchNorm -> ReLU -> Dropout (0.5); the base model is 512-256-128, the residual
  model 256-128-64.
* :func:`train_regressor` — Adam (coupled L2 ``weight_decay`` as upstream), optional
  ReduceLROnPlateau, early stopping on a validation metric, and the best epoch's weights
  restored from a *deep* copy (upstream's ``state_dict().copy()`` was shallow and restored
  the last epoch).

Inputs that are constant over every row a model will ever see contribute nothing to its
outputs.  :func:`restrict_inputs` drops them from the first layer *after* initialising it
at full width, so the trained function is the one the full-width model would learn (same
initial weights on the kept columns, same fan-in scaling), at a fraction of the cost.
Only torch and numpy are imported here (no pymatgen/shap), so this runs where only those two are installed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..logs import progress_bar
from ..runtime import seed_everything
from .linear import constant_columns


def hybrid_mlp(in_dim: int, hidden=(512, 256, 128), dropout=(0.2, 0.2, 0.1)) -> nn.Sequential:
    layers, prev = [], in_dim
    for width, p in zip(hidden, dropout, strict=False):
        layers += [nn.Linear(prev, width), nn.ReLU(), nn.Dropout(p)]
        prev = width
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def regularized_mlp(in_dim: int, hidden=(512, 256, 128), dropout: float = 0.5) -> nn.Sequential:
    layers, prev = [], in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout)]
        prev = width
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def restrict_inputs(model: nn.Sequential, keep: np.ndarray) -> nn.Sequential:
    """Keep only input columns ``keep`` of the first Linear layer (weights copied, not re-drawn)."""
    first = model[0]
    if not isinstance(first, nn.Linear):
        raise TypeError("the first layer must be nn.Linear")
    keep_t = torch.as_tensor(np.asarray(keep), dtype=torch.long)
    new = nn.Linear(len(keep_t), first.out_features)
    with torch.no_grad():
        new.weight.copy_(first.weight[:, keep_t])
        new.bias.copy_(first.bias)
    model[0] = new
    return model


def _r2(y: torch.Tensor, p: torch.Tensor) -> float:
    ss = torch.sum((y - y.mean()) ** 2)
    return float(1.0 - torch.sum((y - p) ** 2) / ss) if ss > 0 else float("nan")


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 15
    monitor: str = "r2"              # "r2" (higher is better) or "mse" (lower is better)
    plateau_factor: float | None = None   # ReduceLROnPlateau factor (None: no scheduler)
    plateau_patience: int = 5
    scale_targets: bool = False      # train on standardised y (upstream trained on raw y)


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int
    best_score: float
    epochs_run: int
    history: list = field(default_factory=list)


def _as_tensor(x, device) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    return t.to(device)


def predict(model: nn.Module, x, device=None, batch_size: int = 4096) -> np.ndarray:
    """Eval-mode predictions (n,) for a numpy array or tensor ``x``."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            xb = _as_tensor(x[s:s + batch_size], device)
            out.append(model(xb).squeeze(-1).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def train_regressor(model: nn.Module, x_train, y_train, x_val, y_val, config: TrainConfig,
                    seed: int = 0, device: torch.device | str = "cpu", progress: bool = False) -> TrainResult:
    """Mini-batch training with early stopping; returns the model holding its best-epoch weights.

    With ``config.scale_targets`` the loss is computed on standardised targets (mean/std
    of ``y_train``); the returned model always predicts in the original units.  Upstream
    trained on raw targets, which matters with coupled L2: the penalty's weight relative
    to the loss depends on the target scale.
    """
    device = torch.device(device)
    seed_everything(seed)
    y_train = np.asarray(y_train, dtype=np.float64)
    y_mu, y_sd = ((float(y_train.mean()), float(y_train.std()) or 1.0) if config.scale_targets
                  else (0.0, 1.0))
    net = _Rescaled(model, y_mu, y_sd).to(device)
    xt, yt = _as_tensor(x_train, device), _as_tensor((y_train - y_mu) / y_sd, device)
    xv, yv = _as_tensor(x_val, device), _as_tensor(np.asarray(y_val, dtype=np.float64), device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=config.plateau_factor,
                                                        patience=config.plateau_patience)
             if config.plateau_factor else None)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sign = 1.0 if config.monitor == "r2" else -1.0
    best, best_state, best_epoch, since = -math.inf, None, -1, 0
    history = []
    epochs = progress_bar(range(config.max_epochs), progress, desc="epochs", leave=False)
    n = len(xt)
    for epoch in epochs:
        net.train()
        order = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for s in range(0, n, config.batch_size):
            idx = order[s:s + config.batch_size]
            if has_bn and len(idx) < 2:      # BatchNorm cannot train on a single row
                continue
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((net.core(xt[idx]).squeeze(-1) - yt[idx]) ** 2)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            pv = torch.cat([net(xv[s:s + 4096]).squeeze(-1) for s in range(0, len(xv), 4096)])
        val_mse = float(torch.mean((pv - yv) ** 2))
        val_r2 = _r2(yv, pv)
        score = val_r2 if config.monitor == "r2" else val_mse
        history.append({"epoch": epoch, "train_loss_std_units": total / n, "val_mse": val_mse,
                        "val_r2": val_r2, "lr": opt.param_groups[0]["lr"]})
        if sched is not None:
            sched.step(val_mse)
        if math.isfinite(score) and sign * score > best:
            best, best_epoch, since = sign * score, epoch, 0
            best_state = copy.deepcopy(net.state_dict())      # a real copy, not shared storage
        else:
            since += 1
            if since >= config.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(model=net, best_epoch=best_epoch, best_score=sign * best,
                       epochs_run=len(history), history=history)


class _Rescaled(nn.Module):
    """``core`` trained on standardised targets; ``forward`` returns original units."""

    def __init__(self, core: nn.Module, mu: float, sd: float):
        super().__init__()
        self.core = core
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float32))
        self.register_buffer("sd", torch.tensor(sd, dtype=torch.float32))

    def forward(self, x):
        return self.core(x) * self.sd + self.mu


def column_standardiser(x: np.ndarray, chunk_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the columns of ``x`` as StandardScaler (population std), except that a
    column constant on these rows (exactly, or up to float noise: ``linear.constant_columns``)
    gets scale ``inf``, so ``(x - mean) / scale`` is 0 for it on every row, including rows it was
    not fitted on.  (StandardScaler's scale 1 passes a test-only deviation through unscaled, and
    a float-noise column's tiny std turns it into z ~ 1e16: MLP R2 of -1e27 on small data.)"""
    n = len(x)
    s1 = np.zeros(x.shape[1])
    lo = np.full(x.shape[1], np.inf)
    hi = np.full(x.shape[1], -np.inf)
    for s in range(0, n, chunk_size):
        c = np.asarray(x[s:s + chunk_size], dtype=np.float64)
        s1 += c.sum(axis=0)
        np.minimum(lo, c.min(axis=0), out=lo)
        np.maximum(hi, c.max(axis=0), out=hi)
    mean = s1 / n
    s2 = np.zeros(x.shape[1])
    for s in range(0, n, chunk_size):
        d = np.asarray(x[s:s + chunk_size], dtype=np.float64) - mean
        s2 += (d * d).sum(axis=0)
    std = np.sqrt(s2 / n)
    return mean, np.where(constant_columns(lo, hi) | ~(std > 0), np.inf, std)


def inner_split(n: int, val_fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation row indices for early stopping; group-aware when ``groups`` is given."""
    if groups is not None:
        from sklearn.model_selection import GroupShuffleSplit

        tr, va = next(GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
                      .split(np.zeros(n), groups=np.asarray(groups)))
        return np.sort(tr), np.sort(va)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class TorchMLPRegressor:
    """fit/predict wrapper: standardise (on the fit rows), inner early-stopping split, train.

    ``builder(width) -> nn.Sequential``.  ``init_width``/``init_columns``: build the network
    at ``init_width`` inputs (e.g. 25,200) and keep only ``init_columns`` of its first layer
    (see :func:`restrict_inputs`), for inputs ``x`` that hold just those columns (the ones
    that vary anywhere in the data the model will see).  ``groups`` passed to ``fit`` make
    the inner validation split group-aware.  ``clip``: limit standardised values to
    [-clip, clip] (None: no limit, as upstream).
    """

    def __init__(self, builder, config: TrainConfig, seed: int = 0, device="cpu",
                 init_width: int | None = None, init_columns: np.ndarray | None = None,
                 val_fraction: float = 0.2, clip: float | None = None):
        self.builder, self.config, self.seed, self.device = builder, config, seed, device
        self.init_width, self.init_columns, self.val_fraction = init_width, init_columns, val_fraction
        self.clip = clip

    def _x(self, x, chunk_size: int = 4096):
        out = np.empty((len(x), len(self.mean_)), dtype=np.float32)
        for s in range(0, len(x), chunk_size):
            z = (np.asarray(x[s:s + chunk_size], dtype=np.float64) - self.mean_) / self.scale_
            out[s:s + chunk_size] = np.clip(z, -self.clip, self.clip) if self.clip else z
        return out

    def fit(self, x, y, groups=None):
        y = np.asarray(y, dtype=np.float64)
        if self.init_columns is not None and len(self.init_columns) != x.shape[1]:
            raise ValueError(f"{x.shape[1]} input columns but {len(self.init_columns)} init_columns")
        self.mean_, self.scale_ = column_standardiser(x)
        z = self._x(x)
        tr, va = inner_split(len(z), self.val_fraction, self.seed, groups)
        cfg = self.config
        if cfg.batch_size <= 0:     # upstream: min(256, n_train // 4)
            cfg = TrainConfig(**{**cfg.__dict__, "batch_size": max(2, min(256, len(tr) // 4))})
        seed_everything(self.seed)
        net = self.builder(self.init_width or x.shape[1])
        if self.init_columns is not None:
            net = restrict_inputs(net, self.init_columns)
        self.result_ = train_regressor(net, z[tr], y[tr], z[va], y[va], cfg, seed=self.seed,
                                       device=self.device)
        self.model_ = self.result_.model
        return self

    def predict(self, x):
        return predict(self.model_, self._x(x))
