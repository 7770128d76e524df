"""One read-only view of an FTCP dataset, whatever its layout on disk.

``open_dataset(root)`` detects

* the **native** layout written by ``ftcp build`` (``ftcp.npy`` memmap, ``material_ids.npy``,
  ``labels.csv``, split ID lists, ``SSL/ssl_features.npy``), or
* the **upstream** Hugging Face layout (``Splitted_Data/Split_10Test_90Train/{Train,Test}/``
  ``{Train,Test}_FTCP_Data.npy`` with separate ID arrays for FTCP, labels and SSL features),

and presents both the same way::

    ds = open_dataset()                      # $CRYS_REP_DATA or Data/
    part = ds.part("random_10", "train")     # or ds.part(ids=[...])
    part.ids, part.labels(["formation_energy"]), part.ftcp(), part.ssl_features()
    for ids, x in part.iter_ftcp(4096): ...

Every array is aligned to ``part.ids`` by material ID (pandas ``Index.get_indexer``), never
by position; a missing or duplicated ID raises ``ValueError`` naming the file.
Upstream ID arrays are pickled object arrays; they are read by ``io_utils.load_id_array``, which
unpickles a plain array of strings and nothing else (a crafted file is refused, never run).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from . import layout as L
from .io_utils import as_id_array, load_id_array, read_id_list, read_json, resolve_data_root
from .splits import GROUP_NAME, find_split_dirs

SIDES = ("train", "test")
#: Upstream label-file names -> store label names.
UPSTREAM_LABELS = {"FormationEnergy": "formation_energy", "BandGap": "band_gap"}
STORE_LABELS = {v: k for k, v in UPSTREAM_LABELS.items()}
NATIVE_FILES = ("ftcp.npy", "material_ids.npy", "labels.csv")
_READ_BLOCK = 2048  # rows read from a memmap at once when gathering


# ---------------------------------------------------------------------------------------------
# ID-keyed lookup
class _Keyed:
    """Material IDs of one file -> row positions, asserting uniqueness and presence."""

    def __init__(self, ids, what: str):
        self.what = what
        self.ids = as_id_array(ids, what)
        self.index = pd.Index(self.ids)
        if not self.index.is_unique:
            dup = self.index[self.index.duplicated()].unique()
            raise ValueError(f"{what}: {len(dup)} duplicated material ID(s), e.g. {list(dup[:5])}")

    def __len__(self):
        return len(self.ids)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        pos = self.index.get_indexer(ids)
        missing = pos < 0
        if missing.any():
            ex = list(np.asarray(ids)[missing][:5])
            raise ValueError(f"{int(missing.sum())} of {len(ids)} requested material IDs are missing "
                             f"from {self.what}, e.g. {ex}")
        return pos


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _read_rows(arr, rows: np.ndarray, out: np.ndarray) -> None:
    """out[:] = arr[rows] for sorted ``rows``, reading a contiguous run as one slice."""
    if len(rows) == 0:
        return
    if rows[-1] - rows[0] + 1 == len(rows):
        out[...] = arr[rows[0]:rows[-1] + 1].reshape(out.shape)
    else:
        out[...] = arr[rows].reshape(out.shape)


class _Stacked:
    """Rows of one or more arrays (e.g. Train + Test files), each with its own ID array.

    ``pieces``: list of (ID array or loader, array loader, description).  Arrays are opened
    lazily (memory-mapped) and checked against their IDs on first use.
    """

    def __init__(self, what: str, pieces: Sequence[tuple[Callable, Callable, str]], row_shape=None):
        self.what = what
        self._pieces = list(pieces)
        self._row_shape = row_shape
        self._arrays: dict[int, np.ndarray] = {}

    @cached_property
    def _index(self):
        ids, piece, row = [], [], []
        for p, (load_ids, _, desc) in enumerate(self._pieces):
            pid = as_id_array(load_ids(), desc)
            ids.append(pid)
            piece.append(np.full(len(pid), p, dtype=np.int64))
            row.append(np.arange(len(pid), dtype=np.int64))
        what = self.what if len(self._pieces) == 1 else f"{self.what} ({' + '.join(d for *_, d in self._pieces)})"
        keyed = _Keyed(np.concatenate(ids) if ids else np.zeros(0, str), what)
        return keyed, np.concatenate(piece), np.concatenate(row)

    @property
    def ids(self) -> np.ndarray:
        return self._index[0].ids

    def array(self, p: int):
        if p not in self._arrays:
            _, load, desc = self._pieces[p]
            arr = load()
            n_ids = int((self._index[1] == p).sum())
            if len(arr) != n_ids:
                raise ValueError(f"{desc}: {len(arr)} rows but {n_ids} material IDs")
            if self._row_shape is not None and tuple(arr.shape[1:]) not in self._row_shape:
                raise ValueError(f"{desc}: rows of shape {arr.shape[1:]}, expected one of {self._row_shape}")
            self._arrays[p] = arr
        return self._arrays[p]

    def locate(self, ids) -> tuple[np.ndarray, np.ndarray]:
        keyed, piece, row = self._index
        pos = keyed.positions(ids)
        return piece[pos], row[pos]

    def row_size(self) -> tuple[int, ...]:
        return tuple(self.array(0).shape[1:]) if self._pieces else ()

    def gather(self, ids, out_shape_per_row: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """Rows for ``ids`` in that order (reads each file in sorted row order, in blocks)."""
        piece, row = self.locate(ids)
        out = np.empty((len(ids),) + tuple(out_shape_per_row), dtype=dtype)
        for p in np.unique(piece):
            sel = np.nonzero(piece == p)[0]
            order = np.argsort(row[sel], kind="stable")
            sel, rows = sel[order], row[sel][order]
            arr = self.array(int(p))
            for s in range(0, len(sel), _READ_BLOCK):
                dest = sel[s:s + _READ_BLOCK]
                block = np.empty((len(dest),) + tuple(out_shape_per_row), dtype=dtype)
                _read_rows(arr, rows[s:s + _READ_BLOCK], block)
                out[dest] = block
        return out

    def iterate(self, ids, chunk_size: int, out_shape_per_row: tuple[int, ...],
                dtype=np.float32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of rows in storage order (file, then row): yields (ids_chunk, rows_chunk)."""
        ids = np.asarray(ids)
        piece, row = self.locate(ids)
        order = np.lexsort((row, piece))
        for s in range(0, len(order), chunk_size):
            take = order[s:s + chunk_size]
            out = np.empty((len(take),) + tuple(out_shape_per_row), dtype=dtype)
            for p in np.unique(piece[take]):
                # take is sorted by (piece, row): each piece is one consecutive run
                sub = np.nonzero(piece[take] == p)[0]
                _read_rows(self.array(int(p)), row[take[sub]], out[sub[0]:sub[-1] + 1])
            yield ids[take], out


