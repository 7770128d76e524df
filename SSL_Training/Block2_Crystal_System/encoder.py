"""Block 2 - Crystal System (FTCP rows 103-104): the unit cell a, b, c (Angstrom), alpha, beta, gamma (deg).

Inputs, built AFTER masking (so nothing derived from a hidden parameter reaches the encoder):
the six min-max normalised parameters, the six standardised ones (ln length, angle), the
mask bits, and engineered cell features - log length ratios, soft "equal lengths" / "equal
angles" / "angle is 60, 90, 120 deg" indicators, cosines, and the standardised log volume -
each multiplied by the visibility of every parameter it uses (the volume needs all six).

Encoder (upstream's residual MLP family): LayerNorm -> Linear 64 + ReLU + Dropout ->
Linear 128 + BN + ReLU + Dropout -> Linear 256 + BN + ReLU + Dropout, plus a residual
Linear(64 -> 256), -> Linear + BatchNorm = the 256-d embedding.

Pretext tasks:

3. ``masked_lattice_parameter`` - one of the six parameters is hidden; predict it (ln Angstrom
   for lengths, degrees for angles), MSE on targets standardised per parameter.  Metric: the
   mean squared error relative to the parameter's SSL-train variance (the per-parameter mean
   predictor scores about 1).  In training a view hides nothing with probability
   ``p_clean_view`` (then only task 4 is scored), so the encoder also sees complete cells -
   what it embeds at export; evaluation always hides one parameter (fixed masks).
4. ``crystal_system`` - 7-way classification (triclinic ... cubic) from the same masked view.
   The class comes from the crystal's symmetry (spglib on the structure recovered from FTCP,
   ``ftcp.ssl.targets``, symprec 0.1 A), which the cell metric alone only partly reveals.
   Crystals whose symmetry could not be determined are left out of the loss and metrics.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ftcp.ssl import ClassificationTask, Field, RegressionTask, SSLBlock, TrainDefaults
from ftcp.ssl import masking as M
from ftcp.ssl import targets as T

PARAMETERS = ("a", "b", "c", "alpha", "beta", "gamma")
_PAIRS = ((0, 1), (1, 2), (0, 2))


def cell_targets(params: torch.Tensor) -> torch.Tensor:
    """(B, 6) a, b, c, alpha, beta, gamma -> ln a, ln b, ln c, alpha, beta, gamma."""
    return torch.cat([params[:, :3].clamp_min(1e-3).log(), params[:, 3:]], dim=1)


def log_volume(params: torch.Tensor) -> torch.Tensor:
    cos = torch.cos(torch.deg2rad(params[:, 3:]))
    g = 1 - (cos ** 2).sum(1) + 2 * cos.prod(1)
    return params[:, :3].clamp_min(1e-3).log().sum(1) + 0.5 * g.clamp_min(1e-8).log()


class CellEncoder(nn.Module):
    def __init__(self, cfg: dict, n_features: int):
        super().__init__()
        d, p = cfg["embed_dim"], cfg["dropout"]
        self.norm = nn.LayerNorm(n_features)
        self.stem = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(inplace=True), nn.Dropout(p))
        self.body = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Dropout(p),
                                  nn.Linear(128, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
                                  nn.Dropout(cfg["dropout_last"]))
        self.residual = nn.Linear(64, 256)
        self.out = nn.Sequential(nn.Linear(256, d), nn.BatchNorm1d(d))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.stem(self.norm(features))
        return self.out(self.body(h) + self.residual(h))


class CrystalSystemModel(nn.Module):
    def __init__(self, cfg: dict, n_features: int):
        super().__init__()
        d, w = cfg["embed_dim"], cfg["head_width"]
        self.encoder = CellEncoder(cfg, n_features)
        self.parameter_head = nn.Sequential(nn.Linear(d, w), nn.ReLU(inplace=True), nn.Linear(w, 6))
        self.system_head = nn.Sequential(nn.Linear(d, w), nn.ReLU(inplace=True), nn.Linear(w, len(T.CRYSTAL_SYSTEMS)))

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.encoder(inputs["features"])

    def forward(self, inputs: dict) -> dict:
        emb = self.encoder(inputs["features"])
        all_params = self.parameter_head(emb)                          # a prediction for each of the six
        hidden = all_params.gather(1, inputs["hidden_index"][:, None])[:, 0]
        return {"masked_lattice_parameter": {"value": hidden},
                "crystal_system": {"logits": self.system_head(emb)}}


class CrystalSystemBlock(SSLBlock):
    number = 2
    fields = (Field("lattice", "lattice"), Field("lattice_raw", "lattice", normalised=False))
    defaults = TrainDefaults(lr=1e-3, batch_size=512, epochs=60, patience=15)
    model_defaults = {"dropout": 0.2, "dropout_last": 0.15, "head_width": 128, "p_clean_view": 0.2,
                      "weight_parameter": 0.6, "weight_system": 0.4}
    n_features = 44

    def extra_fields(self, data):
        codes, _ = T.load_crystal_systems(data.ids, data.search_dirs())
        return {"crystal_system": codes}

    def inference_fields(self, data):
        # the crystal system is a pretext target, never an encoder input: new crystals get "unknown"
        return {"crystal_system": np.full(len(data.ids), T.UNKNOWN, dtype=np.int64)}

    def prepare_fields(self, fields):
        return {"lattice": fields["lattice"].reshape(-1, 6), "params": fields["lattice_raw"].reshape(-1, 6),
                "crystal_system": fields["crystal_system"]}

    def fit_stats(self, train):
        values = torch.cat([cell_targets(train["params"]), log_volume(train["params"])[:, None]], dim=1).double()
        return {"mean": values.mean(0).float(), "std": values.std(0).clamp_min(1e-6).float()}

    def build_model(self, cfg):
        return CrystalSystemModel(cfg, self.n_features)

    def build_tasks(self):
        return [RegressionTask("masked_lattice_parameter", self.cfg["weight_parameter"], n_groups=6,
                               group_names=PARAMETERS, metric="nmse", units="ln(Angstrom) | degrees"),
                ClassificationTask("crystal_system", len(T.CRYSTAL_SYSTEMS), self.cfg["weight_system"],
                                   class_names=T.CRYSTAL_SYSTEMS)]

    # -- views -------------------------------------------------------------------------------
    def features(self, params, normalised, visible):
        """Encoder input from the parameters where ``visible`` (B, 6) is 1; hidden ones never enter."""
        mean, std = self.stats["mean"], self.stats["std"]
        vis = visible.to(params.dtype)
        params = params * vis                                   # hidden values are gone from here on
        t = cell_targets(params.clamp_min(1e-3) * vis + (1 - vis))   # ln(1) = 0 where hidden
        t = t * vis
        standard = ((t - mean[:6]) / std[:6]).clamp(-10, 10) * vis
        pair_vis = torch.stack([vis[:, i] * vis[:, j] for i, j in _PAIRS], 1)
        angle_vis = torch.stack([vis[:, 3 + i] * vis[:, 3 + j] for i, j in _PAIRS], 1)
        log_len, ang = t[:, :3], params[:, 3:]
        len_diff = torch.stack([log_len[:, i] - log_len[:, j] for i, j in _PAIRS], 1) * pair_vis
        ang_diff = torch.stack([ang[:, i] - ang[:, j] for i, j in _PAIRS], 1) * angle_vis
        av = vis[:, 3:]
        all_vis = vis.prod(1, keepdim=True)
        logv = ((log_volume(params * vis + (1 - vis) * 90.0) - mean[6]) / std[6]).clamp(-10, 10)[:, None] * all_vis
        feats = [normalised * vis, standard, 1 - vis,
                 len_diff.clamp(-3, 3), torch.exp(-len_diff.abs() / 0.01) * pair_vis,
                 torch.cos(torch.deg2rad(ang)) * av,
                 ang_diff / 30.0, torch.exp(-ang_diff.abs() / 0.5) * angle_vis]
        for target_angle in (60.0, 90.0, 120.0):
            feats.append(torch.exp(-(ang - target_angle).abs() / 0.5) * av)
        feats += [logv, all_vis]
        out = torch.cat(feats, dim=1)
        assert out.shape[1] == self.n_features
        return out

    def make_views(self, batch, gen, train):
        params, normalised = batch["params"], batch["lattice"]
        b = params.shape[0]
        hide, _ = M.pick_one(torch.ones(b, 6, dtype=torch.bool, device=params.device), gen)
        if train:
            has_hidden = ~M.bernoulli((b,), self.cfg["p_clean_view"], gen, params.device)
        else:
            has_hidden = torch.ones(b, dtype=torch.bool, device=params.device)
        hidden = (torch.arange(6, device=params.device)[None, :] == hide[:, None]) & has_hidden[:, None]
        inputs = {"features": self.features(params, normalised, ~hidden), "hidden_index": hide}
        targets = {"masked_lattice_parameter": {"value": cell_targets(params).gather(1, hide[:, None])[:, 0],
                                                "group": hide, "valid": has_hidden},
                   "crystal_system": {"label": batch["crystal_system"]}}
        return inputs, targets

    def clean_inputs(self, batch):
        params = batch["params"]
        visible = torch.ones_like(params, dtype=torch.bool)
        return {"features": self.features(params, batch["lattice"], visible)}


BLOCK_CLASS = CrystalSystemBlock
