"""How the command line shows the library's log messages (library modules only call ``logging``)."""
from __future__ import annotations

import logging
import sys


def configure(level: int = logging.INFO) -> None:
    """Plain one-line messages on stderr for the ``ftcp`` loggers (idempotent)."""
    logger = logging.getLogger("ftcp")
    if not any(getattr(h, "_ftcp", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._ftcp = True
        logger.addHandler(handler)
    logger.setLevel(level)
