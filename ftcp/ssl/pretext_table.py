"""The pretext-task table: all 13 tasks, validation and test, next to their trivial baselines.

    ftcp ssl-pretext-table --data Data [--out SSL_DIR] [--to "Supplemental Information"]

Reads ``<ssl dir>/block<N>_<name>/{metrics.json,config.json}`` (N = 1..6) and writes
``pretext_tasks.json`` and ``pretext_tasks.md``: per task the metric and its direction, the
model's value on SSL-val and SSL-test (best checkpoint), the baseline's on both, whether the
model beats the baseline on test, and whether test >= val in the metric's better direction -
the paper's "6 of 13 tasks have test >= validation" is computed, not quoted, and shown beside
the paper's figure.  Provenance: data root, seeds, SSL split, hardware, dates, command.
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from .. import layout as L
from ..io_utils import atomic_write_json, atomic_write_text, read_json_if_exists, utc_now

log = logging.getLogger(__name__)

#: DESIGN section 4: (task number, block, task name in that block's metrics.json)
TASKS = (
    (1, 1, "masked_element"), (2, 1, "element_set_consistency"),
    (3, 2, "masked_lattice_parameter"), (4, 2, "crystal_system"),
    (5, 3, "masked_coordinates"), (6, 3, "pair_distances"),
    (7, 4, "masked_occupancy"), (8, 4, "stoichiometry"),
    (9, 5, "masked_kdistance"), (10, 5, "lattice_from_spectrum"),
    (11, 6, "masked_structure_factors"), (12, 6, "real_from_reciprocal"), (13, 6, "augmentation_consistency"),
)
PAPER_TEST_GE_VAL = 6
JSON_FILE, MD_FILE = "pretext_tasks.json", "pretext_tasks.md"


def holds_up_on_test(val: float, test: float, higher_is_better: bool) -> bool:
    """Test performance >= validation performance, in the metric's better direction."""
    return test >= val if higher_is_better else test <= val


