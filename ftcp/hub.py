"""Hugging Face Hub I/O: download the upstream dataset, publish and fetch trained encoder checkpoints.

Everything goes through ``huggingface_hub``; the endpoint is configurable (``endpoint=`` / ``--endpoint`` /
``HF_ENDPOINT``), so a mirror works and the tests run against a loopback fake hub.

Dataset download (``download_dataset``) puts the upstream files under the data root in the upstream layout
(``Splitted_Data/Split_10Test_90Train/Train/Train_FTCP_Data.npy`` ...). Each file is fetched with the
library's own HEAD (``get_hf_file_metadata``) and ranged GET (``http_get``), into a partial file that is kept
between runs: the full-scale files are up to ~12 GB each, and ``hf_hub_download`` (v2.x) deletes its
temporary file when a run is interrupted, so a re-run would start that file from zero. Here a re-run sends
``Range: bytes=<have>-`` and continues. Every file is then checked against the hub's metadata (sha256 for LFS
files, the git blob sha1 for regular files) before it is moved into place; a mismatch is an error and the
file is not kept. ``<root>/download_manifest.json`` records repo, commit, files, sizes and sha256.

Checkpoints (``publish_checkpoints`` / ``fetch_checkpoints``) use ``HfApi.create_repo`` + ``upload_folder``
and ``snapshot_download`` on a model repository, with the same checksum verification after fetching.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import huggingface_hub
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers, filter_repo_objects, get_token, validate_repo_id

from .errors import UserError
from .io_utils import add_data_argument, atomic_write_json, resolve_data_root, utc_now
from .layout import BLOCKS
from .logs import progress_bar
from .splits import GROUP_DIR, RANDOM_DIR, RANDOM_TEST_PERCENTS, random_split_dirname
from .ssl.data import FEATURES_INFO, NORMALIZER_FILE, SPLIT_FILE

log = logging.getLogger(__name__)

DEFAULT_REPO_ID = "danial199472/Crys_Rep_Enrich"
MANIFEST_NAME = "download_manifest.json"
PARTIAL_DIR = ".download"  # under the data root: partial files kept between runs

# Upstream folder of each split (the 10/20/30/40 % test random splits and the formula-group split).
SPLIT_DIRS = {**{str(p): f"{RANDOM_DIR}/{random_split_dirname(p)}" for p in RANDOM_TEST_PERCENTS}, "group": GROUP_DIR}
PARTS = ("Train", "Test")
# File name suffixes per kind; a file is <split dir>/<Part>/<Part>_<suffix>.
KIND_FILES = {
    "ftcp": ("FTCP_Data.npy", "FTCP_Material_IDs.npy"),
    "ssl_features": ("Extracted_Features_Data.npy", "Extracted_Features_Material_IDs.npy"),
    "labels": ("FormationEnergy_Labels.npy", "BandGap_Labels.npy"),
    "ids": ("Material_IDs.npy",),  # the label IDs
}
ALL_SPLITS = tuple(SPLIT_DIRS)
ALL_KINDS = tuple(KIND_FILES)

# What a checkpoint repository holds, and nothing else (an allow-list: a stray file in the SSL directory is never
# uploaded): the normaliser fitted on SSL-train, the SSL split, the feature-table record (its ``ftcp_phase`` tells
# `ftcp embed` how to featurize), an optional model card, and per block its best weights with their config and
# metrics. Embeddings and assembled features (large, reproducible from the weights) and resume checkpoints
# (last.pt) stay local.
CHECKPOINT_BLOCK_FILES = ("best.pt", "config.json", "metrics.json")
MODEL_CARD = "README.md"


def checkpoint_repo_files() -> list[str]:
    """Every path a checkpoint repository may hold, relative to its root (= the SSL directory)."""
    return [NORMALIZER_FILE, SPLIT_FILE, FEATURES_INFO, MODEL_CARD,
            *(f"{block.dirname}/{name}" for block in BLOCKS for name in CHECKPOINT_BLOCK_FILES)]


TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
_CHUNK = 8 * 1024 * 1024


class HubError(UserError, RuntimeError):
    """A Hugging Face Hub operation failed; the message says why and what to do (an expected error: the
    command line shows it as one line)."""


class OfflineError(HubError, ConnectionError):
    """The hub endpoint cannot be reached (no network, DNS failure, closed port, HF_HUB_OFFLINE=1)."""


class NothingMatchedError(HubError):
    """Requested files are not on the hub."""


class ChecksumError(HubError):
    """A downloaded file does not match the hub's checksum; it was not kept."""


