"""The block interface: what a block declares so that ``ftcp.ssl.engine`` can train it.

A block (one FTCP modality) is a subclass of ``SSLBlock`` living in
``SSL_Training/Block<N>_<Name>/encoder.py``.  It declares

* ``number`` (1..6; name and default embedding size come from ``ftcp.layout.block(number)``),
* ``fields``: the FTCP regions it reads, by ``ftcp.layout.REGIONS`` name, each either min-max
  normalised (what encoders usually see) or raw (physical units, e.g. the lattice in Angstrom
  for distances), plus ``extra_fields`` (cached targets keyed by material ID) and
  ``prepare_fields`` (one-off numpy work: presence masks, reduced lattices, ...),
* ``sequence_fields`` and ``lengths``: fields whose axis 1 runs over sites, and how many are
  real per material; the engine then cuts every batch to its longest member (rounded up to a
  multiple of 8) and, in training, forms batches of similar lengths,
* ``fit_stats``: constants fitted on SSL-train (e.g. standardisation of engineered inputs),
  kept in ``self.stats`` and saved with every checkpoint,
* ``build_model``: an ``nn.Module`` with ``forward(inputs) -> {task name: pred dict}`` (ALL task
  heads run in this one forward, which DistributedDataParallel wraps) and
  ``embed(inputs) -> (B, embed_dim)``,
* ``tasks``: ``ftcp.ssl.metrics.Task`` objects (loss, weight, metric + direction, baseline),
* ``make_views(batch, gen, train)``: batched view/mask construction on the device, returning
  ``(inputs, targets)`` where ``targets[task.name]`` is that task's target dict,
* ``clean_inputs(batch)``: the unmasked, un-augmented inputs used for the exported embedding.

Batches are dicts of tensors (``batch[field name]``, first axis = materials).  All randomness in
``make_views`` must come from ``gen`` (a ``torch.Generator`` on the data's device): training
re-seeds it every epoch, evaluation re-seeds it for every batch (fixed masks).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import layout as L
from . import crossmodal as X
from .metrics import Task

#: settings every block accepts besides its own ``model_defaults``: optional objectives beyond
#: upstream's task set (0 = off, the published replication)
OBJECTIVE_DEFAULTS = {"crossmodal_weight": 0.0}


@dataclass(frozen=True)
class Field:
    """One FTCP region a block reads.  ``name`` is its key in the batch."""

    name: str
    region: str
    normalised: bool = True

    def __post_init__(self):
        if self.region not in L.REGIONS:
            raise KeyError(f"unknown FTCP region {self.region!r}; known: {sorted(L.REGIONS)}")


@dataclass(frozen=True)
class TrainDefaults:
    """Upstream's optimiser settings for a block (all overridable from the command line)."""

    lr: float
    batch_size: int
    epochs: int
    patience: int
    weight_decay: float = 1e-4
    grad_clip: float = 1.0


class SSLBlock:
    """Base class of the six block definitions (see the module docstring).

    Subclasses set the class attributes below and implement the methods that raise
    ``NotImplementedError``.
    """

    number: int = 0
    fields: tuple = ()
    sequence_fields: tuple = ()
    defaults: TrainDefaults = None
    model_defaults: dict = {}
    #: set True if some steps leave parameters unused (slows DistributedDataParallel down)
    ddp_find_unused_parameters: bool = False

    def __init__(self):
        self.stats: dict[str, torch.Tensor] = {}
        self._tasks = None
        self.cfg = self.model_config()

    def configure(self, cfg: dict) -> SSLBlock:
        """Use the model/task settings ``cfg`` (from ``model_config``); rebuilds the tasks."""
        self.cfg = dict(cfg)
        self._tasks = None
        return self

    # -- identity --------------------------------------------------------------------------
    @property
    def layout_block(self):
        return L.block(self.number)

    @property
    def name(self) -> str:
        return self.layout_block.name

    @property
    def dirname(self) -> str:
        return self.layout_block.dirname

    # -- data ------------------------------------------------------------------------------
    def extra_fields(self, data) -> dict[str, np.ndarray]:
        """Extra per-material arrays (store order), e.g. cached targets; ``data`` is ``SSLData``."""
        return {}

    def inference_fields(self, data) -> dict[str, np.ndarray]:
        """``extra_fields`` for embedding crystals outside the training store (``ftcp.embed``).

        The default is ``extra_fields``; a block whose extra fields are cached pretext *targets*
        (never read by ``clean_inputs``) returns placeholders here instead, since new crystals
        have no cache entry.
        """
        return self.extra_fields(data)

    def prepare_fields(self, fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One-off numpy preprocessing of the loaded fields (store order, all materials)."""
        return fields

    def lengths(self, fields: dict[str, np.ndarray]) -> np.ndarray | None:
        """Number of real entries along axis 1 of ``sequence_fields`` per material, if any."""
        return None

    def fit_stats(self, train: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constants fitted on the SSL-train fields (tensors on the device)."""
        return {}

    # -- model and tasks -------------------------------------------------------------------
    def model_config(self, overrides: dict | None = None, embed_dim: int | None = None) -> dict:
        cfg = {**self.model_defaults, **OBJECTIVE_DEFAULTS}
        overrides = dict(overrides or {})
        embed_dim = embed_dim or overrides.pop("embed_dim", None)
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise KeyError(f"unknown model setting(s) {sorted(unknown)} for block {self.number}; "
                           f"known: {sorted(cfg)}")
        for k, v in overrides.items():
            cfg[k] = type(cfg[k])(v) if cfg[k] is not None and not isinstance(v, type(cfg[k])) else v
        cfg["embed_dim"] = int(embed_dim or self.layout_block.embed_dim)
        return cfg

    def build_model(self, cfg: dict) -> nn.Module:  # pragma: no cover - interface
        """The model for settings ``cfg`` (``self.cfg`` is already ``cfg`` when the engine calls it)."""
        raise NotImplementedError

    def build_tasks(self) -> list[Task]:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def crossmodal(self) -> bool:
        return float(self.cfg.get("crossmodal_weight", 0.0)) > 0

    def create_model(self, cfg: dict) -> nn.Module:
        """``build_model`` plus the heads of the optional objectives this configuration enables."""
        model = self.build_model(cfg)
        if float(cfg.get("crossmodal_weight", 0.0)) > 0:
            model = X.CrossModalModel(model, cfg["embed_dim"], len(X.descriptor_names()))
        return model

    def views(self, batch: dict, gen: torch.Generator, train: bool):
        """``make_views`` plus what the optional objectives need (what the engine calls)."""
        inputs, targets = self.make_views(batch, gen, train)
        if self.crossmodal:
            inputs = {"view": inputs, "clean": self.clean_inputs(batch)}
            targets = {**targets, X.TASK: X.target(batch)}
        return inputs, targets

    def objective_fields(self, data) -> dict[str, np.ndarray]:
        """Extra per-material arrays the optional objectives need (store order)."""
        if not self.crossmodal:
            return {}
        return {"crossmodal_target": X.load_descriptors(data.source, data.search_dirs())}

    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            self._tasks = self.build_tasks()
            if self.crossmodal:
                self._tasks.append(X.make_task(float(self.cfg["crossmodal_weight"])))
            names = [t.name for t in self._tasks]
            if len(set(names)) != len(names):
                raise ValueError(f"block {self.number}: task names must be unique, got {names}")
        return self._tasks

    def make_views(self, batch: dict, gen: torch.Generator, train: bool):  # pragma: no cover - interface
        raise NotImplementedError

    def clean_inputs(self, batch: dict) -> dict:  # pragma: no cover - interface
        raise NotImplementedError
