"""Build a native FTCP store from CIFs or pymatgen structures: parallel, streaming, resumable.

Inputs (``build_store(source, ...)`` / ``ftcp build SOURCE``):

* a CSV (``.csv`` or ``.csv.gz``) with a ``cif`` column, a ``material_id`` column and labels;
* a folder of ``*.cif`` files (material ID = file stem; labels from ``labels_csv``);
* a JSON file: a list of ``{"material_id", "structure": Structure.as_dict(), <labels>...}``
  (labels also accepted under a nested ``"labels"`` dict), or a dict ``{id: structure dict}``.

Output under the data root: ``ftcp.npy`` (N, 400, 63) float32, ``material_ids.npy``,
``labels.csv`` (material_id, formula = reduced formula, targets), ``rejects.csv``
(material_id, reason, detail, input_row) and ``manifest.json`` (see ``build_store``).

How the work is split
    Input rows are cut into fixed chunks (``chunk_size`` rows, in input order).  Worker
    processes parse the CIFs (pymatgen's parser is the cost) and return compact ``Crystal``
    records; the parent featurizes them in small vectorised batches into one reusable
    buffer and appends the rows to the output file with ``write`` (not through a memmap,
    so written pages never count against the build's resident memory).  Two chunks are
    parsed ahead while the parent featurizes, so the workers never wait.

How resume works
    Everything is written into ``<root>/.build/``: ``ftcp.npy`` (a valid ``.npy`` header
    for 0 rows, then raw rows appended), ``accepted.csv.part`` and ``rejects.csv.part``.
    After each chunk the three files are flushed and fsynced, then ``journal.json`` is
    replaced atomically with: chunks done, rows written, byte sizes of the two text files,
    reject counts, and a fingerprint of the input (its sha256) and every option that
    changes the output.  A killed build (even ``kill -9`` in the middle of a chunk)
    restarts from the journal: the three files are truncated to their committed sizes and
    the next chunk is processed.  Chunking depends only on the input, so the result is
    byte-identical to an uninterrupted build (``manifest.json`` differs only in its times).
    Finalisation rewrites the ``.npy`` header with the real row count (numpy pads headers
    so the length does not change), writes the final files into ``.build/``, marks the
    journal ``finalizing`` and moves them into the root (``manifest.json`` last).  A
    journal with another fingerprint is never resumed silently (``restart=True`` discards it).

Rejections
    Nothing is dropped silently: every input row becomes a store row or a line of
    ``rejects.csv`` with a reason code from ``REJECT_REASONS`` (the featurizer's reasons
    plus ``missing_id``, ``duplicate_id`` (the first occurrence is kept), ``missing_label``,
    ``nonfinite_label``, ``unparsable_cif``, ``unparsable_structure``, ``featurize_error``).
    Labels: every recognised target present in the input is stored; ``require_labels``
    (default ``"all"`` of them) lists those whose absence rejects a row.  A target that is
    not required may be empty (NaN); the manifest counts such blanks.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import layout as L
from .errors import UserError
from .featurizer import PHASES, RejectedStructure, crystal_from_structure, featurize_crystals
from .featurizer import REJECT_REASONS as _FEATURIZER_REASONS
from .io_utils import (
    add_data_argument,
    atomic_write_json,
    fsync_file,
    json_dumps,
    read_json,
    resolve_data_root,
    sha256_file,
    utc_now,
)
from .logs import progress_bar
from .splits import find_split_dirs

STORE_FORMAT = "crys-rep-enrich/native-store"
STORE_FORMAT_VERSION = 1
STORE_FILES = ("ftcp.npy", "material_ids.npy", "labels.csv", "rejects.csv")
MANIFEST = "manifest.json"
WORK_DIR = ".build"
DEFAULT_CHUNK_SIZE = 1024
FEATURIZE_BATCH = 64     # small batches keep featurize_crystals' output and temporaries in cache
ROW_BYTES = L.N_VALUES * 4

#: Reasons a row is rejected by the store builder (beyond the featurizer's own).
STORE_REJECT_REASONS = {
    "missing_id": "no material ID (empty), or an ID containing a line break",
    "duplicate_id": "material ID already used by an earlier input row (the first one is kept)",
    "missing_label": "a required label is empty or absent",
    "nonfinite_label": "a required label is NaN, infinite or not a number",
    "unparsable_cif": "pymatgen could not read a structure from the CIF text/file",
    "unparsable_structure": "pymatgen could not read the structure dict (JSON input)",
    "featurize_error": "FTCP featurization failed or gave non-finite values",
}
REJECT_REASONS = {**_FEATURIZER_REASONS, **STORE_REJECT_REASONS}

#: Standard label names -> input column names recognised without ``--label``.
DEFAULT_LABEL_COLUMNS = {
    "formation_energy": ("formation_energy", "formation_energy_per_atom"),
    "band_gap": ("band_gap",),
}
_RESERVED = {"material_id", "formula", "cif", "structure", "labels"}

log = logging.getLogger(__name__)


class BuildInterrupted(RuntimeError):
    """Raised by test hooks to simulate an interruption."""


# ---------------------------------------------------------------------------------------------
# label columns
def resolve_label_columns(columns: Sequence[str], label_map: dict[str, str] | None = None) -> dict[str, str]:
    """{store label name: input column} for the targets found in ``columns``.

    Defaults: ``formation_energy`` <- ``formation_energy`` or ``formation_energy_per_atom``
    (MP's name), ``band_gap`` <- ``band_gap``.  ``label_map`` ({name: column}) adds or
    overrides targets; a mapped column that does not exist is an error.
    """
    cols = list(columns)
    out: dict[str, str] = {}
    for name, candidates in DEFAULT_LABEL_COLUMNS.items():
        for c in candidates:
            if c in cols:
                out[name] = c
                break
    for name, col in (label_map or {}).items():
        if name in _RESERVED or not name.isidentifier():
            raise ValueError(f"invalid label name {name!r}")
        if col not in cols:
            raise ValueError(f"label {name}={col}: the input has no column {col!r} (columns: {cols})")
        out[name] = col
    return out


def _parse_label(raw) -> tuple[str, float]:
    """Raw label value -> ("ok", value) | ("missing", nan) | ("nonfinite", nan)."""
    if raw is None:
        return "missing", math.nan
    if isinstance(raw, str):
        s = raw.strip()
        if s == "":
            return "missing", math.nan
        try:
            v = float(s)
        except ValueError:
            return "nonfinite", math.nan
    elif isinstance(raw, bool):
        return "nonfinite", math.nan
    else:
        try:
            v = float(raw)
        except (TypeError, ValueError):
            return "nonfinite", math.nan
    return ("ok", v) if math.isfinite(v) else ("nonfinite", math.nan)


# ---------------------------------------------------------------------------------------------
# inputs
@dataclass
class Record:
    row: int                 # 0-based position in the input
    material_id: str         # "" when missing
    kind: str                # "cif" (text) | "cif_file" (path) | "dict" (Structure.as_dict())
    payload: object
    labels: dict             # store label name -> raw value


@dataclass
class _Input:
    kind: str
    path: Path
    ids: list[str]                            # raw IDs (stripped), "" if missing
    targets: dict[str, str]                   # store label name -> input column/key
    ignored_columns: list[str]
    sha256: str
    labels_csv: dict | None = None            # {"path", "sha256"} when labels come from a CSV
    chunk_reader: Callable[[int, int], Iterator[list[Record]]] = field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return len(self.ids)


def _clean_id(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def _read_failure(exc: BaseException) -> str | None:
    """Why an input file could not be read, for a one-line error; None when ``exc`` is no reading problem."""
    import lzma
    import zipfile

    import pandas as pd

    if isinstance(exc, (lzma.LZMAError, zipfile.BadZipFile)):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, EOFError):
        return f"the file ends early: it is truncated (an interrupted download or copy?) ({exc})"
    if isinstance(exc, zlib.error) or (isinstance(exc, OSError) and exc.filename is None):
        return f"corrupt or not compressed as its name says ({exc})"     # gzip.BadGzipFile, bz2/lzma errors
    if isinstance(exc, pd.errors.EmptyDataError):
        return "the file is empty"
    if isinstance(exc, pd.errors.ParserError):
        return f"not a readable CSV, perhaps truncated inside a quoted field ({' '.join(str(exc).split())})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc})"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON, perhaps truncated ({exc})"
    return None


@contextmanager
def _reading(path: Path):
    """Turn a failure to read input file ``path`` into one ``UserError`` naming the file and the cause.  The
    whole input is read before the first row is processed, so such a failure never loses rows silently."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only reading problems are translated, the rest re-raised
        why = _read_failure(exc)
        if why is None:
            raise
        raise UserError(f"{path}: {why}") from exc


def _read_labels_table(path: Path, label_map, id_column: str = "material_id"):
    import pandas as pd

    with _reading(path):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if id_column not in df.columns:
        raise ValueError(f"{path}: no {id_column!r} column")
    ids = df[id_column].map(_clean_id)
    dup = ids[ids.duplicated() & (ids != "")]
    if len(dup):
        raise ValueError(f"{path}: duplicated material IDs in the labels CSV, e.g. {list(dup.unique()[:5])}")
    targets = resolve_label_columns([c for c in df.columns if c != id_column], label_map)
    columns = {name: df[col].tolist() for name, col in targets.items()}
    table = {i: {name: vals[j] for name, vals in columns.items()} for j, i in enumerate(ids) if i}
    ignored = [c for c in df.columns if c not in targets.values() and c not in (id_column, "formula")]
    return targets, table, ignored, {"path": str(path.resolve()), "sha256": sha256_file(path)}


def _csv_input(path: Path, label_map, id_column: str, cif_column: str) -> _Input:
    import pandas as pd

    with _reading(path):
        header = list(pd.read_csv(path, nrows=0).columns)
    for col, what in ((id_column, "material ID"), (cif_column, "CIF")):
        if col not in header:
            raise ValueError(f"{path}: no {col!r} column ({what}); columns are {header}")
    targets = resolve_label_columns([c for c in header if c not in (id_column, cif_column)], label_map)
    with _reading(path):     # reads the whole file: a truncated one fails here, before anything is built
        ids = [_clean_id(v) for v in pd.read_csv(path, usecols=[id_column], dtype=str,
                                                   keep_default_na=False)[id_column]]
    usecols = [id_column, cif_column] + [c for c in dict.fromkeys(targets.values())]

    def chunks(chunk_size: int, start_chunk: int) -> Iterator[list[Record]]:
        with _reading(path):
            reader = pd.read_csv(path, usecols=usecols, dtype=str, keep_default_na=False, chunksize=chunk_size)
            for k, df in enumerate(reader):
                if k < start_chunk:
                    continue
                base = k * chunk_size
                cifs = df[cif_column].tolist()
                label_cols = {name: df[col].tolist() for name, col in targets.items()}
                yield [Record(base + j, ids[base + j], "cif", cifs[j],
                              {name: vals[j] for name, vals in label_cols.items()}) for j in range(len(df))]

    ignored = [c for c in header if c not in targets.values() and c not in (id_column, cif_column, "formula")]
    return _Input("csv", path, ids, targets, ignored, sha256_file(path), chunk_reader=chunks)


def _list_chunks(records_for: Callable[[int, int], list[Record]], n: int):
    def chunks(chunk_size: int, start_chunk: int) -> Iterator[list[Record]]:
        for k in range(start_chunk, math.ceil(n / chunk_size)):
            yield records_for(k * chunk_size, min(n, (k + 1) * chunk_size))
    return chunks


def _cif_dir_input(path: Path, labels_csv, label_map) -> _Input:
    import hashlib

    files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".cif"),
                   key=lambda p: p.name)
    if not files:
        raise ValueError(f"{path}: no *.cif files")
    h = hashlib.sha256()
    for p in files:  # the folder's checksum: names + contents, in name order
        h.update(f"{p.name}\t{sha256_file(p)}\n".encode())
    ids = [p.stem.strip() for p in files]
    targets, table, ignored, lab_meta = ({}, {}, [], None)
    if labels_csv is not None:
        targets, table, ignored, lab_meta = _read_labels_table(Path(labels_csv), label_map)
    elif label_map:
        raise ValueError("--label needs --labels-csv for a folder of CIF files")

    def records(a, b):
        return [Record(i, ids[i], "cif_file", str(files[i]), dict(table.get(ids[i], {}))) for i in range(a, b)]

    return _Input("cif_dir", path, ids, targets, ignored, h.hexdigest(), lab_meta,
                  chunk_reader=_list_chunks(records, len(files)))


