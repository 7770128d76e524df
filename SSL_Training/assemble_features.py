"""Join the six block embeddings by material ID into the 2,048-d SSL feature table.

    python SSL_Training/assemble_features.py --data Data [--out SSL_DIR] [--upstream-layout]

Same as ``python -m ftcp.ssl assemble``; the logic is in ftcp/ssl/assemble.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repo root, for `ftcp` without installing

from ftcp.errors import run_main  # noqa: E402
from ftcp.ssl.assemble import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_main(main))