# ---------------------------------------------------------------------------------------------
# backends: where one part's FTCP, labels and SSL features live
@dataclass
class _Backend:
    ftcp: _Stacked
    load_labels: Callable[[], pd.DataFrame]   # index = material_id; float columns (+ "formula")
    ssl: _Stacked
    _labels: pd.DataFrame | None = field(default=None, repr=False)
    _labels_keyed: _Keyed | None = field(default=None, repr=False)

    def labels_table(self) -> tuple[pd.DataFrame, _Keyed]:
        if self._labels is None:
            df = self.load_labels()
            self._labels_keyed = _Keyed(df.index.to_numpy(), getattr(df, "attrs", {}).get("what", "labels"))
            self._labels = df
        return self._labels, self._labels_keyed


_FTCP_ROW_SHAPES = {(L.N_ROWS, L.N_COLS), (L.N_VALUES,)}


class Part:
    """A list of material IDs of one dataset, with everything aligned to it by ID."""

    def __init__(self, dataset: Dataset, ids, backend: _Backend, name: str | None = None):
        self.dataset = dataset
        self.ids = as_id_array(ids, name or "part IDs")
        _Keyed(self.ids, f"part {name or ''}".strip())  # asserts unique
        self.name = name
        self._backend = backend

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self):
        return f"Part({self.name or 'ids'}, n={len(self)}, layout={self.dataset.layout})"

    # -- labels ------------------------------------------------------------------------------
    def labels(self, names: Sequence[str] | str) -> np.ndarray:
        """(n, k) float64 label matrix aligned to ``ids`` (KeyError for an unknown label name)."""
        names = [names] if isinstance(names, str) else list(names)
        df, keyed = self._backend.labels_table()
        missing = [n for n in names if n not in df.columns or n == "formula"]
        if missing:
            avail = [c for c in df.columns if c != "formula"]
            raise KeyError(f"label(s) {missing} not in this dataset; available: {avail}")
        pos = keyed.positions(self.ids)
        return df[names].to_numpy(dtype=np.float64)[pos]

    def formulas(self) -> np.ndarray:
        """(n,) reduced formulas aligned to ``ids`` (native stores; KeyError if not recorded)."""
        df, keyed = self._backend.labels_table()
        if "formula" not in df.columns:
            raise KeyError("this dataset records no formulas")
        return df["formula"].to_numpy(dtype=str)[keyed.positions(self.ids)]

    # -- FTCP ----------------------------------------------------------------------------------
    @staticmethod
    def _row_shape(flat: bool) -> tuple[int, ...]:
        return (L.N_VALUES,) if flat else L.SHAPE

    def ftcp(self, flat: bool = False) -> np.ndarray:
        """(n, 400, 63) float32 (or (n, 25200) if ``flat``) in memory, aligned to ``ids``."""
        return self._backend.ftcp.gather(self.ids, self._row_shape(flat))

    def iter_ftcp(self, chunk_size: int = 4096, flat: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream (ids_chunk, ftcp_chunk float32) from disk.

        Chunks follow storage order (rows sorted by position for sequential I/O), which can
        differ from ``ids`` order: always use the IDs yielded with each chunk.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        return self._backend.ftcp.iterate(self.ids, chunk_size, self._row_shape(flat))

    # -- SSL features --------------------------------------------------------------------------
    def ssl_features(self) -> np.ndarray:
        """(n, 2048) float32 SSL embeddings aligned to ``ids`` (ValueError if any ID lacks them)."""
        ssl = self._backend.ssl
        return ssl.gather(self.ids, ssl.row_size())

    def subset(self, ids) -> Part:
        """A part with the given IDs (same backend; IDs must exist in it)."""
        ids = as_id_array(ids)
        self._backend.ftcp.locate(ids)
        return Part(self.dataset, ids, self._backend, name=f"{self.name or 'ids'}[subset]")


# ---------------------------------------------------------------------------------------------
class Dataset:
    """Common base of the two layouts (see ``open_dataset``)."""

    layout: str
    root: Path
    manifest: dict | None = None

    def split_names(self) -> list[str]:
        return list(self._split_dirs)

    def part(self, split: str | None = None, side: str | None = None, *, ids=None) -> Part:
        """``part("random_10", "train")`` or ``part(ids=[...])`` (any IDs of the dataset)."""
        if ids is not None:
            if split is not None or side is not None:
                raise TypeError("give either (split, side) or ids=, not both")
            ids = as_id_array(ids)
            backend = self._all_backend()
            backend.ftcp.locate(ids)   # raises on unknown IDs
            return Part(self, ids, backend, name="ids")
        if split is None or side is None:
            raise TypeError("part() needs (split, side) or ids=")
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if split not in self._split_dirs:
            raise KeyError(f"split {split!r} not found under {self.root}; available: {self.split_names()}"
                           + ("" if self.layout == "upstream" else " (make splits with `ftcp split`)"))
        return self._split_part(split, side)

    def split_info(self, split: str) -> dict:
        path = self._split_dirs[split] / "split.json"
        return read_json(path) if path.exists() else {}

    def __repr__(self):
        return f"{type(self).__name__}(root={str(self.root)!r}, n={len(self.ids)}, splits={self.split_names()})"


def _read_labels_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "material_id" not in df.columns:
        raise ValueError(f"{path}: no material_id column")
    df = df.set_index("material_id")
    for col in df.columns:
        if col != "formula":
            # astype(float) parses with correct rounding (pd.to_numeric may be off by an ulp)
            df[col] = df[col].replace("", "nan").astype(np.float64)
    df.attrs["what"] = str(path)
    return df


class NativeDataset(Dataset):
    layout = "native"

    def __init__(self, root: Path, ssl_dir=None):
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        self.manifest = read_json(manifest_path) if manifest_path.exists() else None
        if self.manifest is not None:
            version = self.manifest.get("layout_version")
            if version != L.LAYOUT_VERSION:
                raise ValueError(f"{manifest_path}: store layout {version!r}, this library reads "
                                 f"{L.LAYOUT_VERSION!r}; rebuild the store with `ftcp build`")
        self.ftcp_memmap = np.load(self.root / "ftcp.npy", mmap_mode="r")
        if self.ftcp_memmap.ndim != 3 or self.ftcp_memmap.shape[1:] != L.SHAPE:
            raise ValueError(f"{self.root / 'ftcp.npy'}: shape {self.ftcp_memmap.shape}, expected (N, 400, 63)")
        self.ids = load_id_array(self.root / "material_ids.npy")
        if len(self.ids) != len(self.ftcp_memmap):
            raise ValueError(f"{self.root}: {len(self.ids)} material IDs but {len(self.ftcp_memmap)} FTCP rows")
        self._split_dirs = find_split_dirs(self.root, lambda d: (d / "train_ids.txt").exists())
        ssl_dir = Path(ssl_dir) if ssl_dir is not None else self.root / "SSL"
        self.ssl_dir = ssl_dir
        self._backend = _Backend(
            ftcp=_Stacked("ftcp.npy", [(lambda: self.ids, lambda: self.ftcp_memmap, str(self.root / "ftcp.npy"))],
                          row_shape=_FTCP_ROW_SHAPES),
            load_labels=lambda: _read_labels_csv(self.root / "labels.csv"),
            ssl=_Stacked("SSL features", [(lambda: _need(ssl_dir / "ssl_material_ids.npy", load_id_array),
                                           lambda: _need(ssl_dir / "ssl_features.npy", _mmap),
                                           str(ssl_dir / "ssl_features.npy"))]),
        )
        _Keyed(self.ids, str(self.root / "material_ids.npy"))  # unique

    @property
    def label_names(self) -> list[str]:
        df, _ = self._backend.labels_table()
        return [c for c in df.columns if c != "formula"]

    def _all_backend(self) -> _Backend:
        return self._backend

    def _split_part(self, split, side) -> Part:
        ids = read_id_list(self._split_dirs[split] / f"{side}_ids.txt")
        self._backend.ftcp.locate(ids)   # every split ID must be in the store
        return Part(self, ids, self._backend, name=f"{split}/{side}")


def _mmap(path):
    return np.load(path, mmap_mode="r")


def _need(path: Path, load):
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} not found (SSL features are exported by the SSL step)")
    return load(path)