class _CdnRefused(HubError):
    """The CDN refused a signed URL (typically expired during a long download): worth a fresh HEAD."""


class DownloadError(HubError):
    """Some files failed to download; ``failures`` maps each path to its exception."""

    def __init__(self, message: str, failures: dict[str, BaseException]):
        super().__init__(message)
        self.failures = failures


# --------------------------------------------------------------------------- small helpers
def _endpoint(endpoint: str | None) -> str:
    # Read HF_ENDPOINT at call time (huggingface_hub reads it once, at import).
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _hash_file(path: Path, git: bool = False) -> tuple[str, str | None]:
    """(sha256, git blob sha1 or None) of a file, streamed."""
    sha256 = hashlib.sha256()
    sha1 = None
    if git:
        sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
    return sha256.hexdigest(), (sha1.hexdigest() if sha1 is not None else None)


def _check_hash(path: Path, sibling, label: str) -> str:
    """Verify ``path`` against the hub metadata of ``sibling``; return its sha256 or raise ChecksumError."""
    size = path.stat().st_size
    expected_size = sibling.lfs.size if sibling.lfs is not None else sibling.size
    if expected_size is not None and size != expected_size:
        raise ChecksumError(f"{label}: size {size} bytes, the hub says {expected_size}; the file was not kept.")
    if sibling.lfs is not None:
        sha256, _ = _hash_file(path)
        if sha256 != sibling.lfs.sha256:
            raise ChecksumError(
                f"{label}: sha256 {sha256} does not match the hub's LFS sha256 {sibling.lfs.sha256}; "
                "the file was not kept. Re-run to download it again; if it persists, the hub copy or a "
                "proxy/mirror in between serves corrupted data.")
        return sha256
    sha256, git_oid = _hash_file(path, git=True)
    if sibling.blob_id and git_oid != sibling.blob_id:
        raise ChecksumError(
            f"{label}: git blob sha1 {git_oid} does not match the hub's {sibling.blob_id}; the file was not kept.")
    return sha256


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status in TRANSIENT_STATUS
    if isinstance(exc, _CdnRefused):
        return True
    if isinstance(exc, httpx2.ProxyError):
        return False
    if isinstance(exc, httpx2.TransportError):  # connection reset, timeout, truncated body
        return True
    # http_get's size check after a truncated stream
    return isinstance(exc, OSError) and "Consistency check failed" in str(exc)


def _reachable_but_failing(exc: BaseException) -> bool:
    # At first contact a refused connection, DNS failure or timeout means "offline": report it at once
    # instead of backing off; once the hub has answered, such errors are retried.
    return _is_transient(exc) and not isinstance(exc, (httpx2.ConnectError, httpx2.TimeoutException))


def _with_retries(fn, retries: int, backoff_s: float, what: str, transient=_is_transient):
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered by transient()
            if attempt >= retries or not transient(exc):
                raise
            wait = backoff_s * 2 ** attempt
            log.warning("%s: %s: %s; retry %d/%d in %.1f s", what, type(exc).__name__, exc, attempt + 1,
                        retries, wait)
            time.sleep(wait)


OFFLINE_DATASET_HINT = "build the dataset locally from CIFs, without any network: python -m ftcp build"
OFFLINE_FETCH_HINT = "use a copy fetched earlier: pass its directory instead of the repo id"


def _offline_error(endpoint: str, exc: BaseException, what: str, alternative: str | None = None) -> OfflineError:
    if isinstance(exc, OfflineModeIsEnabled):
        reason = "HF_HUB_OFFLINE is set, so huggingface_hub makes no request"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return OfflineError(
        f"Cannot reach the Hugging Face Hub at {endpoint} ({reason}); {what} was not done.\n"
        "To proceed:\n"
        "  - check the network (and proxy settings), or unset HF_HUB_OFFLINE;\n"
        "  - or point to a reachable hub or mirror: --endpoint URL or the environment variable HF_ENDPOINT=URL"
        + (f";\n  - or {alternative}." if alternative else "."))


