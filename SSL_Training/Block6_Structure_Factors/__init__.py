"""SSL Block6 Structure Factors: ``encoder.py`` (the block) and ``train_block6.py`` (its training command)."""
