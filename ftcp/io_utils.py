"""Small file helpers shared by the store, splits and CLI: data root, checksums, atomic writes."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import UserError

#: Environment variable that overrides the default data root.
DATA_ENV = "CRYS_REP_DATA"
DEFAULT_DATA_ROOT = "Data"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$CRYS_REP_DATA``, else ``Data`` (relative to cwd).

    Every command and library function that needs the data root calls this one function.  A data root
    that exists but is not a folder is a ``UserError``.
    """
    if root is not None and str(root) != "":
        path = Path(root)
    else:
        env = os.environ.get(DATA_ENV, "")
        path = Path(env) if env else Path(DEFAULT_DATA_ROOT)
    if path.exists() and not path.is_dir():
        raise UserError(f"data root {path} is a file, not a folder (--data DIR / ${DATA_ENV} names a folder)")
    return path


def add_data_argument(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """Add ``--data DIR`` to a (sub)parser.

    Subcommands use ``default=SUPPRESS`` so that ``ftcp --data X cmd`` and ``ftcp cmd --data X``
    both work (a subparser default would otherwise overwrite the top-level value).
    """
    parser.add_argument(
        "--data", metavar="DIR", default=None if top_level else argparse.SUPPRESS,
        help=f"data root (default: ${DATA_ENV} if set, else '{DEFAULT_DATA_ROOT}')")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device DEVICE`` (default auto), as ``ftcp.runtime.resolve_device`` reads it."""
    parser.add_argument("--device", metavar="DEVICE", default="auto",
                        help="auto (CUDA when torch sees a GPU, else CPU) | cpu | cuda | cuda:N (default auto)")


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:   # name the file the user asked for, not the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
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


def _atomic_numpy_write(path: str | os.PathLike, write, suffix: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    """``np.save`` (no pickles) through a temporary file + rename in the same folder: never a half-written file."""
    return _atomic_numpy_write(path, lambda tmp: np.save(tmp, array, allow_pickle=False), ".npy")


def atomic_save_npz(path: str | os.PathLike, compressed: bool = False, **arrays) -> Path:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` through a temporary file + rename."""
    save = np.savez_compressed if compressed else np.savez
    return _atomic_numpy_write(path, lambda tmp: save(tmp, **arrays), ".npz")


def to_jsonable(obj):
    """NumPy and paths -> plain Python for strict JSON: numpy scalars and arrays -> numbers and lists, non-finite
    floats -> None, tuples -> lists, dict keys -> str, paths and any other object -> str.  The one converter of
    every JSON record."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return os.fspath(obj) if isinstance(obj, os.PathLike) else str(obj)


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


def parse_key_value(item: str, option: str = "the option") -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``; VALUE is read as JSON when it parses (``3``, ``[8, 16]``, ``true``), else
    kept as a string.  The one parser of ``--model KEY=VALUE``, ``--set N:KEY=VALUE`` and ``--ssl-set``."""
    key, sep, text = str(item).partition("=")
    if not sep or not key.strip():
        raise UserError(f"{option} expects KEY=VALUE, got {item!r}")
    try:
        return key.strip(), json.loads(text)
    except json.JSONDecodeError:
        return key.strip(), text


def utc_now() -> str:
    """The current time as ISO 8601 UTC (``2026-12-01T03:04:05Z``): the one timestamp format of every record."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _IdArrayUnpickler(pickle.Unpickler):
    """Unpickles a numpy object array and nothing else: the only globals it resolves are those numpy's own
    pickle of an ndarray of ``str`` / ``numpy.str_`` uses (array and dtype reconstruction, numpy scalars), so
    a crafted file cannot call anything else (``os.system``, ``eval``...)."""

    _ALLOWED = {(module, name) for module in ("numpy._core.multiarray", "numpy.core.multiarray")
                for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it calls {module}.{name}, which a plain array of strings never does")
        return super().find_class(module, name)


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0,
                       (3, 0): np.lib.format.read_array_header_2_0}   # 3.0 = 2.0 with a UTF-8 header


def load_id_array(path: str | os.PathLike) -> np.ndarray:
    """Material IDs of a ``.npy`` file as a (n,) unicode array, without ever running code from the file.

    A plain string array is read with ``allow_pickle=False``.  Upstream files hold pickled *object* arrays of
    ``str``; those go through a restricted unpickler that builds a numpy array and nothing else, and every
    element must then be a string.  Anything else (a crafted pickle, other objects) is a ``UserError``.
    """
    path = Path(path)
    try:
        return as_id_array(np.load(path, allow_pickle=False), str(path))
    except (ValueError, EOFError) as exc:
        if "allow_pickle" not in str(exc):      # not an object array: a bad or truncated file
            raise UserError(f"{path}: not a readable array of material IDs ({exc})") from exc
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = _NPY_HEADER_READERS.get(version)
        if reader is None:
            raise UserError(f"{path}: unsupported .npy format version {version}")
        reader(fh)   # the pickle starts right after the header
        try:
            arr = _IdArrayUnpickler(fh, encoding="ASCII").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise UserError(f"{path}: refused to read the material IDs: {exc} (only arrays of strings are read; "
                            "the file may be corrupt or tampered with)") from exc
    if not isinstance(arr, np.ndarray):
        raise UserError(f"{path}: refused to read the material IDs: the file holds a {type(arr).__name__}, "
                        "not an array")
    if arr.dtype == object:
        for i, value in enumerate(arr.reshape(-1).tolist()):
            if not isinstance(value, (str, bytes)):
                raise UserError(f"{path}: refused to read the material IDs: element {i} is of type "
                                f"{type(value).__name__}, not a string")
    return as_id_array(arr, str(path))
