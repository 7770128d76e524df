"""The built wheel works outside a checkout: ``ftcp.embed`` and a small ``ftcp demo`` from a fresh virtual
environment, run in a folder that is not the repository.

The wheel is built from a copy of the source tree (``pip wheel --no-build-isolation``: no network), installed
with ``--no-deps`` into a new virtual environment, and the dependencies come from this interpreter's
site-packages through a ``.pth`` file (appended after the new environment's own site-packages, so the installed
``ftcp``, ``SSL_Training`` and ``Evaluation_Scenarios`` are the wheel's, which the test checks).  Nothing is
downloaded; torch is reused, never installed.  About a minute or two on a CPU.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from test_ssl_assemble import TINY_SETS

REPO = Path(__file__).resolve().parents[1]
N_CRYSTALS = 60     # the smallest demo: the splits, the SSL split and the scenarios need 60 crystals
pytestmark = [pytest.mark.wheel, pytest.mark.slow]


def _run(cmd, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _source_copy(dest: Path) -> Path:
    """The files git would commit (tracked + untracked, not ignored), else the tree without build outputs."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True)
    if listing.returncode == 0 and listing.stdout:
        for rel in filter(None, listing.stdout.decode().split("\0")):
            src = REPO / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "venv", "Data", "build", "*.egg-info", "__pycache__", "demo_output", "runs"))
    return dest


def _dependency_paths() -> list[str]:
    """This interpreter's site-packages folders: the dependencies, never the checkout's sources.  (A folder named
    in a .pth file is only appended to sys.path; the .pth files inside it, such as the editable install's finder
    of this checkout, are not run.)"""
    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    paths.update(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
    return [p for p in sorted(paths) if Path(p).is_dir() and Path(p).resolve() != REPO]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    src = _source_copy(base / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "--wheel-dir", base / "dist", src], cwd=base, env=dict(os.environ), timeout=300)
    wheel = next((base / "dist").glob("crys_rep_enrich-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for member in ("ftcp/__init__.py", "SSL_Training/Block6_Structure_Factors/encoder.py",
                   "SSL_Training/Block1_Element_Matrix/train_block1.py",
                   "Evaluation_Scenarios/Scenario3_Sample_Efficiency/run_scenario3.py"):
        assert member in names, member
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base, env=dict(os.environ))
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
         cwd=base, env=dict(os.environ), timeout=300)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base,
                     dict(os.environ)).stdout.strip())
    (site / "zz_reuse_dependencies.pth").write_text("\n".join(_dependency_paths()) + "\n")
    work = base / "elsewhere"          # not the checkout: nothing can come from the repository
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRYS_REP_DATA", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    return {"venv": venv, "py": py, "site": site, "work": work, "env": env}


def test_the_wheel_installs_the_library_and_both_script_packages(installed):
    code = ("import ftcp, SSL_Training, Evaluation_Scenarios, json\n"
            "from ftcp.ssl.blocks import load_block\n"
            "print(json.dumps([m.__file__ for m in (ftcp, SSL_Training, Evaluation_Scenarios)]"
            " + [type(load_block(n)).__module__ for n in range(1, 7)]))")
    out = json.loads(_run([installed["py"], "-c", code], installed["work"], installed["env"]).stdout)
    for path in out[:3]:
        assert Path(path).resolve().is_relative_to(installed["site"].resolve()), path
    assert out[3:] == [f"SSL_Training.{d}.encoder" for d in (
        "Block1_Element_Matrix", "Block2_Crystal_System", "Block3_Atomic_Sites", "Block4_Site_Occupancy",
        "Block5_Reciprocal_Space", "Block6_Structure_Factors")]


def test_demo_and_embed_run_outside_a_checkout(installed):
    work, env = installed["work"], installed["env"]
    sets = TINY_SETS + [f"{n}:epochs=1" for n in range(1, 7)] + [f"{n}:batch_size=16" for n in range(1, 7)]
    cmd = [installed["venv"] / "bin" / "ftcp", "demo", "--out", "demo", "--n-crystals", N_CRYSTALS,
           "--device", "cpu", "--no-progress", *[a for s in sets for a in ("--ssl-set", s)]]
    proc = _run(cmd, work, env, timeout=900)
    assert "demo finished" in proc.stdout
    demo = work / "demo"
    assert (demo / "report" / "RESULTS.md").is_file() and len(list((demo / "Results").rglob("*.json"))) >= 3
    assert "Supplemental Information" not in proc.stdout + proc.stderr
    # ftcp.embed with the demo's checkpoints: two crystals of the demo data, outside the checkout
    code = """
import gzip, csv, sys, numpy as np, ftcp
from pymatgen.core import Structure
with gzip.open("demo/demo_dataset.csv.gz", "rt") as fh:
    rows = [r for _, r in zip(range(2), csv.DictReader(fh))]
x = ftcp.embed([Structure.from_str(r["cif"], fmt="cif") for r in rows], "demo/Data/SSL", device="cpu")
table = np.load("demo/Data/SSL/ssl_features.npy")
ids = list(np.load("demo/Data/SSL/ssl_material_ids.npy"))
rows_of = [ids.index(r["material_id"]) for r in rows]
print(x.shape, float(np.abs(x - table[rows_of]).max()))
"""
    out = _run([installed["py"], "-c", code], work, env, timeout=300).stdout.split()
    assert out[:2] == ["(2,", "2048)"] and float(out[2]) < 1e-3