def _repo_info(api: HfApi, repo_id: str, repo_type: str, revision: str | None, endpoint: str,
               retries: int, backoff_s: float, timeout_s: float, what: str, alternative: str | None):
    """Commit sha and per-file metadata (size, blob id, LFS sha256) in one request."""
    try:
        return _with_retries(
            lambda: api.repo_info(repo_id, repo_type=repo_type, revision=revision, files_metadata=True,
                                  timeout=timeout_s),
            retries, backoff_s, f"{repo_type} info {repo_id}", transient=_reachable_but_failing)
    except httpx2.ProxyError as exc:
        raise HubError(f"The proxy refused the connection to {endpoint}: {exc}. Check HTTP(S)_PROXY.") from exc
    except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled) as exc:
        raise _offline_error(endpoint, exc, what, alternative) from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"Revision {revision!r} does not exist in {repo_type} repo {repo_id} at {endpoint}.") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"{repo_type.capitalize()} repo {repo_id!r} was not found at {endpoint} (or it is private/gated and no "
            "valid token was sent: set HF_TOKEN).") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"The hub at {endpoint} answered {exc.response.status_code} for {repo_id}: {exc}") from exc


# --------------------------------------------------------------------------- dataset download
def _choose(values, allowed, what: str, prefix: str = "") -> list[str]:
    """Validate a list (or comma-separated string) of names against ``allowed``; dedupe, keep order."""
    if isinstance(values, str):
        values = values.split(",")
    out = []
    for value in values:
        key = str(value).strip().lower().removeprefix(prefix)
        if not key:
            continue
        if key not in allowed:
            raise ValueError(f"unknown {what} {value!r}; choose from {', '.join(allowed)}")
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"no {what} requested")
    return out


def _normalize_splits(splits) -> list[str]:
    return _choose(splits, SPLIT_DIRS, "split", prefix="random_")  # "random_10" as in the dataset view API


def _normalize_kinds(kinds) -> list[str]:
    return _choose(kinds, KIND_FILES, "kind")


def expected_files(splits=ALL_SPLITS, kinds=ALL_KINDS) -> list[str]:
    """Upstream-layout paths (relative to the data root) for ``splits`` x ``kinds`` x Train/Test."""
    return [f"{SPLIT_DIRS[s]}/{part}/{part}_{suffix}"
            for s in _normalize_splits(splits) for part in PARTS
            for k in _normalize_kinds(kinds) for suffix in KIND_FILES[k]]


def _match_files(wanted: list[str], siblings: dict) -> tuple[dict[str, str], list[str]]:
    """Map each wanted local path to the repo path holding it (at the repo root or under one prefix
    folder, e.g. ``Data/``); return (found, missing)."""
    found, missing = {}, []
    for rel in wanted:
        hits = sorted(filter_repo_objects(siblings, allow_patterns=[rel, f"*/{rel}"]))
        hits = [h for h in hits if h == rel or h.endswith("/" + rel)]
        if rel in hits:
            found[rel] = rel
        elif len(hits) == 1:
            found[rel] = hits[0]
        elif hits:
            raise HubError(f"{rel} is ambiguous on the hub: {', '.join(hits)}")
        else:
            missing.append(rel)
    return found, missing


def _missing_message(missing: list[str], siblings: dict, repo_id: str, commit: str) -> str:
    lines = [f"{len(missing)} requested file(s) are not in dataset {repo_id} at commit {commit[:12]}:"]
    lines += [f"  - {m}" for m in missing[:20]] + ([f"  ... ({len(missing) - 20} more)"] if len(missing) > 20 else [])
    data_files = sorted(p for p in siblings if not p.startswith("."))
    lines.append(f"The hub has {len(data_files)} file(s)" + (", e.g.:" if data_files else "."))
    lines += [f"  * {p}" for p in data_files[:15]]
    lines.append("Choose other --splits/--kinds, or pass --allow-missing (strict=False) to download what exists.")
    return "\n".join(lines)


