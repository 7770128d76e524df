"""Multi-process training: 2 gloo processes on CPU through torchrun, as `torchrun --nproc_per_node=K` runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ftcp.ssl import data as D
from ftcp.ssl.export import load_embeddings
from ftcp.ssl.synthetic import synthetic_root_cached

REPO = Path(__file__).resolve().parents[1]


def torchrun(args, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic_root_cached(tmp_path_factory.getbasetemp())


def test_two_process_gloo_training(root, tmp_path):
    script = REPO / "SSL_Training" / "Block1_Element_Matrix" / "train_block1.py"
    torchrun([str(script), "--data", str(root), "--out", str(tmp_path), "--device", "cpu", "--epochs", "3",
              "--batch-size", "16", "--lr", "3e-3", "--no-progress", "--eval-batch-size", "32",
              "--model", "slot_width=32", "--model", "set_width=16", "--model", "hidden=32",
              "--model", "projector_width=32", "--embed-dim", "16"])
    out = tmp_path / "block1_element_matrix"
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished" and len(metrics["history"]) == 3
    n_train = config["parts"]["train"]
    assert metrics["history"][0]["samples"] == (n_train // 32) * 32
    for part in ("val", "test"):
        assert set(metrics[part]) >= {"masked_element", "element_set_consistency"}
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in ck["model"])      # saved unwrapped
    from ftcp.ssl.blocks import load_block
    from ftcp.ssl.export import load_block_model
    load_block_model(load_block(1), out / "best.pt")
    ids, emb = load_embeddings(out / "embeddings.npz")
    assert list(ids) == list(D.open_source(root).ids) and np.isfinite(emb).all()


def test_barlow_twins_gathers_across_ranks(tmp_path):
    # the same script checks the NCCL path on GPUs (SSL_Training/README.md)
    result = tmp_path / "result.json"
    torchrun([str(REPO / "benchmarks" / "ddp_gather_check.py"), str(result), "--backend", "gloo"], timeout=120)
    r = json.loads(result.read_text())
    assert r["world"] == 2
    assert r["loss_diff"] < 1e-5
    assert r["grad_diff"] < 1e-5 * max(1.0, r["grad_scale"])
