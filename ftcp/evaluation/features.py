"""Feature tables for the scenarios, all keyed by material ID.

* raw FTCP, flattened to 25,200 columns (streamed from the store's memmap, or loaded);
* the 2,048-d SSL table (``<root>/SSL/ssl_features.npy`` + IDs, whatever produced it);
* the hybrid [FTCP 25,200 | SSL 2,048] = 27,248 columns;
* Magpie composition features (matminer), cached per data root;
* the six FTCP blocks as column groups of the flattened vector (from ``ftcp.layout``).

Every table is aligned to a part's IDs by the dataset view (``ftcp.dataset``), which raises
on a missing or duplicated ID; nothing here relies on row positions.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import layout as L
from ..io_utils import atomic_save_npz, atomic_write_json, read_json_if_exists, sha256_file
from ..logs import progress_bar
from ..ssl.data import SPLIT_FILE, ssl_seen_ids
from .linear import ChunkSource, array_chunks

#: Written next to stand-in SSL features; every result made from them carries this flag.
STANDIN_INFO = "ssl_features_info.json"
MAGPIE_DIR = "Features"


# ---------------------------------------------------------------------------------------
# dataset facts
def dataset_info(ds) -> dict:
    """Name, root, layout, size and manifest checksum of an opened dataset (for provenance)."""
    root = Path(ds.root)
    manifest = getattr(ds, "manifest", None) or {}
    src = (manifest.get("source") or {}).get("path")
    name = manifest.get("name") or (Path(src).name.split(".")[0] if src else root.resolve().name)
    mpath = root / "manifest.json"
    return {"name": name, "layout": ds.layout, "n_materials": int(len(ds.ids)),
            "manifest_sha256": sha256_file(mpath) if mpath.exists() else None,
            "source": Path(src).name if src else None, "synthetic": manifest.get("synthetic")}


def resolve_targets(ds, target: str) -> list[str]:
    """``--target`` value -> label names: one name, a comma list, or ``all``.

    ``all`` = the manifest's ``targets`` list, else every numeric label column present.
    """
    available = list(ds.label_names)
    if target == "all":
        manifest = getattr(ds, "manifest", None) or {}
        names = [t for t in manifest.get("targets", []) if t in available] or available
    else:
        names = [t.strip() for t in target.split(",") if t.strip()]
    unknown = [t for t in names if t not in available]
    if unknown or not names:
        raise KeyError(f"target(s) {unknown or names} not among the dataset's labels {available}")
    return names


def resolve_splits(ds, split: str, prefix: str = "random_") -> list[str]:
    """``--split 10|20|...|all|<split name>`` -> split names present in the dataset."""
    names = ds.split_names()
    if split == "all":
        chosen = [s for s in names if s.startswith(prefix)]
    elif split.isdigit():
        chosen = [f"{prefix}{int(split)}"]
    else:
        chosen = [split]
    missing = [s for s in chosen if s not in names]
    if missing or not chosen:
        raise KeyError(f"split(s) {missing or split!r} not found under {ds.root}; available: {names} "
                       "(make them with `ftcp split`)")
    return chosen


def labelled(part, targets: list[str]) -> tuple[object, np.ndarray, int]:
    """(part restricted to rows with every target finite, labels (n, t), number dropped)."""
    y = part.labels(targets)
    ok = np.all(np.isfinite(y), axis=1)
    if ok.all():
        return part, y, 0
    return part.subset(part.ids[ok]), y[ok], int((~ok).sum())


def subsample_ids(ids, n: int, seed: int) -> np.ndarray:
    """``n`` IDs drawn without replacement (seeded), kept in their original order."""
    ids = np.asarray(ids)
    if n >= len(ids):
        return ids
    take = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return ids[take]


# ---------------------------------------------------------------------------------------
# FTCP / SSL / hybrid
def ftcp_chunks(part, chunk_size: int = 4096) -> ChunkSource:
    """Chunk source streaming flattened FTCP (c, 25,200) float32 of ``part`` from disk."""
    return lambda: part.iter_ftcp(chunk_size=chunk_size, flat=True)


def ssl_chunks(part, chunk_size: int = 4096) -> ChunkSource:
    return array_chunks(part.ids, part.ssl_features(), chunk_size)


def ssl_info(ssl_dir) -> dict:
    """Which SSL run a result used: its label (the folder name), protocol, SSL split digests,
    preset, objective, seed, commit, initialisation, and the checksum of the feature table."""
    ssl_dir = Path(ssl_dir)
    path = ssl_dir / "ssl_features.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: export the SSL features first (`ftcp ssl-train-all`, "
                                "or `ftcp ssl-export` + `ftcp ssl-assemble`), or point --ssl at an SSL directory")
    meta = read_json_if_exists(ssl_dir / "ssl_features.json") or {}
    run = meta.get("run") or {}
    info = {"label": ssl_dir.name, "sha256": sha256_file(path), "standin": False,
            "protocol": (meta.get("ssl_split") or {}).get("protocol", "unknown"),
            "ssl_split": meta.get("ssl_split"), "init": meta.get("init"),
            "preset": run.get("preset"), "objective": run.get("objective"),
            "crossmodal_weight": run.get("crossmodal_weight"), "seed": run.get("seed"),
            "git": run.get("git"), "trained_on": run.get("device_name")}
    marker = ssl_dir / STANDIN_INFO
    if marker.exists():
        meta = json.loads(marker.read_text())
        info.update(standin=bool(meta.get("standin")), standin_info=meta)
    return info


def leak_check(ssl_dir, test_ids) -> dict:
    """How many of a scenario's test materials the SSL saw (their FTCP, never their labels).

    0 means the scenario ran under the inductive protocol; anything else is transductive.
    """
    path = Path(ssl_dir) / SPLIT_FILE
    split = read_json_if_exists(path)
    if split is None:
        meta = read_json_if_exists(Path(ssl_dir) / "ssl_features.json") or {}
        return {"n_test": int(len(test_ids)), "n_test_seen_by_ssl": None,
                "protocol": (meta.get("ssl_split") or {}).get("protocol", "unknown"),
                "note": f"no {SPLIT_FILE} beside the features: could not check"}
    seen = ssl_seen_ids(split)
    n_seen = int(sum(1 for m in test_ids if str(m) in seen))
    return {"n_test": int(len(test_ids)), "n_test_seen_by_ssl": n_seen,
            "share_seen": n_seen / max(1, len(test_ids)),
            "protocol": "inductive" if n_seen == 0 else "transductive",
            "ssl_split_protocol": split.get("protocol")}


def hybrid_matrix(part, ssl: np.ndarray | None = None, chunk_size: int = 4096) -> np.ndarray:
    """[FTCP flat | SSL] (n, 25,200 + d) float32 aligned to ``part.ids`` (filled in place)."""
    ssl = part.ssl_features() if ssl is None else ssl
    if len(ssl) != len(part):
        raise ValueError(f"{len(ssl)} SSL rows for {len(part)} IDs")
    out = np.empty((len(part), L.N_VALUES + ssl.shape[1]), dtype=np.float32)
    pos_of = {m: i for i, m in enumerate(part.ids)}
    for ids, x in part.iter_ftcp(chunk_size=chunk_size, flat=True):
        pos = np.fromiter((pos_of[m] for m in ids), dtype=np.int64, count=len(ids))
        out[pos, :L.N_VALUES] = x
    out[:, L.N_VALUES:] = ssl
    return out


def varying_columns(*arrays, chunk_size: int = 4096) -> np.ndarray:
    """Indices of the columns that are not constant over all rows of all ``arrays`` together."""
    lo = hi = None
    for a in arrays:
        for s in range(0, len(a), chunk_size):
            c = np.asarray(a[s:s + chunk_size])
            cl, ch = c.min(axis=0), c.max(axis=0)
            lo = cl if lo is None else np.minimum(lo, cl)
            hi = ch if hi is None else np.maximum(hi, ch)
    if lo is None:
        raise ValueError("no rows")
    return np.flatnonzero(hi > lo)


def ftcp_block_columns() -> dict[str, np.ndarray]:
    """The six FTCP blocks as indices into the flattened 25,200 vector, plus the rest.

    ``outside_blocks`` holds every column no block covers (the structurally-zero
    reciprocal columns of rows 0-304, the unused real-space columns and the padding rows).
    """
    groups, used = {}, np.zeros(L.N_VALUES, dtype=bool)
    for b in L.BLOCKS:
        idx = np.asarray(L.flat_index(b.rows, b.cols), dtype=np.int64)
        groups[f"B{b.number}_{b.name}"] = idx
        used[idx] = True
    groups["outside_blocks"] = np.flatnonzero(~used)
    return groups


# ---------------------------------------------------------------------------------------
# stand-in SSL features (development only)
def write_standin_ssl(root, seed: int = 0, dim: int = L.SSL_DIM, chunk_size: int = 2048) -> Path:
    """Write a STAND-IN (N, 2048) table: tanh of a seeded random projection of standardised FTCP.

    For developing and benchmarking the evaluation pipeline before the SSL encoders exist.
    It is marked in ``SSL/ssl_features_info.json``; results made from it say so, and they
    must never be reported as SSL results.  Rows are written in a shuffled ID order so
    that every consumer has to join by ID.
    """
    from ..dataset import open_dataset

    ds = open_dataset(root)
    part = ds.part(ids=ds.ids)
    n = len(ds.ids)
    s1 = np.zeros(L.N_VALUES)
    s2 = np.zeros(L.N_VALUES)
    for _, x in progress_bar(part.iter_ftcp(chunk_size, flat=True), total=-(-n // chunk_size),
                             desc="stand-in stats"):
        x = x.astype(np.float64)
        s1 += x.sum(0)
        s2 += (x * x).sum(0)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    active = np.flatnonzero(std > 1e-12)
    rng = np.random.default_rng(seed)
    proj = rng.normal(size=(len(active), dim)) / np.sqrt(len(active))
    order = rng.permutation(n)
    ids_out = ds.ids[order]
    pos_of = {m: i for i, m in enumerate(ids_out)}
    out = np.empty((n, dim), dtype=np.float32)
    for ids, x in progress_bar(part.iter_ftcp(chunk_size, flat=True), total=-(-n // chunk_size),
                               desc="stand-in projection"):
        z = np.clip((x[:, active].astype(np.float64) - mean[active]) / std[active], -10, 10)
        pos = np.fromiter((pos_of[m] for m in ids), dtype=np.int64, count=len(ids))
        out[pos] = np.tanh(3.0 * z @ proj).astype(np.float32)
    ssl_dir = Path(root) / "SSL"
    ssl_dir.mkdir(parents=True, exist_ok=True)
    np.save(ssl_dir / "ssl_features.npy", out)
    np.save(ssl_dir / "ssl_material_ids.npy", ids_out.astype(str))
    atomic_write_json(ssl_dir / STANDIN_INFO, {
        "standin": True, "seed": int(seed), "dim": int(dim),
        "method": "tanh(3 * clip(standardised FTCP, +-10) @ Gaussian(p_active, 2048) / sqrt(p_active)); "
                  "rows in a shuffled ID order",
        "warning": "STAND-IN features for pipeline development; NOT self-supervised embeddings. "
                   "Never report results made from them as SSL results."})
    return ssl_dir / "ssl_features.npy"


# ---------------------------------------------------------------------------------------
# Magpie composition features
def magpie_table(part, cache_dir, progress: bool = True) -> dict:
    """Magpie features (matminer ``ElementProperty.from_preset("magpie")``) for ``part``.

    Computed once per distinct reduced formula and cached under ``cache_dir``
    (``magpie.npz``, keyed by the formula set's checksum; the cache grows as new formulas
    come).  Returns {"ids", "x" (n_ok, 132) float64 aligned to ids, "names",
    "failures": [(material_id, formula, reason)]}; failed rows are left out, never guessed.
    """
    formulas = part.formulas()
    cache_dir = Path(cache_dir)
    cache = cache_dir / "magpie.npz"
    known: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    names = None
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        names = list(z["names"])
        known = dict(zip(z["formulas"].tolist(), z["x"], strict=False))
        failed = dict(zip(z["failed_formulas"].tolist(), z["failed_reasons"].tolist(), strict=False))
    todo = sorted(set(formulas) - set(known) - set(failed))
    if todo:
        import warnings

        from matminer.featurizers.composition import ElementProperty
        from pymatgen.core import Composition

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            featurizer = ElementProperty.from_preset("magpie", impute_nan=False)
            names = featurizer.feature_labels()
            for f in progress_bar(todo, progress, desc="Magpie features"):
                try:
                    v = np.asarray(featurizer.featurize(Composition(f)), dtype=np.float64)
                except Exception as exc:   # record, never crash deep inside matminer
                    failed[f] = f"{type(exc).__name__}: {exc}"[:200]
                    continue
                if not np.all(np.isfinite(v)):
                    failed[f] = f"non-finite Magpie values in {int((~np.isfinite(v)).sum())} features"
                    continue
                known[f] = v
        keys = sorted(known)
        atomic_save_npz(cache, formulas=np.array(keys, dtype=str),
                        x=np.array([known[k] for k in keys]).reshape(len(keys), -1),
                        names=np.array(names, dtype=str),
                        failed_formulas=np.array(sorted(failed), dtype=str),
                        failed_reasons=np.array([failed[k] for k in sorted(failed)], dtype=str))
    ok = np.array([f in known for f in formulas], dtype=bool)
    x = np.array([known[f] for f in formulas[ok]]).reshape(int(ok.sum()), -1)
    failures = [(m, f, failed.get(f, "no formula")) for m, f in zip(part.ids[~ok], formulas[~ok], strict=False)]
    return {"ids": part.ids[ok], "x": x, "names": list(names or []), "failures": failures,
            "formula_set_sha256": hashlib.sha256("\n".join(sorted(set(formulas))).encode()).hexdigest()}
