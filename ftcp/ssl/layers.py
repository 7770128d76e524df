"""Small neural building blocks shared by the block encoders (Blocks 4-6).

Attention layers run ``torch.nn.functional.scaled_dot_product_attention`` with boolean
key-padding masks ``(B, L)`` (True = a real position), so padded sites never take part and
the fused kernels are used where the hardware has them.  Everything is batched: no
per-sample Python anywhere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, d) -> (B, H, L, d / H)."""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge(y: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d / H) -> (B, L, d)."""
    b, h, n, dh = y.shape
    return y.transpose(1, 2).reshape(b, n, h * dh)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else mask[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention of ``query`` tokens over ``context`` tokens (self-attention when
    ``context`` is None), with a key-padding mask over the context."""

    def __init__(self, d: int, heads: int, dropout: float = 0.0, d_context: int | None = None):
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d_context or d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, context: torch.Tensor | None = None):
        ctx = x if context is None else context
        k, v = self.kv(ctx).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(_heads(self.q(x), self.heads), _heads(k, self.heads), _heads(v, self.heads),
                                           attn_mask=_key_mask(key_mask),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(_merge(y))


class FeedForward(nn.Sequential):
    def __init__(self, d: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: self-attention, optional cross-attention to a context, feed-forward."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float, cross: bool = False, d_context: int | None = None):
        super().__init__()
        self.norm_self, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, dropout)
        self.cross_attn = Attention(d, heads, dropout, d_context) if cross else None
        self.norm_cross = nn.LayerNorm(d) if cross else None
        self.ff = FeedForward(d, ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, key_mask, context=None, context_mask=None):
        x = x + self.drop(self.self_attn(self.norm_self(x), key_mask))
        if self.cross_attn is not None:
            x = x + self.drop(self.cross_attn(self.norm_cross(x), context_mask, context))
        return x + self.drop(self.ff(self.norm_ff(x)))


class AttentionPool(nn.Module):
    """A learned query attends over the real positions (multi-head) -> (B, d)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.attn = Attention(d, heads)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        return self.attn(self.query.expand(x.shape[0], -1, -1).to(x.dtype), key_mask, x)[:, 0]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, L, d) over the positions where ``mask`` (B, L) is True."""
    if mask is None:
        return x.mean(1)
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def torus_features(frac: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """Fractional coordinates (..., 3) -> sin/cos of 2 pi k x, k = 1..n (..., 6 n): periodic in x.

    Dot products of these features give cos 2 pi k (x_i - x_j), so attention can compare
    positions on the torus without any explicit pair features.
    """
    k = torch.arange(1, n_frequencies + 1, device=frac.device, dtype=frac.dtype)
    phase = (2 * math.pi) * frac[..., None] * k
    return torch.cat([phase.sin(), phase.cos()], dim=-1).flatten(-2)


def mlp(d_in: int, hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Linear(d_in, hidden), nn.GELU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, d_out))
    return nn.Sequential(*layers)


def projector(d_in: int, width: int, depth: int = 3) -> nn.Sequential:
    """Barlow Twins projector: [Linear, BatchNorm, ReLU] x (depth - 1) -> Linear."""
    layers, d = [], d_in
    for _ in range(depth - 1):
        layers += [nn.Linear(d, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        d = width
    layers.append(nn.Linear(d, width, bias=False))
    return nn.Sequential(*layers)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, L, d), index (B, K) -> (B, K, d)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
