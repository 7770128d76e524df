"""``python -m ftcp ...`` runs the command line (see ``ftcp.cli``)."""
import sys

from .cli import main

sys.exit(main())
