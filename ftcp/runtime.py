"""Torch device and seeding helpers shared by the SSL engine, the embedder and the scenario models."""
from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` (this process's GPU
    under torchrun) or ``cuda:N``; anything else, or CUDA without a GPU, is an error."""
    name = str(name or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    if name != "cpu":
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (e.g. run seed, epoch, rank), stable across platforms."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
