"""The data side of a block run: its fields for every material, held as tensors on the compute
device when they fit, and the batch orders of training and evaluation.

Only torch and numpy are imported here (the training machine needs nothing else).
"""
from __future__ import annotations

import numpy as np
import torch

from . import data as D
from .block import SSLBlock


def load_block_fields(block: SSLBlock, data: D.SSLData, inference: bool = False) -> dict[str, np.ndarray]:
    """The block's fields for every material (store order), numpy, after ``prepare_fields``.

    ``inference``: for embedding crystals outside the training store (``block.inference_fields``
    instead of ``block.extra_fields``: no cached pretext targets are needed).
    """
    raw_cache: dict[str, np.ndarray] = {}
    fields = {}
    for f in block.fields:
        if f.region not in raw_cache:
            raw_cache[f.region] = data.source.region(f.region)
        raw = raw_cache[f.region]
        fields[f.name] = D.normalise_region(data.scaler, f.region, raw) if f.normalised else raw
    fields.update(block.inference_fields(data) if inference else block.extra_fields(data))
    fields = block.prepare_fields(fields)
    if not inference:
        fields.update(block.objective_fields(data))
    n = len(data.ids)
    for k, v in fields.items():
        if len(v) != n:
            raise ValueError(f"block {block.number}: field {k!r} has {len(v)} rows for {n} materials")
    return fields


class DeviceData:
    """Block fields as tensors (on the compute device when they fit) + batch gathering."""

    def __init__(self, fields: dict[str, np.ndarray], lengths, sequence_fields, device: torch.device):
        nbytes = sum(v.nbytes for v in fields.values())
        store = device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes > 0.5 * free:
                store = torch.device("cpu")
        self.device, self.store = device, store
        self.nbytes = nbytes
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(store) for k, v in fields.items()}
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.sequence_fields = tuple(sequence_fields)
        self.full_length = max((self.tensors[k].shape[1] for k in self.sequence_fields), default=0)

    def batch_length(self, positions: np.ndarray) -> int | None:
        if self.lengths is None or not self.sequence_fields:
            return None
        longest = int(self.lengths[positions].max()) if len(positions) else 1
        return min(self.full_length, max(8, -(-longest // 8) * 8))

    def gather(self, index: torch.Tensor, length: int | None) -> dict[str, torch.Tensor]:
        out = {}
        idx = index.to(self.store)
        for k, v in self.tensors.items():
            if length is not None and k in self.sequence_fields:
                v = v[:, :length]
            out[k] = v.index_select(0, idx).to(self.device, non_blocking=True)
        return out

    def subset(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        return self.gather(torch.as_tensor(positions), None)


def eval_batches(positions: np.ndarray, batch_size: int, data: DeviceData):
    """Fixed-order batches (length-sorted, stably, for sequence blocks): [(positions, length)]."""
    order = positions
    if data.lengths is not None:
        order = positions[np.argsort(data.lengths[positions], kind="stable")]
    return [(order[s:s + batch_size], data.batch_length(order[s:s + batch_size]))
            for s in range(0, len(order), batch_size)]


def train_batches(positions: np.ndarray, per_rank: int, world: int, rank: int, epoch_rng: np.random.Generator,
                  data: DeviceData, bucket: bool):
    """One epoch of global batches (drop_last); returns this rank's [(positions, length)]."""
    glob = per_rank * world
    perm = positions[epoch_rng.permutation(len(positions))]
    n_batches = len(perm) // glob
    perm = perm[:n_batches * glob]
    batches = [perm[i * glob:(i + 1) * glob] for i in range(n_batches)]
    if bucket and data.lengths is not None and n_batches > 1:
        # sort inside chunks of 50 batches by length, then shuffle the batch order
        chunk = 50 * glob
        sorted_perm = np.concatenate([
            perm[s:s + chunk][np.argsort(data.lengths[perm[s:s + chunk]], kind="stable")]
            for s in range(0, len(perm), chunk)])
        batches = [sorted_perm[i * glob:(i + 1) * glob] for i in range(n_batches)]
        batches = [batches[i] for i in epoch_rng.permutation(n_batches)]
    mine = [b[rank * per_rank:(rank + 1) * per_rank] for b in batches]
    # the length is that of the whole global batch so every rank runs the same shapes
    return [(m, data.batch_length(b)) for m, b in zip(mine, batches, strict=False)]


