"""Round trip CIF -> FTCP (float32, as stored) -> Structure on every FTCP-eligible crystal.

Checks composition equality and pymatgen StructureMatcher agreement (no primitive reduction,
no scaling, no supercells) and writes benchmarks/results/round_trip.json.

    python benchmarks/verify_round_trip.py [--csv ../shared/data/mp_36k/mp_36k.csv.gz] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ftcp.io_utils import utc_now

HERE = Path(__file__).resolve().parent


def _check(chunk):
    warnings.filterwarnings("ignore")
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Structure

    import ftcp

    matcher = StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)
    rows = []
    for mid, cif in chunk:
        s = Structure.from_str(cif, fmt="cif")
        back = ftcp.to_structure(ftcp.featurize([s])[0])
        ok_comp = back.composition == s.composition
        rows.append((mid, bool(ok_comp and matcher.fit(s, back)), "H" in s.composition))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=str(HERE.parent.parent / "shared/data/mp_36k/mp_36k.csv.gz"))
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", default=str(HERE / "results" / "round_trip.json"))
    args = ap.parse_args(argv)
    df = pd.read_csv(args.csv, keep_default_na=False, na_values=[""])
    df = df[(df.n_elements <= 4) & (df.n_sites <= 100)].iloc[: args.limit]
    items = list(zip(df.material_id, df.cif, strict=False))
    chunks = [items[i:i + 200] for i in range(0, len(items), 200)]
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        for part in tqdm(pool.map(_check, chunks), total=len(chunks), desc="round trip", unit="chunk"):
            rows.extend(part)
    failed = [mid for mid, ok, _ in rows if not ok]
    result = {
        "check": "featurize -> to_structure -> "
                 "StructureMatcher(primitive_cell=False, scale=False, attempt_supercell=False)",
        "data": f"{Path(args.csv).name}: {len(rows)} FTCP-eligible crystals",
        "matched": len(rows) - len(failed), "failed": len(failed), "failed_ids": failed[:100],
        "with_hydrogen": sum(h for _, _, h in rows),
        "with_hydrogen_matched": sum(h and ok for _, ok, h in rows),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": utc_now(),
        "command": "python benchmarks/verify_round_trip.py",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
