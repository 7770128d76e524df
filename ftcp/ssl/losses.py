"""Loss functions and geometry shared by the blocks.

* ``barlow_twins``: the redundancy-reduction loss of Zbontar et al. (2021) on the *global*
  batch: under DistributedDataParallel the embeddings of every rank are gathered with a
  differentiable all_gather, so the batch statistics (and the loss) match a single process
  holding the whole batch.
* periodic coordinate loss and torus distances for fractional coordinates;
* lattice matrices from (a, b, c, alpha, beta, gamma), a lattice-basis reduction and
  minimum-image Cartesian distances.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

TWO_PI = 2.0 * math.pi


# ------------------------------------------------------------------------------------------
def distributed_world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each rank's gradient of its own rows over all ranks
    (every rank computes the same global-batch loss; DDP then averages the parameter
    gradients).  Plain c10d collectives: the autograd-aware ``torch.distributed.nn`` gather is
    deprecated and was the likely source of a rare gloo abort at interpreter exit."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (dist.get_rank() * len(x), (dist.get_rank() + 1) * len(x))
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over all ranks, keeping gradients (identity in one process).
    Every rank must pass the same number of rows (the engine gives each rank equal batches)."""
    if distributed_world() == 1:
        return x
    return _GatherWithGrad.apply(x)


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, gather: bool = True,
                 eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins loss, divided by the projector width so it is O(1) next to other losses."""
    z1, z2 = z1.float(), z2.float()
    if gather:
        z1, z2 = gather_batch(z1), gather_batch(z2)
    n, d = z1.shape
    z1 = (z1 - z1.mean(0)) / (z1.std(0, unbiased=False) + eps)
    z2 = (z2 - z2.mean(0)) / (z2.std(0, unbiased=False) + eps)
    c = z1.T @ z2 / n
    diag = torch.diagonal(c)
    on = (diag - 1.0).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return (on + lambd * off) / d


def retrieval_hits(a: torch.Tensor, b: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-1 view retrieval inside consecutive pools of ``pool`` rows (cosine similarity).

    Returns (hits, trials, chance): hits counts rows whose best match (both directions,
    a->b and b->a) is their own partner; chance sums 1/pool size over trials.
    """
    a = torch.nn.functional.normalize(a.float(), dim=1)
    b = torch.nn.functional.normalize(b.float(), dim=1)
    hits = torch.zeros((), device=a.device)
    trials = torch.zeros((), device=a.device)
    chance = torch.zeros((), device=a.device)
    for s in range(0, len(a), pool):
        pa, pb = a[s:s + pool], b[s:s + pool]
        m = len(pa)
        if m < 2:
            continue
        sim = pa @ pb.T
        target = torch.arange(m, device=a.device)
        hits = hits + (sim.argmax(1) == target).sum() + (sim.argmax(0) == target).sum()
        trials = trials + 2 * m
        chance = chance + 2.0
    return hits, trials, chance


# ------------------------------------------------------------------------------------------
# periodic coordinates
def wrap_delta(d: torch.Tensor) -> torch.Tensor:
    """Fractional difference mapped to [-0.5, 0.5): its minimum image on the unit torus."""
    return d - torch.round(d)


def angle_vectors(frac: torch.Tensor) -> torch.Tensor:
    """Fractional coordinates (..., 3) -> points on three unit circles (..., 3, 2)."""
    phase = TWO_PI * frac
    return torch.stack([torch.cos(phase), torch.sin(phase)], dim=-1)


def vectors_to_frac(v: torch.Tensor) -> torch.Tensor:
    """(..., 3, 2) circle vectors -> fractional coordinates in [0, 1)."""
    return torch.remainder(torch.atan2(v[..., 1], v[..., 0]) / TWO_PI, 1.0)


