"""SSL Block5 Reciprocal Space: ``encoder.py`` (the block) and ``train_block5.py`` (its training command)."""
