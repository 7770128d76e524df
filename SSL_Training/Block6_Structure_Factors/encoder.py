"""Block 6 - Structure Factors (FTCP rows 306-397, all 63 columns).

* Real part, columns 0-3: the 92-d CGCNN property vector (binary: one bin per property group)
  of each element slot.
* Reciprocal part, columns 4-62: the 92 x 59 map ``F = P[:, site slot] @ (pi hkl . r)`` (the
  reference's linear phase): for every property and k-point, a sum over the sites whose
  element has that property.  Values are large and signed (|F| up to ~500 on mp_36k, 78 %
  zeros), so the encoder does not see the row-min-max normalised values (they squash the
  binary real part to 0.5 +- 0.001): the map is divided by its own RMS over the visible
  entries (softly floored at 0.1 x the SSL-train median, so a map whose visible part is ~0
  cannot blow up its hidden part), and the log of that scale (standardised on SSL-train) is a
  separate input.

Encoder (upstream's CNN + real-space branch family, batched, no per-sample loops), 768 =
3 x 256:

* reciprocal branch: a 2-D CNN over the map (channels: the scaled values, the column-visible
  flag, and the four slots' property bits broadcast along k, so a filter can relate a row of F
  to the slots that have that property) - 3 x [Conv 3x3, GroupNorm, GELU], each halving the
  property axis (92 -> 12) and keeping all 59 k-points - then one token per k-point: the
  column's CNN features + a lossless linear embedding of its own 92 values + a learned
  k-position embedding + the scale embedding -> 1 transformer layer over the 59 columns ->
  attention pooling + mean -> MLP = ``reciprocal`` (256);
* real branch: one token per present element slot (Linear of its 92 bits, a learned mask
  token where the slot is hidden, + a slot-index embedding) -> 1 transformer layer over the
  slots (key-padding mask) -> pooling -> MLP = ``real`` (256);
* interaction branch: one token per property row p (its reciprocal row F[p, :], which slots
  have property p, which slot is hidden) + a row-position embedding -> 1 layer of
  self-attention over the 92 rows and cross-attention to the slot tokens -> pooling -> MLP =
  ``interaction`` (256).  (Upstream's "cross-space attention" had a single key, i.e. it was a
  linear map.)

Pretext tasks (one masked view for 11 and 12, two augmented views for 13, all three encoded
in one batched pass):

11. ``masked_structure_factors`` - 8 of the 59 reciprocal columns are hidden (zeroed, flagged);
    predict each hidden column's 92 values (in the crystal's visible-RMS units): the head
    predicts the slots' waves at that k-point and applies them to the visible property bits
    (F[:, k] = sum over slots of P[:, slot] w[slot, k]) plus a free residual; MSE on
    targets standardised per k-point; metric: MSE / SSL-train variance (mean predictor ~1).
12. ``real_from_reciprocal`` - one present element slot's 92-d property vector is hidden
    (mask token; zeroed and flagged in the row tokens) and recovered, one value per property
    row, from the reciprocal map and the other slots; MSE on targets
    standardised per property (standard deviation floored at 0.05 for rare bins); metric:
    MSE / SSL-train variance per property (per-property mean ~1).
13. ``augmentation_consistency`` - Barlow Twins (projector 512-512-512, gathered across ranks)
    between two views of the clean input, each with multiplicative noise (sigma 2 %) on the
    map and every k-column dropped with probability 0.3 (upstream's magnitudes); metric: view
    retrieval among 256 vs chance.

Where the data root is a region pack without the 92 x 59 map, the map is rebuilt from the
packed real-space regions (``ftcp.ssl.records``): those five regions are listed in ``fields``
only for that purpose (``record_*``) and dropped after loading; the encoder never sees them.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ftcp import layout as L
from ftcp.ssl import BarlowTwinsTask, Field, RegressionTask, SSLBlock, TrainDefaults
from ftcp.ssl import layers as NN
from ftcp.ssl import masking as M
from ftcp.ssl import records as R

N_P, N_K, N_SLOTS = L.N_PROPERTIES, L.N_KPOINTS, L.MAX_ELEMENTS


def visible_scale(sf: torch.Tensor, column_visible: torch.Tensor, floor) -> torch.Tensor:
    """RMS of the visible entries of each map (B, 92, 59) -> (B,), softly floored:
    sqrt(rms^2 + floor^2), so a map whose visible part is (almost) zero does not blow up the
    scaled values of its hidden part."""
    vis = column_visible.to(sf.dtype)[:, None, :]
    n = (vis.sum((1, 2)) * N_P).clamp_min(1)
    return ((sf * vis).pow(2).sum((1, 2)) / n + floor ** 2).sqrt()


class ConvBlock(nn.Sequential):
    def __init__(self, c_in, c_out, stride):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(4, c_out), nn.GELU())


class StructureFactorEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, e, heads, ff, p = cfg["d_model"], cfg["embed_dim"], cfg["heads"], cfg["ff"], cfg["dropout"]
        if e % 3:
            raise ValueError(f"Block 6's embedding is three equal parts (real, reciprocal, interaction); {e} is not")
        part, w = e // 3, cfg["project_width"]
        # reciprocal: CNN over the map -> one token per k-point
        c1, c2, c3 = cfg["conv_channels"]
        self.cnn = nn.Sequential(ConvBlock(2 + N_SLOTS, c1, (2, 1)), ConvBlock(c1, c2, (2, 1)),
                                 ConvBlock(c2, c3, (2, 1)))
        rows = math.ceil(math.ceil(math.ceil(N_P / 2) / 2) / 2)          # 92 -> 46 -> 23 -> 12 property rows
        self.column_embed = nn.Linear(c3 * rows, d)
        self.column_direct = nn.Linear(N_P + 1, d)     # lossless path: the column's own 92 values + visible flag
        self.k_position = nn.Parameter(torch.randn(N_K, d) * 0.02)
        self.scale_embed = nn.Linear(1, d)
        self.column_layer = NN.TransformerLayer(d, heads, ff, p)
        self.column_norm = nn.LayerNorm(d)
        self.column_pool = NN.AttentionPool(d, heads)
        self.recip_proj = NN.mlp(2 * d, w, part, p)
        # real: one token per present element slot
        self.slot_embed = nn.Linear(N_P, d)
        self.slot_index = nn.Parameter(torch.randn(N_SLOTS, d) * 0.02)
        self.slot_mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.slot_layer = NN.TransformerLayer(d, heads, ff, p)
        self.slot_norm = nn.LayerNorm(d)
        self.real_pool = NN.AttentionPool(d, heads)
        self.real_proj = NN.mlp(2 * d, w, part, p)
        # interaction: one token per property row = its reciprocal row F[p, :] + which slots have property p;
        # self-attention over the rows, cross-attention to the slot tokens
        self.row_embed = nn.Linear(N_K + 2 * N_SLOTS, d)
        self.row_position = nn.Parameter(torch.randn(N_P, d) * 0.02)
        self.row_layer = NN.TransformerLayer(d, heads, ff, p, cross=True)
        self.row_norm = nn.LayerNorm(d)
        self.inter_pool = NN.AttentionPool(d, heads)
        self.inter_proj = NN.mlp(2 * d, w, part, p)

    def forward(self, x: dict):
        """Inputs -> column states (B, 59, d), slot states (B, 4, d), row states (B, 92, d), embedding (B, e)."""
        sf, col_vis, props, hidden = x["sf"], x["column_visible"], x["properties"], x["slot_hidden"]
        b = sf.shape[0]
        vis = col_vis.to(sf.dtype)
        scale = self.scale_embed(x["log_scale"][:, None])[:, None, :]
        slot_bits = props.permute(0, 2, 1)[..., None].expand(-1, -1, -1, N_K)            # (B, 4, 92, 59)
        image = torch.cat([sf[:, None], vis[:, None, None, :].expand(-1, 1, N_P, -1), slot_bits], 1)
        fmap = self.cnn(image)                                                           # (B, C, 12, 59)
        cols = self.column_embed(fmap.permute(0, 3, 1, 2).reshape(b, N_K, -1))
        cols = cols + self.column_direct(torch.cat([sf.transpose(1, 2), vis[..., None]], -1)) + self.k_position + scale
        cols = self.column_norm(self.column_layer(cols, None))
        recip = self.recip_proj(torch.cat([self.column_pool(cols, None), cols.mean(1)], -1))

        present = x["slot_present"]
        slots = self.slot_embed(props.transpose(1, 2))                                   # (B, 4, d)
        slots = torch.where(hidden[..., None], self.slot_mask_token.to(slots.dtype), slots) + self.slot_index
        slots = self.slot_norm(self.slot_layer(slots, present))
        real = self.real_proj(torch.cat([self.real_pool(slots, present), NN.masked_mean(slots, present)], -1))

        flags = hidden[:, None, :].to(sf.dtype).expand(-1, N_P, -1)
        rows = self.row_embed(torch.cat([sf, props, flags], -1)) + self.row_position + scale
        rows = self.row_norm(self.row_layer(rows, None, slots, present))
        interaction = self.inter_proj(torch.cat([self.inter_pool(rows, None), rows.mean(1)], -1))
        return cols, slots, rows, torch.cat([real, recip, interaction], -1)


class StructureFactorModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d, e, w = cfg["d_model"], cfg["embed_dim"], cfg["head_width"]
        self.encoder = StructureFactorEncoder(cfg)
        self.column_part, self.column_global = nn.Linear(d, w), nn.Linear(e, w, bias=False)
        self.column_out = nn.Sequential(nn.GELU(), nn.Linear(w, N_P + N_SLOTS))
        # the task standardises per k-point: a learned affine map per k-point
        self.column_gain = nn.Parameter(torch.ones(N_K))
        self.column_bias = nn.Parameter(torch.zeros(N_K))
        self.row_part = nn.Linear(d, w)
        self.row_slot, self.row_global = nn.Linear(d, w, bias=False), nn.Linear(e, w, bias=False)
        self.row_out = nn.Sequential(nn.GELU(), nn.Linear(w, 1))
        self.projector = NN.projector(e, cfg["projector_width"])

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.encoder(inputs)[3]

    def forward(self, inputs: dict) -> dict:
        cols, slots, rows, emb = self.encoder(inputs)
        n = inputs["hidden_columns"].shape[0]
        emb_m = emb[:n]
        # 11: F[:, k] = sum over slots of P[:, slot] * wave[slot, k] -> predict the slots' waves at each hidden
        # k-point, apply them to the visible property bits, plus a free residual
        idx = inputs["hidden_columns"]
        out = self.column_out(self.column_part(NN.gather_rows(cols[:n], idx)) + self.column_global(emb_m)[:, None, :])
        waves, residual = out[..., N_P:], out[..., :N_P]
        sf_scaled = torch.einsum("bps,bks->bkp", inputs["properties"][:n].to(waves.dtype), waves) + residual
        sf_pred = sf_scaled * self.column_gain[idx][..., None] + self.column_bias[idx][..., None]
        # 12: one value per property row, from that row's state, the hidden slot's state and the embedding
        slot = NN.gather_rows(slots[:n], inputs["hidden_slot"][:, None])                 # (B, 1, d)
        props_pred = self.row_out(self.row_part(rows[:n]) + self.row_slot(slot) + self.row_global(emb_m)[:, None, :])
        z = self.projector(emb[n:])
        return {"masked_structure_factors": {"value": sf_pred},
                "real_from_reciprocal": {"value": props_pred[..., 0]},
                "augmentation_consistency": {"z1": z[:n], "z2": z[n:]}}


class StructureFactorsBlock(SSLBlock):
    number = 6
    fields = (Field("properties", "element_properties", normalised=False),
              # only to rebuild the map where a region pack does not carry it (dropped after loading)
              Field("record_elements", "element_matrix", normalised=False),
              Field("record_lattice", "lattice", normalised=False),
              Field("record_coords", "site_coords", normalised=False),
              Field("record_occupancy", "site_occupancy", normalised=False))
    defaults = TrainDefaults(lr=5e-4, batch_size=32, epochs=20, patience=20)
    model_defaults = {"d_model": 128, "heads": 4, "ff": 256, "dropout": 0.1, "conv_channels": [16, 32, 64],
                      "project_width": 256, "head_width": 128, "projector_width": 512, "scale_floor": 0.1,
                      "hidden_columns": 8, "noise": 0.02, "column_drop": 0.3, "bt_lambda": 5e-3,
                      "weight_structure_factors": 0.4, "weight_real": 0.3, "weight_consistency": 0.3}
    phase = "linear"

    def extra_fields(self, data):
        # the only hook that sees the data source; the map is an input, not a cached target (benchmarks
        # treat extra fields as targets), so it is read in prepare_fields
        self._source = data.source
        return {}

    def prepare_fields(self, fields):
        source = getattr(self, "_source", None)
        if source is not None and "structure_factors" in source.regions_available():
            sf = source.region("structure_factors")
        else:                                                             # a region pack: rebuild the map
            regions = {"element_matrix": fields["record_elements"], "lattice": fields["record_lattice"],
                       "site_coords": fields["record_coords"], "site_occupancy": fields["record_occupancy"],
                       "element_properties": fields["properties"]}
            sf = R.rebuild_regions(regions, ("structure_factors",), phase=self.phase)["structure_factors"]
        return {"properties": (fields["properties"] > 0.5).astype(np.float32), "sf": np.asarray(sf, dtype=np.float32)}

    def fit_stats(self, train):
        rms = torch.cat([c.double().pow(2).mean((1, 2)).sqrt() for c in train["sf"].split(4096)])
        floor = (self.cfg["scale_floor"] * rms.median()).clamp_min(1e-3)
        log_scale = (rms.pow(2) + floor ** 2).sqrt().log()
        return {"scale_floor": floor.float().reshape(1), "log_scale_mean": log_scale.mean().float().reshape(1),
                "log_scale_std": log_scale.std().clamp_min(1e-6).float().reshape(1)}

    def build_model(self, cfg):
        return StructureFactorModel(cfg)

    def build_tasks(self):
        cfg = self.cfg
        return [RegressionTask("masked_structure_factors", cfg["weight_structure_factors"], n_groups=N_K,
                               group_names=[f"k{i}" for i in range(N_K)], metric="nmse",
                               units="F / visible RMS of the crystal's map", min_std=0.05),
                RegressionTask("real_from_reciprocal", cfg["weight_real"], n_groups=N_P, metric="nmse",
                               units="CGCNN property bits", min_std=0.05),
                BarlowTwinsTask("augmentation_consistency", cfg["weight_consistency"], lambd=cfg["bt_lambda"])]

    # -- views -------------------------------------------------------------------------------
    def encoder_inputs(self, sf, props, column_visible, slot_hidden):
        """What the encoder sees: hidden columns and the hidden slot are zeroed before anything
        is computed from them (the scale comes from the visible entries only)."""
        sf = sf * column_visible.to(sf.dtype)[:, None, :]
        props = props * (~slot_hidden).to(props.dtype)[:, None, :]
        scale = visible_scale(sf, column_visible, self.stats["scale_floor"])
        log_scale = ((scale.log() - self.stats["log_scale_mean"]) / self.stats["log_scale_std"]).clamp(-5, 5)
        present = (props.amax(1) > 0.5) | slot_hidden
        return {"sf": sf / scale[:, None, None], "column_visible": column_visible, "properties": props,
                "slot_present": present, "slot_hidden": slot_hidden, "log_scale": log_scale}, scale

    def make_views(self, batch, gen, train):
        """One batch of 3B maps: the masked view (tasks 11, 12), then two augmented views (task 13)."""
        sf, props = batch["sf"], batch["properties"]
        b = sf.shape[0]
        dev = sf.device
        n_hidden = self.cfg["hidden_columns"]
        all_cols = torch.ones(b, N_K, dtype=torch.bool, device=dev)
        hidden_cols, col_idx, _ = M.random_subset(all_cols, torch.full((b,), n_hidden, device=dev), gen, n_hidden)
        hide_slot, _ = M.pick_one(props.amax(1) > 0.5, gen)
        slot_hidden = torch.arange(N_SLOTS, device=dev)[None, :] == hide_slot[:, None]
        kept = ~M.bernoulli((2 * b, N_K), self.cfg["column_drop"], gen, dev)             # augmented views
        noise = 1 + self.cfg["noise"] * torch.randn((2 * b,) + sf.shape[1:], generator=gen, device=dev)
        views = torch.cat([sf, sf.repeat(2, 1, 1) * noise], 0)
        visible = torch.cat([~hidden_cols, kept], 0)
        hidden = torch.cat([slot_hidden, torch.zeros(2 * b, N_SLOTS, dtype=torch.bool, device=dev)], 0)
        inputs, scale = self.encoder_inputs(views, props.repeat(3, 1, 1), visible, hidden)
        inputs.update(hidden_columns=col_idx, hidden_slot=hide_slot)
        hidden_values = sf.gather(2, col_idx[:, None, :].expand(-1, N_P, -1)).transpose(1, 2) / scale[:b, None, None]
        hidden_props = props.gather(2, hide_slot[:, None, None].expand(-1, N_P, 1))[..., 0]
        targets = {"masked_structure_factors": {"value": hidden_values,
                                                "group": col_idx[..., None].expand(-1, -1, N_P)},
                   "real_from_reciprocal": {"value": hidden_props,
                                            "group": torch.arange(N_P, device=dev).expand(b, -1)},
                   "augmentation_consistency": {"input1": inputs["sf"][b:2 * b], "input2": inputs["sf"][2 * b:]}}
        return inputs, targets

    def clean_inputs(self, batch):
        sf, props = batch["sf"], batch["properties"]
        b = sf.shape[0]
        visible = torch.ones(b, N_K, dtype=torch.bool, device=sf.device)
        hidden = torch.zeros(b, N_SLOTS, dtype=torch.bool, device=sf.device)
        return self.encoder_inputs(sf, props, visible, hidden)[0]


BLOCK_CLASS = StructureFactorsBlock
