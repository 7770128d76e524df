"""Benchmark of the store builder (``ftcp build``) on real CIFs.

Measures, on the first ``--sample`` rows of the input CSV:

* pymatgen CIF parsing alone (``Structure.from_str(cif, fmt="cif")``, one process);
* the whole build from CIF text (read CSV, parse, check, featurize, write, checksum) with
  ``--workers 1`` (in-process) and ``--workers 2``;

and, with ``--full``, a complete build of the whole input in a subprocess with its peak
resident memory (sum over the process tree, sampled from /proc, and the largest single
process from ``getrusage``).  CPU seconds (user + sys, children included) are reported next
to wall time: on a shared machine wall time depends on other load, CPU time much less.

Goals checked: end-to-end within 1.5x of parsing alone; peak RSS of the full build < 2 GB.

    python benchmarks/bench_build.py --full            # writes benchmarks/results/build.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from ftcp.io_utils import utc_now

REPO = Path(__file__).resolve().parents[1]

DEFAULT_CSV = Path(os.environ.get("CRYS_SHARED", REPO.parent / "shared")) / "data" / "mp_36k" / "mp_36k.csv.gz"


def cpu_split() -> tuple[float, float]:
    """(CPU seconds of this process, CPU seconds of its reaped children)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def cpu_now() -> float:
    """CPU seconds of this process plus its reaped children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(fn):
    w0, c0 = time.perf_counter(), cpu_now()
    out = fn()
    return out, time.perf_counter() - w0, cpu_now() - c0


def bench_parse(cifs: list[str]) -> dict:
    from pymatgen.core import Structure

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c in cifs:
                Structure.from_str(c, fmt="cif")

    run_small = cifs[:50]   # warm-up (imports, caches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in run_small:
            Structure.from_str(c, fmt="cif")
    _, wall, cpu = timed(run)
    return {"n": len(cifs), "wall_s": wall, "cpu_s": cpu, "cores_used": cpu / wall,
            "per_structure_ms_cpu": 1e3 * cpu / len(cifs),
            "structures_per_s": len(cifs) / wall, "structures_per_cpu_s": len(cifs) / cpu}


def bench_build(csv_path: Path, workers: int, tmp: Path) -> dict:
    from ftcp.store import build_store

    root = tmp / f"store_w{workers}"
    shutil.rmtree(root, ignore_errors=True)
    (p0, k0) = cpu_split()
    m, wall, cpu = timed(lambda: build_store(csv_path, root, workers=workers, progress=False))
    (p1, k1) = cpu_split()
    n = m["counts"]["input"]
    shutil.rmtree(root, ignore_errors=True)
    parent, children = p1 - p0, k1 - k0
    return {"workers": workers, "n_input": n, "n_accepted": m["counts"]["accepted"], "wall_s": wall,
            "parent_cpu_s": parent, "workers_cpu_s": children,
            # the parent's serial share (read CSV, featurize, write) bounds the parallel speedup
            "speedup_bound_from_serial_share": (parent + children) / parent if children else 1.0,
            "cpu_s": cpu, "cores_used": cpu / wall, "per_structure_ms_cpu": 1e3 * cpu / n, "structures_per_s": n / wall,
            "structures_per_cpu_s": n / cpu}


def _tree_rss_kb(pid: int) -> int:
    """Resident memory (kB) of ``pid`` and all its descendants, from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def bench_full(csv_path: Path, workers: int, tmp: Path, keep: Path | None) -> dict:
    root = keep or (tmp / "full")
    shutil.rmtree(root, ignore_errors=True)
    cmd = [sys.executable, "-m", "ftcp", "build", str(csv_path), "--data", str(root),
           "--workers", str(workers), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    peak = [0]
    c0, w0 = cpu_now(), time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    t.join()
    wall, cpu = time.perf_counter() - w0, cpu_now() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"full build failed ({proc.returncode}):\n{out[-3000:]}")
    manifest = json.loads((root / "manifest.json").read_text())
    max_single_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = {"workers": workers, "n_input": manifest["counts"]["input"], "n_accepted": manifest["counts"]["accepted"],
           "rejected_by_reason": manifest["counts"]["rejected_by_reason"], "wall_s": wall, "cpu_s": cpu,
           "cores_used": cpu / wall, "structures_per_s": manifest["counts"]["input"] / wall,
           # the largest process: any child of this benchmark
           "peak_rss_tree_mb": peak[0] / 1024, "peak_rss_largest_process_mb": max_single_kb / 1024,
           "ftcp_npy_bytes": manifest["files"]["ftcp.npy"]["bytes"], "store": str(root)}
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return res


