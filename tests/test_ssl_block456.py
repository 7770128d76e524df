"""Blocks 4-6: hidden values never reach the encoder; losses fall; export order; resume; determinism;
the structure-factor map rebuilt from a compact region pack equals the store's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ftcp import layout as L
from ftcp.ssl import data as D
from ftcp.ssl.batches import load_block_fields
from ftcp.ssl.blocks import load_block
from ftcp.ssl.engine import TrainConfig, run_block
from ftcp.ssl.export import load_block_model, load_embeddings
from ftcp.ssl.synthetic import synthetic_root_cached

TINY = {
    4: {"d_model": 16, "heads": 2, "ff": 32, "layers": 1, "coord_width": 16, "project_width": 32, "head_width": 16,
        "embed_dim": 16},
    5: {"d_model": 16, "heads": 2, "ff": 32, "layers": 1, "n_frequencies": 4, "project_width": 32, "head_width": 16,
        "embed_dim": 16},
    6: {"d_model": 32, "heads": 2, "ff": 32, "conv_channels": [8, 16, 16], "project_width": 32, "head_width": 32,
        "projector_width": 32, "embed_dim": 24},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    # own copy: tests here write <root>/SSL, which other modules' shared root must not see
    return synthetic_root_cached(tmp_path_factory.mktemp("block456_root"))


@pytest.fixture(scope="module")
def ftcp_array(root):
    return np.load(root / "ftcp.npy")


def setup_block(number, root, ssl_dir, tiny=True):
    block = load_block(number)
    block.configure(block.model_config(dict(TINY[number]) if tiny else {}))
    data = D.prepare(root, ssl_dir)
    fields = load_block_fields(block, data)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()}
    block.stats = block.fit_stats({k: v[torch.as_tensor(data.index["train"])] for k, v in tensors.items()})
    return block, tensors


def views(block, batch, seed, train=True):
    return block.make_views(batch, torch.Generator().manual_seed(seed), train)


def assert_same_inputs(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def embeds_equal(block, a, b):
    model = block.build_model(block.cfg).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(a)[block.tasks[0].name]["logits" if block.number == 4 else "value"],
                                   model(b)[block.tasks[0].name]["logits" if block.number == 4 else "value"])


# ------------------------------------------------------------------------------------------
def test_block4_hidden_occupancy_is_invisible(root, tmp_path):
    block, t = setup_block(4, root, tmp_path)
    length = int(t["present"].sum(1).max())
    batch = {k: (v[:, :length] if k in block.sequence_fields else v).clone() for k, v in t.items()}
    inputs, targets = views(block, batch, 5)
    hidden, present = inputs["hidden"], batch["present"]
    n_sites = present.sum(1)
    assert (hidden.sum(1) == torch.round(0.2 * n_sites.float()).clamp_min(1)).all()
    assert not (hidden & ~present).any()
    assert torch.equal(inputs["present"], present)             # hidden sites are still present
    label = targets["masked_occupancy"]["label"]
    assert ((label >= 0).sum(1) == hidden.sum(1)).all()
    # move every hidden site to another element slot: the encoder input must not change
    changed = {k: v.clone() for k, v in batch.items()}
    slot = batch["occupancy"].argmax(-1)
    new_slot = torch.nn.functional.one_hot((slot + 1) % L.MAX_ELEMENTS, L.MAX_ELEMENTS).to(batch["occupancy"].dtype)
    changed["occupancy"] = torch.where(hidden[..., None], new_slot, batch["occupancy"])
    inputs2, targets2 = views(block, changed, 5)
    assert_same_inputs(inputs, inputs2)
    label2 = targets2["masked_occupancy"]["label"]
    assert ((label2 != label) == (label >= 0)).all()
    assert not torch.allclose(targets2["stoichiometry"]["value"], targets["stoichiometry"]["value"])
    embeds_equal(block, inputs, inputs2)
    # the stoichiometry target is the slot fractions of the whole crystal
    fractions = targets["stoichiometry"]["value"]
    torch.testing.assert_close(fractions.sum(1), torch.ones(len(fractions)))


def test_block5_reads_columns_4_to_62_and_hides_kdistances(root, tmp_path, ftcp_array):
    block, t = setup_block(5, root, tmp_path)
    np.testing.assert_array_equal(t["k"].numpy(), ftcp_array[:, L.KDIST_ROW, 4:63])
    assert (t["k"] > 0).all()                                  # upstream's 0:59 read four structural zeros
    assert (ftcp_array[:, L.KDIST_ROW, :4] == 0).all()
    batch = {k: v.clone() for k, v in t.items()}
    inputs, targets = views(block, batch, 2, train=False)
    hidden = inputs["hidden"]
    assert (hidden.sum(1) == 9).all()                          # 15 % of 59
    assert (inputs["k"][hidden] == 0).all()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["k"] = torch.where(hidden, batch["k"] * 1.5 + 0.1, batch["k"])
    inputs2, targets2 = views(block, changed, 2, train=False)
    assert_same_inputs(inputs, inputs2)
    assert not torch.allclose(targets2["masked_kdistance"]["value"], targets["masked_kdistance"]["value"])
    embeds_equal(block, inputs, inputs2)
    # the lattice target is the cell of the crystal (ln lengths, angles)
    lat = targets["lattice_from_spectrum"]["value"]
    np.testing.assert_allclose(lat[:, :3].exp().numpy(), ftcp_array[:, L.LATTICE_LENGTH_ROW, :3], rtol=1e-5)
    np.testing.assert_allclose(lat[:, 3:].numpy(), ftcp_array[:, L.LATTICE_ANGLE_ROW, :3], rtol=1e-5)


def test_block6_hidden_columns_and_slot_are_invisible(root, tmp_path):
    block, t = setup_block(6, root, tmp_path)
    batch = {k: v.clone() for k, v in t.items()}
    b = len(batch["sf"])
    inputs, targets = views(block, batch, 9)
    col_idx, slot_idx = inputs["hidden_columns"], inputs["hidden_slot"]
    assert col_idx.shape == (b, 8) and (col_idx.sort(1).values.diff(dim=1) > 0).all()
    masked = {k: v[:b] for k, v in inputs.items() if k not in ("hidden_columns", "hidden_slot")}
    assert (~masked["column_visible"]).sum(1).eq(8).all()
    assert (masked["sf"].gather(2, col_idx[:, None, :].expand(-1, L.N_PROPERTIES, -1)) == 0).all()
    assert masked["slot_hidden"].sum(1).eq(1).all() and masked["slot_present"][masked["slot_hidden"]].all()
    assert (masked["properties"].gather(2, slot_idx[:, None, None].expand(-1, L.N_PROPERTIES, 1)) == 0).all()
    # other values in the hidden columns and in the hidden slot's property vector: same encoder input
    changed = {k: v.clone() for k, v in batch.items()}
    col_hidden = torch.zeros(b, L.N_KPOINTS, dtype=torch.bool).scatter_(1, col_idx, True)
    changed["sf"] = torch.where(col_hidden[:, None, :], batch["sf"] * 3 + 7, batch["sf"])
    slot_hidden = torch.zeros(b, L.MAX_ELEMENTS, dtype=torch.bool).scatter_(1, slot_idx[:, None], True)
    changed["properties"] = torch.where(slot_hidden[:, None, :], 1 - batch["properties"], batch["properties"])
    inputs2, targets2 = views(block, changed, 9)
    masked2 = {k: v[:b] for k, v in inputs2.items() if k not in ("hidden_columns", "hidden_slot")}
    assert_same_inputs(masked, masked2)
    for task in ("masked_structure_factors", "real_from_reciprocal"):
        assert not torch.allclose(targets2[task]["value"], targets[task]["value"])
    model = block.build_model(block.cfg).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(masked)[3], model.encoder(masked2)[3])
    # the two augmented views differ from each other and keep 70 % of the columns on average
    v1, v2 = inputs["column_visible"][b:2 * b], inputs["column_visible"][2 * b:]
    assert not torch.equal(v1, v2) and 0.55 < float(v1.float().mean()) < 0.85


def test_block6_map_rebuilt_from_a_compact_pack(root, tmp_path, ftcp_array):
    from ftcp.cli import main as ftcp_main

    D.prepare(root, root / "SSL")
    pack = tmp_path / "pack"
    ftcp_main(["ssl-pack", "--data", str(root), "--out", str(pack), "--blocks", "6"])
    assert "structure_factors" not in D.open_source(pack).regions_available()
    block = load_block(6)
    rebuilt = load_block_fields(block, D.prepare(pack, pack / "SSL", create=False))
    store = load_block_fields(load_block(6), D.prepare(root, root / "SSL"))
    assert set(rebuilt) == set(store) == {"properties", "sf"}
    np.testing.assert_array_equal(rebuilt["properties"], store["properties"])
    np.testing.assert_allclose(rebuilt["sf"], store["sf"], rtol=0, atol=2e-5 * np.abs(store["sf"]).max())
    np.testing.assert_array_equal(store["sf"], L.region(ftcp_array, "structure_factors"))


# ------------------------------------------------------------------------------------------
def train(number, root, out, **kw):
    block = load_block(number)
    settings = dict(device="cpu", progress=False, model=dict(TINY[number]), batch_size=16, lr=3e-3, epochs=3,
                    patience=100, eval_batch_size=32, threads=1)
    settings.update(kw)
    return run_block(block, TrainConfig.for_block(block, **settings), root=root, ssl_dir=out), block


@pytest.mark.parametrize("number,epochs,lr", [(4, 12, 5e-3), (5, 10, 3e-3), (6, 10, 3e-3)])
def test_every_task_loss_falls_and_is_evaluated(number, epochs, lr, root, tmp_path):
    metrics, block = train(number, root, tmp_path, epochs=epochs, lr=lr, batch_size=8)
    hist = metrics["history"]
    for task in block.tasks:
        first = hist[0]["train_loss"][task.name]
        last = np.mean([h["train_loss"][task.name] for h in hist[-3:]])
        assert last < 0.9 * first, (task.name, first, last)
    saved = json.loads((tmp_path / block.dirname / "metrics.json").read_text())
    for part in ("val", "test"):
        for task in block.tasks:
            m = saved[part][task.name]
            assert np.isfinite(m["model"]) and np.isfinite(m["baseline"]) and m["n"] > 0
    ids, emb = load_embeddings(tmp_path / block.dirname / "embeddings.npz")
    assert list(ids) == list(D.open_source(root).ids)
    assert emb.shape[1] == TINY[number]["embed_dim"] and np.isfinite(emb).all()
    ck = torch.load(tmp_path / block.dirname / "best.pt", map_location="cpu", weights_only=True)
    assert ck["block"] == number


def test_block4_export_reproducible_from_checkpoint_and_resume(root, tmp_path):
    first, block = train(4, root, tmp_path / "resumed", epochs=3, stop_after_epochs=2)
    assert first["status"] == "interrupted"
    resumed, _ = train(4, root, tmp_path / "resumed", epochs=3)
    straight, _ = train(4, root, tmp_path / "straight", epochs=3)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]
    assert resumed["test"] == straight["test"]
    _, er = load_embeddings(tmp_path / "resumed" / block.dirname / "embeddings.npz")
    ids, es = load_embeddings(tmp_path / "straight" / block.dirname / "embeddings.npz")
    assert np.array_equal(er, es)
    # rows of the store-order export = the model from best.pt on any subset, in any order (sites bucketed)
    fresh = load_block(4)
    model = load_block_model(fresh, tmp_path / "straight" / block.dirname / "best.pt")
    fields = load_block_fields(fresh, D.prepare(root, tmp_path / "straight"))
    some = np.array([40, 3, 0, 77])
    batch = {k: torch.from_numpy(v[some]) for k, v in fields.items()}
    with torch.no_grad():
        again = model.embed(fresh.clean_inputs(batch)).numpy()
    np.testing.assert_allclose(again, es[some], rtol=1e-4, atol=1e-5)


def test_block6_same_seed_same_embeddings(root, tmp_path):
    train(6, root, tmp_path / "a", epochs=1)
    train(6, root, tmp_path / "b", epochs=1)
    _, ea = load_embeddings(tmp_path / "a" / "block6_structure_factors" / "embeddings.npz")
    _, eb = load_embeddings(tmp_path / "b" / "block6_structure_factors" / "embeddings.npz")
    assert np.array_equal(ea, eb)


def test_blocks_4_to_6_two_process_gloo(root, tmp_path):
    """DDP path of Blocks 4-6 (sequence cutting per global batch, Barlow Twins gathered across ranks)
    through train_all under torchrun: 2 gloo processes on CPU."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sets = [f"{n}:{k}={json.dumps(v, separators=(',', ':'))}" for n in (4, 5, 6) for k, v in TINY[n].items()
            if k != "embed_dim"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(repo / "SSL_Training" / "train_all.py"), "--data", str(root), "--out", str(tmp_path), "--device", "cpu",
           "--blocks", "4", "5", "6", "--epochs-scale", "0.1", "--no-progress", "--no-table", "--no-assemble",
           "--threads", "1"] + [a for s in sets for a in ("--set", s)]
    cmd += [a for n in (4, 5, 6) for a in ("--set", f"{n}:batch_size=8")]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for n in (4, 5, 6):
        block = load_block(n)
        config = json.loads((tmp_path / block.dirname / "config.json").read_text())
        assert config["world_size"] == 2 and config["global_batch_size"] == 16
        metrics = json.loads((tmp_path / block.dirname / "metrics.json").read_text())
        assert metrics["status"] == "finished"
        assert all(np.isfinite(metrics["test"][t.name]["model"]) for t in block.tasks)
        ids, emb = load_embeddings(tmp_path / block.dirname / "embeddings.npz")
        assert list(ids) == list(D.open_source(root).ids) and np.isfinite(emb).all()
        ck = torch.load(tmp_path / block.dirname / "best.pt", map_location="cpu", weights_only=True)
        assert not any(k.startswith("module.") for k in ck["model"])
