"""ftcp.hub against a loopback fake hub (tests/fake_hub.py); no request ever leaves 127.0.0.1."""
from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from fake_hub import DEFAULT_TOKEN, FakeHub  # pytest puts tests/ (no __init__.py) on sys.path
from huggingface_hub import constants
from huggingface_hub.utils import _http as hf_http

from ftcp import hub as H

DATASET = "danial199472/Crys_Rep_Enrich"
FTCP_10_TRAIN = "Splitted_Data/Split_10Test_90Train/Train/Train_FTCP_Data.npy"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def hf_sandbox(tmp_path, monkeypatch):
    """Isolate huggingface_hub: temp HF_HOME/cache/token, no Xet (the fake hub speaks plain LFS), and a
    client that refuses any host but loopback, so huggingface.co can never be contacted."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_TOKEN_PATH": home / "token",
                        "HF_STORED_TOKENS_PATH": home / "stored_tokens"}.items():
        monkeypatch.setattr(constants, name, str(value))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "CRYS_REP_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub 2.x builds its user agent with a once-a-day GET of <default endpoint>/api/agent-harnesses,
    # whatever endpoint= says; telemetry off stops it (the guard below caught it).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)

    blocked = []

    def loopback_only(request):
        if request.url.host not in ("127.0.0.1", "localhost"):
            blocked.append(str(request.url))
            raise RuntimeError(f"test tried to reach {request.url}")

    def factory():
        client = hf_http.default_client_factory()
        hooks = client.event_hooks
        client.event_hooks = {"request": [loopback_only, *hooks["request"]], "response": hooks["response"]}
        return client

    hf_http.set_client_factory(factory)
    yield blocked
    hf_http.set_client_factory(hf_http.default_client_factory)
    assert not blocked, f"requests left loopback: {blocked}"


def test_sandbox_blocks_the_real_hub(hf_sandbox):
    with pytest.raises(RuntimeError, match="test tried to reach https://huggingface.co"):
        hf_http.get_session().get(f"{constants._HF_DEFAULT_ENDPOINT}/api/datasets/{DATASET}")
    assert hf_sandbox == [f"{constants._HF_DEFAULT_ENDPOINT}/api/datasets/{DATASET}"]
    hf_sandbox.clear()


@pytest.fixture
def fake_hub():
    with FakeHub(page_size=25) as hub:
        yield hub


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def upstream_files() -> dict[str, bytes]:
    """A miniature of the upstream dataset: every split x Train/Test x the 7 upstream files."""
    rng = np.random.default_rng(0)
    files = {}
    pool = np.array([f"mp-{i}" for i in range(1000, 1010)], dtype=object)
    for split, folder in H.SPLIT_DIRS.items():
        order = rng.permutation(len(pool))
        n_test = 2 if split == "group" else max(1, int(split) * len(pool) // 100)
        for part, idx in (("Train", order[n_test:]), ("Test", order[:n_test])):
            ids = pool[idx]
            base = f"{folder}/{part}/{part}_"
            files[base + "FTCP_Data.npy"] = _npy(rng.random((len(ids), 400, 63), dtype=np.float32))
            files[base + "FTCP_Material_IDs.npy"] = _npy(ids)
            files[base + "Extracted_Features_Data.npy"] = _npy(rng.random((len(ids), 2048), dtype=np.float32))
            files[base + "Extracted_Features_Material_IDs.npy"] = _npy(ids)
            files[base + "FormationEnergy_Labels.npy"] = _npy(rng.normal(-1.0, 1.0, len(ids)))
            files[base + "BandGap_Labels.npy"] = _npy(rng.gamma(1.0, 1.5, len(ids)))
            files[base + "Material_IDs.npy"] = _npy(ids)
    files["README.md"] = b"# Crys_Rep_Enrich\nFTCP tensors and SSL features.\n"
    return files


@pytest.fixture
def dataset_hub(fake_hub, upstream_files):
    fake_hub.commit_files(DATASET, upstream_files, repo_type="dataset", message="Upload dataset")
    return fake_hub


def _download(hub, root, **kw):
    kw.setdefault("backoff_s", 0.01)
    return H.download_dataset(root, endpoint=hub.url, **kw)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fake_hub_answers_the_library_read_api(dataset_hub, upstream_files, tmp_path):
    """The fake speaks what huggingface_hub expects: paginated tree, paths-info with LFS metadata, HEAD/GET."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=dataset_hub.url)
    files = {f.path: f for f in api.list_repo_tree(DATASET, repo_type="dataset", recursive=True, expand=True)
             if hasattr(f, "lfs")}
    assert set(files) == set(upstream_files) | {".gitattributes"}
    assert len(dataset_hub.requests_for("/tree/", "GET")) > 1  # 70+ entries: the Link header was followed
    blobs = dataset_hub.files(DATASET, "dataset")
    assert files[FTCP_10_TRAIN].lfs.sha256 == blobs[FTCP_10_TRAIN].sha256
    assert files[FTCP_10_TRAIN].last_commit.oid == dataset_hub.head(DATASET, "dataset")
    info = api.get_paths_info(DATASET, [FTCP_10_TRAIN, "README.md", "Group_Splitting"], repo_type="dataset")
    by_path = {i.path: i for i in info}
    assert by_path[FTCP_10_TRAIN].lfs.size == len(upstream_files[FTCP_10_TRAIN])
    assert by_path["README.md"].lfs is None and by_path["README.md"].blob_id == blobs["README.md"].oid
    assert type(by_path["Group_Splitting"]).__name__ == "RepoFolder"
    path = hf_hub_download(DATASET, FTCP_10_TRAIN, repo_type="dataset", endpoint=dataset_hub.url,
                           cache_dir=tmp_path / "cache")
    assert Path(path).read_bytes() == upstream_files[FTCP_10_TRAIN]


