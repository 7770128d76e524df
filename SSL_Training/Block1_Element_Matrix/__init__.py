"""SSL Block1 Element Matrix: ``encoder.py`` (the block) and ``train_block1.py`` (its training command)."""