class UpstreamDataset(Dataset):
    """The upstream Hugging Face layout: per split and side, separate FTCP/label/SSL files."""

    layout = "upstream"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.ssl_dir = self.root / "SSL"     # provenance only: its SSL rows are the Split_* files
        self._split_dirs = find_split_dirs(self.root, lambda d: (d / "Train" / "Train_FTCP_Data.npy").exists())
        if not self._split_dirs:
            raise FileNotFoundError(f"{root}: no upstream split folder with Train/Train_FTCP_Data.npy")
        self._backends: dict[tuple, _Backend] = {}

    def _files(self, split: str, side: str) -> tuple[Path, str]:
        cap = side.capitalize()
        return self._split_dirs[split] / cap, cap

    def _backend_for(self, sides: tuple[tuple[str, str], ...]) -> _Backend:
        if sides in self._backends:
            return self._backends[sides]
        ftcp_pieces, ssl_pieces, label_sources = [], [], []
        for split, side in sides:
            folder, cap = self._files(split, side)
            ftcp_pieces.append((lambda f=folder / f"{cap}_FTCP_Material_IDs.npy": load_id_array(f),
                                lambda f=folder / f"{cap}_FTCP_Data.npy": _mmap(f),
                                str(folder / f"{cap}_FTCP_Data.npy")))
            ssl_pieces.append((lambda f=folder / f"{cap}_Extracted_Features_Material_IDs.npy": _need(f, load_id_array),
                               lambda f=folder / f"{cap}_Extracted_Features_Data.npy": _need(f, _mmap),
                               str(folder / f"{cap}_Extracted_Features_Data.npy")))
            label_sources.append((folder, cap))
        backend = _Backend(
            ftcp=_Stacked("FTCP", ftcp_pieces, row_shape=_FTCP_ROW_SHAPES),
            load_labels=lambda: self._read_labels(label_sources),
            ssl=_Stacked("SSL features", ssl_pieces),
        )
        self._backends[sides] = backend
        return backend

    @staticmethod
    def _read_labels(sources) -> pd.DataFrame:
        frames = []
        for folder, cap in sources:
            id_file = folder / f"{cap}_Material_IDs.npy"
            label_files = sorted(folder.glob(f"{cap}_*_Labels.npy"))
            if not label_files:
                continue
            if not id_file.exists():
                raise FileNotFoundError(f"{id_file} (IDs of the label files) not found")
            ids = load_id_array(id_file)
            cols = {}
            for f in label_files:
                raw = f.name[len(cap) + 1:-len("_Labels.npy")]
                values = np.asarray(np.load(f), dtype=np.float64).reshape(-1)
                if len(values) != len(ids):
                    raise ValueError(f"{f}: {len(values)} labels but {len(ids)} IDs in {id_file.name}")
                cols[UPSTREAM_LABELS.get(raw, _snake(raw))] = values
            frames.append(pd.DataFrame(cols, index=pd.Index(ids, name="material_id")))
        if not frames:
            return pd.DataFrame(index=pd.Index([], name="material_id", dtype=str))
        df = pd.concat(frames, axis=0)
        df.attrs["what"] = "labels (" + " + ".join(f"{f / c}_Material_IDs.npy" for f, c in sources) + ")"
        return df

    @property
    def _reference_split(self) -> str:
        """The split whose Train + Test files define ``ids`` and ``part(ids=...)``."""
        names = self.split_names()
        return "random_10" if "random_10" in names else names[0]

    def _all_backend(self) -> _Backend:
        ref = self._reference_split
        return self._backend_for(((ref, "train"), (ref, "test")))

    @cached_property
    def ids(self) -> np.ndarray:
        """All IDs of the reference split (random_10 if present): its Train then Test FTCP IDs."""
        return self._all_backend().ftcp.ids

    @property
    def label_names(self) -> list[str]:
        df, _ = self._all_backend().labels_table()
        return [c for c in df.columns if c != "formula"]

    @property
    def ftcp_memmap(self):
        raise AttributeError("ftcp_memmap exists for native stores only; upstream data is split into "
                             "per-split files (use part(...).iter_ftcp())")

    def _split_part(self, split, side) -> Part:
        backend = self._backend_for(((split, side),))
        return Part(self, backend.ftcp.ids, backend, name=f"{split}/{side}")


