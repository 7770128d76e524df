"""Block 3 - Atomic Sites (FTCP rows 105-204, columns 0-2): fractional coordinates of up to 100 sites.

Which sites exist comes from the site-occupancy rows (205-304): a site at (0, 0, 0) is a real
site (upstream dropped them).  The unit cell (rows 103-104) is context: the encoder gets the
six cell parameters (standardised) because the pair-distance targets are Cartesian.

Encoder (upstream's set-transformer family, fixed and vectorised): each site's coordinates on
the torus (sin/cos of 2 pi k x, k = 1..4, so x and x + 1 are the same input) -> MLP ->
128-d token; hidden sites get a learned mask token instead (their coordinates never enter);
plus a learned site-index embedding (FTCP keeps the structure's site order) and the cell
embedding; 3 pre-norm transformer layers (8 heads, scaled_dot_product_attention with a key
padding mask over absent sites); attention pooling with a learned query over present sites ->
Linear 256 -> ReLU -> Dropout -> Linear = the 256-d embedding.  Both heads also read the
pooled embedding, so the exported vector is trained, not only the per-site states.

Pretext tasks (15 % of the occupied sites hidden, at least one, re-drawn every step):

5. ``masked_coordinates`` - predict each hidden site's fractional coordinates as points on
   three circles; loss ``1 - cos 2 pi (x_pred - x)`` averaged over the axes (periodic: a site
   at 0.99 is close to one at 0.01; a random guess scores 1).  Metric: that periodic error (the RMS minimum-image
   distance on the unit torus and the share of sites within 0.05 are reported beside it).
6. ``pair_distances`` - the minimum-image Cartesian distance (Angstrom) between each hidden
   site and up to ``n_partners`` random other sites (visible or hidden).  Minimum images are
   taken in a reduced basis of the lattice (exact for the skewed primitive cells found in MP,
   where the raw basis would need far more images).  Pairs of two visible sites are never
   scored (their distance is a fixed function of the input).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ftcp import layout as L
from ftcp.ssl import Field, PeriodicCoordinateTask, RegressionTask, SSLBlock, TrainDefaults
from ftcp.ssl import losses as LS
from ftcp.ssl import masking as M


def cell_features(params: torch.Tensor) -> torch.Tensor:
    """(..., 6) a, b, c, alpha, beta, gamma -> ln lengths and angles (to be standardised)."""
    return torch.cat([params[..., :3].clamp_min(1e-3).log(), params[..., 3:]], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, key_mask):
        x = x + self.drop(self.attn(self.norm1(x), key_mask))
        return x + self.drop(self.ff(self.norm2(x)))


class AttentionPool(nn.Module):
    """A learned query attends over the present sites (multi-head)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.kv = nn.Linear(d, 2 * d)
        self.q = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x, key_mask):
        b, n, d = x.shape
        h = self.heads
        k, v = self.kv(x).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        q = self.q(self.query).view(1, 1, h, d // h).transpose(1, 2).expand(b, -1, -1, -1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(b, d))


class SiteEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["d_model"]
        self.freqs = cfg["n_frequencies"]
        self.coord_embed = nn.Sequential(nn.Linear(6 * self.freqs, 64), nn.ReLU(inplace=True), nn.Linear(64, d))
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.site_index = nn.Embedding(L.MAX_SITES, d)
        nn.init.normal_(self.site_index.weight, std=0.02)
        self.cell_embed = nn.Sequential(nn.Linear(6, 64), nn.ReLU(inplace=True), nn.Linear(64, d))
        self.layers = nn.ModuleList(TransformerLayer(d, cfg["heads"], cfg["ff"], cfg["dropout"])
                                    for _ in range(cfg["layers"]))
        self.norm = nn.LayerNorm(d)
        self.pool = AttentionPool(d, cfg["pool_heads"])
        self.project = nn.Sequential(nn.Linear(d, 256), nn.ReLU(inplace=True), nn.Dropout(cfg["dropout"]),
                                     nn.Linear(256, cfg["embed_dim"]))

    def torus_features(self, frac):
        k = torch.arange(1, self.freqs + 1, device=frac.device, dtype=frac.dtype)
        phase = (2 * math.pi) * frac[..., None] * k                    # (B, L, 3, F)
        return torch.cat([phase.sin(), phase.cos()], dim=-1).flatten(-2)

    def forward(self, coords, present, hidden, cell):
        """Per-site states (B, L, d) and the pooled embedding (B, embed_dim)."""
        b, n, _ = coords.shape
        tok = self.coord_embed(self.torus_features(coords))
        tok = torch.where(hidden[..., None], self.mask_token.to(tok.dtype), tok)
        tok = tok + self.site_index.weight[:n] + self.cell_embed(cell)[:, None, :]
        for layer in self.layers:
            tok = layer(tok, present)
        states = self.norm(tok)
        return states, self.project(self.pool(states, present))


class AtomicSitesModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, e, w = cfg["d_model"], cfg["embed_dim"], cfg["head_width"]
        self.encoder = SiteEncoder(cfg)
        self.coord_head = nn.Sequential(nn.Linear(d + e, w), nn.GELU(), nn.Linear(w, 6))
        self.pair_site = nn.Linear(d, w)
        self.pair_partner, self.pair_global = nn.Linear(d, w, bias=False), nn.Linear(e, w, bias=False)
        self.pair_out = nn.Sequential(nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, 1))

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.encoder(inputs["coords"], inputs["present"], inputs["hidden"], inputs["cell"])[1]

    def forward(self, inputs: dict) -> dict:
        states, emb = self.encoder(inputs["coords"], inputs["present"], inputs["hidden"], inputs["cell"])
        d = states.shape[-1]
        hid = states.gather(1, inputs["hidden_index"][..., None].expand(-1, -1, d))      # (B, H, d)
        par = states.gather(1, inputs["partner_index"][..., None].expand(-1, -1, d))     # (B, P, d)
        h = hid.shape[1]
        coord_in = torch.cat([hid, emb[:, None, :].expand(-1, h, -1).to(hid.dtype)], dim=-1)
        vectors = self.coord_head(coord_in).view(*hid.shape[:2], 3, 2)
        pair = (self.pair_site(hid)[:, :, None, :] + self.pair_partner(par)[:, None, :, :]
                + self.pair_global(emb)[:, None, None, :])
        return {"masked_coordinates": {"vectors": vectors},
                "pair_distances": {"value": self.pair_out(pair)[..., 0]}}


