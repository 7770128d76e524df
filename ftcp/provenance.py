"""Where a number came from: commit (and whether the tree was dirty), versions, hardware, command.

Used by every record the project writes (scenario results, SSL runs, benchmarks), so they all
speak the same way.  Paths are never recorded: commands are shown relative to the repository.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

#: the repository root when running from a checkout (git information is read there)
REPO = Path(__file__).resolve().parents[1]


#: for a run from an exported tree with no ``.git`` (a copy sent to another machine): the commit it is
SOURCE_COMMIT_ENV = "FTCP_SOURCE_COMMIT"


def git_commit() -> dict:
    """The checkout's commit and whether tracked files differ from it (``dirty``)."""
    def run(*cmd):
        try:
            return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    if os.environ.get(SOURCE_COMMIT_ENV):     # the caller knows the tree; a copied .git may be stale
        return {"commit": os.environ[SOURCE_COMMIT_ENV], "dirty": None, "source": f"${SOURCE_COMMIT_ENV}"}
    commit = run("git", "rev-parse", "HEAD")
    dirty = bool(run("git", "status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"commit": commit or None, "dirty": dirty}


def versions() -> dict:
    import importlib

    out = {"python": sys.version.split()[0]}
    for mod in ("numpy", "scipy", "sklearn", "torch", "shap", "matminer", "pandas", "xgboost"):
        m = sys.modules.get(mod)
        if m is None and mod in ("numpy", "sklearn", "torch"):
            try:
                m = importlib.import_module(mod)
            except ImportError:
                m = None
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def command_line(script: str, argv=None) -> str:
    """``python <script relative to the repo> <arguments>`` as typed (argv None: sys.argv)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        rel = os.path.relpath(script, REPO)
    except ValueError:
        rel = script
    return "python " + " ".join(shlex.quote(str(a)) for a in [rel] + args)


def hardware_summary() -> dict:
    """CPU model, logical cores, memory and GPU (if torch sees one) of this machine."""
    import platform

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:   # torch missing or broken CUDA: report no GPU
        gpu = None
    return {"cpu": cpu, "cores": cores, "memory_gb": mem_gb, "gpu": gpu,
            "platform": platform.platform()}
