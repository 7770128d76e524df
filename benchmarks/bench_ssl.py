"""Benchmark the SSL engine: throughput, epoch time, time to upstream epochs, pretext metrics vs baselines.

Runs from the repo root with only torch + numpy + tqdm, on a prepared data root: a native store
(ftcp.npy + material_ids.npy) or a region pack (``ftcp ssl-pack``), with the prepared
SSL files (ssl_split.json, normalizer.json, crystal_system.npz) in ``<root>/SSL`` or ``--out``.

    # one GPU, upstream settings, Blocks 1-3
    python benchmarks/bench_ssl.py --data PACK --out runs/bench_gpu --device cuda --json runs/bench_gpu.json
    # 2 GPUs (DDP; --batch-size is per process)
    torchrun --nproc_per_node=2 benchmarks/bench_ssl.py --data PACK --out runs/bench_ddp --device cuda
    # 2-core CPU throughput (a few epochs are enough for samples/s)
    python benchmarks/bench_ssl.py --data Data --out runs/mp36k_ssl --device cpu --threads 2 --epochs 2

For every block it reports: samples/s (training steps only), mean epoch time (train + val),
the time to upstream's epoch count (measured epochs when they ran, else the mean epoch time
x the upstream count), set-up/export times, and each pretext task's val/test metric next to
its trivial baseline.  ``--probe`` adds a ridge probe (SSL-train -> SSL-val, never test) of
formation energy and band gap from the exported embeddings vs the raw block inputs.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ftcp.io_utils import resolve_data_root, utc_now
from ftcp.ssl import data as D
from ftcp.ssl.blocks import load_block
from ftcp.ssl.engine import TrainConfig, run_block, setup_distributed
from ftcp.ssl.engine import device_kind as engine_device_kind
from ftcp.ssl.export import load_embeddings
from ftcp.ssl.train_all import FAST  # the --preset fast settings (SSL_Training/README.md)


# ------------------------------------------------------------------------------------------
def ridge_probe(x_train, y_train, x_val, y_val, alphas=(0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)):
    """Standardise on train, pick alpha on an inner 90/10 split of train, refit, RMSE on val."""
    mean, std = x_train.mean(0), x_train.std(0)
    keep = std > 1e-8
    xt = (x_train[:, keep] - mean[keep]) / std[keep]
    xv = (x_val[:, keep] - mean[keep]) / std[keep]
    rng = np.random.default_rng(0)
    inner = rng.permutation(len(xt))
    cut = len(xt) // 10
    fit_i, sel_i = inner[cut:], inner[:cut]

    def solve(x, y, alpha):
        xm, ym = x.mean(0), y.mean()
        xc = x - xm
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
        return w, ym - xm @ w

    def rmse(x, y, w, b):
        return float(np.sqrt(np.mean((x @ w + b - y) ** 2)))

    scores = {a: rmse(xt[sel_i], y_train[sel_i], *solve(xt[fit_i], y_train[fit_i], a)) for a in alphas}
    best = min(scores, key=scores.get)
    return {"val_rmse": rmse(xv, y_val, *solve(xt, y_train, best)), "alpha": best, "dims": int(keep.sum())}


def read_labels(root: Path, ids: np.ndarray):
    path = root / "labels.csv"
    if not path.exists():
        return None
    table = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            table[row["material_id"]] = row
    if any(i not in table for i in ids):
        return None
    return {name: np.array([float(table[i][name]) for i in ids]) for name in ("formation_energy", "band_gap")}


def block_inputs(block, data) -> np.ndarray:
    """What the block's encoder has to work with, flattened: its prepared fields minus cached targets."""
    from ftcp.ssl.batches import load_block_fields

    fields = load_block_fields(block, data)
    targets = set(block.extra_fields(data))
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(len(v), -1)
                           for k, v in fields.items() if k not in targets], axis=1)


