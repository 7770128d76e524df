"""A paper-scale FTCP store for timing and memory benchmarks only (SYNTHETIC; no science on it).

    python benchmarks/make_scale_set.py --data Data --out runs/scale130k [--n 130000] [--seed 0]

The paper trained on 129,473 Materials Project crystals; this builds a store of the same size from
a real store (e.g. mp_36k, 33,714 crystals): copy k of a crystal is the crystal itself for k = 0 and,
for k >= 1, the crystal with a seeded isotropic strain of its cell (factor 1 +- 3 %: every symmetry
is kept) and, with probability 1/2, one element replaced by a chemically close one of the same group
(Na <-> K, O <-> S, Cl <-> Br, ...) when that element is not already present.  Each copy is
featurized from scratch by ``ftcp.featurizer.featurize_crystals`` (the library's own FTCP, no
pymatgen), streamed in chunks into a memory-mapped ``ftcp.npy``.  Labels are the parent's, so the
scenarios run, but they are not physical: the manifest says ``synthetic`` with the generator, its
seed and the parent store's checksums, and every result made on the store carries that flag.
Then ``ftcp split`` makes the usual splits.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from ftcp import layout as L
from ftcp.featurizer import Crystal, featurize_crystals
from ftcp.io_utils import atomic_write_json, sha256_file, utc_now
from ftcp.ssl.data import NativeSource
from ftcp.ssl.records import RECORD_REGIONS, crystal_records

#: substitutions within a group of the periodic table (both directions)
SWAPS = [(3, 11), (11, 19), (19, 37), (4, 12), (12, 20), (20, 38), (38, 56), (8, 16), (16, 34), (34, 52), (9, 17),
         (17, 35), (35, 53), (13, 31), (31, 49), (14, 32), (32, 50), (15, 33), (33, 51), (22, 40), (40, 72),
         (23, 41), (24, 42), (26, 44), (27, 45), (28, 46), (29, 47), (30, 48), (57, 39)]
PARTNERS: dict[int, list[int]] = {}
for a, b in SWAPS:
    PARTNERS.setdefault(a, []).append(b)
    PARTNERS.setdefault(b, []).append(a)


def variant(c: Crystal, rng: np.random.Generator) -> Crystal:
    matrix = c.matrix * (1.0 + rng.uniform(-0.03, 0.03))
    slot_z = c.slot_z.copy()
    if rng.random() < 0.5:
        options = [(i, z2) for i, z in enumerate(slot_z) for z2 in PARTNERS.get(int(z), []) if z2 not in slot_z]
        if options:
            i, z2 = options[rng.integers(len(options))]
            slot_z[i] = z2
    return Crystal(slot_z, c.site_slot, c.frac_coords, matrix)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the real store to start from")
    p.add_argument("--out", required=True, help="where the synthetic store goes")
    p.add_argument("--n", type=int, default=130_000, help="crystals in the synthetic store (default 130,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=1024)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    src = NativeSource(Path(args.data))
    regions = {r: src.region(r) for r in RECORD_REGIONS}
    records = crystal_records(regions["element_matrix"], regions["lattice"], regions["site_coords"],
                              regions["site_occupancy"])
    n_parent = len(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ftcp = np.lib.format.open_memmap(out / "ftcp.npy.tmp.npy", mode="w+", dtype=np.float32, shape=(args.n,) + L.SHAPE)
    rng = np.random.default_rng(args.seed)
    ids = []
    for start in range(0, args.n, args.chunk):
        stop = min(start + args.chunk, args.n)
        batch = []
        for i in range(start, stop):
            parent, k = i % n_parent, i // n_parent
            batch.append(records[parent] if k == 0 else variant(records[parent], rng))
            ids.append(f"{src.ids[parent]}~v{k}")
        featurize_crystals(batch, out=ftcp[start:stop], out_state="zero")
    ftcp.flush()
    del ftcp
    (out / "ftcp.npy.tmp.npy").replace(out / "ftcp.npy")
    np.save(out / "material_ids.npy", np.array(ids))
    with open(Path(args.data) / "labels.csv", newline="") as fh:
        rows = {r["material_id"]: r for r in csv.DictReader(fh)}
        fields = list(next(iter(rows.values())))
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for m in ids:
            w.writerow({**rows[m.split("~")[0]], "material_id": m})
    parent_manifest = json.loads((Path(args.data) / "manifest.json").read_text())
    atomic_write_json(out / "manifest.json", {
        "layout_version": L.LAYOUT_VERSION, "phase": parent_manifest.get("phase", "linear"),
        "targets": parent_manifest.get("targets"), "shape": [args.n, *L.SHAPE], "dtype": "float32",
        "counts": {"input": args.n, "accepted": args.n, "rejected": 0},
        "synthetic": {"generator": "benchmarks/make_scale_set.py", "seed": args.seed, "n_parent": n_parent,
                      "parent_files": parent_manifest.get("files"),
                      "method": "copies of each parent crystal: isotropic strain 1 +- 3 %, and with probability 1/2 "
                                "one same-group element substitution; labels copied from the parent (not physical)",
                      "purpose": "timing and memory only; no science is reported on this store"},
        "files": {"ftcp.npy": {"bytes": (out / "ftcp.npy").stat().st_size, "sha256": sha256_file(out / "ftcp.npy")}},
        "created_utc": utc_now()})
    print(f"wrote {args.n:,} synthetic FTCP arrays from {n_parent:,} parents to {out} in "
          f"{time.perf_counter() - t0:.0f} s; next: python -m ftcp split --data {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
