"""Multi-modal self-supervised learning on FTCP: one engine for the six block encoders.

* ``ftcp.ssl.block``: the block interface (``SSLBlock``, ``Field``, ``TrainDefaults``),
* ``ftcp.ssl.metrics``: pretext task kinds (loss, metric + direction, trivial baseline),
* ``ftcp.ssl.engine``: training / DDP / checkpoints / resume / evaluation (``run_block``),
* ``ftcp.ssl.export``: deterministic embedding export and loading,
* ``ftcp.ssl.data``: data sources, the SSL split, the normaliser,
* ``ftcp.ssl.targets``: cached targets that need pymatgen (Block 2 crystal systems),
* ``ftcp.ssl.config``: ``TrainConfig``, the settings of a run (the training flags are generated from it),
* ``ftcp.ssl.blocks``: ``load_block(n)`` (the block definitions of the installed ``SSL_Training`` package),
* ``ftcp.ssl.cli``: the ``ftcp ssl-*`` commands.

Training imports only torch, numpy and tqdm.
"""
_LAZY = {"Field": "block", "SSLBlock": "block", "TrainDefaults": "block", "Task": "metrics",
         "ClassificationTask": "metrics", "RegressionTask": "metrics", "PeriodicCoordinateTask": "metrics",
         "BarlowTwinsTask": "metrics"}


def __getattr__(name):
    # lazy: these pull in torch, which the `ftcp` command line must not import just to build its parser
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Field", "SSLBlock", "TrainDefaults", "Task", "ClassificationTask", "RegressionTask",
           "PeriodicCoordinateTask", "BarlowTwinsTask"]
