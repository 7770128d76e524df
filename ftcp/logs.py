"""How the command line shows the library's log messages and progress bars.

Library modules log through ``logging.getLogger(__name__)`` and never print progress; ``configure`` (called by
every command-line entry) shows those messages as plain lines on stderr.  Progress bars come from
``progress_bar``: only on a terminal (tqdm's ``disable=None``), never when the caller turned them off.
"""
from __future__ import annotations

import contextlib
import logging
import sys

from tqdm.auto import tqdm

#: the top-level loggers of the project: the library and the two installed script packages
LOGGERS = ("ftcp", "SSL_Training", "Evaluation_Scenarios")


def configure(level: int = logging.INFO) -> None:
    """Plain one-line messages on stderr for the project's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(getattr(h, "_ftcp", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler._ftcp = True
            logger.addHandler(handler)
        logger.setLevel(level)


_BARS_OFF = []


def progress_bar(iterable=None, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar that shows only when stderr is a terminal, and never with ``enabled=False`` (or inside
    ``progress_bars_off()``)."""
    return tqdm(iterable, disable=None if enabled and not _BARS_OFF else True, **kwargs)


@contextlib.contextmanager
def progress_bars_off():
    """No progress bars inside (code that takes no progress flag, run for a ``--no-progress`` command)."""
    _BARS_OFF.append(True)
    try:
        yield
    finally:
        _BARS_OFF.pop()


__all__ = ["configure", "progress_bar", "progress_bars_off", "LOGGERS"]
