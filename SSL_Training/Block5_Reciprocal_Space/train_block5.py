"""Train SSL Block 5 (Reciprocal Space), evaluate its pretext tasks, export its embeddings.

    ftcp ssl-train --block 5 --data Data [--out DIR] [--device auto] ...       # the same command
    python SSL_Training/Block5_Reciprocal_Space/train_block5.py --data Data ...
    torchrun --nproc_per_node=K -m ftcp ssl-train --block 5 --data Data

The block itself (encoder, tasks, views) is in encoder.py; the engine is ftcp.ssl.
"""

import sys

from ftcp.errors import run_main
from ftcp.ssl.cli import block_script_main


def main(argv=None) -> dict:
    return block_script_main(5, argv)


if __name__ == "__main__":
    sys.exit(run_main(main))