def download_dataset(
    root=None,
    repo_id: str = DEFAULT_REPO_ID,
    splits=ALL_SPLITS,
    kinds=ALL_KINDS,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    max_workers: int = 4,
    retries: int = 3,
    *,
    strict: bool = True,
    backoff_s: float = 2.0,
    timeout_s: float = 30.0,
) -> dict:
    """Download the upstream dataset files for ``splits`` x ``kinds`` into ``root`` (upstream layout).

    Resumes partial files left by an interrupted run, retries transient errors with exponential backoff,
    verifies every file against the hub's checksums, and writes ``<root>/download_manifest.json``.
    Raises ``OfflineError`` when the hub cannot be reached, ``NothingMatchedError`` when requested files
    are not on the hub (all of them, or any of them when ``strict``), ``DownloadError`` when files failed.
    Returns the manifest dict.
    """
    root = resolve_data_root(root)
    endpoint = _endpoint(endpoint)
    splits, kinds = _normalize_splits(splits), _normalize_kinds(kinds)
    if max_workers < 1 or retries < 0:
        raise ValueError("max_workers must be >= 1 and retries >= 0")
    # 1. what the hub holds at one commit, and which of the wanted files are there
    api = HfApi(endpoint=endpoint, token=token)
    info = _repo_info(api, repo_id, "dataset", revision, endpoint, retries, backoff_s, timeout_s,
                      "the dataset download", OFFLINE_DATASET_HINT)
    commit = info.sha
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    found, missing = _match_files(expected_files(splits, kinds), siblings)
    if missing and (strict or not found):
        raise NothingMatchedError(_missing_message(missing, siblings, repo_id, commit))
    if missing:
        log.warning(_missing_message(missing, siblings, repo_id, commit))
    # 2. the manifest, with the files already on disk and verified
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST_NAME
    previous = _previous_entries(manifest_path, repo_id, root)
    manifest = {
        "repo_id": repo_id, "repo_type": "dataset", "endpoint": endpoint, "revision": revision or "main",
        "commit": commit, "splits": splits, "kinds": kinds, "started": utc_now(),
        "huggingface_hub": huggingface_hub.__version__, "missing": missing, "complete": False,
        "files": dict(previous),
    }
    todo = []
    for rel, repo_path in sorted(found.items()):
        entry = _verified_entry(root / rel, siblings[repo_path], previous.get(rel), repo_path, commit)
        if entry is not None:
            manifest["files"][rel] = entry
        else:
            todo.append(rel)
    _check_free_space(root, [(rel, siblings[found[rel]]) for rel in todo])
    log.info("%d file(s) already present and verified, %d to download", len(found) - len(todo), len(todo))
    atomic_write_json(manifest_path, manifest)
    # 3. the rest, in parallel, each recorded in the manifest as soon as it is verified
    jobs = {rel: (root, rel, found[rel], siblings[found[rel]], repo_id, commit, endpoint, token, retries, backoff_s,
                  timeout_s) for rel in todo}
    failures = _download_all(jobs, manifest, manifest_path, max_workers)
    # 4. the outcome
    manifest["finished"] = utc_now()
    manifest["failed"] = {rel: f"{type(e).__name__}: {e}" for rel, e in sorted(failures.items())}
    manifest["complete"] = not failures and not missing
    atomic_write_json(manifest_path, manifest)
    if failures:
        details = "\n".join(f"  - {rel}: {type(e).__name__}: {e}" for rel, e in sorted(failures.items()))
        raise DownloadError(
            f"{len(failures)} of {len(todo)} file(s) failed to download from {repo_id}:\n{details}\n"
            f"Re-run the same command to continue: partial files are kept under {root / PARTIAL_DIR} and "
            "verified files are not fetched again.", failures)
    log.info("dataset %s@%s: %d file(s) in %s", repo_id, commit[:12], len(found), root)
    return manifest


def _previous_entries(manifest_path: Path, repo_id: str, root: Path) -> dict:
    """The entries of an earlier manifest of the same repository whose files are still on disk."""
    if not manifest_path.exists():
        return {}
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", manifest_path)
        return {}
    if old.get("repo_id") != repo_id:
        return {}
    return {rel: e for rel, e in old.get("files", {}).items() if (root / rel).is_file()}


def _download_all(jobs: dict, manifest: dict, manifest_path: Path, max_workers: int) -> dict[str, BaseException]:
    """``_download_one(*args)`` for every ``{rel: args}`` in a thread pool; each verified file goes into the
    manifest (written after every file); returns the failures."""
    lock = threading.Lock()
    failures: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=max_workers) as pool, \
            progress_bar(None, bool(jobs), total=len(jobs), desc="dataset files", unit="file") as bar:
        futures = {pool.submit(_download_one, *args): rel for rel, args in jobs.items()}
        for fut in as_completed(futures):
            rel = futures[fut]
            try:
                entry = fut.result()
                with lock:
                    manifest["files"][rel] = entry
                    atomic_write_json(manifest_path, manifest)
            except Exception as exc:  # noqa: BLE001 - collected and re-raised by the caller
                failures[rel] = exc
                log.error("%s: %s", rel, exc)
            bar.update(1)
    return failures