def probe(root: Path, ssl_dir: Path, blocks, results):
    data = D.prepare(root, ssl_dir, create=False)
    labels = read_labels(root, data.ids)
    if labels is None:
        return {"skipped": f"no labels.csv covering every material under {root}"}
    tr, va = data.index["train"], data.index["val"]
    out = {"note": "ridge on SSL-train, RMSE on SSL-val (alpha chosen on an inner split of SSL-train)",
           "mean_predictor": {k: float(np.sqrt(np.mean((y[va] - y[tr].mean()) ** 2))) for k, y in labels.items()}}
    feats_raw, feats_emb = [], []
    for block in blocks:
        ids, emb = load_embeddings(Path(results[block.number]["out_dir"]) / "embeddings.npz")
        assert list(ids) == list(data.ids), "embeddings must be in store order"
        raw = block_inputs(block, data)
        feats_raw.append(raw)
        feats_emb.append(emb.astype(np.float64))
        out[f"block{block.number}"] = {k: {"embedding": ridge_probe(emb[tr], y[tr], emb[va], y[va]),
                                           "raw_input": ridge_probe(raw[tr], y[tr], raw[va], y[va])}
                                       for k, y in labels.items()}
    if len(blocks) > 1:
        raw, emb = np.concatenate(feats_raw, 1), np.concatenate(feats_emb, 1)
        out["all_blocks"] = {k: {"embedding": ridge_probe(emb[tr], y[tr], emb[va], y[va]),
                                 "raw_input": ridge_probe(raw[tr], y[tr], raw[va], y[va])}
                             for k, y in labels.items()}
    return out


# ------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", default=None, help="SSL directory (default <data>/SSL)")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--preset", choices=("upstream", "fast"), default="upstream")
    p.add_argument("--epochs", type=int, default=None, help="override every block's epoch count")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--amp", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--model", action="append", metavar="BLOCK:KEY=VALUE", help="e.g. 1:projector_width=512")
    p.add_argument("--probe", action="store_true", help="ridge probe on SSL-val (needs labels.csv)")
    p.add_argument("--probe-only", action="store_true", help="only probe the embeddings already in --out")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    device_kind = engine_device_kind(args.device)
    ddp = setup_distributed(device_kind)          # once, shared by every block run
    results, blocks = {}, []
    started = time.perf_counter()
    if args.probe_only:
        ssl_dir = Path(args.out) if args.out else resolve_data_root(args.data) / "SSL"
        blocks = [load_block(n) for n in args.blocks]
        out = probe(resolve_data_root(args.data), ssl_dir, blocks,
                    {b.number: {"out_dir": ssl_dir / b.dirname} for b in blocks})
        print(json.dumps(out, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps({"date": utc_now(), "probe": out}, indent=2))
        return out
    for number in args.blocks:
        block = load_block(number)
        blocks.append(block)
        preset = FAST.get(number, {}) if args.preset == "fast" else {}
        model = {}
        for item in args.model or []:
            n, kv = item.split(":", 1)
            if int(n) == number:
                k, v = kv.split("=", 1)
                model[k] = json.loads(v) if v[:1].isdigit() or v[:1] in "-[{" or v in ("true", "false") else v
        settings = dict(preset, epochs=args.epochs, batch_size=args.batch_size or preset.get("batch_size"),
                        lr=args.lr or preset.get("lr"), max_samples=args.max_samples, seed=args.seed,
                        device=args.device, threads=args.threads, amp=args.amp, compile=args.compile,
                        progress=not args.no_progress, resume=False, model=model)
        cfg = TrainConfig.for_block(block, **settings)
        t = time.perf_counter()
        m = run_block(block, cfg, root=args.data, ssl_dir=args.out)
        wall = time.perf_counter() - t
        hist = m["history"]
        epoch_s = np.mean([h["train_seconds"] + h["eval_seconds"] for h in hist])
        upstream_epochs = block.defaults.epochs
        ran_all = len(hist) >= upstream_epochs
        results[number] = {
            "block": block.name,
            "config": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "warmup_epochs", "max_samples")},
            "world_size": ddp.world, "epochs_run": len(hist), "best_epoch": m["best_epoch"],
            "early_stopped": m["early_stopped"],
            "samples_per_s": m["timing"]["samples_per_s"], "mean_epoch_seconds": float(epoch_s),
            "mean_epoch_train_seconds": m["timing"]["mean_epoch_train_seconds"],
            "time_to_upstream_epochs_seconds": float(
                sum(h["train_seconds"] + h["eval_seconds"] for h in hist[:upstream_epochs]) if ran_all
                else epoch_s * upstream_epochs),
            "time_to_upstream_epochs_kind": "measured" if ran_all else f"extrapolated from {len(hist)} epochs",
            "upstream_epochs": upstream_epochs, "wall_seconds": wall,
            "setup_seconds": m["timing"]["load_seconds"] + m["timing"]["baseline_seconds"],
            "final_eval_seconds": m["timing"]["final_eval_seconds"],
            "export_seconds": m["timing"].get("export_seconds"),
            "tasks": {part: {k: {"metric": v["metric"], "model": v["model"], "baseline": v["baseline"],
                                 "higher_is_better": v["higher_is_better"], "beats_baseline": v["beats_baseline"]}
                             for k, v in m[part].items() if k != "loss"} for part in ("val", "test")},
            "out_dir": m["out_dir"]}
    report = {"date": utc_now(), "data": args.data, "device": str(args.device),
              "device_name": (torch.cuda.get_device_name() if device_kind == "cuda"
                              else platform.processor() or platform.machine()),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "world_size": ddp.world,
              "preset": args.preset, "seed": args.seed, "blocks": results,
              "total_wall_seconds": time.perf_counter() - started,
              "total_time_to_upstream_epochs_seconds": sum(r["time_to_upstream_epochs_seconds"]
                                                           for r in results.values())}
    if ddp.main and args.probe:
        ssl_dir = Path(args.out) if args.out else resolve_data_root(args.data) / "SSL"
        report["probe"] = probe(resolve_data_root(args.data), ssl_dir, blocks, results)
    if ddp.main:
        print_report(report)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2))
    if ddp.world > 1:
        torch.distributed.destroy_process_group()
    return report


