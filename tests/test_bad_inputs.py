"""Bad input at the command line (issue 13): every row of the issue's table, as a user meets it.

Each case runs the real command in a subprocess and checks the exit status and that stderr is one line
``<prog>: error: ...`` naming the file, never a traceback.  Independent commands run a few at a time (they are
mostly interpreter start-up), so the whole matrix stays well under a minute on two cores.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_hub import hf_sandbox  # noqa: F401  (autouse: huggingface_hub isolated, loopback only)
from test_store import good_rows, good_structures, write_csv

from ftcp import layout as L
from ftcp.splitting import make_splits
from ftcp.store import build_store

SCENARIOS = sorted(REPO.glob("Evaluation_Scenarios/Scenario*/run_scenario*.py"))
ENV = {k: v for k, v in os.environ.items() if k not in ("FTCP_TRACEBACK", "CRYS_REP_DATA")}
ENV.update(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), TQDM_DISABLE="1")


def ftcp_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "ftcp", *map(str, args)]


def run(cmd, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=cwd or REPO, timeout=timeout)


def run_many(cmds: dict) -> dict:
    """{name: command} -> {name: CompletedProcess}, three at a time."""
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(run, cmd) for name, cmd in cmds.items()}
        return {name: f.result() for name, f in futures.items()}


def one_line_error(proc: subprocess.CompletedProcess, prog: str, rc: int = 1) -> str:
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == rc, (proc.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# fixtures shared by the whole matrix (tiny: eight crystals)
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module")
def good_csv(work):
    return write_csv(work / "good.csv", good_rows())


@pytest.fixture(scope="module")
def good_store(work, good_csv):
    root = work / "good_store"
    build_store(good_csv, root, workers=1, progress=False)
    return root


def repeated_rows(times: int) -> list[dict]:
    """The good rows ``times`` over under new IDs (writing CIFs is slow; copying them is not)."""
    rows = good_rows()
    return [dict(r, material_id=f"{r['material_id']}-{k}") for k in range(times) for r in rows]


def store_copy(good_store, dest: Path) -> Path:
    shutil.copytree(good_store, dest)
    return dest


def store_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def truncated_checkpoint(folder: Path, size: str) -> Path:
    """A checkpoint directory whose Block 1 best.pt is cut in half (or empty)."""
    import torch

    from ftcp.normalize import RowMinMaxScaler

    block_dir = folder / L.BLOCKS[0].dirname
    block_dir.mkdir(parents=True)
    RowMinMaxScaler(np.zeros(L.N_ROWS), np.ones(L.N_ROWS)).save(folder / "normalizer.json")
    torch.save({"block": 1, "model": {"w": torch.zeros(4096)}}, block_dir / "best.pt")
    data = (block_dir / "best.pt").read_bytes()
    (block_dir / "best.pt").write_bytes(data[:len(data) // 2] if size == "truncated" else b"")
    return block_dir / "best.pt"


@pytest.fixture(scope="module")
def matrix(work, good_csv, good_store):
    """Set up every simple case, run them all, and keep the results (and what each case needs to check)."""
    cases, facts = {}, {}
    # 1. upstream-layout IDs holding a crafted pickle
    up = work / "upstream"
    train = up / "Splitted_Data" / "Split_10Test_90Train" / "Train"
    train.mkdir(parents=True)
    np.save(train / "Train_FTCP_Data.npy", np.zeros((2, *L.SHAPE), np.float32))
    facts["marker"] = work / "code_ran"
    np.save(train / "Train_FTCP_Material_IDs.npy", np.array([_RunsCode(facts["marker"]), "mp-2"], dtype=object),
            allow_pickle=True)
    cases["crafted_pickle"] = ftcp_cmd("info", "--data", up)
    # 2. header-only CSV: a new store, and --overwrite onto a good one
    header_only = work / "header_only.csv"
    header_only.write_text("material_id,cif,formation_energy_per_atom,band_gap\n")
    cases["header_only_new"] = ftcp_cmd("build", header_only, "--data", work / "new_store", "--no-progress")
    facts["overwritten"] = store_copy(good_store, work / "overwrite_me")
    facts["overwritten_before"] = store_files(facts["overwritten"])
    cases["header_only_overwrite"] = ftcp_cmd("build", header_only, "--data", facts["overwritten"], "--overwrite",
                                              "--no-progress")
    # 3. truncated .csv.gz
    gz = write_csv(work / "full.csv.gz", repeated_rows(4))
    cut = work / "cut.csv.gz"
    cut.write_bytes(gz.read_bytes()[:gz.stat().st_size * 2 // 3])
    cases["truncated_gz"] = ftcp_cmd("build", cut, "--data", work / "from_cut", "--no-progress")
    # 4. --data pointing at a regular file
    afile = work / "afile"
    afile.write_text("")
    cases["data_is_file_info"] = ftcp_cmd("--data", afile, "info")
    cases["data_is_file_build"] = ftcp_cmd("build", good_csv, "--data", afile, "--no-progress")
    # 5. embed with a truncated / empty best.pt
    for size in ("truncated", "empty"):
        facts[f"ckpt_{size}"] = truncated_checkpoint(work / f"ckpt_{size}", size)
        cases[f"embed_{size}"] = ftcp_cmd("embed", work / "nacl.cif", "--checkpoints", work / f"ckpt_{size}",
                                          "--out", work / f"emb_{size}.npz", "--no-progress")
    good_structures()[0].to(filename=str(work / "nacl.cif"))
    # 7. scenario scripts with no SSL features
    no_ssl = store_copy(good_store, work / "no_ssl")
    make_splits(no_ssl, test_percents=(10,), group_test_fraction=None)
    for script in SCENARIOS:
        cases[script.name] = [sys.executable, str(script), "--data", str(no_ssl), "--out", str(work / "R")]
    # 8. split with a bad group fraction
    facts["unsplit"] = store_copy(good_store, work / "unsplit")
    facts["unsplit_before"] = store_files(facts["unsplit"])
    cases["split_fraction_2"] = ftcp_cmd("split", "--data", facts["unsplit"], "--group-test-fraction", "2")
    # 9. two atoms 0.0001 Angstrom apart (JSON: a CIF parser would merge them into one over-occupied site)
    from pymatgen.core import Lattice, Structure

    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.0001 / 4.0, 0, 0]])
    records = [{"material_id": "ok", "structure": good_structures()[0].as_dict(), "formation_energy": -1.0},
               {"material_id": "close", "structure": close.as_dict(), "formation_energy": -1.0}]
    (work / "close.json").write_text(json.dumps(records))
    cases["overlapping_sites"] = ftcp_cmd("build", work / "close.json", "--data", work / "close_store",
                                          "--no-progress", "--workers", "1")
    # --debug shows the traceback of an expected error
    cases["debug"] = ftcp_cmd("--debug", "--data", afile, "info")
    return run_many(cases), facts, work


def test_crafted_pickle_is_one_line_and_never_runs(matrix):
    results, facts, _ = matrix
    line = one_line_error(results["crafted_pickle"], "ftcp info")
    assert "Train_FTCP_Material_IDs.npy: refused to read the material IDs" in line
    assert not facts["marker"].exists()


def test_header_only_csv_is_refused_and_keeps_the_good_store(matrix):
    results, facts, work = matrix
    line = one_line_error(results["header_only_new"], "ftcp build")
    assert "header_only.csv holds no crystals" in line and not (work / "new_store").exists()
    line = one_line_error(results["header_only_overwrite"], "ftcp build")
    assert "holds no crystals" in line and f"{facts['overwritten']} is unchanged" in line
    assert store_files(facts["overwritten"]) == facts["overwritten_before"]


def test_truncated_gzip_names_the_file_and_the_cause(matrix):
    results, _, work = matrix
    line = one_line_error(results["truncated_gz"], "ftcp build")
    assert "cut.csv.gz: the file ends early: it is truncated" in line and not (work / "from_cut").exists()


@pytest.mark.parametrize("case", ["data_is_file_info", "data_is_file_build"])
def test_data_root_that_is_a_file(matrix, case):
    line = one_line_error(matrix[0][case], "ftcp " + case.rsplit("_", 1)[1])
    assert "afile is a file, not a folder" in line


def test_read_only_data_root(good_store, good_csv, tmp_path):
    root = store_copy(good_store, tmp_path / "ro")
    build = ftcp_cmd("build", good_csv, "--data", root, "--overwrite", "--no-progress", "--workers", "1")
    if os.geteuid() != 0:                     # permission bits stop a normal user
        root.chmod(0o555)
        try:
            proc = run(build)
        finally:
            root.chmod(0o755)
        assert "Permission denied" in one_line_error(proc, "ftcp build")
        return
    # root ignores permission bits: mount the folder read-only in a private mount namespace
    if not shutil.which("unshare"):
        pytest.skip("unshare is not available to make a read-only mount")
    mount = f"mount --bind '{root}' '{root}' && mount -o remount,bind,ro '{root}' '{root}'"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.decode().strip()}")
    proc = run(["unshare", "-rm", "sh", "-c", mount + " && exec " + " ".join(f"'{a}'" for a in build)])
    line = one_line_error(proc, "ftcp build")
    assert f"{root}/.build: Read-only file system" in line


@pytest.mark.parametrize("size", ["truncated", "empty"])
def test_embed_with_a_broken_checkpoint_names_it(matrix, size):
    results, facts, _ = matrix
    line = one_line_error(results[f"embed_{size}"], "ftcp embed")
    assert f"checkpoint {facts[f'ckpt_{size}']} is unreadable, truncated or corrupt" in line


@pytest.mark.parametrize("script", [s.name for s in SCENARIOS])
def test_scenario_without_ssl_features_is_the_message_alone(matrix, script):
    line = one_line_error(matrix[0][script], script)
    assert "ssl_features.npy not found: export the SSL features first" in line


def test_split_checks_its_arguments_before_writing(matrix):
    results, facts, _ = matrix
    line = one_line_error(results["split_fraction_2"], "ftcp split")
    assert "group test fraction must be in (0, 1)" in line
    assert store_files(facts["unsplit"]) == facts["unsplit_before"]


def test_overlapping_sites_are_rejected_with_a_reason(matrix):
    import pandas as pd

    results, _, work = matrix
    proc = results["overlapping_sites"]
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "overlapping_sites" in proc.stdout
    rejects = pd.read_csv(work / "close_store" / "rejects.csv")
    assert rejects.material_id.tolist() == ["close"] and rejects.reason.tolist() == ["overlapping_sites"]
    assert "0.0001 Angstrom apart" in rejects.detail[0]


def test_debug_shows_the_traceback(matrix):
    proc = matrix[0]["debug"]
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "is a file, not a folder" in proc.stderr


# ---------------------------------------------------------------------------------------------
# Ctrl-C: SIGINT to the whole process group, as a terminal sends it
def _default_sigint() -> None:
    # a test runner started in the background of a non-interactive shell inherits SIGINT ignored, and so would the
    # command under test: give it the default disposition a terminal's Ctrl-C meets
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(cmd, ready, timeout=90) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
                            start_new_session=True, preexec_fn=_default_sigint)
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() - t0 < timeout, "never got ready"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_ctrl_c_during_a_build_is_one_line_and_the_rerun_resumes(tmp_path):
    src = write_csv(tmp_path / "many.csv", repeated_rows(60))        # 480 rows, 60 chunks of 8
    root = tmp_path / "store"
    cmd = ftcp_cmd("build", src, "--data", root, "--chunk-size", "8", "--workers", "2", "--no-progress")
    journal = root / ".build" / "journal.json"

    def one_chunk_done():
        try:
            return json.loads(journal.read_text())["chunks_done"] >= 1
        except (OSError, ValueError, KeyError):
            return False

    proc = _interrupt_when(cmd, one_chunk_done)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == ["ftcp build: interrupted; run the same command again to resume"]
    again = run(cmd)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["input"] == manifest["counts"]["accepted"] == 480
    assert manifest["build"]["resumed_at_chunk"] and manifest["build"]["resumed_at_chunk"][0] >= 1


def test_ctrl_c_during_training_is_one_line(tmp_path):
    from ftcp.ssl.synthetic import make_synthetic_root

    root = make_synthetic_root(tmp_path / "root", n=48)
    script = REPO / "SSL_Training" / "Block1_Element_Matrix" / "train_block1.py"
    tiny = ["slot_width=16", "set_width=8", "hidden=16", "projector_width=16", "embed_dim=8"]
    cmd = [sys.executable, str(script), "--data", str(root), "--device", "cpu", "--threads", "1", "--epochs", "500",
           "--batch-size", "8", "--no-progress", "--no-export"] + [a for m in tiny for a in ("--model", m)]
    last = root / "SSL" / L.BLOCKS[0].dirname / "last.pt"
    proc = _interrupt_when(cmd, last.exists)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    # progress lines (the library's log) may come before it; the error itself is that one line
    assert proc.stderr.splitlines()[-1] == "train_block1.py: interrupted; run the same command again to resume"
    assert not any("error" in line.lower() for line in proc.stderr.splitlines()[:-1]), proc.stderr
    # the same command resumes from last.pt (stopped again after one more epoch to keep the test short)
    again = run(cmd + ["--stop-after-epochs", "1"])
    assert again.returncode == 0 and "resumed" in again.stdout + again.stderr, again.stderr


# ---------------------------------------------------------------------------------------------
# publish: in-process, inside the loopback-only sandbox of the hub tests (a subprocess could not be fenced in;
# hf_sandbox, imported above, is an autouse fixture)


def test_publish_leaves_a_stray_file_out(tmp_path, capsys, monkeypatch):
    import torch
    from fake_hub import DEFAULT_TOKEN, FakeHub

    from ftcp.cli import main

    ssl = tmp_path / "SSL"
    (ssl / L.BLOCKS[0].dirname).mkdir(parents=True)
    (ssl / "normalizer.json").write_text("{}")
    torch.save({"block": 1}, ssl / L.BLOCKS[0].dirname / "best.pt")
    (ssl / "stray.txt").write_text("not for the hub")
    monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
    with FakeHub() as hub:
        rc = main(["publish", "--repo-id", "tester/ssl", "--checkpoint-dir", str(ssl), "--endpoint", hub.url])
        uploaded = set(hub.files("tester/ssl")) - {".gitattributes"}
    out = capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.err
    assert uploaded == {"normalizer.json", f"{L.BLOCKS[0].dirname}/best.pt"} and "stray.txt" not in out.out
