"""SSL Block3 Atomic Sites: ``encoder.py`` (the block) and ``train_block3.py`` (its training command)."""