def compare_stores(a: Path, b: Path) -> dict:
    """Same IDs and FTCP (joined by ID) in two native stores?"""
    import numpy as np

    from ftcp.dataset import open_dataset

    da, db = open_dataset(a), open_dataset(b)
    same_ids = set(da.ids) == set(db.ids)
    out = {"store_a": str(a), "store_b": str(b), "n_a": len(da.ids), "n_b": len(db.ids), "same_id_set": same_ids}
    if not same_ids:
        return out
    pb = db.part(ids=da.ids)
    max_abs, n_diff_rows = 0.0, 0
    for ids, x in da.part(ids=da.ids).iter_ftcp(2048):
        y = pb.subset(ids).ftcp(flat=True)
        d = np.abs(x - y).max(axis=1)
        max_abs = max(max_abs, float(d.max()))
        n_diff_rows += int((d > 0).sum())
    out.update({"max_abs_diff": max_abs, "rows_not_bit_identical": n_diff_rows})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="input CSV(.gz) with a cif column")
    ap.add_argument("--sample", type=int, default=4000, help="rows for the throughput measurements")
    ap.add_argument("--full", action="store_true", help="also build the whole input and measure peak RSS")
    ap.add_argument("--full-workers", type=int, default=2)
    ap.add_argument("--keep-full", type=Path, default=None, help="keep the full store at this data root")
    ap.add_argument("--compare-store", type=Path, default=None,
                    help="native store to compare the full build with (joined by ID)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "build.json")
    args = ap.parse_args(argv)

    import pandas as pd

    if not args.csv.exists():
        print(f"{args.csv} not found", file=sys.stderr)
        return 2
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        df = pd.read_csv(args.csv, dtype=str, keep_default_na=False, nrows=args.sample)
        sample_csv = tmp / "sample.csv.gz"
        with gzip.open(sample_csv, "wt", newline="") as fh:
            df.to_csv(fh, index=False)
        parse = bench_parse(df["cif"].tolist())
        builds = [bench_build(sample_csv, w, tmp) for w in (1, 2)]
        full = bench_full(args.csv, args.full_workers, tmp, args.keep_full) if args.full else None
        comparison = None
        if full and args.compare_store:
            comparison = compare_stores(Path(full["store"]), args.compare_store)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = os.getloadavg()

    w1, w2 = builds
    result = {
        "date": utc_now(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_1min_before_after": [load0[0], load1[0]]},
        "input": {"csv": str(args.csv), "sample_rows": len(df)},
        "parse_only": parse,
        "build_workers_1": w1,
        "build_workers_2": w2,
        "ratios": {
            "end_to_end_over_parse_cpu": w1["cpu_s"] / parse["cpu_s"],
            "end_to_end_over_parse_wall": w1["wall_s"] / parse["wall_s"],
            "speedup_wall_2_over_1": w1["wall_s"] / w2["wall_s"],
            "cpu_overhead_2_over_1": w2["cpu_s"] / w1["cpu_s"],
        },
        "goals": {"end_to_end_within_1.5x_parse (cpu)": w1["cpu_s"] / parse["cpu_s"] <= 1.5},
        "full_build": full,
        "full_build_vs_store": comparison,
    }
    if full:
        result["goals"]["full_build_peak_rss_tree_below_2GB"] = full["peak_rss_tree_mb"] < 2048
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"sample: first {len(df)} rows of {args.csv.name}; load average {load0[0]:.1f} -> {load1[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'measurement':<28} {'wall s':>8} {'cpu s':>8} {'cores used':>10} {'struct/s':>9} "
          f"{'struct/cpu-s':>13} {'ms cpu/struct':>14}")
    for name, r in (("pymatgen parse only", parse), ("build, --workers 1", w1), ("build, --workers 2", w2)):
        print(f"{name:<28} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['cores_used']:>10.2f} "
              f"{r['structures_per_s']:>9.0f} {r['structures_per_cpu_s']:>13.0f} {r['per_structure_ms_cpu']:>14.2f}")
    print("(cores used = CPU s / wall s: well below the worker count means other load on the machine)")
    rt = result["ratios"]
    print(f"end-to-end / parse alone: {rt['end_to_end_over_parse_cpu']:.2f}x CPU, "
          f"{rt['end_to_end_over_parse_wall']:.2f}x wall (goal <= 1.5x)")
    print(f"workers 2 vs 1: wall speedup {rt['speedup_wall_2_over_1']:.2f}x, "
          f"CPU ratio {rt['cpu_overhead_2_over_1']:.2f}; "
          f"with workers 2 the parent does {w2['parent_cpu_s']:.1f} of {w2['cpu_s']:.1f} CPU s, so parsing in "
          f"more processes can speed the build up by at most {w2['speedup_bound_from_serial_share']:.1f}x")
    if full:
        print(f"full build ({full['n_input']} rows -> {full['n_accepted']} crystals, workers {full['workers']}): "
              f"{full['wall_s']:.0f} s wall, {full['cpu_s']:.0f} s CPU ({full['cores_used']:.2f} cores used), "
              f"peak RSS {full['peak_rss_tree_mb']:.0f} MB "
              f"(process tree), {full['peak_rss_largest_process_mb']:.0f} MB (largest process); goal < 2048 MB")
    if comparison:
        print(f"full build vs {comparison['store_b']}: {comparison}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
