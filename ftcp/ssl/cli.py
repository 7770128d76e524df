"""Command line of the SSL engine.

    python -m ftcp.ssl prepare --data ROOT [--out SSL_DIR]     # split, normaliser, B2 crystal systems (CPU, pymatgen)
    python -m ftcp.ssl pack --data ROOT --out PACK --blocks 1 2 3   # compact data root for a GPU box
    python -m ftcp.ssl train --block N [train flags]          # same as SSL_Training/Block*/train_blockN.py
    python -m ftcp.ssl train-all --data ROOT [--quick]         # blocks 1-6 (resuming), assemble, pretext table
    python -m ftcp.ssl assemble --data ROOT [--upstream-layout]   # the 2,048-d table by material ID
    python -m ftcp.ssl pretext-table --data ROOT               # Supplemental Information/pretext_tasks.{md,json}
    python -m ftcp.ssl export --block N --data ROOT [--checkpoint best.pt]   # re-export from a checkpoint

``register_cli(subparsers)`` adds the same commands as ``ssl-prepare``, ``ssl-pack`` and
``ssl-train`` to another argparse program (e.g. the ``ftcp`` console script).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from .. import layout as L
from ..io_utils import read_id_list
from ..errors import UserError, add_debug_argument, run_main
from . import data as D

REPO_ROOT = Path(__file__).resolve().parents[2]
SSL_TRAINING = REPO_ROOT / "SSL_Training"


# ------------------------------------------------------------------------------------------
def load_block(number: int, ssl_training_dir=None):
    """An instance of block ``number`` from ``SSL_Training/Block<N>_*/encoder.py`` (``BLOCK_CLASS``)."""
    base = Path(ssl_training_dir) if ssl_training_dir else SSL_TRAINING
    found = sorted(base.glob(f"Block{int(number)}_*/encoder.py"))
    if not found:
        raise FileNotFoundError(f"no SSL_Training/Block{number}_*/encoder.py under {base}")
    name = f"ftcp_ssl_block{int(number)}_encoder"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, found[0])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.BLOCK_CLASS()


def parse_kv(items) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--model expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def add_data_args(p: argparse.ArgumentParser):
    p.add_argument("--data", default=None, help="data root (native store or region pack); default $CRYS_REP_DATA or Data")
    p.add_argument("--out", default=None, help="SSL directory for prepared files and block outputs (default <data>/SSL)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of a new SSL 80/10/10 split (default: the stored split's, else 42)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--protocol", choices=D.PROTOCOLS, default=None,
                   help="for a new SSL split: transductive (every material, upstream's) or inductive (the test "
                        "materials of every downstream split left out); default: the stored split, else transductive")
    g.add_argument("--exclude-test-of", metavar="SPLIT", default=None,
                   help="for a new SSL split: leave one downstream split's test IDs out (random_10 ... random_40, group)")
    g.add_argument("--exclude-ids", metavar="FILE", default=None,
                   help="for a new SSL split: leave these IDs (one per line) out")


def exclusion(args) -> tuple[list[str] | None, str | None]:
    """The exclusion the command line asks for, or (None, None): then the stored split decides."""
    if getattr(args, "protocol", None):
        return D.protocol_exclusion(args.data, args.protocol)
    if args.exclude_test_of:
        return D.downstream_test_ids(args.data, args.exclude_test_of)
    if args.exclude_ids:
        return read_id_list(args.exclude_ids).tolist(), f"IDs listed in {Path(args.exclude_ids).name}"
    return None, None


def add_train_args(p: argparse.ArgumentParser, block=None):
    d = block.defaults if block is not None else None
    hint = (lambda v: f" (default {v})") if d else (lambda v: " (default: the block's)")
    add_data_args(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--epochs", type=int, default=None, help="epochs" + hint(d.epochs if d else None))
    p.add_argument("--batch-size", type=int, default=None, help="batch size per process" + hint(d.batch_size if d else None))
    p.add_argument("--lr", type=float, default=None, help="peak learning rate" + hint(d.lr if d else None))
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs" + hint(d.patience if d else None))
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay" + hint(d.weight_decay if d else None))
    p.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clip, 0 = off" + hint(d.grad_clip if d else None))
    p.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up before the cosine decay (default 0)")
    p.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
    p.add_argument("--max-samples", type=int, default=None,
                   help="train on at most this many SSL-train materials (val/test: 1/8 of it); export still covers all")
    p.add_argument("--embed-dim", type=int, default=None, help="embedding size (default: ftcp.layout's)")
    p.add_argument("--model", action="append", metavar="KEY=VALUE", help="architecture setting, repeatable")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto", help="bf16 autocast (auto: on CUDA only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (experimental; no CUDA graphs)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run every training step eagerly on CUDA")
    p.add_argument("--probe-every", type=int, default=0, metavar="N",
                   help="label probe of the embeddings on SSL-train crystals every N epochs and before training "
                        "(0: off; see ftcp.ssl.probe)")
    p.add_argument("--probe-size", type=int, default=4000, metavar="N", help="SSL-train crystals in the probe")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--eval-batch-size", type=int, default=1024, help="evaluation batch (fixes the masks; default 1024)")
    p.add_argument("--no-bucket", action="store_true", help="no length bucketing of training batches")
    p.add_argument("--restart", action="store_true", help="ignore last.pt and train from scratch")
    p.add_argument("--stop-after-epochs", type=int, default=None, help="stop this invocation after N epochs (resume later)")
    p.add_argument("--no-export", action="store_true", help="skip the embedding export")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config(block, args):
    from .engine import TrainConfig

    return TrainConfig.for_block(
        block, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, warmup_epochs=args.warmup_epochs,
        seed=args.seed, split_seed=args.split_seed, device=args.device, amp=args.amp,
        max_samples=args.max_samples, eval_batch_size=args.eval_batch_size, bucket=not args.no_bucket,
        compile=args.compile, cuda_graphs=not args.no_cuda_graphs, probe_every=args.probe_every,
        probe_size=args.probe_size, threads=args.threads, progress=not args.no_progress, resume=not args.restart,
        stop_after_epochs=args.stop_after_epochs, export=not args.no_export, model=parse_kv(args.model),
        embed_dim=args.embed_dim)


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
    from .engine import run_block

    exclude, source = exclusion(args)
    metrics = run_block(block, train_config(block, args), root=args.data, ssl_dir=args.out,
                        exclude=exclude, exclude_source=source)
    if metrics.get("status") == "finished" and metrics.get("out_dir"):
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            print(format_metrics(metrics))
            print(f"outputs: {metrics['out_dir']}")
    elif metrics.get("status") == "interrupted":
        print(f"stopped after epoch {metrics['epoch']}; run the same command again to resume")
    return metrics


def block_script_main(block, argv=None) -> dict:
    """Entry point of ``SSL_Training/Block<N>_*/train_block<N>.py``."""
    from ..logs import configure

    configure()
    p = argparse.ArgumentParser(description=f"Train SSL block {block.number} ({block.name}), evaluate its pretext "
                                            f"tasks against trivial baselines and export its embeddings.")
    add_train_args(p, block)
    add_debug_argument(p)
    return run_train(block, p.parse_args(argv))


# ------------------------------------------------------------------------------------------
def cmd_prepare(args):
    from . import targets

    exclude, source = exclusion(args)
    data = D.prepare(args.data, args.out, args.split_seed, exclude, source, create=True)
    print(f"SSL split {data.split['sizes']} and normaliser in {data.ssl_dir}")
    if not args.no_crystal_systems:
        path = targets.ensure_crystal_systems(data.source, data.ssl_dir, data.search_dirs()[1:], workers=args.workers)
        print(f"crystal systems: {path}")
    if args.crossmodal:
        from .crossmodal import ensure_descriptors

        print(f"cross-modal targets: {ensure_descriptors(data.source, data.ssl_dir, data.search_dirs()[1:])}")


def cmd_pack(args):
    from . import targets

    ssl_dir = Path(args.ssl_dir) if args.ssl_dir else D.data_root(args.data) / "SSL"
    source = D.open_source(args.data)
    regions = list(args.regions or [])
    for n in args.blocks or []:
        regions += [f.region for f in load_block(n).fields]
    if any(int(n) == 2 for n in args.blocks or []):
        targets.load_crystal_systems(source.ids, [ssl_dir])   # fail early if missing
    regions = list(dict.fromkeys(regions))
    for name in (D.SPLIT_FILE, D.NORMALIZER_FILE):
        if not (ssl_dir / name).exists():
            raise UserError(f"{ssl_dir / name} is missing: run `python -m ftcp.ssl prepare --data {args.data}` first")
    out = D.write_pack(source, args.out, regions, [ssl_dir])
    size = (out / D.PACK_FILE).stat().st_size / 2**20
    print(f"wrote {out / D.PACK_FILE} ({size:.1f} MiB; regions {regions}) and {out / 'SSL'}")


def cmd_train(args) -> int:
    metrics = run_train(load_block(args.block), args)
    return 0 if metrics.get("status") in ("finished", "interrupted") else 1


def _add_commands(sub, prefix: str = ""):
    p = sub.add_parser(prefix + "prepare", help="make the SSL split, normaliser and Block 2 crystal-system targets")
    add_data_args(p)
    p.add_argument("--workers", type=int, default=None, help="processes for the crystal-system targets")
    p.add_argument("--no-crystal-systems", action="store_true", help="skip the Block 2 crystal-system targets")
    p.add_argument("--crossmodal", action="store_true",
                   help="also compute the cross-modal targets (--objective crossmodal; needs the full store)")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser(prefix + "pack", help="write a compact data root (regions + SSL files) for a GPU box")
    p.add_argument("--data", default=None)
    p.add_argument("--ssl-dir", default=None, help="prepared SSL directory (default <data>/SSL)")
    p.add_argument("--out", required=True)
    p.add_argument("--blocks", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--regions", nargs="*", default=None, help="extra ftcp.layout region names")
    p.set_defaults(func=cmd_pack)
    p = sub.add_parser(prefix + "train", help="train one SSL block")
    p.add_argument("--block", type=int, required=True, choices=range(1, 7))
    add_train_args(p)
    p.set_defaults(func=cmd_train)
    _add_pipeline_commands(sub, prefix)


def register_cli(subparsers):
    """Add ``ssl-prepare``, ``ssl-pack`` and ``ssl-train`` to an argparse subparsers object."""
    _add_commands(subparsers, prefix="ssl-")


# ------------------------------------------------------------------------------------------
# all six blocks: train-all, assemble, pretext-table, export (ftcp.ssl.train_all / assemble / pretext_table)
def cmd_train_all(args) -> int:
    from .train_all import run_all

    run_all(args)
    return 0


def cmd_assemble(args):
    from .assemble import assemble

    root = D.data_root(args.data)
    assemble(Path(args.out) if args.out else root / "SSL", root=root, features_dir=args.features_dir,
             upstream_layout=args.upstream_layout)


def cmd_pretext_table(args):
    from .pretext_table import write_table

    root = D.data_root(args.data)
    ssl_dir = Path(args.out) if args.out else root / "SSL"
    write_table(ssl_dir, Path(args.to) if args.to else ssl_dir, command=args.command, data_root=root)


def cmd_export(args) -> int:
    """Re-export a block's embeddings from a checkpoint (e.g. a best.pt brought back from a GPU box),
    or export the random-init control (``--init random``: the encoder's initial weights)."""
    import numpy as np

    from ..runtime import resolve_device
    from .batches import DeviceData, load_block_fields
    from .engine import TrainConfig, export_initial
    from .export import embed_positions, load_block_model, save_embeddings

    blocks = [load_block(n) for n in (args.block or [b.number for b in L.BLOCKS])]
    if args.checkpoint and len(blocks) != 1:
        raise ValueError("--checkpoint needs exactly one --block")
    if args.init == "random":
        out_dir = Path(args.to) if args.to else None
        for block in blocks:
            cfg = TrainConfig.for_block(block, seed=args.seed, split_seed=args.split_seed, device=args.device,
                                        export_batch_size=args.batch_size, progress=False)
            root = D.data_root(args.data)
            ssl_dir = Path(args.out) if args.out else root / "SSL"
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


def _add_pipeline_commands(sub, prefix: str = ""):
    from .train_all import add_arguments

    p = sub.add_parser(prefix + "train-all", help="train all six blocks (resuming), assemble, write the pretext table")
    add_arguments(p)
    p.set_defaults(func=cmd_train_all)
    p = sub.add_parser(prefix + "assemble", help="join the six block embeddings by material ID (2,048-d table)")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=None, help="SSL directory with the block outputs (default <data>/SSL)")
    p.add_argument("--features-dir", default=None, help="where ssl_features.* go (default: the SSL directory)")
    p.add_argument("--upstream-layout", action="store_true",
                   help="also write Split_*/{Train,Test}/*_Extracted_Features_*.npy for every split of the data root")
    p.set_defaults(func=cmd_assemble)
    p = sub.add_parser(prefix + "pretext-table", help="the 13 pretext tasks: val and test vs baselines (md + json)")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=None, help="SSL directory with the block outputs (default <data>/SSL)")
    p.add_argument("--to", default=None, metavar="DIR", help="output folder (default: the SSL directory)")
    p.add_argument("--command", default=None, help="the training command to record as provenance")
    p.set_defaults(func=cmd_pretext_table)
    p = sub.add_parser(prefix + "export", help="re-export block embeddings from checkpoints, or the random-init "
                                                "control (--init random); CPU is fine")
    p.add_argument("--block", type=int, nargs="+", default=None, choices=range(1, 7), metavar="N",
                   help="blocks to export (default: all six)")
    p.add_argument("--data", default=None, metavar="DIR", help="data root (default $CRYS_REP_DATA or Data)")
    p.add_argument("--out", default=None, metavar="DIR", help="SSL directory (default <data>/SSL)")
    p.add_argument("--split-seed", type=int, default=None, help="seed of the stored SSL split (default: the stored one)")
    p.add_argument("--init", choices=("trained", "random"), default="trained",
                   help="trained: from each block's checkpoint; random: the encoder's initial weights for --seed, "
                        "no SSL training (the control; input statistics fitted on SSL-train as in a real run)")
    p.add_argument("--seed", type=int, default=42, help="with --init random: the initialisation seed (default 42)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="with one --block: this checkpoint (default <ssl dir>/block<N>_<name>/best.pt)")
    p.add_argument("--to", default=None, metavar="DIR",
                   help="write <DIR>/block<N>_<name>/embeddings.npz (default: the SSL directory's block folders; "
                        "--init random: <ssl dir>/random_init_seed<seed>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=2048, help="materials per export batch")
    p.set_defaults(func=cmd_export)


def main(argv=None):
    from ..logs import configure

    configure()
    p = argparse.ArgumentParser(prog="python -m ftcp.ssl", description="Self-supervised FTCP block encoders")
    add_debug_argument(p)
    sub = p.add_subparsers(dest="command", required=True)
    _add_commands(sub)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(run_main(main, prog="python -m ftcp.ssl"))
