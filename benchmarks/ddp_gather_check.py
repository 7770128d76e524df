"""Cross-rank Barlow Twins check: under torchrun, the loss on the gathered global batch and the
DDP-averaged gradient must equal one process holding the whole batch.

    torchrun --standalone --nproc_per_node=2 benchmarks/ddp_gather_check.py RESULT.json [--backend nccl]

gloo on CPU (what tests/test_ssl_ddp.py runs in CI) or NCCL on GPUs (default when CUDA is there).
Rank 0 writes {loss_diff, grad_diff, grad_scale, backend, device} to RESULT.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist

from ftcp.ssl.losses import barlow_twins


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result")
    ap.add_argument("--backend", choices=("gloo", "nccl"), default="nccl" if torch.cuda.is_available() else "gloo")
    args = ap.parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if args.backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    torch.manual_seed(0)
    proj = torch.nn.Linear(8, 16).to(device)
    x1, x2 = torch.randn(64, 8, device=device), torch.randn(64, 8, device=device)
    # one process, whole batch
    barlow_twins(proj(x1), proj(x2), gather=False).backward()
    full = proj.weight.grad.clone()
    proj.weight.grad = None
    # this rank's share; batch statistics gathered across ranks; gradients averaged as DDP does
    share = len(x1) // world
    part = slice(rank * share, (rank + 1) * share)
    loss = barlow_twins(proj(x1[part]), proj(x2[part]), gather=True)
    loss.backward()
    grad = proj.weight.grad.clone()
    dist.all_reduce(grad)
    grad /= world
    if rank == 0:
        ref = barlow_twins(proj(x1), proj(x2), gather=False)
        result = {"loss_diff": float(abs(loss.item() - ref.item())), "grad_diff": float((grad - full).abs().max()),
                  "grad_scale": float(full.abs().max()), "backend": args.backend, "world": world,
                  "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                  "torch": torch.__version__}
        Path(args.result).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
