"""SSL Block2 Crystal System: ``encoder.py`` (the block) and ``train_block2.py`` (its training command)."""
