"""SSL Block4 Site Occupancy: ``encoder.py`` (the block) and ``train_block4.py`` (its training command)."""
