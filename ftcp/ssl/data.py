"""Data for SSL training: where FTCP comes from, the SSL split, the normaliser, block fields.

Sources (``open_source``):

* a native store: ``<root>/ftcp.npy`` (N, 400, 63) float32, memory-mapped, and
  ``<root>/material_ids.npy``;
* a *region pack*: ``<root>/ssl_regions.npz`` holding only the raw FTCP regions some blocks
  read (compressed; mp_36k's blocks 1-3 fit in ~15 MB) plus a copy of the prepared
  ``SSL/`` files.  ``ftcp ssl-pack`` writes one, so training can run on a machine
  that has torch and numpy but not the 3.4 GB store (or pymatgen).

Prepared files in the SSL directory (``<root>/SSL`` unless ``--out`` says otherwise):

* ``ssl_split.json``: the seeded 80/10/10 train/val/test split by material ID;
* ``normalizer.json``: ``ftcp.normalize.RowMinMaxScaler`` fitted on the SSL-train rows only.

Everything joins by material ID: a prepared file records a hash of the store's ID list and is
refused for another store.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import layout as L
from ..io_utils import atomic_save_npz, atomic_write_json, atomic_write_text, read_id_list, resolve_data_root, utc_now
from ..normalize import RowMinMaxScaler
from ..splits import find_split_dirs, split_dir

SPLIT_FILE = "ssl_split.json"
NORMALIZER_FILE = "normalizer.json"
#: the record of the assembled feature table (ftcp.ssl.assemble writes it; ftcp embed and the hub read it)
FEATURES_INFO = "ssl_features.json"
PACK_FILE = "ssl_regions.npz"
PACK_MANIFEST = "ssl_pack.json"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_PARTS = ("train", "val", "test")
#: The two SSL protocols.  transductive: the SSL trains on every material (upstream's setting,
#: so the downstream test crystals' inputs are seen, never their labels); inductive: the test
#: materials of every downstream split of the data root are left out of the SSL split, so one
#: SSL run serves every scenario without having seen any scenario's test crystals (the random
#: splits are nested: random_10 test < random_20 test < ... < random_40 test).
PROTOCOLS = ("transductive", "inductive")


def ids_digest(ids) -> str:
    """A short hash of an ID list (order included): ties prepared files to one store."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _check_ids(ids: np.ndarray, where) -> np.ndarray:
    ids = np.asarray(ids).astype(str)
    if ids.ndim != 1:
        raise ValueError(f"{where}: material IDs must be a 1-d array, got shape {ids.shape}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{where}: duplicated material IDs, e.g. {list(uniq[counts > 1][:5])}")
    return ids


def region_shape(name: str) -> tuple[int, ...]:
    rows, cols = L.REGIONS[name]
    n_cols = cols.stop - cols.start
    if isinstance(rows, int):
        return (n_cols,)
    return (rows.stop - rows.start, n_cols)


# ------------------------------------------------------------------------------------------
# sources
class Source:
    """Raw FTCP regions of every material of one data root, in store order."""

    kind = "?"
    root: Path
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def region(self, name: str) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def regions_available(self) -> tuple[str, ...]:  # pragma: no cover - interface
        raise NotImplementedError

    def full_ftcp(self):
        """The (N, 400, 63) array-like if this source has it (native stores), else None."""
        return None


class NativeSource(Source):
    kind = "native"

    def __init__(self, root: Path, chunk_size: int = 4096):
        self.root = Path(root)
        self.ftcp = np.load(self.root / "ftcp.npy", mmap_mode="r")
        if self.ftcp.ndim != 3 or self.ftcp.shape[1:] != L.SHAPE:
            raise ValueError(f"{self.root / 'ftcp.npy'}: expected shape (N, {L.N_ROWS}, {L.N_COLS}), got "
                             f"{self.ftcp.shape}")
        self.ids = _check_ids(np.load(self.root / "material_ids.npy", allow_pickle=False),
                              self.root / "material_ids.npy")
        if len(self.ids) != len(self.ftcp):
            raise ValueError(f"{self.root}: {len(self.ids)} material IDs for {len(self.ftcp)} FTCP arrays")
        self.chunk_size = chunk_size

    def region(self, name: str) -> np.ndarray:
        out = np.empty((len(self.ids),) + region_shape(name), dtype=np.float32)
        for start in range(0, len(out), self.chunk_size):
            stop = min(start + self.chunk_size, len(out))
            out[start:stop] = L.region(self.ftcp[start:stop], name)   # reads only these pages
        return out

    def regions_available(self):
        return tuple(L.REGIONS)

    def full_ftcp(self):
        return self.ftcp


