"""Blocks 1-3: the encoder really does not see hidden values; presence and distance targets are right."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ftcp import layout as L
from ftcp.ssl import data as D
from ftcp.ssl.batches import load_block_fields
from ftcp.ssl.blocks import load_block
from ftcp.ssl.synthetic import synthetic_root_cached


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return synthetic_root_cached(tmp_path_factory.getbasetemp())


def setup_block(number, root, ssl_dir, **model):
    block = load_block(number)
    block.configure(block.model_config(model))
    data = D.prepare(root, ssl_dir)
    fields = load_block_fields(block, data)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()}
    block.stats = block.fit_stats({k: v[torch.as_tensor(data.index["train"])] for k, v in tensors.items()})
    return block, tensors, data


def views(block, batch, seed, train=True):
    return block.make_views(batch, torch.Generator().manual_seed(seed), train)


def test_block1_hidden_element_is_invisible(root, tmp_path):
    block, t, _ = setup_block(1, root, tmp_path)
    batch = {"matrix": t["matrix"].clone()}
    inputs, targets = views(block, batch, 0)
    label = targets["masked_element"]["label"]
    assert (label >= 0).any()
    changed = {"matrix": batch["matrix"].clone()}
    for i in torch.nonzero(label >= 0)[:, 0]:
        slot = int(torch.nonzero((batch["matrix"][i].argmax(0) == label[i]) & (batch["matrix"][i].amax(0) > 0.5))[0, 0])
        changed["matrix"][i, :, slot] = 0
        changed["matrix"][i, (int(label[i]) + 17) % L.N_ELEMENT_TYPES, slot] = 1.0   # another hidden element
    inputs2, targets2 = views(block, changed, 0)
    torch.testing.assert_close(inputs2["view_a"], inputs["view_a"])
    assert (targets2["masked_element"]["label"] != label)[label >= 0].all()
    # the hidden column is empty in the view; single-element crystals are not scored
    n_el = (batch["matrix"].amax(1) > 0.5).sum(1)
    assert ((inputs["view_a"].amax(1) > 0.5).sum(1) == torch.where(label >= 0, n_el - 1, n_el)).all()
    assert (label[n_el == 1] == -1).all()
    # the two Barlow Twins views never hide the same element
    a, b = inputs["view_a"].amax(1), inputs["view_b"].amax(1)
    hidden_a, hidden_b = (batch["matrix"].amax(1) > 0.5) & (a < 0.5), (batch["matrix"].amax(1) > 0.5) & (b < 0.5)
    assert not (hidden_a & hidden_b).any()


def test_block2_features_are_derived_after_masking(root, tmp_path):
    block, t, data = setup_block(2, root, tmp_path)
    batch = {k: v.clone() for k, v in t.items()}
    inputs, targets = views(block, batch, 3, train=False)
    hide = inputs["hidden_index"]
    changed = {k: v.clone() for k, v in batch.items()}
    rows = torch.arange(len(hide))
    changed["params"][rows, hide] *= 1.37                 # a different hidden parameter ...
    changed["lattice"][rows, hide] *= 1.37                # ... in both its raw and normalised form
    inputs2, targets2 = views(block, changed, 3, train=False)
    torch.testing.assert_close(inputs2["features"], inputs["features"])
    assert not torch.allclose(targets2["masked_lattice_parameter"]["value"],
                              targets["masked_lattice_parameter"]["value"])
    clean = block.clean_inputs(batch)["features"]
    assert not torch.allclose(clean, inputs["features"])   # the clean view does see every parameter
    assert (targets["crystal_system"]["label"] >= 0).all()


def test_block3_hidden_coordinates_are_invisible(root, tmp_path):
    block, t, _ = setup_block(3, root, tmp_path, d_model=16, heads=2, ff=32, layers=1, pool_heads=2, head_width=16,
                              embed_dim=16)
    length = int(t["present"].sum(1).max())
    batch = {k: (v[:, :length] if k in block.sequence_fields else v).clone() for k, v in t.items()}
    inputs, targets = views(block, batch, 5)
    hidden = inputs["hidden"]
    n_sites = batch["present"].sum(1)
    assert (hidden.sum(1) == torch.round(0.15 * n_sites.float()).clamp_min(1)).all()
    assert not (hidden & ~batch["present"]).any()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["coords"] = torch.where(hidden[..., None], torch.rand(changed["coords"].shape), changed["coords"])
    inputs2, targets2 = views(block, changed, 5)
    for k in inputs:
        torch.testing.assert_close(inputs2[k], inputs[k])
    assert not torch.allclose(targets2["masked_coordinates"]["frac"], targets["masked_coordinates"]["frac"])
    model = block.build_model(block.cfg).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(inputs2), model.embed(inputs))


def test_block3_presence_comes_from_occupancy(root, tmp_path):
    block, t, data = setup_block(3, root, tmp_path)
    occupancy = L.region(np.load(root / "ftcp.npy"), L.SITE_OCCUPANCY)
    coords = L.region(np.load(root / "ftcp.npy"), L.SITE_COORDS)
    at_origin = (occupancy.max(-1) > 0.5) & (np.abs(coords).sum(-1) == 0)
    assert at_origin.sum() > 0                         # the fixture has sites at (0, 0, 0) ...
    assert t["present"].numpy()[at_origin].all()       # ... and they are real sites
    np.testing.assert_array_equal(t["present"].numpy(), occupancy.max(-1) > 0.5)


def test_block3_pair_distances_match_pymatgen(root, tmp_path):
    from ftcp import to_structure

    block, t, data = setup_block(3, root, tmp_path)
    picks = torch.arange(0, 40)
    batch = {k: v[picks] for k, v in t.items()}
    inputs, targets = views(block, batch, 11)
    ftcp = np.load(root / "ftcp.npy")
    dist, ok = targets["pair_distances"]["value"], targets["pair_distances"]["valid"]
    checked = 0
    for b in range(len(picks)):
        s = to_structure(ftcp[int(picks[b])])
        for h in range(dist.shape[1]):
            for p in range(dist.shape[2]):
                if ok[b, h, p]:
                    i, j = int(inputs["hidden_index"][b, h]), int(inputs["partner_index"][b, p])
                    assert float(dist[b, h, p]) == pytest.approx(s.get_distance(i, j), abs=1e-3)
                    checked += 1
    assert checked > 50
