"""Attribution: the group Shapley values are exact (efficiency, brute force), the share ratios."""
import numpy as np
import pytest
import torch

from ftcp.evaluation.attribution import (
    group_importance,
    group_shapley,
    interventional_values,
    mlp_group_values,
    shapley_from_values,
    share_summary,
)
from ftcp.evaluation.mlp import hybrid_mlp, predict


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    net = hybrid_mlp(9, hidden=(16, 8, 4)).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 9)).astype(np.float32)
    bg = rng.normal(size=(11, 9)).astype(np.float32)
    groups = {"a": np.array([0, 1, 2]), "b": np.array([3, 4]), "c": np.array([5, 6, 7]), "ssl": np.array([8])}
    return net, x, bg, groups


def test_shapley_of_an_additive_game():
    contrib = np.array([[1.0, -2.0, 0.5]])
    values = {m: sum(contrib[:, i] for i in range(3) if m >> i & 1) + 0.0 * contrib[:, 0] for m in range(8)}
    np.testing.assert_allclose(shapley_from_values(values, 3), contrib)


def test_linear_trick_equals_brute_force(net_and_data):
    net, x, bg, groups = net_and_data
    names = list(groups)
    fast = mlp_group_values(net, x, bg, [groups[g] for g in names], progress=False)
    slow = interventional_values(lambda z: predict(net, z), x, bg, [groups[g] for g in names])
    for m in range(1 << len(names)):
        np.testing.assert_allclose(fast[m], slow[m], rtol=1e-5, atol=1e-6)


def test_group_shapley_efficiency(net_and_data):
    net, x, bg, groups = net_and_data
    res = group_shapley(net, x, bg, groups, progress=False)
    gap = predict(net, x) - predict(net, bg).mean()
    np.testing.assert_allclose(res["phi"].sum(axis=1), gap, rtol=1e-5, atol=1e-6)
    assert res["efficiency_max_abs_error"] < 1e-9
    assert sum(res["share"].values()) == pytest.approx(1.0)


def test_groups_must_partition(net_and_data):
    net, x, bg, groups = net_and_data
    with pytest.raises(ValueError, match="partition"):
        mlp_group_values(net, x, bg, [groups["a"], groups["b"]], progress=False)


def test_share_summary_reproduces_the_paper_arithmetic():
    # importance 32.81 % on 2,048 of 27,248 columns -> 4.365x share ratio, ~6.0x upstream per-dim ratio
    imp = np.zeros(27_248)
    imp[:25_200] = 67.19 / 25_200
    imp[25_200:] = 32.81 / 2_048
    s = share_summary(imp, np.arange(25_200, 27_248), 25_200, 2_048, n_ftcp_active=6_973)
    assert s["ssl_share"] == pytest.approx(0.3281)
    assert s["ssl_dim_share"] == pytest.approx(0.07516, abs=1e-5)
    assert s["enrichment_ratio"] == pytest.approx(4.365, abs=1e-3)
    assert s["per_dim_ratio_upstream"] == pytest.approx(6.009, abs=1e-3)
    assert s["per_dim_ratio_active"] < s["per_dim_ratio_upstream"]


def test_group_importance_shares():
    vals = np.array([[1.0, -1.0, 2.0], [1.0, -1.0, 2.0]])
    g = group_importance(vals, {"x": np.array([0, 1]), "y": np.array([2])})
    assert g["x"]["share_sum_abs"] == pytest.approx(0.5)
    assert g["x"]["share_abs_sum"] == pytest.approx(0.0)      # the two columns cancel
