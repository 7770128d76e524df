"""``TrainConfig``: every setting of one SSL block run, and the command-line flags generated from it.

The dataclass is the single source: each field's ``metadata`` holds its help text (and, where the flag is not
``--<field-name>``, its flag), and ``add_config_arguments`` turns the fields into ``ssl-train`` /
``ssl-train-all`` options.  Imports no torch (building the ``ftcp`` parser must stay fast).
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING

from ..io_utils import parse_key_value

if TYPE_CHECKING:   # the block interface imports torch
    from .block import SSLBlock


def _opt(help: str, type=None, metavar: str | None = None, flag: str | None = None, choices=None,
         block_default: bool = False) -> dict:
    """Field metadata: the option's help text, value type, metavar, flag and whether the block sets the default."""
    return {"help": help, "type": type, "metavar": metavar, "flag": flag, "choices": choices,
            "block_default": block_default}


@dataclass
class TrainConfig:
    """Every setting of one block run; the ``ssl-train`` flags are generated from these fields."""

    epochs: int = field(metadata=_opt("training epochs", int, "N", block_default=True))
    batch_size: int = field(metadata=_opt("batch size per process", int, "N", block_default=True))
    lr: float = field(metadata=_opt("peak learning rate", float, "LR", block_default=True))
    patience: int = field(metadata=_opt("early-stopping patience in epochs", int, "N", block_default=True))
    weight_decay: float = field(default=1e-4, metadata=_opt("AdamW weight decay", float, "W", block_default=True))
    grad_clip: float = field(default=1.0, metadata=_opt("gradient-norm clip, 0 = off", float, "X",
                                                         block_default=True))
    warmup_epochs: float = field(default=0.0, metadata=_opt("linear warm-up (epochs) before the cosine decay",
                                                            float, "X"))
    seed: int = field(default=42, metadata=_opt("training seed", int, "N"))
    split_seed: int | None = field(default=None, metadata=_opt(
        "seed of a new SSL 80/10/10 split (default: the stored split's, else 42)", int, "N"))
    device: str = field(default="auto", metadata=_opt(
        "auto (CUDA when torch sees a GPU, else CPU) | cpu | cuda | cuda:N", str, "DEVICE"))
    amp: str = field(default="auto",
                     metadata=_opt("bf16 autocast (auto: on CUDA only)", choices=("auto", "bf16", "off")))
    max_samples: int | None = field(default=None, metadata=_opt(
        "train on at most N SSL-train materials (val/test: 1/8 of it); the export still covers all", int, "N"))
    eval_batch_size: int = field(default=1024, metadata=_opt("evaluation batch (fixes the masks)", int, "N"))
    export_batch_size: int = field(default=2048, metadata=_opt("materials per embedding-export batch", int, "N"))
    bucket: bool = field(default=True, metadata=_opt("no length bucketing of training batches", flag="--no-bucket"))
    compile: bool = field(default=False, metadata=_opt("torch.compile the model (experimental; no CUDA graphs)"))
    cuda_graphs: bool = field(default=True, metadata=_opt("run every training step eagerly on CUDA (no graph replay)",
                                                          flag="--no-cuda-graphs"))
    probe_every: int = field(default=0, metadata=_opt(
        "label probe of the embeddings on SSL-train crystals every N epochs and before training (0: off; "
        "see ftcp.ssl.probe)", int, "N"))
    probe_size: int = field(default=4000, metadata=_opt("SSL-train crystals in the label probe", int, "N"))
    threads: int | None = field(default=None, metadata=_opt(
        "torch CPU threads (default: torch's; on a busy CPU, 1 is often fastest)", int, "N"))
    progress: bool = field(default=True, metadata=_opt("no progress bars (they show only on a terminal anyway)",
                                                       flag="--no-progress"))
    resume: bool = field(default=True, metadata=_opt("ignore last.pt and train from scratch", flag="--restart"))
    stop_after_epochs: int | None = field(default=None, metadata=_opt(
        "stop this invocation after N epochs (the same command resumes)", int, "N"))
    export: bool = field(default=True, metadata=_opt("skip the embedding export", flag="--no-export"))
    min_delta: float = field(default=0.0, metadata=_opt("smallest validation-loss improvement that counts for "
                                                        "early stopping", float, "X"))
    model: dict = field(default_factory=dict, metadata=_opt("architecture setting, repeatable (VALUE is read as JSON "
                                                            "when it parses, else as a string)", metavar="KEY=VALUE"))
    embed_dim: int | None = field(default=None, metadata=_opt("embedding size (default: ftcp.layout's)", int, "N"))

    @classmethod
    def for_block(cls, block: SSLBlock, **overrides) -> TrainConfig:
        d = block.defaults
        base = dict(epochs=d.epochs, batch_size=d.batch_size, lr=d.lr, patience=d.patience,
                    weight_decay=d.weight_decay, grad_clip=d.grad_clip)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def _default_text(f, block) -> str:
    if f.metadata["block_default"]:
        return f"default {getattr(block.defaults, f.name)}" if block is not None else "default: the block's"
    if f.type == "bool" or f.name == "model" or f.default is None or f.default is MISSING:
        return ""
    return f"default {f.default}"


def add_config_arguments(parser: argparse.ArgumentParser, block=None, only=None, exclude=()) -> None:
    """One option per ``TrainConfig`` field (``only``: these fields; ``exclude``: not these).

    A value option is ``--field-name``; a field that is on by default has the off switch named in its metadata
    (``--no-export``, ``--restart``), one that is off by default ``--field-name``.  Fields the block sets
    (epochs, batch size, ...) default to None (then the block's value), the others to the dataclass default.
    """
    for f in fields(TrainConfig):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        meta = f.metadata
        dashed = "--" + f.name.replace("_", "-")
        default = None if (meta["block_default"] or f.default is MISSING) else f.default
        text = meta["help"]
        extra = _default_text(f, block)
        help_text = f"{text} ({extra})" if extra else text
        if f.type == "bool":
            on = f.default is True
            parser.add_argument(meta["flag"] or dashed, dest=f.name, action="store_false" if on else "store_true",
                                help=help_text)
        elif f.name == "model":
            parser.add_argument(dashed, dest="model", action="append", metavar=meta["metavar"], default=None,
                                help=help_text)
        else:
            parser.add_argument(meta["flag"] or dashed, dest=f.name, type=meta["type"], metavar=meta["metavar"],
                                choices=meta["choices"], default=default, help=help_text)


def config_fields(only=None, exclude=()) -> list[str]:
    """The names of the fields ``add_config_arguments(only=..., exclude=...)`` adds."""
    return [f.name for f in fields(TrainConfig) if (only is None or f.name in only) and f.name not in exclude]


def config_from_args(block, args, exclude=(), **settings) -> TrainConfig:
    """The block's ``TrainConfig`` from parsed options (``settings`` override them)."""
    values = {name: getattr(args, name) for name in config_fields(exclude=exclude) if hasattr(args, name)}
    values["model"] = dict(parse_key_value(item, "--model") for item in values.get("model") or [])
    values.update(settings)
    return TrainConfig.for_block(block, **values)


__all__ = ["TrainConfig", "add_config_arguments", "config_fields", "config_from_args"]
