"""Block 1 - Element Matrix (FTCP rows 0-102, columns 0-3): which elements a crystal contains.

Input: the 103 x 4 element one-hot (column c = the c-th distinct element, in order of first
appearance among the sites), min-max normalised (it stays 0/1).

Encoder (upstream's dual-stream MLP family): stream 1 reads the flattened slot matrix (412,
order-aware), stream 2 the element-set vector (103, the slots summed, order-free; upstream fed
the same binary matrix twice) -> 512 + 256 -> [Linear, BatchNorm, ReLU, Dropout] x 2 (512) ->
Linear -> BatchNorm = the 256-d embedding.

Pretext tasks:

1. ``masked_element`` - one present element is hidden (its whole slot column is zeroed, in
   both streams); the model names it (103-way cross-entropy) from the others.  Masks are
   re-drawn every step.  Crystals with a single element are not scored (hiding it leaves an
   empty input, and the answer would be unconditional).
2. ``element_set_consistency`` - Barlow Twins between two views of the same crystal that hide
   different elements: view A is the masked-element view, view B hides another present element
   or (with probability ``p_clean_view``) nothing, so the encoder also learns on the complete
   element sets it embeds at export.  Single-element crystals give two clean views.

Upstream's "masked position" and "element count" heads are dropped: both are fixed functions
of the visible input (DESIGN section 3.3).
"""
from __future__ import annotations

import torch
from torch import nn

from ftcp import layout as L
from ftcp.elements import ELEMENT_SYMBOLS
from ftcp.ssl import BarlowTwinsTask, ClassificationTask, Field, SSLBlock, TrainDefaults
from ftcp.ssl import masking as M
from ftcp.ssl.layers import projector


class ElementMatrixEncoder(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        n_slots, n_el = L.MAX_ELEMENTS, L.N_ELEMENT_TYPES
        self.slot_stream = nn.Linear(n_el * n_slots, cfg["slot_width"])
        self.set_stream = nn.Linear(n_el, cfg["set_width"])
        layers, d = [], cfg["slot_width"] + cfg["set_width"]
        for _ in range(cfg["depth"]):
            layers += [nn.Linear(d, cfg["hidden"]), nn.BatchNorm1d(cfg["hidden"]), nn.ReLU(inplace=True),
                       nn.Dropout(cfg["dropout"])]
            d = cfg["hidden"]
        layers += [nn.Linear(d, cfg["embed_dim"]), nn.BatchNorm1d(cfg["embed_dim"])]
        self.trunk = nn.Sequential(*layers)

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        """(B, 103, 4) element matrix -> (B, embed_dim)."""
        element_set = matrix.sum(-1).clamp(max=1.0)
        h = torch.cat([self.slot_stream(matrix.flatten(1)), self.set_stream(element_set)], dim=1)
        return self.trunk(torch.relu(h))


class ElementMatrixModel(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        d = cfg["embed_dim"]
        self.encoder = ElementMatrixEncoder(cfg)
        self.element_head = nn.Sequential(nn.Linear(d, cfg["hidden"]), nn.ReLU(inplace=True),
                                          nn.Linear(cfg["hidden"], L.N_ELEMENT_TYPES))
        self.projector = projector(d, cfg["projector_width"])

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.encoder(inputs["matrix"])

    def forward(self, inputs: dict) -> dict:
        views = torch.cat([inputs["view_a"], inputs["view_b"]], dim=0)
        emb = self.encoder(views)
        z = self.projector(emb)
        n = inputs["view_a"].shape[0]
        return {"masked_element": {"logits": self.element_head(emb[:n])},
                "element_set_consistency": {"z1": z[:n], "z2": z[n:]}}


class ElementMatrixBlock(SSLBlock):
    number = 1
    fields = (Field("matrix", "element_matrix"),)
    defaults = TrainDefaults(lr=1e-3, batch_size=512, epochs=50, patience=10)
    model_defaults = {"slot_width": 512, "set_width": 256, "hidden": 512, "depth": 2, "dropout": 0.1,
                      "projector_width": 1024, "p_clean_view": 0.5, "bt_lambda": 5e-3,
                      "weight_masked_element": 0.5, "weight_consistency": 0.5}

    def build_model(self, cfg):
        return ElementMatrixModel(cfg)

    def build_tasks(self):
        cfg = self.cfg
        return [ClassificationTask("masked_element", L.N_ELEMENT_TYPES, cfg["weight_masked_element"],
                                   class_names=ELEMENT_SYMBOLS, topk=5),
                BarlowTwinsTask("element_set_consistency", cfg["weight_consistency"], lambd=cfg["bt_lambda"])]

    # -- views -------------------------------------------------------------------------------
    def make_views(self, batch, gen, train):
        x = batch["matrix"]
        present = x.amax(dim=1) > 0.5                         # (B, 4) slots holding an element
        n_present = present.sum(1)
        element = x.argmax(dim=1)                             # (B, 4) element row of each slot
        hide_a, ok_a = M.pick_one(present, gen)
        ok_a = ok_a & (n_present >= 2)
        hide_b, ok_b = M.pick_one(present, gen, exclude=hide_a)
        p_clean = self.cfg["p_clean_view"]
        ok_b = ok_b & ok_a & ~M.bernoulli(ok_a.shape, p_clean, gen, x.device)
        slots = torch.arange(L.MAX_ELEMENTS, device=x.device)[None, :]
        keep_a = ~((slots == hide_a[:, None]) & ok_a[:, None])
        keep_b = ~((slots == hide_b[:, None]) & ok_b[:, None])
        view_a = x * keep_a[:, None, :].to(x.dtype)
        view_b = x * keep_b[:, None, :].to(x.dtype)
        label = torch.where(ok_a, element.gather(1, hide_a[:, None])[:, 0], torch.full_like(hide_a, -1))
        inputs = {"view_a": view_a, "view_b": view_b}
        targets = {"masked_element": {"label": label},
                   "element_set_consistency": {"input1": view_a, "input2": view_b}}
        return inputs, targets

    def clean_inputs(self, batch):
        return {"matrix": batch["matrix"]}


BLOCK_CLASS = ElementMatrixBlock
