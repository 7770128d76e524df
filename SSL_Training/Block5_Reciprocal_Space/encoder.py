"""Block 5 - Reciprocal Space (FTCP row 305, columns 4-62): |g_hkl| of the 59 k-points, in 1/Angstrom.

Upstream read columns 0-58 (four structural zeros and the first 55 distances, dropping the
last four); ``ftcp.layout.KPOINT_DISTANCES`` is columns 4-62.  The 59 points are the first
ones inside a sphere in the order (|h|+|k|+|l|, -h, -k, -l), so position i is (mostly) the
same Miller index across crystals, but the row is not sorted by distance.

Encoder (upstream's Fourier-embedded transformer, fixed): each distance -> [k / scale,
sin and cos of 2 pi f k for ``n_frequencies`` geometric frequencies] -> Linear -> 64-d token
(a hidden distance gets a learned mask token instead: its value never enters) + a learned
embedding of its position; 2 pre-norm transformer layers (4 heads, FF 256); attention
pooling and the mean over the 59 tokens -> Linear 256 -> GELU -> Dropout -> Linear = the
256-d embedding.  Both heads read the pooled embedding.

Pretext tasks:

9. ``masked_kdistance`` - 15 % of the 59 distances (9) are hidden (re-drawn every step);
   predict each from the rest.  MSE on targets standardised per position; metric: MSE /
   SSL-train variance of that position (the per-position mean predictor scores ~1).
10. ``lattice_from_spectrum`` - reciprocal -> real mapping: the six cell parameters (ln a,
   ln b, ln c in ln Angstrom, alpha, beta, gamma in degrees) from the same masked spectrum,
   standardised per parameter; metric: per-parameter normalised MSE (mean predictor ~1).
   The distances are a function of the lattice (|g|^2 = h G* h^T), so this is learnable, but
   the model has to work out which Miller index sits at each position and invert the metric.
   In training a view hides nothing with probability ``p_clean_view`` (then only task 10 is
   scored), so the encoder also sees complete spectra - what it embeds at export.  Evaluation
   always hides 9 (fixed masks).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ftcp import layout as L
from ftcp.ssl import Field, RegressionTask, SSLBlock, TrainDefaults
from ftcp.ssl import layers as NN
from ftcp.ssl import masking as M

PARAMETERS = ("a", "b", "c", "alpha", "beta", "gamma")


def cell_targets(params: torch.Tensor) -> torch.Tensor:
    """(B, 6) a, b, c, alpha, beta, gamma -> ln a, ln b, ln c, alpha, beta, gamma."""
    return torch.cat([params[:, :3].clamp_min(1e-3).log(), params[:, 3:]], dim=1)


class SpectrumEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["d_model"]
        self.register_buffer("freqs", torch.tensor(np.geomspace(cfg["min_frequency"], cfg["max_frequency"],
                                                                cfg["n_frequencies"]), dtype=torch.float32))
        self.value_embed = nn.Linear(1 + 2 * cfg["n_frequencies"], d)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.position = nn.Parameter(torch.randn(L.N_KPOINTS, d) * 0.02)
        self.layers = nn.ModuleList(NN.TransformerLayer(d, cfg["heads"], cfg["ff"], cfg["dropout"])
                                    for _ in range(cfg["layers"]))
        self.norm = nn.LayerNorm(d)
        self.pool = NN.AttentionPool(d, cfg["heads"])
        self.project = NN.mlp(2 * d, cfg["project_width"], cfg["embed_dim"], cfg["dropout"])

    def fourier(self, k: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        phase = (2 * math.pi) * k[..., None] * self.freqs
        return torch.cat([(k / scale)[..., None], phase.sin(), phase.cos()], dim=-1)

    def forward(self, k, hidden, scale):
        """k (B, 59) in 1/Angstrom, hidden (B, 59) bool -> token states (B, 59, d), embedding (B, e)."""
        tok = self.value_embed(self.fourier(k, scale))
        tok = torch.where(hidden[..., None], self.mask_token.to(tok.dtype), tok) + self.position
        for layer in self.layers:
            tok = layer(tok, None)
        states = self.norm(tok)
        pooled = torch.cat([self.pool(states, None), states.mean(1)], dim=-1)
        return states, self.project(pooled)


class ReciprocalSpaceModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, e, w = cfg["d_model"], cfg["embed_dim"], cfg["head_width"]
        self.encoder = SpectrumEncoder(cfg)
        self.k_site, self.k_global = nn.Linear(d, w), nn.Linear(e, w, bias=False)
        self.k_out = nn.Sequential(nn.GELU(), nn.Linear(w, 1))
        self.lattice_head = NN.mlp(e, w, 6)

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.encoder(inputs["k"], inputs["hidden"], inputs["scale"])[1]

    def forward(self, inputs: dict) -> dict:
        states, emb = self.encoder(inputs["k"], inputs["hidden"], inputs["scale"])
        hid = NN.gather_rows(states, inputs["hidden_index"])                      # (B, H, d)
        k_pred = self.k_out(self.k_site(hid) + self.k_global(emb)[:, None, :])[..., 0]
        return {"masked_kdistance": {"value": k_pred},
                "lattice_from_spectrum": {"value": self.lattice_head(emb)}}


class ReciprocalSpaceBlock(SSLBlock):
    number = 5
    fields = (Field("k", "kpoint_distances", normalised=False),
              Field("lattice_raw", "lattice", normalised=False))
    defaults = TrainDefaults(lr=1e-3, batch_size=64, epochs=15, patience=15)
    model_defaults = {"d_model": 64, "heads": 4, "ff": 256, "layers": 2, "dropout": 0.1, "n_frequencies": 16,
                      "min_frequency": 0.5, "max_frequency": 32.0, "project_width": 256, "head_width": 128,
                      "mask_fraction": 0.15, "p_clean_view": 0.2,
                      "weight_kdistance": 0.5, "weight_lattice": 0.5}

    def prepare_fields(self, fields):
        return {"k": fields["k"].astype(np.float32),
                "params": fields["lattice_raw"].reshape(-1, 6).astype(np.float32)}

    def fit_stats(self, train):
        return {"k_scale": train["k"].double().std().clamp_min(1e-6).float().reshape(1)}

    def build_model(self, cfg):
        return ReciprocalSpaceModel(cfg)

    def build_tasks(self):
        cfg = self.cfg
        return [RegressionTask("masked_kdistance", cfg["weight_kdistance"], n_groups=L.N_KPOINTS,
                               group_names=[f"k{i}" for i in range(L.N_KPOINTS)], metric="nmse", units="1/Angstrom",
                               min_std=1e-3),
                RegressionTask("lattice_from_spectrum", cfg["weight_lattice"], n_groups=6, group_names=PARAMETERS,
                               metric="nmse", units="ln(Angstrom) | degrees")]

    @property
    def n_hidden(self) -> int:
        return max(1, int(round(self.cfg["mask_fraction"] * L.N_KPOINTS)))

    # -- views -------------------------------------------------------------------------------
    def make_views(self, batch, gen, train):
        k = batch["k"]
        b, n = k.shape
        valid = k > 0
        h = self.n_hidden
        count = torch.full((b,), h, dtype=torch.long, device=k.device)
        hidden, hid_idx, hid_ok = M.random_subset(valid, count, gen, h)
        if train:
            masked = ~M.bernoulli((b,), self.cfg["p_clean_view"], gen, k.device)
            hidden = hidden & masked[:, None]
            hid_ok = hid_ok & masked[:, None]
        inputs = {"k": k * (~hidden).to(k.dtype), "hidden": hidden, "hidden_index": hid_idx,
                  "scale": self.stats["k_scale"]}
        groups = torch.arange(6, device=k.device).expand(b, -1)
        targets = {"masked_kdistance": {"value": k.gather(1, hid_idx), "group": hid_idx, "valid": hid_ok},
                   "lattice_from_spectrum": {"value": cell_targets(batch["params"]), "group": groups}}
        return inputs, targets

    def clean_inputs(self, batch):
        k = batch["k"]
        return {"k": k, "hidden": torch.zeros_like(k, dtype=torch.bool), "scale": self.stats["k_scale"]}


BLOCK_CLASS = ReciprocalSpaceBlock