def _entry(rel_repo_path: str, sibling, sha256: str, path: Path, commit: str) -> dict:
    st = path.stat()
    return {"repo_path": rel_repo_path, "size": st.st_size, "sha256": sha256, "lfs": sibling.lfs is not None,
            "git_oid": sibling.blob_id, "commit": commit, "mtime_ns": st.st_mtime_ns}


def _verified_entry(path: Path, sibling, old: dict | None, repo_path: str, commit: str) -> dict | None:
    """Manifest entry for an already present file that matches the hub, else None (needs a download)."""
    if not path.is_file():
        return None
    st = path.stat()
    if old and old.get("git_oid") == sibling.blob_id and old.get("size") == st.st_size \
            and old.get("mtime_ns") == st.st_mtime_ns:
        # Verified by an earlier run and untouched since: skip re-hashing many GB.
        return {**old, "repo_path": repo_path}
    try:
        sha256 = _check_hash(path, sibling, str(path))
    except ChecksumError as exc:
        log.warning("%s differs from the hub (%s); downloading it again", path, exc)
        return None
    return _entry(repo_path, sibling, sha256, path, commit)


def _check_free_space(root: Path, items) -> None:
    needed = 0
    for rel, sibling in items:
        size = sibling.lfs.size if sibling.lfs is not None else (sibling.size or 0)
        partial = _partial_path(root, rel, sibling)
        needed += size - (partial.stat().st_size if partial.exists() else 0)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise HubError(f"Not enough disk space under {root}: {needed / 1e9:.2f} GB to download, "
                       f"{free / 1e9:.2f} GB free.")


def _partial_path(root: Path, rel: str, sibling) -> Path:
    # Keyed by content id, so a partial file from another version of the file is never resumed.
    tag = (sibling.lfs.sha256 if sibling.lfs is not None else sibling.blob_id or "unknown")[:16]
    return root / PARTIAL_DIR / f"{rel}.{tag}.partial"


def _download_one(root: Path, rel: str, repo_path: str, sibling, repo_id: str, commit: str, endpoint: str,
                  token, retries: int, backoff_s: float, timeout_s: float) -> dict:
    dest = root / rel
    partial = _partial_path(root, rel, sibling)
    partial.parent.mkdir(parents=True, exist_ok=True)
    expected_size = sibling.lfs.size if sibling.lfs is not None else sibling.size
    url = hf_hub_url(repo_id, repo_path, repo_type="dataset", revision=commit, endpoint=endpoint)

    def attempt() -> None:
        # Fresh HEAD each attempt: an LFS file is served from a signed CDN URL that may have expired.
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, timeout=timeout_s)
        if expected_size is not None and meta.size is not None and meta.size != expected_size:
            raise ChecksumError(f"{rel}: the hub lists {expected_size} bytes but serves {meta.size}")
        headers = build_hf_headers(token=token)
        on_cdn = _origin(meta.location) != _origin(url)
        if on_cdn:
            headers.pop("authorization", None)  # never send the token to the CDN
        have = partial.stat().st_size if partial.exists() else 0
        if expected_size is not None and have > expected_size:
            partial.unlink()
            have = 0
        try:
            with open(partial, "ab") as f:
                http_get(meta.location, f, resume_size=have, headers=headers, expected_size=expected_size,
                         displayed_filename=rel)
        except HfHubHTTPError as exc:
            if on_cdn and exc.response is not None and exc.response.status_code in (401, 403):
                raise _CdnRefused(f"{rel}: the CDN answered {exc.response.status_code}") from exc
            raise

    _with_retries(attempt, retries, backoff_s, rel)
    try:
        sha256 = _check_hash(partial, sibling, rel)
    except ChecksumError:
        partial.unlink(missing_ok=True)
        raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)
    return _entry(repo_path, sibling, sha256, dest, commit)


# --------------------------------------------------------------------------- checkpoints
def _checkpoint_files(checkpoint_dir: Path) -> list[str]:
    """The files of ``checkpoint_dir`` that belong in a checkpoint repository (see ``checkpoint_repo_files``)."""
    allowed = checkpoint_repo_files()
    files = sorted(rel for rel in allowed if (checkpoint_dir / rel).is_file())
    left_out = sum(1 for p in checkpoint_dir.rglob("*") if p.is_file()) - len(files)
    if left_out:
        log.info("%d file(s) of %s are not part of a checkpoint repository and stay local", left_out, checkpoint_dir)
    return files


