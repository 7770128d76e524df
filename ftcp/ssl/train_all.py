"""Train all six SSL blocks, assemble the 2,048-d features and write the pretext-task table.

    ftcp ssl-train-all --data Data [--device auto] [--quick | --epochs-scale F] ...
    python SSL_Training/train_all.py --data Data ...          # the same
    torchrun --nproc_per_node=2 -m ftcp ssl-train-all --data PACK --device cuda ...

Steps: (1) ``prepare`` when the SSL split / normaliser / crystal systems are missing (a region
pack must carry them); (2) blocks 1..6 in order through ``ftcp.ssl.engine.run_block`` -
a block whose ``metrics.json`` and ``embeddings.npz`` exist and whose ``train_all.json``
record matches the current settings, split and normaliser is skipped; anything else resumes
from its ``last.pt`` (or refuses a ``last.pt`` of other settings: ``--restart``); (3) rank 0
joins the embeddings by material ID (``ftcp.ssl.assemble``) and writes the pretext table
(``ftcp.ssl.pretext_table``).  Under torchrun every rank runs every block (DDP), the process
group is created once for all of them.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import layout as L
from ..errors import UserError
from ..io_utils import atomic_write_json, parse_key_value, resolve_data_root, sha256_file, to_jsonable, utc_now
from ..provenance import git_commit
from . import data as D
from .blocks import load_block
from .config import TrainConfig, add_config_arguments
from .options import add_data_args, exclusion
from .pretext_table import write_table

log = logging.getLogger(__name__)

RECORD_FILE = "train_all.json"
#: ``--quick``: every block's upstream epoch count times this (at least 1)
QUICK_EPOCHS_SCALE = 0.15
#: ``--preset fast``: GPU settings.  Blocks 3, 4 and 6 train at upstream's batch 32, which leaves an
#: H100 launch-bound (~20 ms/step, ~6 min per block on mp_36k); batch 256 with the learning rate
#: raised about sqrt(8)-fold and one warm-up epoch takes 8x fewer steps (Block 3 on a 3,000-crystal
#: CPU subset: slightly weaker task 5, see SSL_Training/README.md).  Blocks 1, 2 and 5 keep upstream's.
FAST = {3: {"batch_size": 256, "lr": 2e-3, "warmup_epochs": 1.0},
        4: {"batch_size": 256, "lr": 1.5e-3, "warmup_epochs": 1.0},
        6: {"batch_size": 256, "lr": 1.5e-3, "warmup_epochs": 1.0}}
TRAIN_KEYS = ("epochs", "batch_size", "lr", "patience", "weight_decay", "grad_clip", "warmup_epochs", "seed",
              "max_samples", "amp", "bucket", "eval_batch_size")


#: the training options of train-all, generated from TrainConfig (the rest are per block: --set)
SHARED_CONFIG = ("device", "seed", "amp", "threads", "max_samples", "probe_every", "cuda_graphs", "progress", "resume")


def add_arguments(p: argparse.ArgumentParser, top_level: bool = False):
    add_data_args(p, top_level=top_level)
    p.add_argument("--blocks", type=int, nargs="+", default=[b.number for b in L.BLOCKS], choices=range(1, 7),
                   metavar="N", help="blocks to train (default all six); the features are assembled whenever all "
                                     "six exist")
    p.add_argument("--preset", choices=("upstream", "fast"), default="upstream",
                   help="upstream: each block's upstream lr/batch/epochs; fast: larger batches for GPUs (see "
                        "SSL_Training/README.md)")
    p.add_argument("--objective", choices=("upstream", "crossmodal"), default="upstream",
                   help="upstream: the 13 pretext tasks (the published replication); crossmodal: plus every block "
                        "predicting a summary of the whole crystal through a linear head (ftcp.ssl.crossmodal)")
    p.add_argument("--crossmodal-weight", type=float, default=1.0, metavar="W",
                   help="loss weight of the cross-modal task with --objective crossmodal (default 1)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs-scale", type=float, default=None, metavar="F",
                   help="multiply every block's epoch count (min 1)")
    g.add_argument("--quick", action="store_true", help=f"short schedules: epochs x {QUICK_EPOCHS_SCALE} (min 1)")
    add_config_arguments(p, only=SHARED_CONFIG)
    p.add_argument("--set", action="append", default=[], metavar="N:KEY=VALUE",
                   help="per-block setting, repeatable: a training setting (epochs, batch_size, lr, patience, "
                        "warmup_epochs, max_samples) or a model setting (e.g. 6:conv_channels=[8,16,32])")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes for the crystal-system targets (default: the CPU count)")
    p.add_argument("--no-assemble", action="store_true", help="do not assemble the 2,048-d features")
    p.add_argument("--upstream-layout", action="store_true",
                   help="also write Split_*/{Train,Test}/*_Extracted_Features_*.npy for every split of the data root")
    p.add_argument("--table-dir", metavar="DIR", default=None,
                   help="where pretext_tasks.{md,json} go (default: the SSL directory)")
    p.add_argument("--no-table", action="store_true", help="do not write the pretext-task table")


def parse_sets(items) -> dict[int, dict]:
    """``--set N:KEY=VALUE`` items -> {block number: {key: value}} (values as ``io_utils.parse_key_value``)."""
    out: dict[int, dict] = {}
    for item in items:
        n, sep, kv = str(item).partition(":")
        try:
            number = int(n)
        except ValueError:
            number = None
        if not sep or number is None:
            raise UserError(f"--set expects N:KEY=VALUE, got {item!r}")
        key, value = parse_key_value(kv, "--set")
        out.setdefault(number, {})[key] = value
    return out


def block_config(block, args, sets: dict):
    """The TrainConfig of one block for these arguments."""
    own = dict(sets.get(block.number, {}))
    if getattr(args, "objective", "upstream") == "crossmodal":
        own.setdefault("crossmodal_weight", args.crossmodal_weight)
    train = {k: own.pop(k) for k in list(own) if k in TRAIN_KEYS}
    preset = FAST.get(block.number, {}) if args.preset == "fast" else {}
    epochs = train.pop("epochs", None)
    if epochs is None:
        scale = QUICK_EPOCHS_SCALE if args.quick else args.epochs_scale
        epochs = max(1, int(round(block.defaults.epochs * scale))) if scale else block.defaults.epochs
    settings = {**preset, **train, "epochs": int(epochs), "seed": args.seed, "split_seed": args.split_seed,
                "device": args.device, "amp": args.amp, "threads": args.threads, "progress": args.progress,
                "resume": args.resume, "model": own, "probe_every": args.probe_every,
                "cuda_graphs": args.cuda_graphs}
    if args.max_samples is not None and "max_samples" not in train:
        settings["max_samples"] = args.max_samples
    return TrainConfig.for_block(block, **settings)


def prepared_file(name: str, ssl_dir: Path, root: Path) -> Path:
    """Where the engine finds a prepared file: the SSL directory, else ``<root>/SSL``."""
    for d in (ssl_dir, root / "SSL"):
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(f"no {name} in {ssl_dir} or {root / 'SSL'}")


def _record(block, cfg, ssl_dir: Path, root: Path, world: int) -> dict:
    train = asdict(cfg)
    return {"block": block.number, "train": {k: train[k] for k in TRAIN_KEYS}, "split_seed": cfg.split_seed,
            "model": block.model_config(cfg.model, cfg.embed_dim), "world_size": world,
            "ssl_split_sha256": sha256_file(prepared_file(D.SPLIT_FILE, ssl_dir, root)),
            "normalizer_sha256": sha256_file(prepared_file(D.NORMALIZER_FILE, ssl_dir, root))}


def block_is_done(block, cfg, ssl_dir: Path, root: Path, world: int) -> tuple[bool, str]:
    """Whether a finished run with these settings, split and normaliser is already there."""
    bdir = ssl_dir / block.dirname
    for name in ("metrics.json", "embeddings.npz", RECORD_FILE):
        if not (bdir / name).exists():
            return False, f"no {name}"
    metrics = json.loads((bdir / "metrics.json").read_text())
    if metrics.get("status") != "finished":
        return False, "not finished"
    saved = json.loads((bdir / RECORD_FILE).read_text())
    now = json.loads(json.dumps(_record(block, cfg, ssl_dir, root, world)))
    diff = sorted(k for k in set(now) | set(saved) if k not in ("embeddings_sha256",) and now.get(k) != saved.get(k))
    if diff:
        return False, f"settings changed ({', '.join(diff)})"
    if saved.get("embeddings_sha256") != sha256_file(bdir / "embeddings.npz"):
        return False, "embeddings.npz changed since it was trained"
    return True, "done"


def ensure_prepared(root: Path, ssl_dir: Path, args, need_crystal_systems: bool) -> D.SSLData:
    """SSL split + normaliser (+ Block 2 crystal systems, + cross-modal targets): made here when missing.

    The stored split is the authority; ``--protocol`` / ``--exclude-*`` only matter for a new one
    (or are refused when they contradict the stored one).
    """
    from . import targets  # pymatgen

    exclude, source = exclusion(args)
    data = D.prepare(root, ssl_dir, args.split_seed, exclude, source, create=True)
    if need_crystal_systems:
        targets.ensure_crystal_systems(data.source, data.ssl_dir, data.search_dirs()[1:], workers=args.workers,
                                       progress=args.progress)
    return data


def run_record(args, data: D.SSLData, sets: dict, world: int, device_name: str) -> dict:
    """What one train-all run was (``ssl_run.json``): protocol, split, preset, objective, seed, commit."""
    return {"kind": "ssl_run", "protocol": D.split_summary(data.split)["protocol"],
            "split": D.split_summary(data.split), "preset": args.preset, "objective": args.objective,
            "crossmodal_weight": args.crossmodal_weight if args.objective == "crossmodal" else 0.0,
            "seed": args.seed, "epochs_scale": QUICK_EPOCHS_SCALE if args.quick else args.epochs_scale,
            "max_samples": args.max_samples, "sets": {str(k): v for k, v in sets.items()},
            "world_size": world, "device_name": device_name,
            "git": git_commit(), "command": " ".join(["ftcp ssl-train-all"] + _argv_tail()), "created_utc": utc_now()}


def _argv_tail() -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index("ssl-train-all") + 1:] if "ssl-train-all" in argv else argv


def _train_one(block, cfg, root, ssl_dir, ddp) -> dict:
    from .engine import run_block  # torch

    t = time.perf_counter()
    metrics = run_block(block, cfg, root=root, ssl_dir=ssl_dir)
    timing = metrics.get("timing", {})
    if metrics.get("status") != "finished":
        raise RuntimeError(f"block {block.number} did not finish ({metrics.get('status')}); "
                           f"run the command again to resume")
    if ddp.main:
        record = _record(block, cfg, ssl_dir, root, ddp.world)
        record["embeddings_sha256"] = sha256_file(ssl_dir / block.dirname / "embeddings.npz")
        atomic_write_json(ssl_dir / block.dirname / RECORD_FILE, record)
    return {"status": metrics.get("status"), "seconds": time.perf_counter() - t,
            "epochs_run": metrics.get("epochs_run"), "train_seconds": timing.get("train_seconds"),
            "samples_per_s": timing.get("samples_per_s"), "export_seconds": timing.get("export_seconds"),
            "step_engine": timing.get("step_engine")}


def run_all(args) -> dict:
    # torch and the modules that import it load here, not when the ftcp parser imports this module
    import torch

    from .assemble import RUN_FILE, assemble
    from .engine import device_kind, setup_distributed

    t0 = time.perf_counter()
    root = resolve_data_root(args.data)
    ssl_dir = Path(args.out) if args.out else root / "SSL"
    kind = device_kind(args.device)
    ddp = setup_distributed(kind)          # one process group for all blocks (the engine reuses it)
    sets = parse_sets(args.set)
    try:
        if ddp.main:
            data = ensure_prepared(root, ssl_dir, args, 2 in args.blocks)
            if args.objective == "crossmodal":
                from .crossmodal import ensure_descriptors  # torch

                ensure_descriptors(data.source, data.ssl_dir, data.search_dirs()[1:])
        ddp.barrier()
        if not ddp.main:
            data = D.prepare(root, ssl_dir, args.split_seed, create=False)
        args.split_seed = int(data.split["seed"])
        device_name = torch.cuda.get_device_name() if kind == "cuda" else "cpu"
        if ddp.main:
            atomic_write_json(ssl_dir / RUN_FILE, run_record(args, data, sets, ddp.world, device_name))
        summary = {"blocks": {}, "world_size": ddp.world}
        for n in args.blocks:
            block = load_block(n)
            cfg = block_config(block, args, sets)
            done, why = block_is_done(block, cfg, ssl_dir, root, ddp.world) if args.resume else (False, "--restart")
            if done:
                if ddp.main:
                    log.info("block %d (%s): already trained with these settings, skipped", n, block.name)
                summary["blocks"][n] = {"status": "skipped (done)"}
                continue
            if ddp.main:
                log.info("block %d (%s): training (%s); epochs %d, batch %d, lr %g", n, block.name, why, cfg.epochs,
                         cfg.batch_size, cfg.lr)
            summary["blocks"][n] = _train_one(block, cfg, root, ssl_dir, ddp)
            ddp.barrier()
        if ddp.main:
            have_all = all((ssl_dir / b.dirname / "embeddings.npz").exists() for b in L.BLOCKS)
            if not args.no_assemble and have_all:
                t = time.perf_counter()
                assemble(ssl_dir, root=root, upstream_layout=args.upstream_layout)
                summary["assemble_seconds"] = time.perf_counter() - t
            if not args.no_table:
                table_dir = Path(args.table_dir) if args.table_dir else ssl_dir
                command = " ".join(["ftcp ssl-train-all"] + _argv_tail())
                summary["table"] = write_table(ssl_dir, table_dir, command=command, data_root=root)["summary"]
            summary["total_seconds"] = time.perf_counter() - t0
            summary.update(created_utc=utc_now(), device=device_name, threads=torch.get_num_threads())
            atomic_write_json(ssl_dir / "train_all_summary.json", to_jsonable(summary))
            log.info("train-all finished in %.1f s: %s", summary["total_seconds"],
                     ", ".join(f"B{n} {v.get('seconds', 0):.0f}s" for n, v in summary["blocks"].items())
                     + (f", assembly {summary['assemble_seconds']:.1f}s" if "assemble_seconds" in summary else ""))
        ddp.barrier()
        return summary
    finally:
        if ddp.owns_group:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()
