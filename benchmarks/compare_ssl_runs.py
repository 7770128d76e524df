"""Compare two train-all runs (e.g. 1 GPU vs torchrun on 2): throughput ratio and pretext metrics per block.

    python benchmarks/compare_ssl_runs.py RUN_A_SSL_DIR RUN_B_SSL_DIR [--json out.json]

Each argument is an SSL directory written by ``SSL_Training/train_all.py`` (it holds
``train_all_summary.json`` and ``block<N>_*/metrics.json``).  For every block: training samples/s of
both runs and B/A, wall seconds, and every task's validation and test metric in both runs with the
difference in the metric's better direction (positive = B better).  The goal for 2 GPUs vs 1 is
B/A >= 1.6 with differences within run-to-run noise (compare with two 1-GPU runs of different
``--seed`` to see that noise).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_run(ssl_dir: Path) -> dict:
    summary = json.loads((ssl_dir / "train_all_summary.json").read_text())
    blocks = {}
    for d in sorted(ssl_dir.glob("block*_*")):
        if (d / "metrics.json").exists():
            metrics = json.loads((d / "metrics.json").read_text())
            blocks[int(metrics["block"])] = metrics
    return {"summary": summary, "metrics": blocks}


def compare(a: dict, b: dict) -> dict:
    out = {"blocks": {},
           "total_seconds": {"a": a["summary"].get("total_seconds"), "b": b["summary"].get("total_seconds")},
           "world_size": {"a": a["summary"].get("world_size"), "b": b["summary"].get("world_size")}}
    for n in sorted(set(a["metrics"]) & set(b["metrics"])):
        ma, mb = a["metrics"][n], b["metrics"][n]
        sa, sb = ma["timing"]["samples_per_s"], mb["timing"]["samples_per_s"]
        row = {"samples_per_s": {"a": sa, "b": sb, "b_over_a": sb / sa if sa else None},
               "train_seconds": {"a": ma["timing"]["train_seconds"], "b": mb["timing"]["train_seconds"]},
               "epochs_run": {"a": ma["epochs_run"], "b": mb["epochs_run"]}, "tasks": {}}
        for part in ("val", "test"):
            for task, va in ma[part].items():
                if task == "loss" or task not in mb[part]:
                    continue
                vb = mb[part][task]
                sign = 1.0 if va["higher_is_better"] else -1.0
                row["tasks"].setdefault(task, {})[part] = {"metric": va["metric"], "a": va["model"], "b": vb["model"],
                                                           "b_better_by": sign * (vb["model"] - va["model"]),
                                                           "baseline": va["baseline"]}
        out["blocks"][n] = row
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = compare(load_run(args.run_a), load_run(args.run_b))
    print(f"A = {args.run_a} (world {result['world_size']['a']}), "
          f"B = {args.run_b} (world {result['world_size']['b']}); "
          f"total seconds A {result['total_seconds']['a']}, B {result['total_seconds']['b']}")
    print(f"{'block':<6}{'samples/s A':>13}{'samples/s B':>13}{'B/A':>7}   task (part): metric A -> B (B better by)")
    for n, row in result["blocks"].items():
        s = row["samples_per_s"]
        print(f"{n:<6}{s['a']:>13.0f}{s['b']:>13.0f}{(s['b_over_a'] or 0):>7.2f}")
        for task, parts in row["tasks"].items():
            for part, v in parts.items():
                print(f"{'':<39}{task} ({part}): {v['metric']} {v['a']:.4f} -> {v['b']:.4f} ({v['b_better_by']:+.4f}; "
                      f"baseline {v['baseline']:.4f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