def publish_checkpoints(
    checkpoint_dir,
    repo_id: str,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload SSL encoder checkpoints",
) -> dict:
    """Upload a checkpoint directory (e.g. ``<root>/SSL``) to a model repository, creating it if needed.

    Uploads exactly ``checkpoint_repo_files()`` that exist: ``normalizer.json``, ``ssl_split.json``,
    ``ssl_features.json``, ``README.md`` and per block ``best.pt``, ``config.json``, ``metrics.json``. Anything
    else (embeddings, feature arrays, resume checkpoints, stray files) stays local.
    Returns ``{"repo_id", "commit", "commit_url", "files"}``.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir} does not exist")
    validate_repo_id(repo_id)
    files = _checkpoint_files(checkpoint_dir)
    if not any(f.endswith(".pt") for f in files):
        raise HubError(f"{checkpoint_dir} holds no checkpoint (*.pt, e.g. block1_<name>/best.pt) to publish; "
                       f"files considered: {files or 'none'}")
    token = token or get_token()
    if not token:
        raise HubError("Publishing needs a Hugging Face write token: set the environment variable HF_TOKEN "
                       "(or run `hf auth login`).")
    endpoint = _endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=checkpoint_dir, repo_type="model",
                                 commit_message=commit_message, allow_patterns=files)
    except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled) as exc:
        raise _offline_error(endpoint, exc, "publishing the checkpoints") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"Publishing to {repo_id} at {endpoint} failed: {exc}") from exc
    log.info("published %d file(s) to %s (commit %s)", len(files), repo_id, info.oid)
    return {"repo_id": repo_id, "commit": info.oid, "commit_url": info.commit_url, "files": files}


def fetch_checkpoints(
    repo_id_or_path,
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir=None,
    *,
    local_dir=None,
    token: str | bool | None = None,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 30.0,
) -> Path:
    """Local directory of checkpoints: an existing directory path is returned as is; otherwise
    ``repo_id_or_path`` is a model repository, whose ``checkpoint_repo_files()`` are downloaded
    (into the HF cache, or into ``local_dir``) and verified against the hub's checksums."""
    path = Path(repo_id_or_path).expanduser()
    if path.is_dir():
        return path
    repo_id = str(repo_id_or_path)
    try:
        validate_repo_id(repo_id)
    except Exception as exc:  # HFValidationError
        raise ValueError(f"{repo_id!r} is neither an existing directory nor a valid repo id") from exc
    endpoint = _endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    info = _repo_info(api, repo_id, "model", revision, endpoint, retries, backoff_s, timeout_s,
                      "fetching the checkpoints", OFFLINE_FETCH_HINT)
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    wanted = sorted(set(siblings).intersection(checkpoint_repo_files()))
    if not any(w.endswith(".pt") for w in wanted):
        raise NothingMatchedError(f"Model repo {repo_id} (commit {info.sha[:12]}) holds no best.pt checkpoint; "
                                  f"its files: {sorted(siblings) or 'none'}")
    try:
        folder = _with_retries(
            lambda: snapshot_download(repo_id, repo_type="model", revision=info.sha, allow_patterns=wanted,
                                      cache_dir=cache_dir, local_dir=local_dir, endpoint=endpoint, token=token,
                                      etag_timeout=timeout_s),
            retries, backoff_s, f"snapshot {repo_id}")
    except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled) as exc:
        raise _offline_error(endpoint, exc, "fetching the checkpoints", OFFLINE_FETCH_HINT) from exc
    folder = Path(folder)
    bad = []
    for rel in wanted:
        local = folder / rel
        if not local.is_file():
            bad.append(f"{rel}: missing after download")
            continue
        try:
            _check_hash(local, siblings[rel], rel)
        except ChecksumError as exc:
            bad.append(str(exc))
            target = local.resolve()  # in the HF cache the snapshot entry is a link to a blob
            local.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
    if bad:
        raise ChecksumError(f"Checkpoints from {repo_id}@{info.sha[:12]} failed verification:\n  - "
                            + "\n  - ".join(bad))
    log.info("checkpoints %s@%s verified in %s", repo_id, info.sha[:12], folder)
    return folder