# --------------------------------------------------------------------------- dataset download
def test_full_download_lands_in_upstream_layout(dataset_hub, upstream_files, tmp_path):
    root = tmp_path / "Data"
    manifest = _download(dataset_hub, root)

    data_paths = sorted(p for p in upstream_files if p.endswith(".npy"))
    assert len(data_paths) == 5 * 2 * 7
    for rel in data_paths:
        assert (root / rel).read_bytes() == upstream_files[rel], rel
    assert not (root / "README.md").exists()  # only the requested data files
    assert np.load(root / FTCP_10_TRAIN).shape[1:] == (400, 63)
    assert not any(p.is_file() for p in (root / H.PARTIAL_DIR).rglob("*"))

    on_disk = json.loads((root / H.MANIFEST_NAME).read_text())
    assert on_disk == manifest
    assert manifest["complete"] and manifest["commit"] == dataset_hub.head(DATASET, "dataset")
    assert sorted(manifest["files"]) == data_paths
    blobs = dataset_hub.files(DATASET, "dataset")
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == blobs[rel].sha256 and entry["size"] == blobs[rel].size and entry["lfs"]

    # A second run finds everything verified and downloads nothing.
    n_before = len(dataset_hub.requests_for("/repos/", "GET"))
    again = _download(dataset_hub, root)
    assert again["complete"] and len(dataset_hub.requests_for("/repos/", "GET")) == n_before


def test_subset_only_split_10_ftcp(dataset_hub, upstream_files, tmp_path):
    root = tmp_path / "Data"
    manifest = _download(dataset_hub, root, splits=("10",), kinds=("ftcp",))
    expected = [f"Splitted_Data/Split_10Test_90Train/{p}/{p}_{s}" for p in ("Test", "Train")
                for s in ("FTCP_Data.npy", "FTCP_Material_IDs.npy")]
    assert sorted(manifest["files"]) == sorted(expected)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.npy")) == sorted(expected)
    fetched = {r.path.split("filename=")[1] for r in dataset_hub.requests_for("/repos/", "GET")}
    assert fetched == set(expected)


def test_tampered_local_file_is_downloaded_again(dataset_hub, upstream_files, tmp_path):
    root = tmp_path / "Data"
    _download(dataset_hub, root, splits=("20",), kinds=("labels",))
    victim = root / "Splitted_Data/Split_20Test_80Train/Test/Test_BandGap_Labels.npy"
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0xFF
    victim.write_bytes(bytes(raw))
    _download(dataset_hub, root, splits=("20",), kinds=("labels",))
    assert victim.read_bytes() == upstream_files[victim.relative_to(root).as_posix()]


