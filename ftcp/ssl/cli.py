"""The SSL commands of ``ftcp``: ``ssl-prepare``, ``ssl-pack``, ``ssl-train``, ``ssl-train-all``, ``ssl-assemble``,
``ssl-pretext-table`` and ``ssl-export`` (``register_cli``), and the entry of the block scripts.

    ftcp ssl-prepare --data DIR [--out SSL_DIR]        # split, normaliser, B2 crystal systems (CPU, pymatgen)
    ftcp ssl-pack --data DIR --out PACK --blocks 1 2 3  # compact data root for a GPU machine
    ftcp ssl-train --block N [training options]        # same as SSL_Training/Block*/train_blockN.py
    ftcp ssl-train-all --data DIR [--quick]             # blocks 1-6 (resuming), assemble, pretext table
    ftcp ssl-assemble --data DIR [--upstream-layout]    # the 2,048-d table by material ID
    ftcp ssl-pretext-table --data DIR                   # pretext_tasks.{md,json}
    ftcp ssl-export --block N --data DIR [--checkpoint best.pt]   # re-export from a checkpoint

The training options are generated from ``ftcp.ssl.config.TrainConfig``.  Modules that import torch (the engine,
export, assembly) are imported inside the handlers: building the ``ftcp`` parser must not load torch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import layout as L
from ..errors import UserError, add_debug_argument
from ..io_utils import add_data_argument, add_device_argument, resolve_data_root
from ..logs import configure
from . import data as D
from .blocks import load_block
from .options import add_data_args, add_ssl_dir_argument, add_train_args, exclusion, train_config
from .train_all import add_arguments as add_train_all_arguments
from .train_all import run_all

BLOCK_CHOICES = range(1, len(L.BLOCKS) + 1)


def format_metrics(metrics: dict) -> str:
    lines = [f"{'task':<26}{'part':<6}{'metric':<22}{'model':>10}{'baseline':>10}  beats"]
    for part in ("val", "test"):
        for name, m in metrics[part].items():
            if name == "loss":
                continue
            lines.append(f"{name:<26}{part:<6}{m['metric']:<22}{m['model']:>10.4f}{m['baseline']:>10.4f}  "
                         f"{'yes' if m['beats_baseline'] else 'NO'}")
    return "\n".join(lines)


def run_train(block, args) -> dict:
    """Train one block with the parsed options; prints its metrics table (rank 0) and returns the metrics."""
    import torch.distributed as dist

    from .engine import run_block  # torch

    exclude, source = exclusion(args)
    metrics = run_block(block, train_config(block, args), root=args.data, ssl_dir=args.out,
                        exclude=exclude, exclude_source=source)
    if metrics.get("status") == "finished" and metrics.get("out_dir"):
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            print(format_metrics(metrics))
            print(f"outputs: {metrics['out_dir']}")
    elif metrics.get("status") == "interrupted":
        print(f"stopped after epoch {metrics['epoch']}; run the same command again to resume")
    return metrics


def block_script_main(number: int, argv=None) -> dict:
    """``SSL_Training/Block<N>_*/train_block<N>.py``: ``ftcp ssl-train --block N`` with the block's defaults in
    its help."""
    configure()
    block = load_block(number)
    p = argparse.ArgumentParser(description=f"Train SSL block {block.number} ({block.name}), evaluate its pretext "
                                            f"tasks against trivial baselines and export its embeddings.")
    add_train_args(p, block, top_level=True)
    add_debug_argument(p)
    return run_train(block, p.parse_args(argv))


# ------------------------------------------------------------------------------------------
def cmd_prepare(args):
    from . import targets  # pymatgen

    exclude, source = exclusion(args)
    data = D.prepare(args.data, args.out, args.split_seed, exclude, source, create=True)
    print(f"SSL split {data.split['sizes']} and normaliser in {data.ssl_dir}")
    if args.crystal_systems:
        path = targets.ensure_crystal_systems(data.source, data.ssl_dir, data.search_dirs()[1:], workers=args.workers,
                                              progress=args.progress)
        print(f"crystal systems: {path}")
    if args.crossmodal:
        from .crossmodal import ensure_descriptors

        print(f"cross-modal targets: {ensure_descriptors(data.source, data.ssl_dir, data.search_dirs()[1:])}")


def cmd_pack(args):
    from . import targets  # pymatgen

    ssl_dir = Path(args.ssl_dir) if args.ssl_dir else resolve_data_root(args.data) / "SSL"
    source = D.open_source(args.data)
    regions = list(args.regions or [])
    for n in args.blocks or []:
        regions += [f.region for f in load_block(n).fields]
    if any(int(n) == 2 for n in args.blocks or []):
        targets.load_crystal_systems(source.ids, [ssl_dir])   # fail early if missing
    regions = list(dict.fromkeys(regions))
    for name in (D.SPLIT_FILE, D.NORMALIZER_FILE):
        if not (ssl_dir / name).exists():
            raise UserError(f"{ssl_dir / name} is missing: run `ftcp ssl-prepare --data {args.data}` first")
    out = D.write_pack(source, args.out, regions, [ssl_dir])
    size = (out / D.PACK_FILE).stat().st_size / 2**20
    print(f"wrote {out / D.PACK_FILE} ({size:.1f} MiB; regions {regions}) and {out / 'SSL'}")


def cmd_train(args) -> int:
    metrics = run_train(load_block(args.block), args)
    return 0 if metrics.get("status") in ("finished", "interrupted") else 1


def cmd_train_all(args) -> int:
    run_all(args)
    return 0


def cmd_assemble(args):
    from .assemble import assemble  # torch (through the embedding loader)

    root = resolve_data_root(args.data)
    assemble(Path(args.out) if args.out else root / "SSL", root=root, features_dir=args.features_dir,
             upstream_layout=args.upstream_layout)


def cmd_pretext_table(args):
    from .pretext_table import write_table

    root = resolve_data_root(args.data)
    ssl_dir = Path(args.out) if args.out else root / "SSL"
    write_table(ssl_dir, Path(args.to) if args.to else ssl_dir, command=args.train_command, data_root=root)


def cmd_export(args) -> int:
    """Re-export a block's embeddings from a checkpoint (e.g. a best.pt brought back from a GPU machine),
    or export the random-init control (``--init random``: the encoder's initial weights)."""
    import numpy as np

    from ..runtime import resolve_device  # torch
    from .batches import DeviceData, load_block_fields
    from .engine import TrainConfig, export_initial
    from .export import embed_positions, load_block_model, save_embeddings

    blocks = [load_block(n) for n in (args.block or [b.number for b in L.BLOCKS])]
    if args.checkpoint and len(blocks) != 1:
        raise UserError("--checkpoint needs exactly one --block")
    if args.init == "random":
        out_dir = Path(args.to) if args.to else None
        root = resolve_data_root(args.data)
        ssl_dir = Path(args.out) if args.out else root / "SSL"
        for block in blocks:
            cfg = TrainConfig.for_block(block, seed=args.seed, split_seed=args.split_seed, device=args.device,
                                        export_batch_size=args.batch_size, progress=False)
            target = out_dir or ssl_dir / f"random_init_seed{args.seed}"
            path = export_initial(block, cfg, root, ssl_dir, target)
            print(f"exported block {block.number} with its initial weights (seed {args.seed}) -> {path}")
        return 0
    data = D.prepare(args.data, args.out, args.split_seed, create=False)
    device = resolve_device(args.device)
    for block in blocks:
        checkpoint = Path(args.checkpoint) if args.checkpoint else data.ssl_dir / block.dirname / "best.pt"
        model = load_block_model(block, checkpoint, device)
        fields = load_block_fields(block, data, inference=True)
        dd = DeviceData(fields, block.lengths(fields), block.sequence_fields, device)
        emb = embed_positions(block, model, dd, np.arange(len(data.ids)), args.batch_size)
        out = (Path(args.to) / block.dirname / "embeddings.npz" if args.to
               else data.ssl_dir / block.dirname / "embeddings.npz")
        out.parent.mkdir(parents=True, exist_ok=True)
        save_embeddings(out, data.ids, emb)
        print(f"exported block {block.number} from {checkpoint}: {emb.shape} -> {out}")
    return 0


# ------------------------------------------------------------------------------------------
def register_cli(subparsers) -> None:
    """Add the ``ssl-*`` commands to the ``ftcp`` parser."""
    p = subparsers.add_parser("ssl-prepare", help="make the SSL split, normaliser and Block 2 crystal-system targets")
    add_data_args(p)
    p.add_argument("--workers", type=int, metavar="N", default=None,
                   help="processes for the crystal-system targets (default: the CPU count)")
    p.add_argument("--no-crystal-systems", dest="crystal_systems", action="store_false",
                   help="skip the Block 2 crystal-system targets (pymatgen; Block 2 cannot train without them)")
    p.add_argument("--crossmodal", action="store_true",
                   help="also compute the cross-modal targets (--objective crossmodal; needs the full store)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (they show only on a terminal anyway)")
    p.set_defaults(func=cmd_prepare)

    p = subparsers.add_parser("ssl-pack", help="write a compact data root (regions + SSL files) for a GPU machine")
    add_data_argument(p)
    p.add_argument("--ssl-dir", metavar="DIR", default=None, help="prepared SSL directory (default <data>/SSL)")
    p.add_argument("--out", metavar="DIR", required=True, help="the pack's folder (a data root for training)")
    p.add_argument("--blocks", type=int, nargs="*", metavar="N", default=[1, 2, 3],
                   help="blocks whose FTCP regions go into the pack (default 1 2 3)")
    p.add_argument("--regions", nargs="*", metavar="NAME", default=None, help="extra ftcp.layout region names")
    p.set_defaults(func=cmd_pack)

    p = subparsers.add_parser("ssl-train", help="train one SSL block (options: ftcp.ssl.config.TrainConfig)")
    p.add_argument("--block", type=int, required=True, choices=BLOCK_CHOICES, metavar="N", help="the block, 1..6")
    add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("ssl-train-all",
                              help="train all six blocks (resuming), assemble, write the pretext table")
    add_train_all_arguments(p)
    p.set_defaults(func=cmd_train_all)

    p = subparsers.add_parser("ssl-assemble", help="join the six block embeddings by material ID (2,048-d table)")
    add_data_argument(p)
    add_ssl_dir_argument(p)
    p.add_argument("--features-dir", metavar="DIR", default=None,
                   help="where ssl_features.* go (default: the SSL directory)")
    p.add_argument("--upstream-layout", action="store_true",
                   help="also write Split_*/{Train,Test}/*_Extracted_Features_*.npy for every split of the data root")
    p.set_defaults(func=cmd_assemble)

    p = subparsers.add_parser("ssl-pretext-table",
                              help="the 13 pretext tasks: val and test vs baselines (md + json)")
    add_data_argument(p)
    add_ssl_dir_argument(p)
    p.add_argument("--to", metavar="DIR", default=None, help="output folder (default: the SSL directory)")
    p.add_argument("--command", dest="train_command", metavar="TEXT", default=None,
                   help="the training command to record as provenance")
    p.set_defaults(func=cmd_pretext_table)

    p = subparsers.add_parser("ssl-export", help="re-export block embeddings from checkpoints, or the random-init "
                                                  "control (--init random); CPU is fine")
    p.add_argument("--block", type=int, nargs="+", default=None, choices=BLOCK_CHOICES, metavar="N",
                   help="blocks to export (default: all six)")
    add_data_argument(p)
    add_ssl_dir_argument(p)
    p.add_argument("--split-seed", type=int, metavar="N", default=None,
                   help="seed of the stored SSL split (default: the stored one)")
    p.add_argument("--init", choices=("trained", "random"), default="trained",
                   help="trained: from each block's checkpoint; random: the encoder's initial weights for --seed, "
                        "no SSL training (the control; input statistics fitted on SSL-train as in a real run)")
    p.add_argument("--seed", type=int, metavar="N", default=42,
                   help="with --init random: the initialisation seed (default 42)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="with one --block: this checkpoint (default <ssl dir>/block<N>_<name>/best.pt)")
    p.add_argument("--to", default=None, metavar="DIR",
                   help="write <DIR>/block<N>_<name>/embeddings.npz (default: the SSL directory's block folders; "
                        "--init random: <ssl dir>/random_init_seed<seed>)")
    add_device_argument(p)
    p.add_argument("--batch-size", type=int, metavar="N", default=2048,
                   help="materials per export batch (default 2048)")
    p.set_defaults(func=cmd_export)


__all__ = ["register_cli", "block_script_main", "run_train", "format_metrics"]