class PackSource(Source):
    kind = "pack"

    def __init__(self, root: Path):
        self.root = Path(root)
        self._npz = np.load(self.root / PACK_FILE, allow_pickle=False)
        self.ids = _check_ids(self._npz["material_id"], self.root / PACK_FILE)
        self._names = tuple(k[len("region__"):] for k in self._npz.files if k.startswith("region__"))

    def region(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(f"region {name!r} is not in the pack {self.root / PACK_FILE} (it holds "
                           f"{list(self._names)}); re-run `ftcp ssl-pack` with the block that needs it")
        arr = np.asarray(self._npz[f"region__{name}"], dtype=np.float32)
        if arr.shape != (len(self.ids),) + region_shape(name):
            raise ValueError(f"{self.root / PACK_FILE}: region {name} has shape {arr.shape}")
        return arr

    def regions_available(self):
        return self._names


class ArraySource(Source):
    """FTCP held in memory (e.g. crystals featurized for ``ftcp.embed``), with their IDs."""

    kind = "array"

    def __init__(self, ftcp, ids=None, root=None):
        ftcp = np.asarray(ftcp, dtype=np.float32)
        if ftcp.ndim != 3 or ftcp.shape[1:] != L.SHAPE:
            raise ValueError(f"expected FTCP of shape (N, {L.N_ROWS}, {L.N_COLS}), got {ftcp.shape}")
        self.ftcp = ftcp
        self.ids = _check_ids(np.array([f"row-{i}" for i in range(len(ftcp))]) if ids is None else ids, "ArraySource")
        if len(self.ids) != len(ftcp):
            raise ValueError(f"{len(self.ids)} IDs for {len(ftcp)} FTCP arrays")
        self.root = Path(root) if root is not None else Path(".")

    def region(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(L.region(self.ftcp, name), dtype=np.float32).reshape(
            (len(self.ids),) + region_shape(name))

    def regions_available(self):
        return tuple(L.REGIONS)

    def full_ftcp(self):
        return self.ftcp


def open_source(root=None) -> Source:
    """Open a native store (``ftcp.npy`` + ``material_ids.npy``) or a region pack."""
    root = resolve_data_root(root)
    if (root / "ftcp.npy").exists():
        if not (root / "material_ids.npy").exists():
            raise FileNotFoundError(f"{root}/ftcp.npy has no material_ids.npy beside it")
        return NativeSource(root)
    if (root / PACK_FILE).exists():
        return PackSource(root)
    raise FileNotFoundError(f"no FTCP data under {root}: expected ftcp.npy + material_ids.npy (a native store) "
                            f"or {PACK_FILE} (a region pack); build a store first or pass --data")


def write_pack(source: Source, out_dir, regions, ssl_dirs=()) -> Path:
    """Write a region pack of ``source`` holding ``regions`` (raw) + the prepared SSL files."""
    import shutil

    out_dir = Path(out_dir)
    (out_dir / "SSL").mkdir(parents=True, exist_ok=True)
    arrays = {"material_id": source.ids}
    for name in regions:
        arrays[f"region__{name}"] = source.region(name)
    atomic_save_npz(out_dir / PACK_FILE, compressed=True, **arrays)
    copied = []
    for name in (SPLIT_FILE, NORMALIZER_FILE, "crystal_system.npz"):
        for d in ssl_dirs:
            if (Path(d) / name).exists():
                shutil.copyfile(Path(d) / name, out_dir / "SSL" / name)
                copied.append(name)
                break
    if (Path(source.root) / "labels.csv").exists():     # small; lets probes run on the pack too
        shutil.copyfile(Path(source.root) / "labels.csv", out_dir / "labels.csv")
    digest = hashlib.sha256((out_dir / PACK_FILE).read_bytes()).hexdigest()
    atomic_write_json(out_dir / PACK_MANIFEST, {
        "kind": "ssl_region_pack", "layout": L.LAYOUT_VERSION, "source": Path(source.root).name,
        "n_materials": len(source.ids), "ids_digest": ids_digest(source.ids), "regions": list(regions),
        "ssl_files": copied, "sha256": {PACK_FILE: digest}, "created_utc": utc_now()})
    return out_dir


# ------------------------------------------------------------------------------------------
# SSL split
def downstream_test_ids(root, split_name: str) -> tuple[list[str], str]:
    """Test IDs of a downstream split (``random_10`` ... ``group``) of a native data root."""
    path = split_dir(resolve_data_root(root), split_name) / "test_ids.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the downstream splits first (`ftcp split`), "
                                f"or pass --exclude-ids FILE")
    return read_id_list(path).tolist(), f"test IDs of {split_name}"


def protocol_exclusion(root, protocol: str) -> tuple[list[str], str]:
    """(IDs to leave out of the SSL split, where they come from) for ``protocol``.

    inductive: the union of the test IDs of every downstream split under ``root`` (random_* and
    group); an error when the root has no splits.
    """
    if protocol == "transductive":
        return [], "none (transductive: the SSL sees every material)"
    if protocol != "inductive":
        raise ValueError(f"unknown SSL protocol {protocol!r}; choose from {PROTOCOLS}")
    found = find_split_dirs(resolve_data_root(root), lambda d: (d / "test_ids.txt").is_file())
    if not found:
        raise FileNotFoundError(f"no downstream splits under {resolve_data_root(root)}: run `ftcp split` before an "
                                f"inductive SSL split")
    ids: set[str] = set()
    for folder in found.values():
        ids.update(read_id_list(folder / "test_ids.txt").tolist())
    return sorted(ids), "inductive: test IDs of " + ", ".join(found)


def make_ssl_split(ids, seed: int = 42, exclude=(), exclude_source: str | None = None,
                   fractions=SPLIT_FRACTIONS) -> dict:
    """Seeded random train/val/test split by material ID (lists kept in store order).

    ``exclude``: IDs kept out of all three parts (recorded with ``exclude_source``).
    """
    ids = _check_ids(ids, "make_ssl_split")
    exclude = set(map(str, exclude or ()))
    unknown = exclude - set(ids)
    eligible = np.array([i for i in ids if i not in exclude])
    if len(eligible) < 3:
        raise ValueError(f"only {len(eligible)} materials left for the SSL split; need at least 3")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(eligible))
    n_val = max(1, int(round(fractions[1] * len(eligible))))
    n_test = max(1, int(round(fractions[2] * len(eligible))))
    part_of = np.zeros(len(eligible), dtype=np.int8)        # 0 train, 1 val, 2 test
    part_of[perm[:n_val]] = 1
    part_of[perm[n_val:n_val + n_test]] = 2
    if not exclude:
        protocol = "transductive"
    elif exclude_source and exclude_source.startswith("inductive"):
        protocol = "inductive"
    else:
        protocol = "custom exclusion"
    split = {"kind": "ssl_split", "seed": int(seed), "fractions": list(fractions), "protocol": protocol,
             "ids_digest": ids_digest(ids), "n_materials": int(len(ids)),
             "excluded_source": exclude_source, "excluded": [i for i in ids if i in exclude],
             "excluded_not_in_store": len(unknown)}
    for k, part in enumerate(SPLIT_PARTS):
        split[part] = eligible[part_of == k].tolist()
    split["sizes"] = {p: len(split[p]) for p in SPLIT_PARTS + ("excluded",)}
    split["excluded_digest"] = ids_digest(sorted(split["excluded"]))
    return split


