"""Batched, device-side random choices for masks and views.

Every function draws from an explicit ``torch.Generator`` living on the data's device and uses
fixed-shape tensor ops only (no boolean indexing, no ``.item()``), so a training step never
waits for the host.
"""
from __future__ import annotations

import torch


def uniform(shape, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def random_order(valid: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(B, K) indices: the valid positions of each row in random order, invalid ones last."""
    key = torch.where(valid, uniform(valid.shape, gen, valid.device), torch.full_like(valid, 2.0, dtype=torch.float32))
    return key.argsort(dim=1)


def pick_one(valid: torch.Tensor, gen: torch.Generator, exclude: torch.Tensor | None = None):
    """One uniformly random valid position per row.

    Returns ``(index (B,), ok (B,))``; ``ok`` is False where a row has no valid position
    (left after ``exclude``, an index per row to leave out).
    """
    if exclude is not None:
        valid = valid & (torch.arange(valid.shape[1], device=valid.device)[None, :] != exclude[:, None])
    key = torch.where(valid, uniform(valid.shape, gen, valid.device), torch.full_like(valid, -1.0, dtype=torch.float32))
    return key.argmax(dim=1), valid.any(dim=1)


def random_subset(valid: torch.Tensor, count: torch.Tensor, gen: torch.Generator, max_count: int):
    """``count`` random valid positions per row.

    Returns ``mask (B, K) bool`` (True = chosen), ``index (B, max_count)`` (the chosen positions,
    padded) and ``index_ok (B, max_count)``.  ``max_count`` must bound ``count`` (it is a host
    number, so shapes stay static).
    """
    order = random_order(valid, gen)
    rank = torch.empty_like(order).scatter_(1, order,
                                            torch.arange(valid.shape[1], device=valid.device).expand_as(order))
    mask = (rank < count[:, None]) & valid
    index = order[:, :max_count]
    index_ok = torch.arange(max_count, device=valid.device)[None, :] < torch.minimum(count, valid.sum(1))[:, None]
    return mask, index, index_ok


def bernoulli(shape, p: float, gen: torch.Generator, device) -> torch.Tensor:
    return uniform(shape, gen, device) < p
