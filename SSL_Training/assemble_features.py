"""Join the six block embeddings by material ID into the 2,048-d SSL feature table.

    ftcp ssl-assemble --data Data [--out SSL_DIR] [--upstream-layout]    # the same command
    python SSL_Training/assemble_features.py --data Data ...

The logic is in ftcp/ssl/assemble.py.
"""
import sys

from ftcp.cli import main

if __name__ == "__main__":
    sys.exit(main(["ssl-assemble", *sys.argv[1:]]))