def _json_input(path: Path, labels_csv, label_map) -> _Input:
    with _reading(path), open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    items: list[dict]
    if isinstance(data, dict):
        items = [{"material_id": k, "structure": v} for k, v in data.items()]
    elif isinstance(data, list):
        items = [it if isinstance(it, dict) else {"structure": None, "_bad": it} for it in data]
    else:
        raise ValueError(f"{path}: expected a JSON list of records or a dict id -> structure")

    def flat_labels(it: dict) -> dict:
        out = {k: v for k, v in it.items() if k not in _RESERVED and not k.startswith("_")}
        if isinstance(it.get("labels"), dict):
            out.update(it["labels"])
        return out

    ids = [_clean_id(it.get("material_id")) for it in items]
    if labels_csv is not None:
        targets, table, ignored, lab_meta = _read_labels_table(Path(labels_csv), label_map)
        raw_labels = [dict(table.get(i, {})) for i in ids]
    else:
        keys = list(dict.fromkeys(k for it in items for k in flat_labels(it)))
        targets = resolve_label_columns(keys, label_map)
        ignored = [k for k in keys if k not in targets.values()]
        lab_meta = None
        raw_labels = []
        for it in items:
            lab = flat_labels(it)
            raw_labels.append({name: lab.get(col) for name, col in targets.items()})

    def records(a, b):
        return [Record(i, ids[i], "dict", items[i].get("structure"), raw_labels[i]) for i in range(a, b)]

    return _Input("json", path, ids, targets, ignored, sha256_file(path), lab_meta,
                  chunk_reader=_list_chunks(records, len(items)))