# --------------------------------------------------------------------------- CLI
def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _splits_arg(value: str) -> list[str]:
    try:
        return _normalize_splits(_csv(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _kinds_arg(value: str) -> list[str]:
    try:
        return _normalize_kinds(_csv(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def _non_negative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def register_cli(subparsers) -> None:
    """Add the ``download``, ``publish`` and ``fetch`` subcommands; each sets ``func(args) -> exit code``."""
    p = subparsers.add_parser(
        "download", help="download the upstream dataset from the Hugging Face Hub",
        description="Download the upstream dataset (upstream layout) into the data root, resuming and verifying "
                    "checksums. Offline? Use --endpoint/HF_ENDPOINT for a mirror, or build from CIFs.")
    add_data_argument(p)
    p.add_argument("--repo-id", metavar="USER/REPO", default=DEFAULT_REPO_ID,
                   help=f"dataset repository (default: {DEFAULT_REPO_ID})")
    p.add_argument("--splits", metavar="SPLIT", type=_splits_arg, default=list(ALL_SPLITS),
                   help=f"comma-separated splits (default: {','.join(ALL_SPLITS)})")
    p.add_argument("--kinds", metavar="KIND", type=_kinds_arg, default=list(ALL_KINDS),
                   help=f"comma-separated kinds (default: {','.join(ALL_KINDS)})")
    p.add_argument("--revision", metavar="REV", help="branch, tag or commit (default: main)")
    p.add_argument("--endpoint", metavar="URL", help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--max-workers", metavar="N", type=_positive, default=4, help="parallel file downloads (default: 4)")
    p.add_argument("--retries", metavar="N", type=_non_negative, default=3, help="retries per file on transient errors")
    p.add_argument("--allow-missing", action="store_true",
                   help="download what exists when some requested files are not on the hub")
    p.set_defaults(func=_cmd_download)

    p = subparsers.add_parser(
        "publish", help="publish trained encoder checkpoints to a Hugging Face model repository",
        description="Upload <checkpoint dir> (default <data>/SSL: configs, metrics, normalizer.json, best.pt; "
                    "not embeddings, features or last.pt). The write token is read from HF_TOKEN.")
    p.add_argument("--repo-id", metavar="USER/REPO", required=True,
                   help="model repository, e.g. user/crys-rep-enrich-ssl")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="directory to upload (default: <data>/SSL)")
    add_data_argument(p)
    p.add_argument("--endpoint", metavar="URL", help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--message", metavar="TEXT", default="Upload SSL encoder checkpoints", help="commit message")
    p.set_defaults(func=_cmd_publish)

    p = subparsers.add_parser(
        "fetch", help="fetch published encoder checkpoints by repository name",
        description="Download and verify the configs and best.pt checkpoints of a model repository.")
    p.add_argument("--repo-id", metavar="USER/REPO", required=True,
                   help="model repository (or a local checkpoint directory)")
    p.add_argument("--revision", metavar="REV", help="branch, tag or commit (default: main)")
    p.add_argument("--endpoint", metavar="URL", help="hub URL (default: $HF_ENDPOINT or https://huggingface.co)")
    p.add_argument("--out", metavar="DIR", help="put the files in this directory (default: the Hugging Face cache)")
    p.set_defaults(func=_cmd_fetch)


def _cmd_download(args) -> int:
    root = resolve_data_root(args.data)
    manifest = download_dataset(root, repo_id=args.repo_id, splits=args.splits, kinds=args.kinds,
                                revision=args.revision, endpoint=args.endpoint, max_workers=args.max_workers,
                                retries=args.retries, strict=not args.allow_missing)
    files = manifest["files"]
    total = sum(f["size"] for f in files.values())
    print(f"{args.repo_id}@{manifest['commit'][:12]}: {len(files)} file(s), {total / 1e6:.1f} MB verified "
          f"in {root}; manifest {root / MANIFEST_NAME}")
    for rel in manifest["missing"]:
        print(f"  not on the hub: {rel}")
    return 0


def _cmd_publish(args) -> int:
    checkpoint_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else resolve_data_root(args.data) / "SSL"
    out = publish_checkpoints(checkpoint_dir, args.repo_id, endpoint=args.endpoint, private=args.private,
                              commit_message=args.message)
    print(f"published {len(out['files'])} file(s) to {out['repo_id']} at commit {out['commit']}")
    for f in out["files"]:
        print(f"  {f}")
    return 0


def _cmd_fetch(args) -> int:
    folder = fetch_checkpoints(args.repo_id, revision=args.revision, endpoint=args.endpoint, local_dir=args.out)
    print(folder)
    return 0