def periodic_vector_loss(pred: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Per-site periodic loss (...,) between predicted circle vectors (..., 3, 2) and coordinates.

    The mean over the three axes of ``1 - cos(2 pi (x_pred - x))``: 0 when exact, 1 on average
    for a random guess (so it is O(1) beside other losses), ``(2 pi^2 / 3) d^2`` for a small
    torus distance ``d``.  Invariant to integer shifts of the target.
    """
    unit = torch.nn.functional.normalize(pred.float(), dim=-1, eps=1e-6)
    cos_err = (unit * angle_vectors(frac.float())).sum(-1)
    return (1.0 - cos_err).mean(-1)


def torus_sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared minimum-image distance on the unit torus, summed over the last axis."""
    return wrap_delta(a - b).pow(2).sum(-1)


# ------------------------------------------------------------------------------------------
# lattices
def lattice_matrix(abc, angles_deg):
    """Row-vector lattice matrices (..., 3, 3) from lengths and angles (pymatgen's convention).

    Works on numpy arrays (float64) and torch tensors alike.
    """
    xp = torch if isinstance(abc, torch.Tensor) else np
    a, b, c = abc[..., 0], abc[..., 1], abc[..., 2]
    rad = angles_deg * (math.pi / 180.0)
    ca, cb, cg = xp.cos(rad[..., 0]), xp.cos(rad[..., 1]), xp.cos(rad[..., 2])
    sa, sb = xp.sin(rad[..., 0]), xp.sin(rad[..., 1])
    val = (ca * cb - cg) / (sa * sb)
    val = xp.clip(val, -1.0, 1.0) if xp is np else val.clamp(-1.0, 1.0)
    gamma_star = xp.arccos(val)
    zero = xp.zeros_like(a)
    va = xp.stack([a * sb, zero, a * cb], -1)
    vb = xp.stack([-b * sa * xp.cos(gamma_star), b * sa * xp.sin(gamma_star), b * ca], -1)
    vc = xp.stack([zero, zero, c], -1)
    return xp.stack([va, vb, vc], -2)


def reduce_lattices(matrices: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """Greedy (pairwise Gauss) reduction of many 3-d lattice bases at once (rows = vectors).

    Repeatedly subtracts the nearest-integer multiple of one vector from another until no pair
    changes.  The result spans the same lattice with short, nearly orthogonal vectors, so a
    minimum image is found among the 27 neighbours of the wrapped difference (checked against
    a brute-force search in the tests).  Vectorised over the batch; float64.
    """
    m = np.array(matrices, dtype=np.float64, copy=True)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    for _ in range(max_iter):
        changed = False
        for i, j in pairs:
            bj = m[:, j]
            ratio = np.einsum("nk,nk->n", m[:, i], bj) / np.einsum("nk,nk->n", bj, bj)
            # only when it strictly shortens b_i (a float tie at |ratio| = 0.5 could cycle)
            mu = np.where(np.abs(ratio) > 0.5 + 1e-9, np.round(ratio), 0.0)
            if np.any(mu != 0):
                changed = True
                m[:, i] -= mu[:, None] * bj
        if not changed:
            return m
    raise RuntimeError("lattice reduction did not converge")


_IMAGES = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=torch.float32)
_IMAGES_ON: dict = {}


def _images(device) -> torch.Tensor:
    """The 27 neighbour shifts on ``device`` (copied there once, not in every step)."""
    if device not in _IMAGES_ON:
        _IMAGES_ON[device] = _IMAGES.to(device)
    return _IMAGES_ON[device]


def min_image_distance(frac_a: torch.Tensor, frac_b: torch.Tensor, matrix: torch.Tensor,
                       reduced: torch.Tensor, reduced_inv: torch.Tensor) -> torch.Tensor:
    """Periodic minimum-image Cartesian distance between fractional points.

    ``frac_a``, ``frac_b``: (B, ..., 3) in the original basis ``matrix`` (B, 3, 3);
    ``reduced`` (B, 3, 3) a reduced basis of the same lattice and ``reduced_inv`` its inverse.
    The difference goes to Cartesian, into the reduced basis, is wrapped there and the nearest
    of its 27 neighbouring images is taken.
    """
    batch = frac_a.shape[0]
    delta = (frac_a - frac_b).float().reshape(batch, -1, 3)
    cart = delta @ matrix.float()
    red = wrap_delta(cart @ reduced_inv.float())                     # (B, P, 3) in the reduced basis
    images = red[:, :, None, :] + _images(red.device)[None, None]     # (B, P, 27, 3)
    d2 = (images @ reduced.float()[:, None]).pow(2).sum(-1).amin(-1)
    return d2.clamp_min(0).sqrt().reshape(frac_a.shape[:-1])
