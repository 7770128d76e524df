"""Train all six SSL blocks (skipping finished ones, resuming interrupted ones), assemble the
2,048-d SSL features by material ID and write the pretext-task table.

    python SSL_Training/train_all.py --data Data [--device auto] [--quick | --epochs-scale F]
    torchrun --nproc_per_node=2 SSL_Training/train_all.py --data PACK --device cuda

Same as ``python -m ftcp.ssl train-all``; the logic is in ftcp/ssl/train_all.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repo root, for `ftcp` without installing

from ftcp.errors import run_main  # noqa: E402
from ftcp.ssl.train_all import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_main(main))
