"""Cross-modal prediction: an optional extra pretext task for every block.

Upstream's thirteen tasks ask each encoder about its *own* modality (masked elements, masked
lattice parameters, masked sites, ...), and a control shows that the trained encoders are
barely better than the same encoders with random weights.  The paper's premise is that the
modalities inform each other: structure factors are a function of elements, sites, occupancy
and lattice; the volume per atom depends on the elements; and so on.  This task makes each
encoder predict, from its clean embedding and through ONE linear layer, a fixed label-free
summary of the *whole* crystal (``crystal_descriptors``; 204 values), most of which lies outside
the block's own input:

* site-fraction-weighted mean of the 92 CGCNN property bits (composition, Magpie-like);
* mean and spread of the atomic number, number of sites and of elements, sorted element fractions;
* log volume per atom, cell lengths over the cube root of the volume, cosines of the angles;
* mean and spread of the k-point distances times the cube root of the volume;
* log(1 + mean over k of F^2) for each of the 92 property rows of the structure factors;
* nearest-neighbour distances: mean, minimum and mean over the cube root of the volume per atom
  (minimum image, periodic).

The linear head matters: the scenarios probe the embeddings with linear models, so what the
task teaches must be linearly readable.  Targets are standardised per value on SSL-train (the
usual ``RegressionTask``); the metric is the fraction of variance unexplained.

Enable it per run with the model setting ``crossmodal_weight`` (e.g. ``--set 1:crossmodal_weight=1``
or ``ssl-train --model crossmodal_weight=1``); 0, the default, is upstream's task set.
The descriptors are computed once per store (torch, CPU is fine) and cached in the SSL
directory as ``crossmodal_targets.npz`` keyed by material ID.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import layout as L
from ..io_utils import atomic_save_npz
from .losses import lattice_matrix, min_image_distance, reduce_lattices
from .metrics import RegressionTask

log = logging.getLogger(__name__)

TASK = "cross_modal"
CACHE_FILE = "crossmodal_targets.npz"
REGIONS = ("element_matrix", "lattice", "site_coords", "site_occupancy", "kpoint_distances",
           "element_properties", "structure_factors")


def descriptor_names() -> list[str]:
    return ([f"composition_property_{p}" for p in range(L.N_PROPERTIES)]
            + ["mean_Z", "std_Z", "log_n_sites", "n_elements"] + [f"fraction_{k}" for k in range(L.MAX_ELEMENTS)]
            + ["log_volume_per_atom", "a_over_V13", "b_over_V13", "c_over_V13", "cos_alpha", "cos_beta", "cos_gamma",
               "mean_g_V13", "std_g_V13"]
            + [f"log_sf_power_{p}" for p in range(L.N_PROPERTIES)]
            + ["mean_nn_distance", "min_nn_distance", "mean_nn_over_atomic_length"])


def _nearest_neighbours(lattice: np.ndarray, coords: np.ndarray, present: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Per crystal (mean, min) nearest-neighbour distance in Angstrom (minimum image; a site's own
    images count, so a one-site cell gets its shortest lattice vector)."""
    n = len(lattice)
    matrices = lattice_matrix(lattice[:, 0].astype(np.float64), lattice[:, 1].astype(np.float64))
    reduced = reduce_lattices(matrices)
    shortest = np.linalg.norm(reduced, axis=-1).min(-1)
    counts = present.sum(1)
    order = np.argsort(counts, kind="stable")
    out = np.zeros((n, 2), dtype=np.float64)
    with torch.no_grad():
        for s in range(0, n, chunk):
            idx = order[s:s + chunk]
            m = max(1, int(counts[idx].max()))
            frac = torch.from_numpy(coords[idx, :m].astype(np.float32))
            mask = torch.from_numpy(present[idx, :m])
            mat = torch.from_numpy(matrices[idx])
            red = torch.from_numpy(reduced[idx])
            d = min_image_distance(frac[:, :, None, :].expand(-1, -1, m, -1), frac[:, None, :, :].expand(-1, m, -1, -1),
                                   mat, red, torch.linalg.inv(red)).double()
            pair_ok = mask[:, :, None] & mask[:, None, :] & ~torch.eye(m, dtype=torch.bool)[None]
            d = torch.where(pair_ok, d, torch.full_like(d, math.inf)).amin(-1)
            d = torch.minimum(d, torch.from_numpy(shortest[idx])[:, None])
            k = mask.sum(1).clamp_min(1).double()
            d_valid = torch.where(mask, d, torch.zeros_like(d))
            out[idx, 0] = (d_valid.sum(1) / k).numpy()
            out[idx, 1] = torch.where(mask, d, torch.full_like(d, math.inf)).amin(1).numpy()
    return out


