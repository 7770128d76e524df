"""Join the six block embeddings into the 2,048-d SSL feature table, by material ID.

    python SSL_Training/assemble_features.py --data Data [--out SSL_DIR] [--upstream-layout]
    ftcp ssl-assemble --data Data [--upstream-layout]

Reads ``<ssl dir>/block<N>_<name>/embeddings.npz`` for N = 1..6 (``ftcp.layout.BLOCKS``),
checks that every block holds the same material IDs in the same order (a mismatch names the
block and the first differing IDs), that each block has its ``ftcp.layout`` width and was
trained on the same SSL split, and that the IDs are the data root's own (when the root has a
store or pack), then writes

* ``<ssl dir>/ssl_features.npy`` (N, 2048) float32, blocks in order 1..6,
* ``<ssl dir>/ssl_material_ids.npy`` (N,) str (the names ``ftcp.dataset`` reads from
  ``<root>/SSL``),
* ``<ssl dir>/ssl_features.json``: block widths and column offsets, the SHA-256 of every input
  file (embeddings, split, normaliser) and of the outputs, the SSL split and each block's
  training settings;

and with ``upstream_layout`` also the upstream Hugging Face files
``<root>/Splitted_Data/Split_XXTest_YYTrain/{Train,Test}/{Train,Test}_Extracted_Features_Data.npy``
+ ``..._Extracted_Features_Material_IDs.npy`` (and ``Group_Splitting/...``) for every
downstream split present (ID lists read through ``ftcp.dataset``).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .. import layout as L
from ..io_utils import atomic_save_npy, atomic_write_json, read_json_if_exists, sha256_file, to_jsonable, utc_now
from . import data as D
from .export import EMBEDDINGS_FILE, load_embeddings

FEATURES_FILE = "ssl_features.npy"
IDS_FILE = "ssl_material_ids.npy"
INFO_FILE = D.FEATURES_INFO
#: what ``ftcp ssl-train-all`` records about a run (protocol, preset, seed, commit, ...)
RUN_FILE = "ssl_run.json"

log = logging.getLogger(__name__)


def block_dir(ssl_dir, block) -> Path:
    return Path(ssl_dir) / block.dirname


def first_differences(reference: np.ndarray, other: np.ndarray, limit: int = 5) -> str:
    """A readable account of how two ID arrays differ (set and order)."""
    reference, other = [str(i) for i in reference], [str(i) for i in other]
    ref_set, other_set = set(reference), set(other)
    parts = []
    if len(reference) != len(other):
        parts.append(f"{len(other)} IDs instead of {len(reference)}")
    missing, extra = [i for i in reference if i not in other_set], [i for i in other if i not in ref_set]
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[:limit]}")
    if extra:
        parts.append(f"{len(extra)} not in the reference, e.g. {extra[:limit]}")
    if not missing and not extra:
        pos = [i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b][:limit]
        parts.append(f"same IDs in another order: first differing rows {pos} "
                     f"(reference {[reference[i] for i in pos]} vs {[other[i] for i in pos]})")
    return "; ".join(parts)


def load_blocks(ssl_dir, blocks=L.BLOCKS) -> tuple[np.ndarray, list[np.ndarray], list[dict]]:
    """IDs and the embedding of every block, checked against each other (ValueError otherwise)."""
    ssl_dir = Path(ssl_dir)
    reference, arrays, records = None, [], []
    for block in blocks:
        path = block_dir(ssl_dir, block) / EMBEDDINGS_FILE
        if not path.exists():
            raise FileNotFoundError(f"block {block.number} ({block.name}): {path} not found; train and export it first "
                                    f"(ftcp ssl-train --block {block.number} --data ... --out {ssl_dir})")
        ids, emb = load_embeddings(path)
        if emb.shape[1] != block.embed_dim:
            raise ValueError(f"block {block.number} ({block.name}): {path} has {emb.shape[1]} dims, ftcp.layout says "
                             f"{block.embed_dim}; it was trained with --embed-dim {emb.shape[1]} and cannot be "
                             "assembled")
        if not np.isfinite(emb).all():
            raise ValueError(f"block {block.number} ({block.name}): {path} holds non-finite values")
        if reference is None:
            reference, ref_block = ids, block
        elif len(ids) != len(reference) or not np.array_equal(ids, reference):
            raise ValueError(f"block {block.number} ({block.name}) has other material IDs than block "
                             f"{ref_block.number} ({ref_block.name}): {first_differences(reference, ids)}")
        config = read_json_if_exists(block_dir(ssl_dir, block) / "config.json") or {}
        records.append({"path": path, "config": config})
        arrays.append(emb)
    return reference, arrays, records


def _check_same_split(records, blocks):
    """Every block must come from the same SSL split (seed, sizes, excluded source)."""
    seen = {}
    for block, rec in zip(blocks, records, strict=False):
        split = rec["config"].get("split")
        if split is None:
            continue
        key = json.dumps({k: split.get(k) for k in ("seed", "sizes", "excluded_source", "excluded_digest")},
                         sort_keys=True)
        seen.setdefault(key, []).append(block.number)
    if len(seen) > 1:
        raise ValueError("the blocks were trained on different SSL splits: "
                         + "; ".join(f"blocks {v}: {k}" for k, v in seen.items()))


def assemble(ssl_dir, root=None, features_dir=None, blocks=L.BLOCKS, upstream_layout: bool = False) -> dict:
    """Write the assembled table (see the module docstring); returns the info dict."""
    t0 = time.perf_counter()
    ssl_dir = Path(ssl_dir)
    out_dir = Path(features_dir) if features_dir is not None else ssl_dir
    ids, arrays, records = load_blocks(ssl_dir, blocks)
    _check_same_split(records, blocks)
    root_ids = None
    if root is not None:
        try:
            root_ids = D.open_source(root).ids
        except FileNotFoundError:
            root_ids = None
    if root_ids is not None and not np.array_equal(root_ids, ids):
        raise ValueError(f"the block embeddings do not cover the data root {root} in store order: "
                         f"{first_differences(root_ids, ids)}")
    dims = [a.shape[1] for a in arrays]
    features = np.empty((len(ids), sum(dims)), dtype=np.float32)
    offsets, start = [], 0
    for a in arrays:
        features[:, start:start + a.shape[1]] = a
        offsets.append(start)
        start += a.shape[1]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out_dir / FEATURES_FILE, features)
    atomic_save_npy(out_dir / IDS_FILE, ids.astype(str))
    # the prepared files the engine used: the SSL directory's, else <root>/SSL's
    where = {name: next((d / name for d in (ssl_dir, *([Path(root) / "SSL"] if root is not None else []))
                         if (d / name).exists()), None) for name in (D.SPLIT_FILE, D.NORMALIZER_FILE)}
    prepared = {name: (sha256_file(path) if path else None) for name, path in where.items()}
    split = read_json_if_exists(where[D.SPLIT_FILE]) if where[D.SPLIT_FILE] else None
    summary = D.split_summary(split) if split else next((r["config"]["split"] for r in records
                                                        if r["config"].get("split")), {})
    info = {
        "kind": "ssl_features", "layout": L.LAYOUT_VERSION, "created_utc": utc_now(),
        "n_materials": int(len(ids)), "dims": int(features.shape[1]), "dtype": "float32",
        "ids_digest": D.ids_digest(ids), "data_root": None if root is None else Path(root).name,
        "ssl_split": {"sha256": prepared[D.SPLIT_FILE], **summary},
        "normalizer": {"sha256": prepared[D.NORMALIZER_FILE]},
        "init": sorted({rec["config"].get("init", "trained") for rec in records}),
        "run": read_json_if_exists(ssl_dir / RUN_FILE),
        "blocks": [{"number": b.number, "name": b.name, "dim": d, "offset": o, "columns": [o, o + d],
                    "embeddings": str(rec["path"].relative_to(ssl_dir)), "sha256": sha256_file(rec["path"]),
                    "init": rec["config"].get("init", "trained"),
                    "train": {k: rec["config"].get("train", {}).get(k) for k in ("epochs", "batch_size", "lr", "seed")},
                    "model": rec["config"].get("model"),
                    "world_size": rec["config"].get("world_size"), "device_name": rec["config"].get("device_name")}
                   for b, d, o, rec in zip(blocks, dims, offsets, records, strict=False)],
        "outputs": {FEATURES_FILE: sha256_file(out_dir / FEATURES_FILE), IDS_FILE: sha256_file(out_dir / IDS_FILE)},
        # the structure-factor phase of the store the encoders saw: ftcp.embed featurizes new crystals with it
        "ftcp_phase": ((read_json_if_exists(Path(root) / "manifest.json") or {}).get("phase")
                       if root is not None else None),
    }
    if upstream_layout:
        if root is None:
            raise ValueError("--upstream-layout needs the data root (its split ID lists)")
        info["upstream_layout"] = write_upstream_features(root, ids, features)
    atomic_write_json(out_dir / INFO_FILE, to_jsonable(info))
    log.info("assembled %d x %d SSL features from blocks %s -> %s (%.1f s)", features.shape[0], features.shape[1],
             [b.number for b in blocks], out_dir / FEATURES_FILE, time.perf_counter() - t0)
    return info


def write_upstream_features(root, ids: np.ndarray, features: np.ndarray) -> list[dict]:
    """``{Train,Test}_Extracted_Features_{Data,Material_IDs}.npy`` of every split of ``root``."""
    from ..dataset import open_dataset
    from ..splits import split_dir

    ds = open_dataset(root)
    if ds.layout != "native":
        raise ValueError(f"{root} is an upstream-layout dataset; the upstream feature files are written into native "
                         f"data roots (their split ID lists)")
    position = {m: i for i, m in enumerate(ids.tolist())}
    written = []
    for split in ds.split_names():
        for side in ("train", "test"):
            part_ids = np.asarray(ds.part(split, side).ids).astype(str)
            missing = [m for m in part_ids if m not in position]
            if missing:
                raise ValueError(f"split {split}/{side}: {len(missing)} IDs have no SSL features, e.g. {missing[:5]}")
            rows = np.fromiter((position[m] for m in part_ids), dtype=np.int64, count=len(part_ids))
            cap = side.capitalize()
            folder = split_dir(root, split) / cap
            folder.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(folder / f"{cap}_Extracted_Features_Data.npy", features[rows])
            atomic_save_npy(folder / f"{cap}_Extracted_Features_Material_IDs.npy", part_ids)
            written.append({"split": split, "side": side, "n": int(len(rows)), "folder": str(folder)})
    log.info("upstream layout: wrote the SSL features of %d split parts under %s", len(written), root)
    return written
