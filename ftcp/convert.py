"""Writers between layouts: any dataset view -> a native store (``write_native_store``, how ``ftcp reproduce
--source hf`` gets one) or -> the upstream Hugging Face file layout (``write_upstream_layout``, for fixtures).

``ftcp.dataset`` is the read-only view; it never imports this module.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import layout as L
from .dataset import SIDES, STORE_LABELS, Dataset
from .io_utils import as_id_array, atomic_write_json, sha256_file, utc_now
from .logs import progress_bar
from .splits import split_dir, write_split
from .store import MANIFEST, STORE_FILES, STORE_FORMAT, STORE_FORMAT_VERSION


def write_upstream_layout(dataset: Dataset, out_root, splits: Sequence[str] | None = None,
                          seed: int = 0, shuffle: bool = True, object_ids: bool = True,
                          labels: Sequence[str] | None = None, ssl: bool | None = None,
                          ftcp_dtype=np.float32, chunk_size: int = 4096) -> Path:
    """Write ``dataset``'s splits in the upstream Hugging Face file layout under ``out_root``.

    Used to make upstream-layout fixtures for tests (and to hand a store to upstream-style
    tooling).  With ``shuffle`` the FTCP, label and SSL files of one side get *different*
    random row orders (seeded), as a join-by-ID stress test.  ``object_ids`` stores IDs as
    pickled object arrays like upstream.  ``labels``: store label names to write (default all
    known to upstream); ``ssl``: write SSL features (default: if the dataset has them).
    """
    out_root = Path(out_root)
    rng = np.random.default_rng(seed)
    names = list(splits) if splits is not None else dataset.split_names()
    label_names = list(labels) if labels is not None else [n for n in dataset.label_names if n in STORE_LABELS]

    def ids_array(ids):
        return np.array(list(ids), dtype=object) if object_ids else np.asarray(ids, dtype=str)

    def order(n):
        return rng.permutation(n) if shuffle else np.arange(n)

    for name in names:
        rel = split_dir(Path("."), name)
        for side in SIDES:
            part = dataset.part(name, side)
            cap = side.capitalize()
            folder = out_root / rel / cap
            folder.mkdir(parents=True, exist_ok=True)
            # FTCP, streamed through a memmap in a shuffled order
            ftcp_ids = part.ids[order(len(part))]
            sub = part.subset(ftcp_ids)
            mm = np.lib.format.open_memmap(folder / f"{cap}_FTCP_Data.npy", mode="w+",
                                           dtype=ftcp_dtype, shape=(len(part),) + L.SHAPE)
            where = pd.Index(ftcp_ids)
            for ids_chunk, x in sub.iter_ftcp(chunk_size, flat=False):
                mm[where.get_indexer(ids_chunk)] = x
            mm.flush()
            del mm
            np.save(folder / f"{cap}_FTCP_Material_IDs.npy", ids_array(ftcp_ids), allow_pickle=object_ids)
            if label_names:
                label_ids = part.ids[order(len(part))]
                values = part.subset(label_ids).labels(label_names)
                np.save(folder / f"{cap}_Material_IDs.npy", ids_array(label_ids), allow_pickle=object_ids)
                for j, lname in enumerate(label_names):
                    np.save(folder / f"{cap}_{STORE_LABELS.get(lname, lname)}_Labels.npy", values[:, j])
            want_ssl = ssl
            if want_ssl is None:
                try:
                    part.ssl_features()
                    want_ssl = True
                except FileNotFoundError:
                    want_ssl = False
            if want_ssl:
                ssl_ids = part.ids[order(len(part))]
                feats = part.subset(ssl_ids).ssl_features()
                np.save(folder / f"{cap}_Extracted_Features_Data.npy", feats)
                np.save(folder / f"{cap}_Extracted_Features_Material_IDs.npy", ids_array(ssl_ids),
                        allow_pickle=object_ids)
    return out_root


def formulas_from_ftcp(x: np.ndarray) -> np.ndarray:
    """Reduced formulas (n,) of FTCP arrays (n, 400, 63), from the element matrix and site occupancy."""
    from pymatgen.core import Composition, Element  # heavy; only conversions need it

    elem = np.asarray(L.region(x, "element_matrix"))            # (n, 103, 4)
    occ = np.asarray(L.region(x, "site_occupancy")) > 0.5       # (n, 100, 4)
    z = elem.argmax(axis=1) + 1                                 # element of each column
    present = elem.max(axis=1) > 0.5
    counts = occ.sum(axis=1)                                    # sites per column
    cache: dict = {}
    out = []
    for zi, pi, ci in zip(z, present, counts, strict=False):
        key = tuple((int(a), int(c)) for a, p, c in zip(zi, pi, ci, strict=False) if p and c > 0)
        if key not in cache:
            cache[key] = Composition({Element.from_Z(a): c for a, c in key}).reduced_formula if key else ""
        out.append(cache[key])
    return np.array(out, dtype=str)


def write_native_store(dataset: Dataset, out_root, overwrite: bool = False, source: str | None = None,
                       chunk_size: int = 4096, progress: bool = True) -> dict:
    """Write any dataset view (e.g. the upstream Hugging Face layout) as a native store under ``out_root``.

    ``ftcp.npy`` (all IDs of ``dataset.ids``, streamed through a memmap), ``material_ids.npy``,
    ``labels.csv`` (reduced formulas recovered from the FTCP element matrix and occupancy, so
    the formula-group logic works), an empty ``rejects.csv``, the dataset's own splits as ID lists
    and ``manifest.json`` (phase ``linear``: the upstream data was built with it).  SSL training
    reads native stores only; this is how ``ftcp reproduce --source hf`` gets one.
    """
    from . import __version__  # the package's __init__ is loaded before any submodule: no cycle

    out_root = Path(out_root)
    if Path(dataset.root).resolve() == out_root.resolve():
        raise ValueError(f"{out_root} is the dataset's own folder; write the native store elsewhere")
    existing = [f for f in (*STORE_FILES, MANIFEST) if (out_root / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_root} already holds a store ({', '.join(existing)}); pass overwrite=True")
    out_root.mkdir(parents=True, exist_ok=True)
    ids = as_id_array(dataset.ids)
    part = dataset.part(ids=ids)
    where = pd.Index(ids)
    tmp = out_root / "ftcp.npy.tmp.npy"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(ids),) + L.SHAPE)
    formulas = np.empty(len(ids), dtype=object)
    chunks = progress_bar(part.iter_ftcp(chunk_size, flat=False), progress, total=-(-len(ids) // chunk_size),
                          desc="native store", unit="chunk")
    for chunk_ids, x in chunks:
        pos = where.get_indexer(chunk_ids)
        mm[pos] = x
        formulas[pos] = formulas_from_ftcp(x)
    mm.flush()
    del mm
    os.replace(tmp, out_root / "ftcp.npy")
    np.save(out_root / "material_ids.npy", ids)
    names = list(dataset.label_names)
    table = pd.DataFrame({"material_id": ids, "formula": formulas.astype(str)})
    values = part.labels(names) if names else np.zeros((len(ids), 0))
    for j, n in enumerate(names):
        table[n] = [repr(float(v)) if np.isfinite(v) else "" for v in values[:, j]]
    table.to_csv(out_root / "labels.csv", index=False, lineterminator="\n")
    (out_root / "rejects.csv").write_text("material_id,reason,detail,input_row\n")
    store_pos = {m: i for i, m in enumerate(ids)}
    splits = {}
    for name in dataset.split_names():
        sides = [sorted(dataset.part(name, side).ids.tolist(), key=store_pos.__getitem__) for side in SIDES]
        meta, _ = write_split(split_dir(out_root, name), sides[0], sides[1],
                              {"name": name, "method": "upstream", "source": source or str(dataset.root),
                               "id_order": "store order (material_ids.npy)"}, overwrite=True)
        splits[name] = {"n_train": meta["n_train"], "n_test": meta["n_test"]}
    manifest = {
        "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "layout_version": L.LAYOUT_VERSION,
        "phase": "linear", "shape": [len(ids), *L.SHAPE], "dtype": "float32",
        "counts": {"input": len(ids), "accepted": len(ids), "rejected": 0, "rejected_by_reason": {}},
        "targets": names, "label_columns": {n: n for n in names}, "required_labels": [], "blank_labels": {},
        "ignored_columns": [],
        "source": {"path": source or str(Path(dataset.root).resolve()), "kind": f"{dataset.layout}_layout",
                   "sha256": "", "labels_csv": None},
        "converted_from": {"root": str(Path(dataset.root).resolve()), "layout": dataset.layout,
                           "reference_split": getattr(dataset, "_reference_split", None)},
        "files": {f: {"sha256": sha256_file(out_root / f), "bytes": (out_root / f).stat().st_size}
                  for f in STORE_FILES},
        "splits": splits, "created": utc_now(), "package_version": __version__,
    }
    atomic_write_json(out_root / MANIFEST, manifest)
    return manifest


__all__ = ["write_native_store", "write_upstream_layout", "formulas_from_ftcp"]