def crystal_descriptors(regions: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 204) float32 descriptors from raw FTCP regions (see the module docstring)."""
    elements = regions["element_matrix"].astype(np.float64)          # (n, 103, 4)
    occupancy = regions["site_occupancy"].astype(np.float64)         # (n, 100, 4)
    props = (regions["element_properties"] > 0.5).astype(np.float64)  # (n, 92, 4)
    lattice = regions["lattice"].astype(np.float64)                  # (n, 2, 3)
    kdist = regions["kpoint_distances"].astype(np.float64)           # (n, 59)
    sf = regions["structure_factors"].astype(np.float64)             # (n, 92, 59)
    present = occupancy.sum(-1) > 0.5
    n_sites = present.sum(1).clip(min=1).astype(np.float64)
    slot_counts = occupancy.sum(1)
    fractions = slot_counts / n_sites[:, None]
    comp_props = np.einsum("npk,nk->np", props, fractions)
    z = (elements.argmax(1) + 1).astype(np.float64) * (elements.sum(1) > 0.5)       # (n, 4), 0 for empty slots
    mean_z = (z * fractions).sum(1)
    std_z = np.sqrt(np.clip((z ** 2 * fractions).sum(1) - mean_z ** 2, 0, None))
    n_elements = (slot_counts > 0.5).sum(1).astype(np.float64)
    matrices = lattice_matrix(lattice[:, 0], lattice[:, 1])
    volume = np.abs(np.linalg.det(matrices)).clip(min=1e-6)
    v13 = np.cbrt(volume)
    cell = np.concatenate([lattice[:, 0] / v13[:, None], np.cos(np.radians(lattice[:, 1]))], 1)
    g = kdist * v13[:, None]
    g_ok = kdist > 0
    g_n = g_ok.sum(1).clip(min=1)
    g_mean = np.where(g_ok, g, 0).sum(1) / g_n
    g_std = np.sqrt(np.clip(np.where(g_ok, g ** 2, 0).sum(1) / g_n - g_mean ** 2, 0, None))
    sf_power = np.log1p((sf ** 2).mean(-1))
    nn_dist = _nearest_neighbours(regions["lattice"], regions["site_coords"], present)
    atomic_length = np.cbrt(volume / n_sites)
    out = np.concatenate([
        comp_props, mean_z[:, None], std_z[:, None], np.log(n_sites)[:, None], n_elements[:, None],
        -np.sort(-fractions, axis=1), np.log(volume / n_sites)[:, None], cell, g_mean[:, None], g_std[:, None],
        sf_power, nn_dist, (nn_dist[:, 0] / atomic_length)[:, None]], 1)
    if out.shape[1] != len(descriptor_names()):
        raise AssertionError(f"descriptor width {out.shape[1]} != {len(descriptor_names())}")
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def ensure_descriptors(source, ssl_dir, search_dirs=(), chunk: int = 4096) -> Path:
    """The cached descriptors of every material of ``source`` (computed and saved when absent)."""
    for d in (Path(ssl_dir), *map(Path, search_dirs)):
        path = d / CACHE_FILE
        if path.exists():
            with np.load(path, allow_pickle=False) as f:
                if len(f["material_id"]) == len(source.ids) and np.array_equal(f["material_id"], source.ids):
                    return path
    missing = [r for r in REGIONS if r not in source.regions_available()]
    if missing:
        raise FileNotFoundError(f"the cross-modal targets need the regions {missing}, which {source.root} does not "
                                f"hold; compute {CACHE_FILE} on the full store (`ftcp ssl-train-all --objective "
                                "crossmodal` makes it) and copy it")
    regions = {r: source.region(r) for r in REGIONS}
    out = np.concatenate([crystal_descriptors({r: v[s:s + chunk] for r, v in regions.items()})
                          for s in range(0, len(source.ids), chunk)])
    path = Path(ssl_dir) / CACHE_FILE
    atomic_save_npz(path, material_id=np.asarray(source.ids).astype(str), descriptor=out,
                    names=np.array(descriptor_names()))
    log.info("cross-modal targets of %d materials -> %s", len(out), path)
    return path


def load_descriptors(source, search_dirs) -> np.ndarray:
    """Descriptors aligned to ``source.ids`` (computed and cached in the first search dir if needed)."""
    dirs = list(search_dirs)
    path = ensure_descriptors(source, dirs[0], dirs[1:])
    with np.load(path, allow_pickle=False) as f:
        ids, desc = f["material_id"].astype(str), f["descriptor"]
    pos = {m: i for i, m in enumerate(ids)}
    missing = [m for m in source.ids if m not in pos]
    if missing:
        raise ValueError(f"{path} has no cross-modal targets for {len(missing)} materials, e.g. {missing[:3]}")
    return desc[[pos[m] for m in source.ids]]


# ------------------------------------------------------------------------------------------
class CrossModalModel(nn.Module):
    """A block model plus one linear layer from its clean embedding to the crystal descriptors.

    Inputs are ``{"view": <the block's view inputs>, "clean": <its clean inputs>}``.
    """

    def __init__(self, base: nn.Module, embed_dim: int, n_targets: int):
        super().__init__()
        self.base = base
        self.head = nn.Linear(embed_dim, n_targets)

    def embed(self, inputs: dict) -> torch.Tensor:
        return self.base.embed(inputs)

    def forward(self, inputs: dict) -> dict:
        out = dict(self.base(inputs["view"]))
        out[TASK] = {"value": self.head(self.base.embed(inputs["clean"]).float())}
        return out


def make_task(weight: float) -> RegressionTask:
    names = descriptor_names()
    return RegressionTask(TASK, weight, n_groups=len(names), group_names=names, metric="nmse",
                          units="crystal descriptor (standardised per value)", min_std=1e-3)


def target(batch: dict) -> dict:
    value = batch["crossmodal_target"]
    return {"value": value, "group": torch.arange(value.shape[1], device=value.device).expand(value.shape[0], -1)}
