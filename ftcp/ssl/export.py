"""Deterministic embedding export and loading.

An export is one pass over ALL materials of the store from the clean (unmasked,
un-augmented) input, in eval mode and fp32, written in store order as
``embeddings.npz`` with ``material_id`` (N,) str and ``embedding`` (N, d) float32.
Blocks with sequence fields are embedded in length-sorted chunks (to skip padding) and the
rows are put back in store order.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io_utils import atomic_save_npz
from .batches import eval_batches
from .block import SSLBlock

EMBEDDINGS_FILE = "embeddings.npz"


@torch.no_grad()
def embed_positions(block: SSLBlock, model: torch.nn.Module, dd, positions: np.ndarray, batch_size: int) -> np.ndarray:
    """Embeddings (len(positions), d) float32 of the materials at ``positions`` (store indices)."""
    model.eval()
    out = None
    where = {int(p): i for i, p in enumerate(positions)}
    for pos, length in eval_batches(np.asarray(positions), batch_size, dd):
        batch = dd.gather(torch.as_tensor(pos), length)
        emb = model.embed(block.clean_inputs(batch)).float().cpu().numpy()
        if out is None:
            out = np.empty((len(positions), emb.shape[1]), dtype=np.float32)
        out[[where[int(p)] for p in pos]] = emb
    if out is None:
        raise ValueError("nothing to embed")
    if not np.isfinite(out).all():
        raise FloatingPointError(f"block {block.number}: non-finite values in the exported embeddings")
    return out


def save_embeddings(path, ids, embedding: np.ndarray) -> Path:
    path = Path(path)
    ids = np.asarray(ids).astype(str)
    if len(ids) != len(embedding) or len(np.unique(ids)) != len(ids):
        raise ValueError("embeddings need one unique material ID per row")
    return atomic_save_npz(path, material_id=ids, embedding=np.asarray(embedding, dtype=np.float32))


def load_embeddings(path) -> tuple[np.ndarray, np.ndarray]:
    """(material_id (N,) str, embedding (N, d) float32) of an ``embeddings.npz``; checked."""
    with np.load(path, allow_pickle=False) as f:
        ids, emb = f["material_id"].astype(str), f["embedding"]
    if emb.ndim != 2 or len(ids) != len(emb):
        raise ValueError(f"{path}: material_id {ids.shape} and embedding {emb.shape} do not match")
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{path}: duplicated material IDs")
    return ids, emb


def load_block_model(block: SSLBlock, checkpoint, device="cpu") -> torch.nn.Module:
    """Rebuild a block's model from ``best.pt``/``last.pt`` (state dict, ``weights_only=True``).

    Restores the block's fitted input statistics too, so ``model.embed(block.clean_inputs(b))``
    works on batches built by ``ftcp.ssl.engine.load_block_fields``.
    """
    ck = load_checkpoint(checkpoint, device)
    if ck.get("block") != block.number:
        raise UserError(f"{checkpoint} is a block {ck.get('block')} checkpoint, not block {block.number}")
    block.configure(ck["model_config"])
    model = block.create_model(ck["model_config"]).to(device)
    model.load_state_dict(ck["model"])
    block.stats = {k: v.to(device) for k, v in ck["block_stats"].items()}
    model.eval()
    return model


CHECKPOINT_KEYS = ("block", "model_config", "model", "block_stats")


def load_checkpoint(path, device="cpu") -> dict:
    """A block checkpoint (``best.pt``/``last.pt``) as its dict, read with ``weights_only=True`` (no code runs).

    A missing file raises ``FileNotFoundError``; an empty, truncated or foreign file is a ``UserError`` naming
    it (torch reports those as RuntimeError, OSError, EOFError, KeyError or UnpicklingError).
    """
    path = Path(path)
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            raise       # missing file, no permission...: the OS error names the path
        size = path.stat().st_size if path.is_file() else 0
        why = "empty file" if size == 0 else " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"checkpoint {path} is unreadable, truncated or corrupt ({why}); retrain the block "
                        "(rerunning the training resumes it) or fetch the checkpoint again") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise UserError(f"checkpoint {path} is not an SSL block checkpoint (missing {missing})")
    return ck
