"""The six SSL block encoders (``Block<N>_<Name>/encoder.py``) and their training scripts, installed with ``ftcp``.

``ftcp.ssl.blocks.load_block(n)`` imports ``SSL_Training.Block<N>_<Name>.encoder``; the engine is ``ftcp.ssl``.
"""
