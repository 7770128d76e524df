"""Pretext targets that need pymatgen/spglib, precomputed once on a CPU and cached by material ID.

Block 2's crystal-system class comes from the symmetry of the crystal recovered from its FTCP
(``ftcp.to_structure`` + ``SpacegroupAnalyzer(...).get_crystal_system()``), not from the cell
metric: a primitive cell's six parameters only partly reveal it (trigonal vs hexagonal,
pseudo-symmetric cells, atoms that lower the symmetry of a high-symmetry lattice).

``symprec = 0.1`` Angstrom (angle tolerance 5 degrees) is the tolerance the Materials Project
uses for its own symmetry labels, and FTCP stores float32 coordinates whose rounding is far
below it.  Where spglib fails at 0.1 the class is retried at 0.01; a crystal that still fails
is recorded as unknown (-1, excluded from the loss and the metrics) with the error.

Training only *reads* the cache (numpy); computing it needs pymatgen, which a GPU machine may lack.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import layout as L
from ..featurizer import to_structure
from ..io_utils import atomic_save_npz, atomic_write_json
from ..logs import progress_bar

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
UNKNOWN = -1
SYMPREC = 0.1
SYMPREC_RETRY = 0.01
ANGLE_TOLERANCE = 5.0
CACHE_FILE = "crystal_system.npz"
_REGIONS = ("element_matrix", "lattice", "site_coords", "site_occupancy")


def _classify_chunk(args):
    """Worker: crystal-system codes of a chunk of materials given their raw regions."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # heavy: loaded in the workers that classify

    regions, symprec, retry, angle_tol = args
    n = len(regions["lattice"])
    codes = np.full(n, UNKNOWN, dtype=np.int8)
    errors = {}
    ftcp = np.zeros(L.SHAPE, dtype=np.float64)
    for i in range(n):
        ftcp[:] = 0.0
        for name in _REGIONS:
            rows, cols = L.REGIONS[name]
            ftcp[rows, cols] = regions[name][i]
        try:
            structure = to_structure(ftcp)
        except Exception as exc:  # noqa: BLE001 - recorded with its reason
            errors[i] = f"to_structure: {exc}"
            continue
        for tol in (symprec, retry):
            try:
                system = SpacegroupAnalyzer(structure, symprec=tol, angle_tolerance=angle_tol).get_crystal_system()
                codes[i] = CRYSTAL_SYSTEMS.index(system)
                errors.pop(i, None)
                break
            except Exception as exc:  # noqa: BLE001 - spglib failures are recorded, not fatal
                errors[i] = f"spglib (symprec {tol}): {type(exc).__name__}: {exc}"
    return codes, errors


def compute_crystal_systems(source, out_dir, workers: int | None = None, chunk_size: int = 1000,
                            symprec: float = SYMPREC, progress: bool = True) -> Path:
    """Classify every material of ``source`` and write ``<out_dir>/crystal_system.npz``.

    Chunks are written as they finish (``crystal_system.parts/``), so an interrupted run
    resumes where it stopped.
    """
    from multiprocessing import get_context

    out_dir = Path(out_dir)
    parts = out_dir / "crystal_system.parts"
    parts.mkdir(parents=True, exist_ok=True)
    regions = {name: source.region(name) for name in _REGIONS}
    n = len(source.ids)
    starts = list(range(0, n, chunk_size))
    todo = [s for s in starts if not (parts / f"{s:09d}.npz").exists()]
    workers = workers or max(1, min(len(todo), os.cpu_count() or 1))

    def jobs():
        for s in todo:
            e = min(s + chunk_size, n)
            yield s, ({k: v[s:e] for k, v in regions.items()}, symprec, SYMPREC_RETRY, ANGLE_TOLERANCE)

    bar = progress_bar(None, progress, total=n, initial=n - sum(min(chunk_size, n - s) for s in todo),
                       desc="crystal systems", unit="crystal")
    if todo:
        ctx = get_context("spawn") if workers > 1 else None
        pool = ctx.Pool(workers) if ctx else None
        try:
            order = [s for s, _ in jobs()]
            results = (pool.imap(_classify_chunk, (a for _, a in jobs())) if pool
                       else map(_classify_chunk, (a for _, a in jobs())))
            for s, (codes, errors) in zip(order, results, strict=False):
                err_ids = np.array([str(source.ids[s + i]) for i in errors], dtype=str)
                err_msg = np.array(list(errors.values()), dtype=str)
                atomic_save_npz(parts / f"{s:09d}.npz", codes=codes, error_id=err_ids, error=err_msg)
                bar.update(len(codes))
        finally:
            if pool:
                pool.close()
                pool.join()
    bar.close()
    codes, failures = [], []
    for s in starts:
        with np.load(parts / f"{s:09d}.npz") as part:
            codes.append(part["codes"])
            failures += [{"material_id": str(m), "error": str(e)}
                         for m, e in zip(part["error_id"], part["error"], strict=False)]
    codes = np.concatenate(codes)
    meta = {"symprec": symprec, "symprec_retry": SYMPREC_RETRY, "angle_tolerance": ANGLE_TOLERANCE,
            "classes": list(CRYSTAL_SYSTEMS), "unknown": UNKNOWN, "n": int(n),
            "n_unknown": int((codes == UNKNOWN).sum()),
            "counts": {c: int((codes == k).sum()) for k, c in enumerate(CRYSTAL_SYSTEMS)}}
    atomic_save_npz(out_dir / CACHE_FILE, material_id=source.ids.astype(str), crystal_system=codes,
                    meta=np.array(json.dumps(meta)))
    atomic_write_json(out_dir / "crystal_system_failures.json", failures)
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return out_dir / CACHE_FILE


def load_crystal_systems(ids, search_dirs) -> tuple[np.ndarray, dict]:
    """Crystal-system codes aligned to ``ids`` (by material ID, with a check), and the cache's meta."""
    ids = np.asarray(ids).astype(str)
    for d in search_dirs:
        path = Path(d) / CACHE_FILE
        if path.exists():
            with np.load(path, allow_pickle=False) as f:
                cache_ids, codes, meta = f["material_id"].astype(str), f["crystal_system"], json.loads(str(f["meta"]))
            pos = {m: i for i, m in enumerate(cache_ids)}
            missing = [m for m in ids if m not in pos]
            if missing:
                raise ValueError(f"{path} has no crystal system for {len(missing)} materials, e.g. {missing[:3]}; "
                                 f"delete it and run `ftcp ssl-prepare` again")
            return codes[np.array([pos[m] for m in ids], dtype=np.int64)].astype(np.int64), meta
    raise FileNotFoundError(
        f"no {CACHE_FILE} in {[str(d) for d in search_dirs]}: Block 2's crystal-system targets need pymatgen/spglib "
        f"and are computed once on a CPU machine: `ftcp ssl-prepare --data DIR [--out SSL_DIR]`")


def ensure_crystal_systems(source, ssl_dir, search_dirs=(), workers=None, progress=True) -> Path:
    """The cache path, computing it (needs pymatgen) when no search dir has one for these IDs."""
    for d in (ssl_dir, *search_dirs):
        path = Path(d) / CACHE_FILE
        if path.exists():
            load_crystal_systems(source.ids, [d])   # validates coverage
            return path
    return compute_crystal_systems(source, ssl_dir, workers=workers, progress=progress)
