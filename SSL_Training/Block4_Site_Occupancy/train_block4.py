"""Train SSL Block 4 (Site Occupancy), evaluate its pretext tasks, export its embeddings.

    ftcp ssl-train --block 4 --data Data [--out DIR] [--device auto] ...       # the same command
    python SSL_Training/Block4_Site_Occupancy/train_block4.py --data Data ...
    torchrun --nproc_per_node=K -m ftcp ssl-train --block 4 --data Data

The block itself (encoder, tasks, views) is in encoder.py; the engine is ftcp.ssl.
"""

import sys

from ftcp.errors import run_main
from ftcp.ssl.cli import block_script_main


def main(argv=None) -> dict:
    return block_script_main(4, argv)


if __name__ == "__main__":
    sys.exit(run_main(main))
