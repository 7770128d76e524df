"""Train all six SSL blocks (skipping finished ones, resuming interrupted ones), assemble the
2,048-d SSL features by material ID and write the pretext-task table.

    ftcp ssl-train-all --data Data [--device auto] [--quick | --epochs-scale F]    # the same command
    python SSL_Training/train_all.py --data Data ...
    torchrun --nproc_per_node=2 -m ftcp ssl-train-all --data PACK --device cuda

The logic is in ftcp/ssl/train_all.py.
"""
import sys

from ftcp.cli import main

if __name__ == "__main__":
    sys.exit(main(["ssl-train-all", *sys.argv[1:]]))