def print_report(r):
    print(f"\n{r['date']}  device {r['device']} ({r['device_name']}), world {r['world_size']}, threads {r['threads']}, "
          f"torch {r['torch']}")
    print(f"{'block':<22}{'samples/s':>11}{'epoch s':>9}{'epochs':>8}{'to upstream ep. s':>19}{'set-up s':>10}"
          f"{'export s':>10}")
    for n, b in r["blocks"].items():
        print(f"{n} {b['block']:<20}{b['samples_per_s']:>11.0f}{b['mean_epoch_seconds']:>9.2f}"
              f"{b['epochs_run']:>8}{b['time_to_upstream_epochs_seconds']:>19.1f}{b['setup_seconds']:>10.1f}"
              f"{(b['export_seconds'] or 0):>10.1f}")
    print(f"total time to upstream epochs: {r['total_time_to_upstream_epochs_seconds']:.1f} s; "
          f"total wall {r['total_wall_seconds']:.1f} s")
    print(f"\n{'task':<26}{'part':<6}{'metric':<20}{'model':>10}{'baseline':>10}  beats")
    for b in r["blocks"].values():
        for part in ("val", "test"):
            for name, m in b["tasks"][part].items():
                print(f"{name:<26}{part:<6}{m['metric']:<20}{m['model']:>10.4f}{m['baseline']:>10.4f}  "
                      f"{'yes' if m['beats_baseline'] else 'NO'}")
    if "probe" in r and "skipped" not in r["probe"]:
        pr = r["probe"]
        print(f"\nridge probe (SSL-train -> SSL-val RMSE); mean predictor {pr['mean_predictor']}")
        for key, v in pr.items():
            if key.startswith("block") or key == "all_blocks":
                print("  " + key + ": " + ", ".join(
                    f"{t}: emb {x['embedding']['val_rmse']:.3f} / raw {x['raw_input']['val_rmse']:.3f}"
                    for t, x in v.items()))


if __name__ == "__main__":
    main()
