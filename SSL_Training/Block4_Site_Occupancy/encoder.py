"""Block 4 - Site Occupancy (FTCP rows 205-304, columns 0-3): which element slot sits on each site.

Row i is the one-hot of site i's element slot (slot c = the c-th distinct element in order of
first appearance).  The fractional coordinates of the sites (rows 105-204) are context.  A
site exists where its occupancy row holds a one (so a site at (0, 0, 0) is real, and a
hidden site is still present: presence never comes from the hidden values).

Encoder (upstream's attention-over-sites family, fixed: upstream's attention ran across the
heads of one site, never across sites).  Per site: an occupancy token (Linear of the one-hot;
a hidden site gets a learned mask token instead, so its slot never enters) plus a coordinate
token (sin/cos of 2 pi k x, k = 1..4 -> MLP; periodic, and attention dot products of these
features compare sites on the torus).  2 pre-norm layers, each: self-attention across the
present sites, cross-attention from the site tokens to the coordinate tokens of all present
sites, feed-forward (``scaled_dot_product_attention`` with a key-padding mask); then
attention pooling (learned query) and the mean over present sites -> Linear 256 -> GELU ->
Dropout -> Linear = the 256-d embedding.  No site-index embedding: FTCP lists sites grouped by
element, so the index alone would give the slot of a hidden site away; without it the model
has to use the geometry.

Pretext tasks (20 % of the occupied sites hidden, at least one, re-drawn every step):

7. ``masked_occupancy`` - the element slot (4-way CE) of each hidden site, from the visible
   sites' slots and all coordinates.  Metric: accuracy vs the majority slot of SSL-train.
8. ``stoichiometry`` - the slot fractions of the whole crystal (sites per slot / sites) from
   the same masked view; the hidden sites make it non-trivial.  MSE on targets standardised
   per slot; metric: MSE / SSL-train variance per slot (the mean-fraction predictor ~1).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ftcp import layout as L
from ftcp.ssl import ClassificationTask, Field, RegressionTask, SSLBlock, TrainDefaults
from ftcp.ssl import layers as NN
from ftcp.ssl import masking as M

SLOTS = tuple(f"slot{c}" for c in range(L.MAX_ELEMENTS))


class OccupancyEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["d_model"]
        self.freqs = cfg["n_frequencies"]
        self.occupancy_embed = nn.Linear(L.MAX_ELEMENTS, d)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.coord_embed = NN.mlp(6 * self.freqs, cfg["coord_width"], d)
        self.layers = nn.ModuleList(NN.TransformerLayer(d, cfg["heads"], cfg["ff"], cfg["dropout"], cross=True)
                                    for _ in range(cfg["layers"]))
        self.norm = nn.LayerNorm(d)
        self.pool = NN.AttentionPool(d, cfg["heads"])
        self.project = NN.mlp(2 * d, cfg["project_width"], cfg["embed_dim"], cfg["dropout"])

    def forward(self, occupancy, coords, present, hidden):
        """Site states (B, L, d) and the pooled embedding (B, embed_dim)."""
        coord_tok = self.coord_embed(NN.torus_features(coords, self.freqs))
        occ_tok = self.occupancy_embed(occupancy)
        occ_tok = torch.where(hidden[..., None], self.mask_token.to(occ_tok.dtype), occ_tok)
        tok = occ_tok + coord_tok
        for layer in self.layers:
            tok = layer(tok, present, coord_tok, present)
        states = self.norm(tok)
        pooled = torch.cat([self.pool(states, present), NN.masked_mean(states, present)], dim=-1)
        return states, self.project(pooled)


class SiteOccupancyModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, e, w = cfg["d_model"], cfg["embed_dim"], cfg["head_width"]
        self.encoder = OccupancyEncoder(cfg)
        self.site_part, self.global_part = nn.Linear(d, w), nn.Linear(e, w, bias=False)
        self.occupancy_out = nn.Sequential(nn.GELU(), nn.Linear(w, L.MAX_ELEMENTS))
        self.stoichiometry_head = NN.mlp(e, w, L.MAX_ELEMENTS)

    def _encode(self, inputs):
        return self.encoder(inputs["occupancy"], inputs["coords"], inputs["present"], inputs["hidden"])

    def embed(self, inputs: dict) -> torch.Tensor:
        return self._encode(inputs)[1]

    def forward(self, inputs: dict) -> dict:
        states, emb = self._encode(inputs)
        hid = NN.gather_rows(states, inputs["hidden_index"])                     # (B, H, d)
        logits = self.occupancy_out(self.site_part(hid) + self.global_part(emb)[:, None, :])
        return {"masked_occupancy": {"logits": logits},
                "stoichiometry": {"value": self.stoichiometry_head(emb)}}


class SiteOccupancyBlock(SSLBlock):
    number = 4
    fields = (Field("occupancy", "site_occupancy", normalised=False),
              Field("coords", "site_coords", normalised=False))
    sequence_fields = ("occupancy", "coords", "present")
    defaults = TrainDefaults(lr=5e-4, batch_size=32, epochs=20, patience=6)
    model_defaults = {"d_model": 128, "heads": 4, "ff": 256, "layers": 2, "dropout": 0.1, "n_frequencies": 4,
                      "coord_width": 64, "project_width": 256, "head_width": 128, "mask_fraction": 0.2,
                      "weight_occupancy": 0.6, "weight_stoichiometry": 0.4}

    def prepare_fields(self, fields):
        occupancy = fields["occupancy"]
        return {"occupancy": (occupancy > 0.5).astype(np.float32), "coords": fields["coords"],
                "present": occupancy.max(axis=-1) > 0.5}

    def lengths(self, fields):
        present = fields["present"]
        last = present.shape[1] - np.argmax(present[:, ::-1], axis=1)
        return np.where(present.any(1), last, 1)

    def build_model(self, cfg):
        return SiteOccupancyModel(cfg)

    def build_tasks(self):
        cfg = self.cfg
        return [ClassificationTask("masked_occupancy", L.MAX_ELEMENTS, cfg["weight_occupancy"], class_names=SLOTS),
                RegressionTask("stoichiometry", cfg["weight_stoichiometry"], n_groups=L.MAX_ELEMENTS,
                               group_names=SLOTS, metric="nmse", units="fraction of sites", min_std=0.01)]

    # -- views -------------------------------------------------------------------------------
    def make_views(self, batch, gen, train):
        occupancy, present = batch["occupancy"], batch["present"]
        b, n, _ = occupancy.shape
        n_sites = present.sum(1)
        frac = self.cfg["mask_fraction"]
        count = torch.round(frac * n_sites.float()).long().clamp_min(1)
        max_hidden = max(1, math.ceil(frac * n))                        # host number: static shapes
        hidden, hid_idx, hid_ok = M.random_subset(present, count, gen, max_hidden)
        slot = occupancy.argmax(-1)                                      # (B, L)
        label = torch.where(hid_ok, slot.gather(1, hid_idx), torch.full_like(hid_idx, -1))
        fractions = occupancy.sum(1) / n_sites.clamp_min(1)[:, None].to(occupancy.dtype)
        inputs = {"occupancy": occupancy * (~hidden)[..., None].to(occupancy.dtype), "coords": batch["coords"],
                  "present": present, "hidden": hidden, "hidden_index": hid_idx}
        targets = {"masked_occupancy": {"label": label},
                   "stoichiometry": {"value": fractions,
                                     "group": torch.arange(L.MAX_ELEMENTS, device=occupancy.device).expand(b, -1)}}
        return inputs, targets

    def clean_inputs(self, batch):
        present = batch["present"]
        return {"occupancy": batch["occupancy"], "coords": batch["coords"], "present": present,
                "hidden": torch.zeros_like(present)}


BLOCK_CLASS = SiteOccupancyBlock
