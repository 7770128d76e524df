"""A loopback fake of the Hugging Face Hub HTTP API, for tests that must never touch the network.

It implements only the endpoints that huggingface_hub (v2.x, HTTP path, Xet disabled) calls for
downloading files and for uploading a folder, with the headers and JSON shapes of the real Hub:

Hub origin (``FakeHub.url``, passed to huggingface_hub as ``endpoint=``):
  GET  /api/{models,datasets}/<ns>/<name>[/revision/<rev>][?blobs=true]   repo info (sha, siblings)
  GET  /api/{models,datasets}/<ns>/<name>/tree/<rev>[/<path>]             tree listing, Link-header pagination
  POST /api/{models,datasets}/<ns>/<name>/paths-info/<rev>                 form data ``paths``, ``expand``
  HEAD|GET /[datasets/]<ns>/<name>/resolve/<rev>/<path>
        regular file: 200, ETag = git blob sha1, X-Repo-Commit, Content-Length, Range -> 206
        LFS file:     302 to the CDN origin, X-Linked-Etag = sha256, X-Linked-Size, X-Repo-Commit
  POST /api/repos/create                                                   409 when it exists
  POST /api/{models,datasets}/<ns>/<name>/preupload/<rev>                  uploadMode lfs|regular, remote oid
  POST /api/{models,datasets}/<ns>/<name>/commit/<rev>                     NDJSON: header, file, lfsFile, deleted*
  POST /[datasets/]<ns>/<name>.git/info/lfs/objects/batch                 LFS batch API ("basic" transfer)
  POST /[datasets/]<ns>/<name>.git/info/lfs/objects/verify
CDN origin (a second port, so the client treats it as another host, as it does cdn-lfs.hf.co):
  HEAD|GET /repos/<sha256>?filename=<path>    LFS content, Range -> 206
  PUT  /upload/<sha256>                        LFS upload target (content must hash to the oid)

Test hooks: ``add_fault`` (answer an HTTP status, or drop the connection after N body bytes, for the next
matching request(s)), ``corrupt`` (serve other bytes than the advertised sha256), and ``requests`` (a log of
every request with its Range header, status and body bytes sent).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

# Like the default .gitattributes of a new Hub repo: binary formats are LFS-tracked, and the Hub
# also sends anything above 10 MB through LFS.
LFS_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".bin", ".safetensors", ".pkl", ".h5", ".zip", ".gz", ".tar")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
DEFAULT_TOKEN = "hf_fake_write_token"
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()

_REPO = r"(?P<repo>[^/]+/[^/]+?)"
_HUB_ROUTES = [
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("GET", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/(?P<type>models|datasets)/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("POST", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}\.git/info/lfs/objects/verify$"), "lfs_verify"),
    ("HEAD", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/(?P<prefix>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]
_CDN_ROUTES = [
    ("HEAD", re.compile(r"^/repos/(?P<oid>[0-9a-f]{64})$"), "cdn_get"),
    ("GET", re.compile(r"^/repos/(?P<oid>[0-9a-f]{64})$"), "cdn_get"),
    ("PUT", re.compile(r"^/upload/(?P<oid>[0-9a-f]{64})$"), "cdn_put"),
]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Blob:
    content: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def oid(self) -> str:
        """The git object id: of the content for a regular file, of the pointer file for an LFS file."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str  # "model" | "dataset"
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev, rev)
        return self.commits.get(sha)

    @property
    def prefix(self) -> str:
        return "datasets/" if self.repo_type == "dataset" else ""


@dataclass
class Fault:
    method: str
    path_contains: str
    status: int | None = None  # answer this HTTP status ...
    drop_after: int | None = None  # ... or send this many body bytes, then close the connection
    times: int = 1
    only_with_range: bool = False


@dataclass
class RequestRecord:
    server: str  # "hub" | "cdn"
    method: str
    path: str  # unquoted path + query
    range: str | None
    authorized: bool
    status: int = 0
    body_bytes: int = 0
    fault: str | None = None


class _Dropped(Exception):
    """The handler closed the connection on purpose (fault injection)."""