def open_input(source, kind: str | None = None, labels_csv=None, label_map=None,
               id_column: str = "material_id", cif_column: str = "cif") -> _Input:
    """Inspect a build input (CSV, folder of CIFs or JSON); ``kind`` is guessed from the path."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if kind is None:
        name = path.name.lower()
        if path.is_dir():
            kind = "cif_dir"
        elif name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip")):
            kind = "csv"
        elif name.endswith(".json"):
            kind = "json"
        else:
            raise ValueError(f"cannot tell the input format of {path}; pass kind= (--format)")
    if kind == "csv":
        if labels_csv is not None:
            raise ValueError("a CSV input carries its own labels; --labels-csv is for CIF folders and JSON")
        return _csv_input(path, label_map, id_column, cif_column)
    if kind == "cif_dir":
        return _cif_dir_input(path, labels_csv, label_map)
    if kind == "json":
        return _json_input(path, labels_csv, label_map)
    raise ValueError(f"unknown input kind {kind!r} (csv, cif_dir, json)")


# ---------------------------------------------------------------------------------------------
# parsing (runs in worker processes)
def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("\r", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_payload(task: tuple[str, object]):
    """(kind, payload) -> ("ok", Crystal, reduced formula) | ("reject", code, detail)."""
    kind, payload = task
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        # pymatgen's CIF parser warns about many harmless things; a rejection carries the error
        warnings.simplefilter("ignore")
        try:
            if kind == "dict":
                if not isinstance(payload, dict):
                    return "reject", "unparsable_structure", f"no structure dict (got {type(payload).__name__})"
                structure = Structure.from_dict(payload)
            else:
                text = Path(payload).read_text(encoding="utf-8", errors="replace") if kind == "cif_file" else payload
                if not isinstance(text, str) or not text.strip():
                    return "reject", "unparsable_cif", "empty CIF text"
                structure = Structure.from_str(text, fmt="cif")
        except Exception as exc:  # any parser failure is a recorded rejection, never a crash
            return "reject", ("unparsable_structure" if kind == "dict" else "unparsable_cif"), _short(exc)
        try:
            crystal = crystal_from_structure(structure)
            formula = structure.composition.reduced_formula
        except RejectedStructure as exc:
            return "reject", exc.code, exc.message
        except Exception as exc:
            return "reject", "featurize_error", _short(exc)
    return "ok", crystal, formula


def _worker_init(parent_pid: int | None = None):
    import signal

    warnings.simplefilter("ignore")
    # Ctrl-C reaches the whole process group: the parent stops the build (one line, resumable); a worker
    # must not die with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # die with the parent: a killed build must not leave orphaned parser processes behind
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)   # the parent died before prctl took effect


# ---------------------------------------------------------------------------------------------
# the build
def _npy_header(n_rows: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (int(n_rows),) + L.SHAPE})
    return buf.getvalue()


HEADER_BYTES = len(_npy_header(0))


def _require(require_labels, targets: dict) -> list[str]:
    if require_labels is None or require_labels == "all":
        return list(targets)
    if require_labels in ("none", "", ()):
        return []
    names = [s.strip() for s in require_labels.split(",")] if isinstance(require_labels, str) else list(require_labels)
    unknown = [n for n in names if n not in targets]
    if unknown:
        raise ValueError(f"required label(s) {unknown} are not among the input's targets {list(targets)}")
    return names


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class _Writer:
    """The three growing files of ``.build/`` plus the journal that commits them."""

    def __init__(self, work: Path, journal: dict):
        self.work = work
        self.journal = journal
        self.ftcp_path = work / "ftcp.npy"
        mode = "r+b" if self.ftcp_path.exists() else "w+b"
        self.ftcp = open(self.ftcp_path, mode)
        if mode == "w+b":
            self.ftcp.write(_npy_header(0))
        self.ftcp.truncate(HEADER_BYTES + journal["rows_written"] * ROW_BYTES)
        self.ftcp.seek(0, os.SEEK_END)
        self.text = {}
        for key, name in (("accepted", "accepted.csv.part"), ("rejects", "rejects.csv.part")):
            p = work / name
            fh = open(p, "r+b" if p.exists() else "w+b")
            fh.truncate(journal[f"{key}_bytes"])
            fh.seek(0, os.SEEK_END)
            self.text[key] = fh

    def append(self, rows: np.ndarray, accepted_lines: str, reject_lines: str) -> None:
        if len(rows):
            self.ftcp.write(memoryview(np.ascontiguousarray(rows)).cast("B"))
        self.text["accepted"].write(accepted_lines.encode("utf-8"))
        self.text["rejects"].write(reject_lines.encode("utf-8"))

    def commit(self, **updates) -> None:
        for fh in (self.ftcp, *self.text.values()):
            fsync_file(fh)
        self.journal.update(updates)
        self.journal["accepted_bytes"] = self.text["accepted"].tell()
        self.journal["rejects_bytes"] = self.text["rejects"].tell()
        atomic_write_json(self.work / "journal.json", self.journal)

    def close(self):
        for fh in (self.ftcp, *self.text.values()):
            fh.close()


def _csv_line(values) -> str:
    buf = io.StringIO()
    # a lone "\r" is no special character to a writer that ends lines with "\n", but every reader breaks the
    # row there: quote such a line in full (other lines keep the minimal quoting, byte for byte)
    quoting = csv.QUOTE_ALL if any("\r" in str(v) for v in values) else csv.QUOTE_MINIMAL
    csv.writer(buf, lineterminator="\n", quoting=quoting).writerow(values)
    return buf.getvalue()


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


def build_store(source, root=None, *, kind: str | None = None, labels_csv=None,
                label_map: dict[str, str] | None = None, require_labels="all",
                phase: str = "linear", workers: int | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE, id_column: str = "material_id",
                cif_column: str = "cif", overwrite: bool = False, restart: bool = False,
                progress: bool = True, _test_hook: Callable[[str, int], None] | None = None) -> dict:
    """Build (or resume building) the native store of ``source`` under data root ``root``.

    Returns the manifest.  ``workers``: parser processes (1 = parse in this process;
    default: the CPUs available).  ``require_labels``: "all" (default), "none", or names.
    ``overwrite`` replaces an existing store (and removes its now-stale split ID lists);
    ``restart`` discards an interrupted build instead of resuming it.
    """
    from . import __version__

    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    workers = default_workers() if workers is None else max(1, int(workers))
    root = resolve_data_root(root)
    t0 = time.perf_counter()
    inp = open_input(source, kind, labels_csv, label_map, id_column, cif_column)
    if inp.n_rows == 0:
        raise UserError(f"{inp.path} holds no crystals (no data rows); nothing was built and {root} is unchanged")
    required = _require(require_labels, inp.targets)
    fingerprint = {
        "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION, "layout_version": L.LAYOUT_VERSION,
        "phase": phase, "chunk_size": int(chunk_size), "source_kind": inp.kind, "source_sha256": inp.sha256,
        "labels_csv_sha256": inp.labels_csv["sha256"] if inp.labels_csv else None,
        "targets": inp.targets, "required_labels": required, "id_column": id_column, "cif_column": cif_column,
    }

    work = root / WORK_DIR
    journal_path = work / "journal.json"
    if restart and work.exists():
        shutil.rmtree(work)
    journal = read_json(journal_path) if journal_path.exists() else None
    if journal is not None and journal.get("fingerprint") != fingerprint:
        raise ValueError(f"{work} holds an interrupted build of other input or options "
                         f"(source sha256 {journal.get('fingerprint', {}).get('source_sha256')}); "
                         "rerun with the same input and options to resume it, or pass restart=True "
                         "(CLI: --restart) to discard it")
    if journal is None:
        from .dataset import detect_layout

        if detect_layout(root) == "upstream":
            raise FileExistsError(f"{root} holds an upstream-layout dataset; build into another data root")
        existing = [f for f in (*STORE_FILES, MANIFEST) if (root / f).exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{root} already holds a store ({', '.join(existing)}); pass overwrite=True "
                                  "(CLI: --overwrite) to replace it")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        journal = {"fingerprint": fingerprint, "status": "running", "chunks_done": 0, "rows_in": 0,
                   "rows_written": 0, "accepted_bytes": 0, "rejects_bytes": 0, "rejected": {},
                   "blank_labels": {}, "started": utc_now(), "resumed_at_chunk": [], "overwrite": bool(overwrite)}
        atomic_write_json(journal_path, journal)
    elif journal["status"] == "running":
        journal["resumed_at_chunk"].append(journal["chunks_done"])

    if journal["status"] == "running":
        _process_chunks(inp, journal, work, phase, workers, chunk_size, required, progress, _test_hook)
        if journal["rows_written"] == 0:
            _refuse_empty_store(inp, journal, work, root)
        _finalize(inp, journal, work, root, required, workers, __version__, t0, _test_hook)
    manifest = _move_into_place(journal, work, root, _test_hook)
    return manifest


def _refuse_empty_store(inp: _Input, journal: dict, work: Path, root: Path) -> None:
    """Every input row was rejected: a store of zero crystals is never written (nor does it replace a store)."""
    with open(work / "rejects.csv.part", encoding="utf-8", newline="") as fh:
        first = next(csv.reader(fh), None)          # material_id, reason, detail, input_row
    shutil.rmtree(work)
    reasons = ", ".join(f"{code} {n}" for code, n in sorted(journal["rejected"].items(), key=lambda kv: -kv[1]))
    example = f"; e.g. input row {first[3]} ({first[0] or 'no ID'}): {first[1]}: {first[2]}" if first else ""
    raise UserError(f"none of the {inp.n_rows} input rows of {inp.path} was accepted ({reasons}){example}; "
                    f"no store was written and {root} is unchanged")


def _precheck(rec: Record, first_row: dict, targets: list[str], required: list[str], blank: Counter):
    """Cheap checks done before parsing: ID, duplicates, labels.  -> (reject | None, values)."""
    mid = rec.material_id
    if mid == "":
        return ("missing_id", "empty material ID"), None
    if "\n" in mid or "\r" in mid:
        return ("missing_id", f"material ID contains a line break: {mid!r}"), None
    if first_row[mid] != rec.row:
        return ("duplicate_id", f"material ID first seen at input row {first_row[mid]}"), None
    values = {}
    for name in targets:
        raw = rec.labels.get(name)      # absent (e.g. no row in --labels-csv) counts as missing
        status, v = _parse_label(raw)
        if status != "ok" and name in required:
            code = "missing_label" if status == "missing" else "nonfinite_label"
            shown = "" if raw is None else str(raw)[:40]
            return (code, f"{name} = {shown!r}"), None
        if status != "ok":
            blank[name] += 1
        values[name] = v
    return None, values


def _parse_pool(workers: int):
    """Processes that parse the CIFs of a chunk while the one before is featurized (None for one worker)."""
    if workers <= 1:
        return None
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import pymatgen.core  # noqa: F401  (imported once here, inherited by the forked workers)

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    # an executor (not multiprocessing.Pool): a worker that dies raises BrokenProcessPool
    # instead of hanging; the journal stays at the last committed chunk, so a rerun resumes
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))


def _prepare_chunk(records: list[Record], first_row: dict, targets: list[str], required: list[str], pool,
                   workers: int):
    """Pre-check a chunk's rows (IDs, labels) and start parsing the rest (in the pool, when there is one)."""
    rejects, todo, chunk_blank = [], [], Counter()
    for rec in records:
        bad, values = _precheck(rec, first_row, targets, required, chunk_blank)
        if bad:
            rejects.append((rec.row, rec.material_id, *bad))
        else:
            todo.append((rec, values))
    tasks = [(rec.kind, rec.payload) for rec, _ in todo]
    if pool is not None and tasks:
        handle = pool.map(parse_payload, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
    else:
        handle = None
    return records, rejects, todo, tasks, handle, chunk_blank


def _parsed(todo: list, tasks: list, handle, rejects: list) -> list:
    """The chunk's parsed crystals ``(record, formula, crystal, label values)``; parse failures go to ``rejects``."""
    if handle is not None:
        results = list(handle)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = [parse_payload(t) for t in tasks]
    ok = []
    for (rec, values), res in zip(todo, results, strict=True):
        if res[0] == "ok":
            ok.append((rec, res[1], res[2], values))
        else:
            rejects.append((rec.row, rec.material_id, res[1], res[2]))
    return ok


def _chunk_lines(accepted: list, rejects: list, targets: list[str]) -> tuple[str, str]:
    """The CSV lines of a chunk: accepted rows (ID, formula, labels) and rejects in input order."""
    accepted_lines = "".join(
        _csv_line([rec.material_id, formula] + [_fmt(values.get(t, math.nan)) for t in targets])
        for rec, formula, values in accepted)
    rejects.sort(key=lambda r: r[0])
    reject_lines = "".join(_csv_line([mid, code, detail, row]) for row, mid, code, detail in rejects)
    return accepted_lines, reject_lines


def _process_chunks(inp: _Input, journal: dict, work: Path, phase: str, workers: int, chunk_size: int,
                    required: list[str], progress: bool, hook) -> None:
    """Read, parse, featurize and write the input chunk by chunk, committing the journal after each chunk."""
    first_row: dict[str, int] = {}
    for i, mid in enumerate(inp.ids):
        first_row.setdefault(mid, i)
    targets = list(inp.targets)
    rejected = Counter(journal["rejected"])
    blank = Counter(journal["blank_labels"])
    writer = _Writer(work, journal)
    buf = np.zeros((chunk_size,) + L.SHAPE, dtype=np.float32)   # holds only FTCP from here on
    pool = _parse_pool(workers)
    bar = progress_bar(None, progress, total=inp.n_rows, initial=journal["rows_in"], unit="crystal",
                       desc="ftcp build", dynamic_ncols=True)
    try:
        chunks = inp.chunk_reader(chunk_size, journal["chunks_done"])
        pending: deque = deque()
        for _ in range(2):   # parse two chunks ahead of featurization
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(_prepare_chunk(nxt, first_row, targets, required, pool, workers))
        k = journal["chunks_done"]
        while pending:
            records, rejects, todo, tasks, handle, chunk_blank = pending.popleft()
            blank.update(chunk_blank)
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(_prepare_chunk(nxt, first_row, targets, required, pool, workers))
            n_rows, accepted = _featurize_into(_parsed(todo, tasks, handle, rejects), buf, phase, rejects)
            accepted_lines, reject_lines = _chunk_lines(accepted, rejects, targets)
            rejected.update(code for _, _, code, _ in rejects)
            writer.append(buf[:n_rows], accepted_lines, reject_lines)
            if hook:
                hook("chunk_written", k)
            k += 1
            writer.commit(chunks_done=k, rows_in=journal["rows_in"] + len(records),
                          rows_written=journal["rows_written"] + n_rows,
                          rejected=dict(sorted(rejected.items())), blank_labels=dict(sorted(blank.items())))
            bar.update(len(records))
            bar.set_postfix(accepted=journal["rows_written"], rejected=sum(rejected.values()), refresh=False)
            if hook:
                hook("chunk_committed", k - 1)
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if journal["rows_in"] != inp.n_rows:
        raise RuntimeError(f"internal error: processed {journal['rows_in']} of {inp.n_rows} input rows")


def _featurize_into(ok, buf: np.ndarray, phase: str, rejects: list):
    """Featurize parsed crystals into ``buf`` (compacted: failures leave no gap).

    Returns (rows written, [(record, formula, label values)] for those rows, in order).
    """
    n = 0
    accepted = []
    for s in range(0, len(ok), FEATURIZE_BATCH):
        batch = ok[s:s + FEATURIZE_BATCH]
        try:
            featurize_crystals([c for _, c, _, _ in batch], phase=phase, out=buf[n:n + len(batch)],
                               out_state="ftcp")
            results = [None] * len(batch)
        except Exception:
            # isolate the crystal(s) that fail; the rest of the batch is kept
            results = []
            for j, (_, c, _, _) in enumerate(batch):
                try:
                    featurize_crystals([c], phase=phase, out=buf[n + j:n + j + 1], out_state="ftcp")
                    results.append(None)
                except Exception as exc:
                    results.append(_short(exc))
        finite = np.isfinite(buf[n:n + len(batch)]).all(axis=(1, 2))
        w = n
        for j, (rec, _, formula, values) in enumerate(batch):
            error = results[j] or (None if finite[j] else "non-finite FTCP values")
            if error:
                rejects.append((rec.row, rec.material_id, "featurize_error", error))
                continue
            if w != n + j:
                buf[w] = buf[n + j]
            accepted.append((rec, formula, values))
            w += 1
        n = w
    return n, accepted


def _finalize(inp: _Input, journal: dict, work: Path, root: Path, required, workers, version, t0, hook) -> None:
    from importlib.metadata import version as dist_version

    import pandas as pd

    targets = list(inp.targets)
    n = journal["rows_written"]
    # ftcp.npy: the real row count into the header (same length: numpy pads for growth)
    header = _npy_header(n)
    if len(header) != HEADER_BYTES:
        raise RuntimeError("npy header length changed; cannot finalise in place")
    with open(work / "ftcp.npy", "r+b") as fh:
        fh.write(header)
        fh.truncate(HEADER_BYTES + n * ROW_BYTES)
        fsync_file(fh)
    with open(work / "accepted.csv.part", "rb") as fh:
        accepted = fh.read()
    ids = pd.read_csv(io.BytesIO(accepted), header=None, usecols=[0], dtype=str,
                      keep_default_na=False)[0].tolist() if accepted else []
    if len(ids) != n:
        raise RuntimeError(f"internal error: {len(ids)} accepted IDs but {n} FTCP rows")
    np.save(work / "material_ids.npy", np.array(ids, dtype=str) if ids else np.zeros(0, dtype="<U1"))
    with open(work / "labels.csv", "wb") as fh:
        fh.write(_csv_line(["material_id", "formula", *targets]).encode("utf-8") + accepted)
    with open(work / "rejects.csv.part", "rb") as fh:
        rejects = fh.read()
    with open(work / "rejects.csv", "wb") as fh:
        fh.write(_csv_line(["material_id", "reason", "detail", "input_row"]).encode("utf-8") + rejects)
    files = {f: {"sha256": sha256_file(work / f), "bytes": (work / f).stat().st_size} for f in STORE_FILES}
    rejected = dict(sorted(journal["rejected"].items()))
    manifest = {
        "format": STORE_FORMAT, "format_version": STORE_FORMAT_VERSION,
        "layout_version": L.LAYOUT_VERSION, "phase": journal["fingerprint"]["phase"],
        "shape": [n, *L.SHAPE], "dtype": "float32",
        "counts": {"input": inp.n_rows, "accepted": n, "rejected": int(sum(rejected.values())),
                   "rejected_by_reason": rejected},
        "targets": targets, "label_columns": inp.targets, "required_labels": list(required),
        "blank_labels": journal["blank_labels"], "ignored_columns": inp.ignored_columns,
        "source": {"path": str(inp.path.resolve()), "kind": inp.kind, "sha256": inp.sha256,
                   "labels_csv": inp.labels_csv},
        "files": files,
        "build": {"chunk_size": journal["fingerprint"]["chunk_size"], "workers": workers,
                  "started": journal["started"], "finished": utc_now(),
                  "seconds_last_run": round(time.perf_counter() - t0, 1),
                  "resumed_at_chunk": journal["resumed_at_chunk"]},
        "created": utc_now(),
        "package_version": version,
        "versions": {"numpy": np.__version__, "pymatgen": dist_version("pymatgen"), "python": sys.version.split()[0]},
        "reject_reasons": {k: REJECT_REASONS[k] for k in rejected},
    }
    synthetic = synthetic_provenance(inp.path, inp.sha256)
    if synthetic:
        manifest["synthetic"] = synthetic
    if inp.n_rows != n + manifest["counts"]["rejected"]:
        raise RuntimeError("internal error: input rows != accepted + rejected")
    atomic_write_json(work / MANIFEST, manifest)
    # the .part files stay until .build/ is removed: a crash before this journal write
    # resumes as "running" and needs them
    journal["status"] = "finalizing"
    atomic_write_json(work / "journal.json", journal)
    if hook:
        hook("finalizing", -1)


def synthetic_provenance(path: Path, sha256: str) -> dict | None:
    """The synthetic-data record of an input written by ``ftcp.demo_data`` (its JSON sidecar, when it
    says ``synthetic`` and matches the input's checksum), else None.  Stores built from it carry the
    record in their manifest, and every downstream report labels its numbers as synthetic."""
    from .demo_data import sidecar_path

    side = sidecar_path(path)
    if side == Path(path) or not side.is_file():
        return None
    try:
        info = read_json(side)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("synthetic") is not True or info.get("csv_sha256") != sha256:
        return None
    return {"statement": info.get("statement"), "generator": info.get("generator"),
            "generator_version": info.get("generator_version"), "seed": info.get("seed"),
            "sidecar": str(side.resolve()), "labels": info.get("labels")}


def _remove_stale_splits(root: Path) -> list[str]:
    removed = []
    for name, d in find_split_dirs(root, lambda d: (d / "split.json").exists()).items():
        for f in ("train_ids.txt", "test_ids.txt", "split.json"):
            if (d / f).exists():
                (d / f).unlink()
        removed.append(name)
        for p in (d, d.parent):
            try:
                p.rmdir()   # only if empty
            except OSError:
                pass
    return removed


def _move_into_place(journal: dict, work: Path, root: Path, hook) -> dict:
    """Move the finished files from ``.build/`` into the root, manifest last (idempotent)."""
    if journal.get("overwrite"):
        if (work / MANIFEST).exists() and (root / MANIFEST).exists():
            (root / MANIFEST).unlink()   # the old store is no longer complete from here on
        removed = _remove_stale_splits(root)
        if removed:
            log.warning("ftcp build: removed split ID lists of the replaced store: %s (make new ones with "
                        "`ftcp split`)", removed)
        if (root / "SSL").exists():
            log.warning("ftcp build: note: %s was computed from the replaced store", root / "SSL")
    for i, f in enumerate((*STORE_FILES, MANIFEST)):
        if (work / f).exists():
            os.replace(work / f, root / f)
            if hook:
                hook("moved", i)
    manifest = read_json(root / MANIFEST)
    shutil.rmtree(work)
    return manifest


# ---------------------------------------------------------------------------------------------
# reading a store's manifest / verifying checksums
def read_manifest(root=None) -> dict:
    root = resolve_data_root(root)
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (no native store built by `ftcp build` here)")
    return read_json(path)


def verify_store(root=None) -> dict[str, bool]:
    """Recompute the sha256 of every file listed in the manifest: {file: matches}."""
    root = resolve_data_root(root)
    manifest = read_manifest(root)
    return {f: (root / f).exists() and sha256_file(root / f) == meta["sha256"]
            for f, meta in manifest["files"].items()}


def format_counts(manifest: dict) -> str:
    """A readable table of the build counts by reason."""
    c = manifest["counts"]
    lines = [f"{'input rows':<24} {c['input']:>9}", f"{'accepted':<24} {c['accepted']:>9}",
             f"{'rejected':<24} {c['rejected']:>9}"]
    for reason, n in sorted(c["rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason:<22} {n:>9}  {REJECT_REASONS.get(reason, '')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI
def label_argument(text: str) -> tuple[str, str]:
    """argparse type of ``--label NAME=COLUMN`` (``build`` and ``reproduce``)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=COLUMN, got {text!r}")
    name, col = text.split("=", 1)
    return name.strip(), col.strip()


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "build", help="build a native FTCP store from CIFs or pymatgen structures",
        description="Featurize crystals into <data root>/{ftcp.npy, material_ids.npy, labels.csv, "
                    "rejects.csv, manifest.json}. Input: a CSV (.csv/.csv.gz) with material_id, cif "
                    "and label columns; a folder of *.cif files (ID = file stem; labels via "
                    "--labels-csv); or a JSON list of {material_id, structure, labels...} / dict "
                    "id -> structure. An interrupted build resumes when rerun with the same "
                    "input and options.")
    p.add_argument("source", help="input CSV, folder of CIF files, or JSON file")
    add_data_argument(p)
    p.add_argument("--format", dest="kind", choices=["csv", "cif_dir", "json"], default=None,
                   help="input format (default: from the path)")
    p.add_argument("--labels-csv", metavar="FILE", default=None,
                   help="labels for a CIF folder / JSON input (material_id + label columns)")
    p.add_argument("--label", action="append", type=label_argument, default=[], metavar="NAME=COLUMN",
                   help="store input column COLUMN as label NAME (repeatable); formation_energy_per_atom -> "
                        "formation_energy and band_gap are recognised without it")
    p.add_argument("--require-labels", metavar="NAMES", default="all",
                   help="labels whose absence rejects a row: 'all' targets (default), 'none', or a comma list")
    p.add_argument("--phase", choices=PHASES, default="linear",
                   help="structure-factor phase (see ftcp.featurizer; default linear, as upstream)")
    p.add_argument("--workers", metavar="N", type=int, default=None,
                   help="CIF-parsing processes (1 = in this process; default: CPUs available)")
    p.add_argument("--chunk-size", metavar="N", type=int, default=DEFAULT_CHUNK_SIZE,
                   help=f"input rows per committed chunk (default {DEFAULT_CHUNK_SIZE})")
    p.add_argument("--id-column", metavar="COLUMN", default="material_id",
                   help="CSV column with material IDs (default material_id)")
    p.add_argument("--cif-column", metavar="COLUMN", default="cif", help="CSV column with CIF text (default cif)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store under the data root")
    p.add_argument("--restart", action="store_true", help="discard an interrupted build instead of resuming it")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (it shows only on a terminal anyway)")
    p.set_defaults(func=_cli_build)

    q = subparsers.add_parser("info", help="summarise the dataset under the data root",
                              description="Print the manifest summary of a native store (or the "
                                          "splits of an upstream-layout dataset).")
    add_data_argument(q)
    q.add_argument("--verify", action="store_true", help="recompute and check the sha256 of every store file")
    q.add_argument("--json", action="store_true", help="print the manifest as JSON")
    q.set_defaults(func=_cli_info)


def _cli_build(args) -> int:
    root = resolve_data_root(getattr(args, "data", None))
    manifest = build_store(args.source, root, kind=args.kind, labels_csv=args.labels_csv,
                           label_map=dict(args.label), require_labels=args.require_labels,
                           phase=args.phase, workers=args.workers, chunk_size=args.chunk_size,
                           id_column=args.id_column, cif_column=args.cif_column,
                           overwrite=args.overwrite, restart=args.restart, progress=args.progress)
    print(f"store written to {root} (phase {manifest['phase']}, targets {manifest['targets']})")
    print(format_counts(manifest))
    if manifest["counts"]["rejected"]:
        print(f"rejected rows with reasons: {root / 'rejects.csv'}")
    return 0


def _cli_info(args) -> int:
    from .dataset import open_dataset

    root = resolve_data_root(getattr(args, "data", None))
    ds = open_dataset(root)
    if args.json and ds.layout == "native" and ds.manifest:
        print(json_dumps(ds.manifest), end="")
        return 0
    print(f"data root   {root}  ({ds.layout} layout)")
    print(f"crystals    {len(ds.ids)}")
    print(f"labels      {', '.join(ds.label_names)}")
    m = ds.manifest
    if m:
        print(f"layout      {m.get('layout_version')}, phase {m.get('phase')}, built "
              f"{m.get('created') or m.get('created_utc')} with ftcp {m.get('package_version', '?')}")
        src = m.get("source") or {}
        if src:
            print(f"source      {src.get('path')} ({src.get('kind')}, sha256 {str(src.get('sha256'))[:16]}...)")
        if m.get("synthetic"):
            print(f"SYNTHETIC   {m['synthetic'].get('generator')}: {m['synthetic'].get('purpose', 'not real data')}")
        if "reject_reasons" in m:
            print(format_counts(m))
    elif ds.layout == "native":
        print("manifest    none (store not built by `ftcp build`; no checksums or counts)")
    print("splits      " + (", ".join(f"{s} ({len(ds.part(s, 'train'))}/{len(ds.part(s, 'test'))})"
                                    for s in ds.split_names()) or "none (make them with `ftcp split`)"))
    if args.verify:
        if not m:
            raise ValueError("no manifest to verify against")
        bad = [f for f, ok in verify_store(root).items() if not ok]
        print("checksums   " + ("all match" if not bad else f"MISMATCH: {bad}"))
        return 1 if bad else 0
    return 0


__all__ = ["build_store", "open_input", "resolve_label_columns", "read_manifest", "verify_store",
           "format_counts", "parse_payload", "REJECT_REASONS", "STORE_REJECT_REASONS",
           "DEFAULT_LABEL_COLUMNS", "STORE_FILES", "BuildInterrupted", "register_cli"]