def build_table(ssl_dir, command: str | None = None, data_root=None) -> dict:
    ssl_dir = Path(ssl_dir)
    rows, blocks = [], {}
    for number, block_no, task in TASKS:
        block = L.block(block_no)
        bdir = ssl_dir / block.dirname
        if block_no not in blocks:
            metrics, config = read_json_if_exists(bdir / "metrics.json"), read_json_if_exists(bdir / "config.json")
            blocks[block_no] = {"metrics": metrics, "config": config}
        metrics = blocks[block_no]["metrics"]
        row = {"task": number, "block": block_no, "block_name": block.name, "name": task}
        if not metrics or metrics.get("status") != "finished":
            rows.append({**row, "status": "not run" if not metrics else metrics.get("status", "unfinished")})
            continue
        if task not in metrics.get("val", {}) or task not in metrics.get("test", {}):
            rows.append({**row, "status": f"task missing from {bdir / 'metrics.json'}"})
            continue
        val, test = metrics["val"][task], metrics["test"][task]
        hib = bool(val["higher_is_better"])
        rows.append({**row, "status": "ok", "metric": val["metric"], "higher_is_better": hib,
                     "val": val["model"], "test": test["model"],
                     "baseline_val": val["baseline"], "baseline_test": test["baseline"],
                     "baseline_kind": val.get("baseline_kind"),
                     "beats_baseline_val": bool(val["beats_baseline"]),
                     "beats_baseline_test": bool(test["beats_baseline"]),
                     "test_ge_val": holds_up_on_test(val["model"], test["model"], hib),
                     "n_val": val.get("n"), "n_test": test.get("n")})
    done = [r for r in rows if r["status"] == "ok"]
    provenance = {}
    for block_no, rec in sorted(blocks.items()):
        cfg, metrics = rec["config"] or {}, rec["metrics"] or {}
        train = cfg.get("train", {})
        provenance[f"block{block_no}"] = {
            "epochs_run": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
            "epochs": train.get("epochs"), "batch_size": train.get("batch_size"), "lr": train.get("lr"),
            "seed": train.get("seed"), "split_seed": train.get("split_seed"), "max_samples": train.get("max_samples"),
            "device": cfg.get("device"), "device_name": cfg.get("device_name"), "world_size": cfg.get("world_size"),
            "parts": cfg.get("parts"), "created": cfg.get("created_utc") or cfg.get("created"),
            "train_seconds": (metrics.get("timing") or {}).get("train_seconds")}
    some_cfg = next((rec["config"] for rec in blocks.values() if rec["config"]), {}) or {}
    manifest = read_json_if_exists(Path(data_root) / "manifest.json") if data_root else None
    return {
        "kind": "pretext_task_table", "created_utc": utc_now(),
        "synthetic": (manifest or {}).get("synthetic"),
        "ssl_dir": ssl_dir.name, "data_root": Path(data_root).name if data_root else None,
        "split": some_cfg.get("split"), "n_materials": some_cfg.get("n_materials"),
        "command": command or " ".join(["ftcp"] + sys.argv[1:]), "tasks": rows,
        "summary": {"tasks_run": len(done), "tasks_total": len(TASKS),
                    "test_ge_val": sum(r["test_ge_val"] for r in done),
                    "beat_baseline_test": sum(r["beats_baseline_test"] for r in done),
                    "paper_test_ge_val": PAPER_TEST_GE_VAL,
                    "definition": "test >= val in the metric's better direction (lower error / higher accuracy)"},
        "blocks": provenance,
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def to_markdown(table: dict) -> str:
    s = table["summary"]
    lines = ["# Pretext tasks: validation and test vs trivial baselines", "",
             f"Data: `{table['data_root']}` ({table['n_materials']} materials; SSL split seed "
             f"{(table['split'] or {}).get('seed')}, sizes {(table['split'] or {}).get('sizes')}, protocol "
             f"{(table['split'] or {}).get('protocol', 'transductive')}). "
             f"Created {table.get('created_utc')} by `{table['command']}`.", ""]
    if table.get("synthetic"):
        lines += ["> **SYNTHETIC DEMO DATA — not DFT, not Materials Project** (`ftcp.demo_data`): these pretext-task "
                  "numbers only show that training runs end to end.", ""]
    lines += [
             f"**{s['test_ge_val']} of {s['tasks_run']}** tasks have test >= validation (in the metric's better "
             f"direction); the paper reports {s['paper_test_ge_val']} of 13. "
             f"{s['beat_baseline_test']} of {s['tasks_run']} beat their trivial baseline on test."
             + ("" if s["tasks_run"] == s["tasks_total"] else f" ({s['tasks_total'] - s['tasks_run']} tasks not run.)"),
             "",
             "| # | block | task | metric | better | val | test | baseline val | baseline test "
             "| beats baseline (test) | test >= val |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["tasks"]:
        if r["status"] != "ok":
            lines.append(f"| {r['task']} | B{r['block']} {r['block_name']} | {r['name']} | {r['status']} "
                         "| | | | | | | |")
            continue
        lines.append(f"| {r['task']} | B{r['block']} {r['block_name']} | {r['name']} | {r['metric']} | "
                     f"{'higher' if r['higher_is_better'] else 'lower'} | {_fmt(r['val'])} | {_fmt(r['test'])} | "
                     f"{_fmt(r['baseline_val'])} | {_fmt(r['baseline_test'])} | "
                     f"{'yes' if r['beats_baseline_test'] else 'NO'} | {'yes' if r['test_ge_val'] else 'no'} |")
    lines += ["", "Metrics: accuracy (classification; baseline = majority class of SSL-train), nmse (MSE / SSL-train "
              "variance per group; baseline = group mean, ~1), periodic_error (1 - cos 2 pi dx, mean over axes; "
              "baseline = "
              "best constant point), rmse (physical units; baseline = mean), retrieval_top1 (the other view among 256; "
              "baseline = chance). All values from each block's best checkpoint (lowest validation loss).", "",
              "| block | materials train / val / test | epochs run (best) | batch | lr | seed | device | world "
              "| train s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, p in table["blocks"].items():
        parts = p.get("parts") or {}
        lines.append(f"| {key} | {' / '.join(_fmt(parts.get(k)) for k in ('train', 'val', 'test'))} | "
                     f"{_fmt(p['epochs_run'])} ({_fmt(p['best_epoch'])}) | {_fmt(p['batch_size'])} | "
                     f"{_fmt(p['lr'])} | {_fmt(p['seed'])} | {p['device_name'] or p['device'] or '-'} | "
                     f"{_fmt(p['world_size'])} | {_fmt(p['train_seconds'])} |")
    return "\n".join(lines) + "\n"


def write_table(ssl_dir, out_dir, command: str | None = None, data_root=None) -> dict:
    table = build_table(ssl_dir, command, data_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / JSON_FILE, table)
    atomic_write_text(out_dir / MD_FILE, to_markdown(table))
    s = table["summary"]
    log.info("pretext table: %d of %d tasks have test >= val (paper: %d of 13); %d beat their baseline on test -> %s",
             s["test_ge_val"], s["tasks_run"], s["paper_test_ge_val"], s["beat_baseline_test"], out_dir / MD_FILE)
    return table