class FakeHub:
    """In-process fake Hub on 127.0.0.1 (random ports). Use as a context manager or start()/stop()."""

    def __init__(self, page_size: int = 25, tokens: tuple[str, ...] = (DEFAULT_TOKEN,)):
        self.page_size = page_size
        self.tokens = set(tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content (what was uploaded / committed)
        self.corrupted: dict[str, bytes] = {}  # sha256 -> bytes served instead of the real content
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._clock = 0
        self._servers: list[ThreadingHTTPServer] = []
        self.url = self.cdn_url = ""

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FakeHub:
        for name in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self, name))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name=f"fake-{name}",
                             daemon=True).start()
            self._servers.append(server)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- seeding and inspection
    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        with self._lock:
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private)
            self.repos[(repo_type, repo_id)] = repo
            # A new Hub repo starts with one commit holding its .gitattributes.
            self._commit(repo, "main", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)}, [], "initial commit")
            return repo

    def commit_files(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
                     message: str = "Upload files", create: bool = True, lfs: bool | None = None) -> str:
        """Seed a repo: commit ``files``, as LFS or regular files by the rule the preupload endpoint uses
        (or all as ``lfs`` when given: a repo whose .gitattributes does not track *.npy stores them in git)."""
        with self._lock:
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                if not create:
                    raise KeyError(repo_id)
                repo = self.create_repo(repo_id, repo_type)
            blobs = {}
            for path, content in files.items():
                blob = Blob(content, lfs=_is_lfs(path, len(content)) if lfs is None else lfs)
                if blob.lfs:
                    self.lfs_store[blob.sha256] = content
                blobs[path] = blob
            return self._commit(repo, "main", blobs, [], message).sha

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, Blob]:
        return dict(self.repo(repo_id, repo_type).resolve(revision).files)

    def head(self, repo_id: str, repo_type: str = "model") -> str:
        return self.repo(repo_id, repo_type).branches["main"]

    def corrupt(self, repo_id: str, path: str, repo_type: str = "model") -> None:
        """Serve bytes that do not match the checksums advertised for ``path`` (same length, one byte flipped)."""
        blob = self.files(repo_id, repo_type)[path]
        bad = bytearray(blob.content)
        bad[len(bad) // 2] ^= 0xFF
        with self._lock:
            self.corrupted[blob.sha256] = bytes(bad)

    def add_fault(self, method: str, path_contains: str, *, status: int | None = None,
                  drop_after: int | None = None, times: int = 1, only_with_range: bool = False) -> None:
        assert (status is None) != (drop_after is None), "give either status or drop_after"
        with self._lock:
            self.faults.append(Fault(method, path_contains, status, drop_after, times, only_with_range))

    def requests_for(self, path_contains: str, method: str | None = None) -> list[RequestRecord]:
        return [r for r in self.requests
                if path_contains in r.path and (method is None or r.method == method)]

    # ---------------------------------------------------------------- internals
    def _commit(self, repo: Repo, branch: str, added: dict[str, Blob], deleted: list[tuple[str, bool]],
                title: str) -> Commit:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path, is_folder in deleted:
            if is_folder:
                files = {p: b for p, b in files.items() if not p.startswith(path.rstrip("/") + "/")}
            else:
                files.pop(path, None)
        files.update(added)
        self._clock += 1
        digest = hashlib.sha1(json.dumps(
            [parent, title, self._clock, sorted((p, b.oid) for p, b in files.items())]).encode()).hexdigest()
        commit = Commit(sha=digest, parent=parent, title=title,
                        date=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), files=files)
        repo.commits[digest] = commit
        repo.branches[branch] = digest
        return commit

    def _take_fault(self, method: str, path: str, has_range: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path_contains in path \
                        and (has_range or not fault.only_with_range):
                    fault.times -= 1
                    return fault
        return None


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size > LFS_SIZE_THRESHOLD


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` -> inclusive (start, end), or None when absent."""
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise ValueError(header)
    if m.group(1) == "":  # suffix range: last N bytes
        n = int(m.group(2))
        return max(size - n, 0), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    return start, min(end, size - 1)


def _make_handler(hub: FakeHub, server_name: str):
    routes = _HUB_ROUTES if server_name == "hub" else _CDN_ROUTES

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        # -- plumbing --------------------------------------------------------
        def _dispatch(self, method: str) -> None:
            split = urlsplit(self.path)
            path = unquote(split.path)
            self.query = parse_qs(split.query)
            auth = self.headers.get("Authorization", "")
            self.token = auth[7:] if auth.lower().startswith("bearer ") else None
            self.record = RequestRecord(
                server=server_name, method=method, path=path + (f"?{unquote(split.query)}" if split.query else ""),
                range=self.headers.get("Range"), authorized=self.token in hub.tokens)
            with hub._lock:
                hub.requests.append(self.record)
            self.body = self._read_body()
            self.fault = hub._take_fault(method, self.record.path, self.record.range is not None)
            if self.fault is not None and self.fault.status is not None:
                self.record.fault = f"status {self.fault.status}"
                return self._json(self.fault.status, {"error": "injected fault"})
            for route_method, pattern, name in routes:
                if route_method != method:
                    continue
                m = pattern.match(split.path)  # match on the quoted path: a revision may contain '/'
                if m:
                    groups = {k: (unquote(v) if v is not None else None) for k, v in m.groupdict().items()}
                    try:
                        return getattr(self, f"_h_{name}")(**groups)
                    except _Dropped:
                        return
            self._json(404, {"error": f"no route for {method} {path}"})

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
                  content_length: int | None = None) -> None:
            self.record.status = status
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
            self.end_headers()
            if self.command != "HEAD" and body:
                drop = self.fault.drop_after if self.fault is not None else None
                if drop is not None and drop < len(body):
                    self.record.fault = f"dropped after {drop} bytes"
                    self.wfile.write(body[:drop])
                    self.wfile.flush()
                    self.record.body_bytes = drop
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    raise _Dropped
                self.wfile.write(body)
                self.record.body_bytes = len(body)

        def _json(self, status: int, payload, headers: dict | None = None) -> None:
            body = json.dumps(payload).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
            extra = dict(headers or {})
            if code:
                extra["X-Error-Code"] = code
            extra["X-Error-Message"] = message
            self._json(status, {"error": message}, extra)

        def _serve_bytes(self, content: bytes, headers: dict) -> None:
            headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream", **headers}
            try:
                rng = _parse_range(self.headers.get("Range"), len(content))
            except ValueError:
                return self._error(416, None, "bad range")
            if rng is None:
                return self._send(200, content, headers)
            start, end = rng
            if start >= len(content):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            self._send(206, content[start:end + 1], headers)

        def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
            repo = hub.repos.get((repo_type, repo_id))
            if repo is None or (repo.private and self.token not in hub.tokens):
                self._error(404 if repo is None else 401, "RepoNotFound", "Repository not found")
                return None
            return repo

        def _commit_of(self, repo: Repo, rev: str) -> Commit | None:
            commit = repo.resolve(rev)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return commit

        def _need_write(self) -> bool:
            if self.token is None:
                self._error(401, None, "Invalid username or password.")
                return False
            if self.token not in hub.tokens:
                self._error(401, None, "Invalid credentials in Authorization header")
                return False
            return True

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        # -- read endpoints ----------------------------------------------------
        def _h_info(self, type: str, repo: str, rev: str | None):
            r = self._repo(type[:-1], repo)
            if r is None:
                return
            commit = self._commit_of(r, rev or "main")
            if commit is None:
                return
            with_blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for path, blob in sorted(commit.files.items()):
                sibling = {"rfilename": path}
                if with_blobs:
                    sibling.update(size=blob.size, blobId=blob.oid)
                    if blob.lfs:
                        sibling["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": len(blob.pointer)}
                siblings.append(sibling)
            self._json(200, {
                "_id": hashlib.md5(repo.encode()).hexdigest()[:24], "id": repo, "author": repo.split("/")[0],
                "sha": commit.sha, "lastModified": commit.date, "createdAt": commit.date, "private": r.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
            })

        def _entries(self, commit: Commit, base: str, recursive: bool, expand: bool) -> list[dict]:
            base = base.strip("/")
            prefix = f"{base}/" if base else ""
            dirs: set[str] = set()
            files = []
            for path, blob in sorted(commit.files.items()):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix):].split("/")
                for depth in range(1, len(rest)):
                    if recursive or depth == 1:
                        dirs.add(prefix + "/".join(rest[:depth]))
                if recursive or len(rest) == 1:
                    entry = blob.tree_entry(path)
                    if expand:
                        entry["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
                    files.append(entry)
            folders = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                       for d in sorted(dirs)]
            return folders + files

        def _h_tree(self, type: str, repo: str, rev: str, path: str | None):
            r = self._repo(type[:-1], repo)
            commit = r and self._commit_of(r, rev)
            if commit is None:
                return
            recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
            expand = self.query.get("expand", ["false"])[0].lower() == "true"
            entries = self._entries(commit, path or "", recursive, expand)
            if path and not entries and path not in commit.files:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
            page_size = 50 if expand else hub.page_size  # the Hub caps expanded pages lower
            start = int(self.query.get("cursor", ["0"])[0])
            page = entries[start:start + page_size]
            headers = {}
            if start + page_size < len(entries):
                tree_path = f"/api/{type}/{repo}/tree/{quote(rev, safe='')}" + (f"/{quote(path)}" if path else "")
                headers["Link"] = (f"<{hub.url}{tree_path}?recursive={recursive}&expand={expand}"
                                   f"&cursor={start + page_size}>; rel=\"next\"")
            self._json(200, page, headers)

        def _h_paths_info(self, type: str, repo: str, rev: str):
            r = self._repo(type[:-1], repo)
            commit = r and self._commit_of(r, rev)
            if commit is None:
                return
            form = parse_qs(self.body.decode())
            expand = form.get("expand", ["False"])[0].lower() == "true"
            out = []
            for p in form.get("paths", []):
                p = p.strip("/")
                if p in commit.files:
                    entry = commit.files[p].tree_entry(p)
                    if expand:
                        entry["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
                    out.append(entry)
                elif any(f.startswith(p + "/") for f in commit.files):
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0,
                                "path": p})
            self._json(200, out)

        def _h_resolve(self, prefix: str | None, repo: str, rev: str, path: str):
            r = self._repo("dataset" if prefix else "model", repo)
            commit = r and self._commit_of(r, rev)
            if commit is None:
                return
            blob = commit.files.get(path)
            if blob is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}",
                                   {"X-Repo-Commit": commit.sha})
            common = {"X-Repo-Commit": commit.sha}
            if blob.lfs:
                location = f"{hub.cdn_url}/repos/{blob.sha256}?filename={quote(path)}"
                return self._send(302, b"", {**common, "Location": location, "ETag": f'"{blob.oid}"',
                                             "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": blob.size})
            self._serve_bytes(hub.corrupted.get(blob.sha256, blob.content), {**common, "ETag": f'"{blob.oid}"'})

        def _h_cdn_get(self, oid: str):
            content = hub.corrupted.get(oid, hub.lfs_store.get(oid))
            if content is None:
                return self._error(404, None, "NoSuchKey")
            self._serve_bytes(content, {"ETag": f'"{oid}"'})

        # -- write endpoints ---------------------------------------------------
        def _h_create(self):
            if not self._need_write():
                return
            payload = json.loads(self.body or b"{}")
            repo_type = payload.get("type") or "model"
            namespace = payload.get("organization") or "tester"
            repo_id = f"{namespace}/{payload['name']}"
            prefix = "datasets/" if repo_type == "dataset" else ""
            url = f"{hub.url}/{prefix}{repo_id}"
            if (repo_type, repo_id) in hub.repos:
                return self._json(409, {"error": f"You already created this {repo_type} repo", "url": url})
            hub.create_repo(repo_id, repo_type, private=payload.get("visibility") == "private"
                            or bool(payload.get("private")))
            self._json(200, {"url": url, "name": repo_id, "id": repo_id})

        def _h_preupload(self, type: str, repo: str, rev: str):
            if not self._need_write():
                return
            r = self._repo(type[:-1], repo)
            commit = r and self._commit_of(r, rev)
            if commit is None:
                return
            out = []
            for f in json.loads(self.body)["files"]:
                existing = commit.files.get(f["path"])
                lfs = _is_lfs(f["path"], f["size"])
                remote = None
                if existing is not None:
                    remote = existing.sha256 if existing.lfs else existing.oid
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": remote})
            self._json(200, {"files": out, "commitOid": commit.sha})

        def _h_lfs_batch(self, prefix: str | None, repo: str):
            if not self._need_write():
                return
            r = self._repo("dataset" if prefix else "model", repo)
            if r is None:
                return
            payload = json.loads(self.body)
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_store:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.cdn_url}/upload/{obj['oid']}", "header": {}},
                        "verify": {"href": f"{hub.url}/{r.prefix}{repo}.git/info/lfs/objects/verify",
                                   "header": {}},
                    }
                objects.append(entry)
            body = json.dumps({"transfer": "basic", "objects": objects}).encode()
            self._send(200, body, {"Content-Type": "application/vnd.git-lfs+json"})

        def _h_cdn_put(self, oid: str):
            if hashlib.sha256(self.body).hexdigest() != oid:
                return self._error(400, None, "content does not match the object id")
            with hub._lock:
                hub.lfs_store[oid] = self.body
            self._send(200, b"", {"ETag": f'"{oid}"'})

        def _h_lfs_verify(self, prefix: str | None, repo: str):
            if not self._need_write():
                return
            payload = json.loads(self.body)
            stored = hub.lfs_store.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                return self._error(404, None, "object not found or wrong size")
            self._json(200, {"success": True})

        def _h_commit(self, type: str, repo: str, rev: str):
            if not self._need_write():
                return
            r = self._repo(type[:-1], repo)
            if r is None:
                return
            if rev not in r.branches:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            title, added, deleted = "", {}, []
            for line in self.body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    title = value["summary"]
                    parent = value.get("parentCommit")
                    if parent is not None and parent != r.branches[rev]:
                        return self._error(412, None, "parent commit is not the head of the branch")
                elif key == "file":
                    added[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    content = hub.lfs_store.get(value["oid"])
                    if content is None:
                        return self._error(422, None, f"LFS object {value['oid']} was never uploaded")
                    added[value["path"]] = Blob(content, lfs=True)
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append((value["path"], key == "deletedFolder"))
                else:
                    return self._error(400, None, f"unknown commit operation {key!r}")
            with hub._lock:
                commit = hub._commit(r, rev, added, deleted, title)
            self._json(200, {"success": True, "commitOid": commit.sha,
                             "commitUrl": f"{hub.url}/{r.prefix}{repo}/commit/{commit.sha}",
                             "hookOutput": "", "pullRequestUrl": None})

    return Handler