def detect_layout(root) -> str | None:
    root = Path(root)
    if all((root / f).exists() for f in ("ftcp.npy", "material_ids.npy")):
        return "native"
    if find_split_dirs(root, lambda d: (d / "Train" / "Train_FTCP_Data.npy").exists()):
        return "upstream"
    return None


def open_dataset(root=None, ssl_dir=None) -> Dataset:
    """Open the dataset at ``root`` (None -> ``$CRYS_REP_DATA`` or ``Data``), native or upstream.

    ``ssl_dir``: where a native store's SSL table (``ssl_features.npy`` + IDs) is read from
    (default ``<root>/SSL``), e.g. one SSL run among several.
    """
    root = resolve_data_root(root)
    kind = detect_layout(root)
    if kind == "native":
        return NativeDataset(root, ssl_dir)
    if kind == "upstream":
        if ssl_dir is not None:
            raise ValueError(f"{root} is an upstream-layout dataset: its SSL features are the Split_* files, "
                             f"--ssl does not apply")
        return UpstreamDataset(root)
    raise FileNotFoundError(
        f"no FTCP dataset at {root}: expected ftcp.npy + material_ids.npy (build one with "
        f"`ftcp build`) or the upstream Splitted_Data/Split_*/Train/Train_FTCP_Data.npy layout")


__all__ = ["open_dataset", "detect_layout", "Dataset", "NativeDataset", "UpstreamDataset", "Part", "SIDES",
           "UPSTREAM_LABELS", "STORE_LABELS", "GROUP_NAME"]
