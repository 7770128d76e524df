"""Losses, periodic geometry and task metrics/baselines of the SSL engine."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftcp.ssl import losses as LS
from ftcp.ssl.metrics import BarlowTwinsTask, ClassificationTask, PeriodicCoordinateTask, RegressionTask


def test_periodic_loss_is_shift_invariant_and_matches_torus_distance():
    gen = torch.Generator().manual_seed(0)
    frac = torch.rand(64, 3, generator=gen)
    exact = LS.angle_vectors(frac)
    assert LS.periodic_vector_loss(exact, frac).abs().max() < 1e-6
    assert LS.periodic_vector_loss(exact, frac + torch.randint(-3, 4, frac.shape)).abs().max() < 1e-5
    # a site at 0.99 predicted at 0.01 is 0.02 away, not 0.98
    near = LS.periodic_vector_loss(LS.angle_vectors(torch.tensor([[0.01, 0.5, 0.5]])), torch.tensor([[0.99, 0.5, 0.5]]))
    assert float(near) == pytest.approx(2 * math.pi ** 2 / 3 * 0.02 ** 2, rel=1e-2)
    small = frac + 0.01 * torch.randn(frac.shape, generator=gen)
    loss = LS.periodic_vector_loss(LS.angle_vectors(small), frac)
    torch.testing.assert_close(loss, 2 * math.pi ** 2 / 3 * LS.torus_sq_distance(small, frac), rtol=2e-2, atol=1e-6)
    random_guess = LS.periodic_vector_loss(LS.angle_vectors(torch.rand(4096, 3, generator=gen)),
                                           torch.rand(4096, 3, generator=gen))
    assert float(random_guess.mean()) == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(LS.vectors_to_frac(exact), frac, atol=1e-5)


def _brute_force(delta, matrix, reach=4):
    grid = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cart = np.einsum("npk,nkj->npj", delta[:, None, :] + grid[None], matrix)
    return np.sqrt((cart ** 2).sum(-1)).min(1)


def test_minimum_image_distance_in_skewed_cells():
    rng = np.random.default_rng(1)
    n = 400
    abc = rng.uniform(2.0, 12.0, size=(n, 3))
    angles = np.column_stack([rng.uniform(50, 130, n), rng.uniform(50, 130, n), rng.uniform(50, 130, n)])
    angles[:50] = [12.0, 12.0, 12.0]            # very acute rhombohedral cells (primitive fcc-like at the extreme)
    matrix = LS.lattice_matrix(abc, angles)
    ok = np.abs(np.linalg.det(matrix)) > 1e-3
    matrix = matrix[ok]
    reduced = LS.reduce_lattices(matrix)
    transform = reduced @ np.linalg.inv(matrix)
    assert np.allclose(transform, np.round(transform), atol=1e-6)
    assert np.allclose(np.abs(np.linalg.det(np.round(transform))), 1)
    a, b = rng.random((len(matrix), 3)), rng.random((len(matrix), 3))
    t = lambda x: torch.tensor(x, dtype=torch.float32)   # noqa: E731
    got = LS.min_image_distance(t(a)[:, None], t(b)[:, None], t(matrix), t(reduced), t(np.linalg.inv(reduced)))[:, 0]
    np.testing.assert_allclose(got.numpy(), _brute_force(a - b, matrix), rtol=1e-4, atol=1e-4)


def test_lattice_matrix_matches_pymatgen():
    from pymatgen.core import Lattice

    params = np.array([[3.1, 4.2, 5.3, 80.0, 95.0, 110.0], [4.0, 4.0, 6.5, 90.0, 90.0, 120.0]])
    ours = LS.lattice_matrix(params[:, :3], params[:, 3:])
    for p, m in zip(params, ours, strict=False):
        np.testing.assert_allclose(m, Lattice.from_parameters(*p).matrix, atol=1e-10)
    torch.testing.assert_close(LS.lattice_matrix(torch.tensor(params[:, :3]), torch.tensor(params[:, 3:])),
                               torch.tensor(ours))


def test_barlow_twins_rewards_matching_decorrelated_views():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(512, 32, generator=gen)
    same = LS.barlow_twins(z, z + 0.01 * torch.randn(z.shape, generator=gen))
    unrelated = LS.barlow_twins(z, torch.randn(512, 32, generator=gen))
    collapsed = LS.barlow_twins(z[:, :1].expand(-1, 32), z[:, :1].expand(-1, 32))
    assert same < 0.05 < unrelated
    assert collapsed > same
    hits, trials, chance = LS.retrieval_hits(z, z + 0.01 * torch.randn(z.shape, generator=gen), pool=128)
    assert float(hits) == float(trials) == 1024 and float(chance) / float(trials) == pytest.approx(1 / 128)


def test_task_baselines_and_metrics():
    cls = ClassificationTask("c", 3)
    st = cls.fit_init("cpu")
    cls.fit_update(st, {"label": torch.tensor([2, 2, 1, -1, 2, 0])})
    cls.fit_finish(st)
    ev = cls.eval_init("cpu")
    logits = torch.tensor([[0, 0, 5.0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 0]])
    cls.eval_update(ev, {"logits": logits}, {"label": torch.tensor([2, 0, 0, -1])})
    res = cls.eval_finish(ev)
    assert res["n"] == 3 and res["model"] == pytest.approx(2 / 3) and res["baseline"] == pytest.approx(1 / 3)
    assert res["beats_baseline"] and res["higher_is_better"]

    reg = RegressionTask("r", n_groups=2, metric="nmse")
    st = reg.fit_init("cpu")
    values = torch.tensor([1.0, 3.0, 10.0, 30.0])
    groups = torch.tensor([0, 0, 1, 1])
    reg.fit_update(st, {"value": values, "group": groups})
    reg.fit_finish(st)
    torch.testing.assert_close(reg.fitted["mean"], torch.tensor([2.0, 20.0], dtype=torch.float64))
    ev = reg.eval_init("cpu")
    exact = (values.double() - reg.fitted["mean"][groups]) / reg.fitted["std"][groups]
    reg.eval_update(ev, {"value": exact.float()}, {"value": values, "group": groups})
    res = reg.eval_finish(ev)
    assert res["model"] < 1e-10 and res["baseline"] == pytest.approx(1.0) and not res["higher_is_better"]
    # the loss works in standardised units: zero for the exact prediction
    assert float(reg.loss({"value": exact.float()}, {"value": values, "group": groups})) < 1e-10

    per = PeriodicCoordinateTask("p")
    st = per.fit_init("cpu")
    frac = torch.tensor([[0.98, 0.5, 0.02], [0.01, 0.5, 0.99], [0.03, 0.52, 0.0]])
    per.fit_update(st, {"frac": frac, "valid": torch.ones(3, dtype=torch.bool)})
    per.fit_finish(st)
    for c in (per.fitted["constant"], per.fitted["constant_rms"]):
        assert LS.wrap_delta(c - torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)).abs().max() < 0.02
    ev = per.eval_init("cpu")
    per.eval_update(ev, {"vectors": LS.angle_vectors(frac)}, {"frac": frac, "valid": torch.ones(3, dtype=torch.bool)})
    res = per.eval_finish(ev)
    assert res["model"] < 1e-6 < res["baseline"] and res["within_005"] == 1.0 and res["rms_torus_distance"] < 1e-5

    bt = BarlowTwinsTask("b", pool=4)
    ev = bt.eval_init("cpu")
    z = torch.eye(8)
    bt.eval_update(ev, {"z1": z, "z2": z}, {})
    res = bt.eval_finish(ev)
    assert res["model"] == 1.0 and res["baseline"] == pytest.approx(0.25) and math.isclose(res["input_retrieval"], 0.0)
