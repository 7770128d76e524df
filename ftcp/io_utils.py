"""Small file helpers shared by the store, splits and CLI: data root, checksums, atomic writes."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

#: Environment variable that overrides the default data root.
DATA_ENV = "CRYS_REP_DATA"
DEFAULT_DATA_ROOT = "Data"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$CRYS_REP_DATA``, else ``Data`` (relative to cwd).

    Every command and library function that needs the data root calls this one function.
    """
    if root is not None and str(root) != "":
        return Path(root)
    env = os.environ.get(DATA_ENV, "")
    return Path(env) if env else Path(DEFAULT_DATA_ROOT)


def add_data_argument(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """Add ``--data DIR`` to a (sub)parser.

    Subcommands use ``default=SUPPRESS`` so that ``ftcp --data X cmd`` and ``ftcp cmd --data X``
    both work (a subparser default would otherwise overwrite the top-level value).
    """
    parser.add_argument(
        "--data", metavar="DIR", default=None if top_level else argparse.SUPPRESS,
        help=f"data root (default: ${DATA_ENV} if set, else '{DEFAULT_DATA_ROOT}')")


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def fsync_file(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + fsync + rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fsync_file(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_dumps(obj) -> str:
    """Deterministic, readable JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json_dumps(obj))


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json_if_exists(path: str | os.PathLike):
    """``read_json(path)``, or None when there is no such file (a malformed file still raises)."""
    return read_json(path) if Path(path).is_file() else None


def write_id_list(path: str | os.PathLike, ids: Iterable[str]) -> str:
    """Write one material ID per line (UTF-8, trailing newline); returns the file's sha256."""
    text = "".join(f"{i}\n" for i in ids)
    data = text.encode("utf-8")
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_id_list(path: str | os.PathLike) -> np.ndarray:
    """Material IDs written by ``write_id_list`` as a (n,) unicode array (file order kept)."""
    with open(path, encoding="utf-8") as fh:
        ids = [line.rstrip("\n") for line in fh]
    if ids and ids[-1] == "":
        ids.pop()
    if any(i == "" or i != i.strip() for i in ids):
        raise ValueError(f"{path}: empty line or surrounding whitespace in an ID list")
    return np.array(ids, dtype=str)


def as_id_array(ids, what: str = "material IDs") -> np.ndarray:
    """Any sequence of IDs (list, unicode array, upstream object array) -> (n,) unicode array."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise ValueError(f"{what}: expected a 1-d array of IDs, got shape {arr.shape}")
    if arr.dtype.kind == "U":
        return arr
    out = []
    for i, v in enumerate(arr.tolist()):
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if not isinstance(v, str):
            raise ValueError(f"{what}: element {i} is {type(v).__name__} {v!r}, not a string ID")
        out.append(v)
    return np.array(out, dtype=str) if out else np.zeros(0, dtype="<U1")


def utc_now() -> str:
    """The current time as ISO 8601 UTC (``2026-12-01T03:04:05Z``): the one timestamp format of every record."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
