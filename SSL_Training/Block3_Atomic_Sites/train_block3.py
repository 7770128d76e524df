"""Train SSL Block 3 (Atomic Sites), evaluate its pretext tasks, export its embeddings.

    ftcp ssl-train --block 3 --data Data [--out DIR] [--device auto] ...       # the same command
    python SSL_Training/Block3_Atomic_Sites/train_block3.py --data Data ...
    torchrun --nproc_per_node=K -m ftcp ssl-train --block 3 --data Data

The block itself (encoder, tasks, views) is in encoder.py; the engine is ftcp.ssl.
"""

import sys

from ftcp.errors import run_main
from ftcp.ssl.cli import block_script_main


def main(argv=None) -> dict:
    return block_script_main(3, argv)


if __name__ == "__main__":
    sys.exit(run_main(main))