class AtomicSitesBlock(SSLBlock):
    number = 3
    fields = (Field("coords", "site_coords", normalised=False),
              Field("occupancy", "site_occupancy", normalised=False),
              Field("lattice_raw", "lattice", normalised=False))
    sequence_fields = ("coords", "present")
    defaults = TrainDefaults(lr=1e-3, batch_size=32, epochs=20, patience=6)
    model_defaults = {"d_model": 128, "heads": 8, "ff": 256, "layers": 3, "dropout": 0.1, "pool_heads": 4,
                      "n_frequencies": 4, "head_width": 128, "mask_fraction": 0.15, "n_partners": 16,
                      "weight_coordinates": 0.6, "weight_distances": 0.4}

    def prepare_fields(self, fields):
        present = fields["occupancy"].max(axis=-1) > 0.5            # occupancy rows, not coordinates
        params = fields["lattice_raw"].reshape(-1, 6).astype(np.float64)
        matrix = LS.lattice_matrix(params[:, :3], params[:, 3:])
        reduced = LS.reduce_lattices(matrix)
        return {"coords": fields["coords"], "present": present, "params": params.astype(np.float32),
                "matrix": matrix.astype(np.float32), "reduced": reduced.astype(np.float32),
                "reduced_inv": np.linalg.inv(reduced).astype(np.float32)}

    def lengths(self, fields):
        present = fields["present"]
        last = present.shape[1] - np.argmax(present[:, ::-1], axis=1)
        return np.where(present.any(1), last, 1)

    def fit_stats(self, train):
        cell = cell_features(train["params"]).double()
        return {"cell_mean": cell.mean(0).float(), "cell_std": cell.std(0).clamp_min(1e-6).float()}

    def build_model(self, cfg):
        return AtomicSitesModel(cfg)

    def build_tasks(self):
        return [PeriodicCoordinateTask("masked_coordinates", self.cfg["weight_coordinates"]),
                RegressionTask("pair_distances", self.cfg["weight_distances"], metric="rmse", units="Angstrom")]

    # -- views -------------------------------------------------------------------------------
    def _cell(self, batch):
        return ((cell_features(batch["params"]) - self.stats["cell_mean"]) / self.stats["cell_std"]).clamp(-10, 10)

    def make_views(self, batch, gen, train):
        coords, present = batch["coords"], batch["present"]
        b, n, _ = coords.shape
        n_sites = present.sum(1)
        frac = self.cfg["mask_fraction"]
        count = torch.round(frac * n_sites.float()).long().clamp_min(1)
        max_hidden = max(1, math.ceil(frac * n))                       # host number: static shapes
        hidden, hid_idx, hid_ok = M.random_subset(present, count, gen, max_hidden)
        n_partners = min(self.cfg["n_partners"], n)
        par_idx = M.random_order(present, gen)[:, :n_partners]
        par_ok = torch.arange(n_partners, device=coords.device)[None, :] < n_sites[:, None]
        hid_xyz = coords.gather(1, hid_idx[..., None].expand(-1, -1, 3))
        par_xyz = coords.gather(1, par_idx[..., None].expand(-1, -1, 3))
        pair_ok = hid_ok[:, :, None] & par_ok[:, None, :] & (hid_idx[:, :, None] != par_idx[:, None, :])
        distance = LS.min_image_distance(hid_xyz[:, :, None, :].expand(-1, -1, n_partners, -1),
                                         par_xyz[:, None, :, :].expand(-1, max_hidden, -1, -1),
                                         batch["matrix"], batch["reduced"], batch["reduced_inv"])
        inputs = {"coords": coords * (~hidden)[..., None].to(coords.dtype), "present": present, "hidden": hidden,
                  "cell": self._cell(batch), "hidden_index": hid_idx, "partner_index": par_idx}
        targets = {"masked_coordinates": {"frac": hid_xyz, "valid": hid_ok},
                   "pair_distances": {"value": distance, "valid": pair_ok}}
        return inputs, targets

    def clean_inputs(self, batch):
        return {"coords": batch["coords"], "present": batch["present"],
                "hidden": torch.zeros_like(batch["present"]), "cell": self._cell(batch)}


BLOCK_CLASS = AtomicSitesBlock
