"""The six block definitions: ``SSL_Training/Block<N>_<Name>/encoder.py``, an installed package.

``load_block(n)`` imports ``SSL_Training.Block<N>_<Name>.encoder`` (installed with ``ftcp``, so it works
outside a checkout too) and returns a fresh instance of its ``BLOCK_CLASS``.
"""
from __future__ import annotations

import importlib

from .. import layout as L


def encoder_module(number: int) -> str:
    """``SSL_Training.Block1_Element_Matrix.encoder`` for block 1 (the folder is the block's name in title case)."""
    block = L.block(int(number))
    return f"SSL_Training.Block{block.number}_{block.name.title()}.encoder"


def load_block(number: int):
    """An instance of block ``number`` (1..6): the ``BLOCK_CLASS`` of its encoder module."""
    return importlib.import_module(encoder_module(number)).BLOCK_CLASS()


__all__ = ["encoder_module", "load_block"]
