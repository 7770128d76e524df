"""Train SSL Block 3 (Atomic Sites), evaluate its pretext tasks, export its embeddings.

    python SSL_Training/Block3_Atomic_Sites/train_block3.py --data Data [--out DIR] [--device cpu] ...
    torchrun --nproc_per_node=K SSL_Training/Block3_Atomic_Sites/train_block3.py --data Data

The block itself (encoder, tasks, views) is in encoder.py; the engine is ftcp.ssl.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo root, for `ftcp` without installing

from encoder import BLOCK_CLASS  # noqa: E402

from ftcp.errors import run_main  # noqa: E402
from ftcp.ssl.cli import block_script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: block_script_main(BLOCK_CLASS(), argv)))