def test_dropped_connection_resumes_with_range(dataset_hub, upstream_files, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)  # so bytes reach disk before the drop
    dataset_hub.add_fault("GET", FTCP_10_TRAIN, drop_after=200_000)
    root = tmp_path / "Data"
    _download(dataset_hub, root, splits=("10",), kinds=("ftcp",))

    gets = dataset_hub.requests_for(FTCP_10_TRAIN, "GET")
    assert [g.fault for g in gets] == ["dropped after 200000 bytes", None]
    assert gets[0].range is None
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    size = len(upstream_files[FTCP_10_TRAIN])
    assert 0 < resumed_at <= 200_000 and gets[1].status == 206 and gets[1].body_bytes == size - resumed_at
    assert (root / FTCP_10_TRAIN).read_bytes() == upstream_files[FTCP_10_TRAIN]


def test_interrupted_run_continues_from_partial_file(dataset_hub, upstream_files, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    # The connection drops mid-file, and the library's own resume attempt fails too: the run gives up.
    dataset_hub.add_fault("GET", FTCP_10_TRAIN, drop_after=300_000)
    dataset_hub.add_fault("GET", FTCP_10_TRAIN, status=500, only_with_range=True)
    root = tmp_path / "Data"
    with pytest.raises(H.DownloadError) as err:
        _download(dataset_hub, root, splits=("10",), kinds=("ftcp",), retries=0)
    assert list(err.value.failures) == [FTCP_10_TRAIN] and "Re-run" in str(err.value)
    assert not (root / FTCP_10_TRAIN).exists()
    partials = list((root / H.PARTIAL_DIR).rglob("*.partial"))
    assert len(partials) == 1
    have = partials[0].stat().st_size
    assert 0 < have <= 300_000
    assert json.loads((root / H.MANIFEST_NAME).read_text())["complete"] is False

    n_before = len(dataset_hub.requests_for(FTCP_10_TRAIN, "GET"))
    manifest = _download(dataset_hub, root, splits=("10",), kinds=("ftcp",), retries=0)
    second = dataset_hub.requests_for(FTCP_10_TRAIN, "GET")[n_before:]
    assert len(second) == 1 and second[0].range == f"bytes={have}-" and second[0].status == 206
    assert second[0].body_bytes == len(upstream_files[FTCP_10_TRAIN]) - have
    assert (root / FTCP_10_TRAIN).read_bytes() == upstream_files[FTCP_10_TRAIN]
    assert manifest["complete"] and not partials[0].exists()


def test_transient_503_is_retried(dataset_hub, upstream_files, tmp_path):
    dataset_hub.add_fault("GET", f"/api/datasets/{DATASET}", status=503)
    dataset_hub.add_fault("HEAD", FTCP_10_TRAIN, status=503)
    dataset_hub.add_fault("GET", FTCP_10_TRAIN, status=503)
    root = tmp_path / "Data"
    manifest = _download(dataset_hub, root, splits=("10",), kinds=("ftcp",), retries=2)
    assert manifest["complete"]
    assert [r.status for r in dataset_hub.requests_for(f"/api/datasets/{DATASET}")] == [503, 200]
    # each attempt starts with a fresh HEAD (a signed CDN URL may have expired)
    assert [r.status for r in dataset_hub.requests_for(FTCP_10_TRAIN, "HEAD")] == [503, 302, 302]
    assert [r.status for r in dataset_hub.requests_for(FTCP_10_TRAIN, "GET")] == [503, 200]
    assert (root / FTCP_10_TRAIN).read_bytes() == upstream_files[FTCP_10_TRAIN]


def test_refused_cdn_url_gets_a_fresh_one(dataset_hub, upstream_files, tmp_path):
    # A signed CDN URL can expire during a multi-GB download: the retry asks the hub for a new one.
    dataset_hub.add_fault("GET", FTCP_10_TRAIN, status=403)
    manifest = _download(dataset_hub, tmp_path / "Data", splits=("10",), kinds=("ftcp",), retries=1)
    assert manifest["complete"]
    assert [r.status for r in dataset_hub.requests_for(FTCP_10_TRAIN, "GET")] == [403, 200]
    assert len(dataset_hub.requests_for(FTCP_10_TRAIN, "HEAD")) == 2


def test_persistent_503_fails_after_retries(dataset_hub, tmp_path):
    dataset_hub.add_fault("GET", FTCP_10_TRAIN, status=503, times=10)
    with pytest.raises(H.DownloadError) as err:
        _download(dataset_hub, tmp_path / "Data", splits=("10",), kinds=("ftcp",), retries=2)
    assert list(err.value.failures) == [FTCP_10_TRAIN] and "503" in str(err.value)
    assert len(dataset_hub.requests_for(FTCP_10_TRAIN, "GET")) == 3


def test_checksum_mismatch_is_rejected(dataset_hub, tmp_path):
    dataset_hub.corrupt(DATASET, FTCP_10_TRAIN, repo_type="dataset")
    root = tmp_path / "Data"
    with pytest.raises(H.DownloadError) as err:
        _download(dataset_hub, root, splits=("10",), kinds=("ftcp",))
    failure = err.value.failures[FTCP_10_TRAIN]
    assert isinstance(failure, H.ChecksumError)
    expected = dataset_hub.files(DATASET, "dataset")[FTCP_10_TRAIN].sha256
    assert "sha256" in str(failure) and expected in str(failure) and "not kept" in str(failure)
    assert not (root / FTCP_10_TRAIN).exists()
    assert not list((root / H.PARTIAL_DIR).rglob("*.partial"))
    manifest = json.loads((root / H.MANIFEST_NAME).read_text())
    assert FTCP_10_TRAIN not in manifest["files"] and FTCP_10_TRAIN in manifest["failed"]
    assert len(manifest["files"]) == 3 and not manifest["complete"]  # the three good files are kept


def test_regular_git_files_are_verified_by_blob_sha1(fake_hub, upstream_files, tmp_path):
    ids = {p: b for p, b in upstream_files.items() if p.endswith("_Material_IDs.npy") and "Split_30" in p}
    fake_hub.commit_files(DATASET, ids, repo_type="dataset", lfs=False)  # stored in git, not LFS
    root = tmp_path / "Data"
    manifest = _download(fake_hub, root, splits=("30",), kinds=("ids",))
    blobs = fake_hub.files(DATASET, "dataset")
    for rel, entry in manifest["files"].items():
        assert not entry["lfs"] and entry["git_oid"] == blobs[rel].oid
        assert (root / rel).read_bytes() == upstream_files[rel]
    assert not fake_hub.requests_for("/repos/")  # served by /resolve itself, no CDN redirect

    rel = "Splitted_Data/Split_30Test_70Train/Test/Test_Material_IDs.npy"
    (root / rel).unlink()
    fake_hub.corrupt(DATASET, rel, repo_type="dataset")
    with pytest.raises(H.DownloadError, match="git blob sha1") as err:
        _download(fake_hub, root, splits=("30",), kinds=("ids",))
    assert isinstance(err.value.failures[rel], H.ChecksumError) and not (root / rel).exists()


def test_unreachable_endpoint_raises_offline_error(tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(H.OfflineError) as err:
        H.download_dataset(tmp_path / "Data", endpoint=endpoint)
    msg = str(err.value)
    assert endpoint in msg and "Cannot reach" in msg
    assert "HF_ENDPOINT" in msg and "mirror" in msg and "python -m ftcp build" in msg
    assert not (tmp_path / "Data").exists()


def test_hf_hub_offline_raises_offline_error(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(H.OfflineError, match="HF_HUB_OFFLINE"):
        H.download_dataset(tmp_path / "Data", endpoint=fake_hub.url)
    assert fake_hub.requests == []


def test_nothing_matched_is_an_error(fake_hub, tmp_path):
    fake_hub.commit_files(DATASET, {"README.md": b"empty"}, repo_type="dataset")
    with pytest.raises(H.NothingMatchedError) as err:
        _download(fake_hub, tmp_path / "Data", splits=("30",), kinds=("ftcp",))
    msg = str(err.value)
    assert "Splitted_Data/Split_30Test_70Train/Train/Train_FTCP_Data.npy" in msg and "README.md" in msg
    assert not list((tmp_path / "Data").rglob("*.npy")) if (tmp_path / "Data").exists() else True


def test_partly_missing_files_strict_and_lenient(fake_hub, upstream_files, tmp_path):
    no_band_gap = {p: b for p, b in upstream_files.items() if "BandGap" not in p}
    fake_hub.commit_files(DATASET, no_band_gap, repo_type="dataset")
    with pytest.raises(H.NothingMatchedError, match="Train_BandGap_Labels.npy"):
        _download(fake_hub, tmp_path / "Data", splits=("40",), kinds=("labels",))

    manifest = _download(fake_hub, tmp_path / "Data", splits=("40",), kinds=("labels",), strict=False)
    assert sorted(Path(m).name for m in manifest["missing"]) == ["Test_BandGap_Labels.npy",
                                                                 "Train_BandGap_Labels.npy"]
    assert sorted(Path(f).name for f in manifest["files"]) == ["Test_FormationEnergy_Labels.npy",
                                                               "Train_FormationEnergy_Labels.npy"]
    assert manifest["complete"] is False


def test_files_under_a_prefix_folder_map_to_the_layout(fake_hub, upstream_files, tmp_path):
    fake_hub.commit_files(DATASET, {f"Data/{p}": b for p, b in upstream_files.items()}, repo_type="dataset")
    root = tmp_path / "Data"
    manifest = _download(fake_hub, root, splits=("group",), kinds=("ids",))
    rel = "Group_Splitting/Train/Train_Material_IDs.npy"
    assert (root / rel).read_bytes() == upstream_files[rel]
    assert manifest["files"][rel]["repo_path"] == f"Data/{rel}"


def test_bad_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="unknown split"):
        H.download_dataset(tmp_path, splits=("15",), endpoint="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="unknown kind"):
        H.download_dataset(tmp_path, kinds=("cif",), endpoint="http://127.0.0.1:1")


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture
def ssl_dir(tmp_path):
    torch = pytest.importorskip("torch")
    ssl = tmp_path / "Data" / "SSL"
    (ssl / "block1_element_matrix").mkdir(parents=True)
    (ssl / "block4_site_occupancy").mkdir(parents=True)
    (ssl / "normalizer.json").write_text(json.dumps({"min": [0.0], "max": [1.0]}))
    (ssl / "ssl_split.json").write_text(json.dumps({"seed": 42, "train": ["mp-1"], "val": [], "test": []}))
    np.save(ssl / "ssl_features.npy", np.zeros((3, 2048), np.float32))
    np.save(ssl / "ssl_material_ids.npy", np.array(["mp-1", "mp-2", "mp-3"]))
    torch.manual_seed(0)
    for block in ("block1_element_matrix", "block4_site_occupancy"):
        state = {"encoder.weight": torch.randn(8, 4), "encoder.bias": torch.randn(8)}
        torch.save(state, ssl / block / "best.pt")
        torch.save({"model": state, "epoch": 3}, ssl / block / "last.pt")
        (ssl / block / "config.json").write_text(json.dumps({"block": block, "lr": 1e-3}))
        (ssl / block / "metrics.json").write_text(json.dumps({"val_loss": 0.5}))
        np.savez(ssl / block / "embeddings.npz", material_id=np.array(["mp-1"]), embedding=np.zeros((1, 8)))
    return ssl


PUBLISHED = sorted([
    "normalizer.json", "ssl_split.json",
    *(f"{b}/{f}" for b in ("block1_element_matrix", "block4_site_occupancy")
      for f in ("best.pt", "config.json", "metrics.json")),
])


def test_publish_then_fetch_round_trip(fake_hub, ssl_dir, tmp_path):
    import torch

    repo = "tester/crys-rep-enrich-ssl"
    out = H.publish_checkpoints(ssl_dir, repo, endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    assert out["files"] == PUBLISHED and out["commit"] == fake_hub.head(repo)
    blobs = fake_hub.files(repo)
    assert sorted(set(blobs) - {".gitattributes"}) == PUBLISHED  # no last.pt, npz or npy
    assert blobs["block1_element_matrix/best.pt"].lfs and not blobs["normalizer.json"].lfs
    # The real library protocol was used end to end: create, preupload, LFS batch + PUT + verify, NDJSON commit.
    for method, fragment in [("POST", "/api/repos/create"), ("POST", f"/api/models/{repo}/preupload/main"),
                             ("POST", f"/{repo}.git/info/lfs/objects/batch"), ("PUT", "/upload/"),
                             ("POST", f"/{repo}.git/info/lfs/objects/verify"),
                             ("POST", f"/api/models/{repo}/commit/main")]:
        assert fake_hub.requests_for(fragment, method), (method, fragment)
    assert len(fake_hub.requests_for("/upload/", "PUT")) == 2

    # Publishing the same folder again: repo exists (409 handled), nothing changed, no new commit.
    again = H.publish_checkpoints(ssl_dir, repo, endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    assert again["commit"] == out["commit"]

    cached = H.fetch_checkpoints(repo, endpoint=fake_hub.url, cache_dir=tmp_path / "cache")
    local = H.fetch_checkpoints(repo, endpoint=fake_hub.url, local_dir=tmp_path / "fetched")
    assert local == (tmp_path / "fetched").resolve()
    for folder in (cached, local):
        got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and ".cache" not in p.parts)
        assert got == PUBLISHED
        for rel in PUBLISHED:
            assert (folder / rel).read_bytes() == (ssl_dir / rel).read_bytes(), rel
        state = torch.load(folder / "block4_site_occupancy/best.pt", weights_only=True, map_location="cpu")
        expected = torch.load(ssl_dir / "block4_site_occupancy/best.pt", weights_only=True, map_location="cpu")
        assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_publish_uploads_only_the_allow_list(fake_hub, ssl_dir):
    # stray files of every kind a deny-list would let through
    (ssl_dir / "notes.txt").write_text("my private notes")
    (ssl_dir / ".env").write_text("HF_TOKEN=hf_secret")
    (ssl_dir / "block1_element_matrix" / "debug.log").write_text("log")
    (ssl_dir / "block1_element_matrix" / "best.pt.bak").write_bytes(b"old weights")
    (ssl_dir / "scratch").mkdir()
    (ssl_dir / "scratch" / "config.json").write_text("{}")
    (ssl_dir / "block9_unknown").mkdir()
    (ssl_dir / "block9_unknown" / "best.pt").write_bytes(b"not a block of the layout")
    (ssl_dir / "ssl_features.json").write_text(json.dumps({"ftcp_phase": "linear"}))
    out = H.publish_checkpoints(ssl_dir, "tester/ssl", endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    assert out["files"] == sorted(PUBLISHED + ["ssl_features.json"])
    assert sorted(set(fake_hub.files("tester/ssl")) - {".gitattributes"}) == out["files"]
    assert set(out["files"]) <= set(H.checkpoint_repo_files())


def test_fetch_rejects_corrupted_checkpoint(fake_hub, ssl_dir, tmp_path):
    repo = "tester/ssl"
    H.publish_checkpoints(ssl_dir, repo, endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    fake_hub.corrupt(repo, "block1_element_matrix/best.pt")
    with pytest.raises(H.ChecksumError, match="block1_element_matrix/best.pt"):
        H.fetch_checkpoints(repo, endpoint=fake_hub.url, local_dir=tmp_path / "out")
    assert not (tmp_path / "out/block1_element_matrix/best.pt").exists()
    assert (tmp_path / "out/block4_site_occupancy/best.pt").exists()


def test_fetch_local_directory_and_bad_names(ssl_dir, tmp_path):
    assert H.fetch_checkpoints(ssl_dir) == ssl_dir
    with pytest.raises(ValueError, match="neither an existing directory nor a valid repo id"):
        H.fetch_checkpoints(str(tmp_path / "no" / "such" / "dir"))


def test_fetch_repo_without_checkpoints(fake_hub):
    fake_hub.commit_files("tester/empty", {"README.md": b"nothing"})
    with pytest.raises(H.NothingMatchedError, match="best.pt"):
        H.fetch_checkpoints("tester/empty", endpoint=fake_hub.url)


def test_fetch_offline(tmp_path):
    with pytest.raises(H.OfflineError, match="pass its directory") as err:
        H.fetch_checkpoints("tester/ssl", endpoint=f"http://127.0.0.1:{_closed_port()}")
    assert "ftcp build" not in str(err.value)


def test_publish_needs_token_and_checkpoints(fake_hub, ssl_dir, tmp_path):
    with pytest.raises(H.HubError, match="HF_TOKEN"):
        H.publish_checkpoints(ssl_dir, "tester/ssl", endpoint=fake_hub.url)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(H.HubError, match="no checkpoint"):
        H.publish_checkpoints(empty, "tester/ssl", endpoint=fake_hub.url, token=DEFAULT_TOKEN)
    assert fake_hub.requests == []
    with pytest.raises(H.HubError, match="401"):
        H.publish_checkpoints(ssl_dir, "tester/ssl", endpoint=fake_hub.url, token="hf_wrong")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(H.OfflineError, match="publishing the checkpoints"):
        H.publish_checkpoints(ssl_dir, "tester/ssl", endpoint=endpoint, token=DEFAULT_TOKEN)


# --------------------------------------------------------------------------- CLI
@pytest.fixture
def parser():
    from ftcp.cli import build_parser  # the real `ftcp` parser, with the hub's commands registered
    return build_parser()


def test_cli_download_arguments(parser):
    args = parser.parse_args(["download"])
    assert args.splits == list(H.ALL_SPLITS) and args.kinds == list(H.ALL_KINDS)
    assert args.repo_id == DATASET and args.max_workers == 4 and args.retries == 3 and args.data is None
    args = parser.parse_args(["download", "--data", "D", "--repo-id", "a/b", "--splits", "10,group",
                              "--kinds", "ftcp,labels", "--revision", "v1", "--endpoint", "http://x",
                              "--max-workers", "2", "--retries", "0", "--allow-missing"])
    assert (args.data, args.repo_id, args.splits, args.kinds, args.revision, args.endpoint, args.max_workers,
            args.retries, args.allow_missing) == ("D", "a/b", ["10", "group"], ["ftcp", "labels"], "v1",
                                                  "http://x", 2, 0, True)
    for bad in (["--splits", "15"], ["--kinds", "cif"], ["--max-workers", "0"], ["--retries", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["download", *bad])
    with pytest.raises(SystemExit):
        parser.parse_args(["publish"])  # --repo-id is required


def test_cli_end_to_end(parser, dataset_hub, upstream_files, ssl_dir, tmp_path, monkeypatch, capsys):
    root = tmp_path / "cli_data"
    monkeypatch.setenv("CRYS_REP_DATA", str(root))
    args = parser.parse_args(["download", "--endpoint", dataset_hub.url, "--splits", "group",
                              "--kinds", "ssl_features"])
    assert args.func(args) == 0
    rel = "Group_Splitting/Test/Test_Extracted_Features_Data.npy"
    assert (root / rel).read_bytes() == upstream_files[rel]
    assert "4 file(s)" in capsys.readouterr().out

    monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
    args = parser.parse_args(["publish", "--repo-id", "tester/cli-ssl", "--checkpoint-dir", str(ssl_dir),
                              "--endpoint", dataset_hub.url])
    assert args.func(args) == 0
    args = parser.parse_args(["fetch", "--repo-id", "tester/cli-ssl", "--endpoint", dataset_hub.url,
                              "--out", str(tmp_path / "fetched")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith("fetched")
    assert (tmp_path / "fetched/block1_element_matrix/best.pt").is_file()

    from ftcp.cli import main  # the error boundary turns the hub's error into one line and status 1

    assert main(["download", "--endpoint", f"http://127.0.0.1:{_closed_port()}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ftcp download: error: Cannot reach") and "Traceback" not in err