def split_summary(split: dict) -> dict:
    """What a result must say about the SSL split it came from (no ID lists)."""
    seen = [m for p in SPLIT_PARTS for m in split.get(p, [])]
    excluded = split.get("excluded", [])
    return {"protocol": split.get("protocol") or ("transductive" if not excluded else "custom exclusion"),
            "seed": split.get("seed"), "sizes": split.get("sizes"), "store_ids_digest": split.get("ids_digest"),
            "ssl_ids_digest": ids_digest(sorted(seen)), "excluded_digest": ids_digest(sorted(excluded)),
            "excluded_source": split.get("excluded_source")}


def ssl_seen_ids(split: dict) -> set[str]:
    """Every material whose FTCP the SSL saw (its train, val and test parts)."""
    return {m for p in SPLIT_PARTS for m in split.get(p, [])}


def split_indices(split: dict, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Positions (into store order) of each split part; asserts every ID is in the store."""
    pos = {m: i for i, m in enumerate(np.asarray(ids).astype(str))}
    out = {}
    for part in SPLIT_PARTS + ("excluded",):
        missing = [m for m in split.get(part, []) if m not in pos]
        if missing:
            raise ValueError(f"SSL split lists {len(missing)} {part} IDs that are not in the store, e.g. {missing[:3]}")
        out[part] = np.array([pos[m] for m in split.get(part, [])], dtype=np.int64)
    return out


def load_or_make_split(ssl_dir, ids, seed: int | None = None, exclude=None, exclude_source=None,
                       search_dirs=(), create: bool = True) -> dict:
    """The SSL split of ``ssl_dir`` (or a ``search_dirs`` copy); made and saved when absent.

    The stored split is the authority: training, export, assembly and the tables use it as it
    is, exclusion included, with no flag repeated.  ``exclude`` (a list, possibly empty) is a
    *request*: a stored split with another store, seed or exclusion is then refused with an
    explanation rather than silently reused.  ``exclude=None`` requests nothing (a new split is
    then transductive).  ``seed=None`` likewise takes the stored split's seed (42 for a new one).
    A split found only in a ``search_dirs`` folder (shared prepared files, e.g. ``<root>/SSL``)
    that does not match an explicit request is passed over: a new one is made in ``ssl_dir``.
    """
    ssl_dir = Path(ssl_dir)
    for d in (ssl_dir, *map(Path, search_dirs)):
        path = d / SPLIT_FILE
        if path.exists():
            split = json.loads(path.read_text())
            want = make_ssl_split(ids, seed or 42, exclude, exclude_source) if exclude is not None else None
            problems = []
            if split.get("ids_digest") != ids_digest(ids):
                problems.append("it was made for another store (material ID list differs)")
            if seed is not None and split.get("seed") != seed:
                problems.append(f"its seed is {split.get('seed')}, not {seed}")
            if want is not None and set(split.get("excluded", [])) != set(want["excluded"]):
                problems.append(f"its excluded IDs ({len(split.get('excluded', []))}) differ from the requested "
                                f"exclusion ({len(want['excluded'])})")
            if problems and d != ssl_dir and create and (exclude is not None or seed is not None):
                continue
            if problems:
                raise ValueError(f"{path} cannot be used: {'; '.join(problems)}. Delete it, or write this run to "
                                 f"another SSL directory with --out")
            return split
    if not create:
        raise FileNotFoundError(f"no {SPLIT_FILE} in {ssl_dir}")
    split = make_ssl_split(ids, 42 if seed is None else seed, exclude, exclude_source)
    ssl_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ssl_dir / SPLIT_FILE, json.dumps(split))
    return split


# ------------------------------------------------------------------------------------------
# normaliser
def load_or_fit_normalizer(ssl_dir, source: Source, split: dict, train_index: np.ndarray,
                           search_dirs=(), create: bool = True) -> RowMinMaxScaler:
    """RowMinMaxScaler fitted on the SSL-train rows only (saved as ``normalizer.json``)."""
    split_key = ids_digest(split["train"])
    for d in (Path(ssl_dir), *map(Path, search_dirs)):
        path = d / NORMALIZER_FILE
        if path.exists():
            meta = json.loads(path.read_text()).get("fitted_on", {})
            if meta.get("train_ids_digest") not in (None, split_key):
                if d != Path(ssl_dir) and create:
                    continue            # a shared copy for another split: fit this split's own
                raise ValueError(f"{path} was fitted on another SSL-train set; delete it or use --out")
            return RowMinMaxScaler.load(path)
    full = source.full_ftcp()
    if full is None or not create:
        raise FileNotFoundError(f"no {NORMALIZER_FILE} in {ssl_dir}: a region pack must carry the normaliser "
                                f"(run `ftcp ssl-prepare` on the store, then `ftcp ssl-pack`)")
    scaler = RowMinMaxScaler().fit(full, rows=train_index)
    path = Path(ssl_dir) / NORMALIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    scaler.save(path)
    data = json.loads(path.read_text())
    data["fitted_on"] = {"part": "ssl train", "n": int(len(train_index)), "train_ids_digest": split_key}
    atomic_write_text(path, json.dumps(data))
    return scaler


def normalise_region(scaler: RowMinMaxScaler, name: str, raw: np.ndarray) -> np.ndarray:
    rows, _ = L.REGIONS[name]
    if isinstance(rows, int):
        return scaler.transform(raw[..., None, :], rows=slice(rows, rows + 1))[..., 0, :]
    return scaler.transform(raw, rows=rows)


# ------------------------------------------------------------------------------------------
@dataclass
class SSLData:
    """Everything a block run needs from a data root (numpy, store order, all materials)."""

    root: Path
    ssl_dir: Path
    source: Source
    split: dict
    index: dict            # part -> positions into store order
    scaler: RowMinMaxScaler

    @property
    def ids(self) -> np.ndarray:
        return self.source.ids

    def search_dirs(self) -> list[Path]:
        """Where prepared per-store files are looked up: the SSL dir, then ``<root>/SSL``."""
        dirs = [self.ssl_dir]
        if (self.root / "SSL").resolve() != self.ssl_dir.resolve():
            dirs.append(self.root / "SSL")
        return dirs


def prepare(root=None, ssl_dir=None, split_seed: int | None = None, exclude=None, exclude_source=None,
            create: bool = True) -> SSLData:
    """Open the data root; load (or make) the SSL split and normaliser."""
    root = resolve_data_root(root)
    source = open_source(root)
    ssl_dir = Path(ssl_dir) if ssl_dir is not None else root / "SSL"
    extra = [root / "SSL"] if (root / "SSL").resolve() != ssl_dir.resolve() else []
    split = load_or_make_split(ssl_dir, source.ids, split_seed, exclude, exclude_source, extra, create)
    index = split_indices(split, source.ids)
    scaler = load_or_fit_normalizer(ssl_dir, source, split, index["train"], extra, create)
    return SSLData(root, ssl_dir, source, split, index, scaler)
