"""The training step (ftcp.ssl.steps): non-finite steps skipped on the device, no data-dependent
operation anywhere in a step (what CUDA-graph capture needs), and the cross-modal targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ftcp import layout as L
from ftcp.ssl import crossmodal as X
from ftcp.ssl import data as D
from ftcp.ssl.batches import DeviceData, load_block_fields
from ftcp.ssl.blocks import load_block
from ftcp.ssl.metrics import RegressionTask
from ftcp.ssl.steps import TrainStep, make_optimizer
from ftcp.ssl.synthetic import synthetic_root_cached


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))

    def forward(self, inputs):
        return {"y": {"value": self.net(inputs["x"])[:, 0]}}


def _tiny_step():
    torch.manual_seed(0)
    model = _Tiny()
    task = RegressionTask("y")
    task.fitted = {"mean": torch.zeros(1, dtype=torch.float64), "std": torch.ones(1, dtype=torch.float64)}
    opt = make_optimizer(model, 1e-2, 0.0, torch.device("cpu"), capturable=False)
    return model, opt, TrainStep(model, [task], opt, 1.0, False, torch.device("cpu"), 4, graphs=False)


def test_a_non_finite_step_is_skipped_without_touching_weights_moments_or_norm_statistics():
    model, opt, step = _tiny_step()
    model.train()
    good = {"x": torch.randn(8, 3)}, {"y": {"value": torch.randn(8)}}
    step.new_epoch()
    step(*good)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in opt.state.values()]
    counts = [float(s["step"]) for s in opt.state.values()]
    bad = {"x": torch.full((8, 3), float("nan"))}, {"y": {"value": torch.randn(8)}}
    step(*bad)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k           # weights and BatchNorm running statistics
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, opt.state.values(), strict=False))
    assert [float(s["step"]) for s in opt.state.values()] == counts
    step(*good)
    sums, skipped, flags = step.read(3)
    assert skipped == 1 and flags.tolist() == [False, True, False]
    assert np.isfinite(sums).all()
    assert not torch.equal(before["net.0.weight"], model.state_dict()["net.0.weight"])


def _fake(mode, tree):
    if isinstance(tree, dict):
        return {k: _fake(mode, v) for k, v in tree.items()}
    return mode.from_tensor(tree) if isinstance(tree, torch.Tensor) else tree


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = synthetic_root_cached(tmp_path_factory.mktemp("steps"))
    data = D.prepare(root, root / "SSL")
    X.ensure_descriptors(data.source, data.ssl_dir)
    return data


@pytest.mark.parametrize("crossmodal", [0.0, 1.0])
@pytest.mark.parametrize("number", range(1, 7))
def test_a_whole_step_has_no_data_dependent_operation(prepared, number, crossmodal):
    """Run every block's step (forward, losses, backward, clipping, fused AdamW, bookkeeping) on fake
    tensors: .item(), nonzero, boolean indexing or a Python branch on a tensor value would raise here,
    and would break CUDA-graph capture (and force a host sync) on a GPU."""
    block = load_block(number)
    cfg = block.model_config({"crossmodal_weight": crossmodal})
    block.configure(cfg)
    fields = load_block_fields(block, prepared)
    dd = DeviceData(fields, block.lengths(fields), block.sequence_fields, torch.device("cpu"))
    block.stats = block.fit_stats(dd.subset(prepared.index["train"]))
    pos = prepared.index["train"][:16]
    inputs, targets = block.views(dd.gather(torch.as_tensor(pos), dd.batch_length(pos)),
                                  torch.Generator().manual_seed(0), train=True)
    for task in block.tasks:
        state = task.fit_init("cpu")
        task.fit_update(state, targets[task.name])
        task.fit_finish(state)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        model = block.create_model(cfg).train()
        opt = make_optimizer(model, 1e-3, 1e-4, torch.device("cpu"), capturable=False)
        step = TrainStep(model, block.tasks, opt, 1.0, False, torch.device("cpu"), 4, graphs=False)
        for task in block.tasks:
            task.fitted = {k: mode.from_tensor(v) for k, v in task.fitted.items()}
        step._body(_fake(mode, inputs), _fake(mode, targets))


def test_crossmodal_descriptors_of_simple_cells():
    from pymatgen.core import Lattice, Structure

    from ftcp import featurize

    cells = [Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]]),
             Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])]
    ftcp = featurize(cells)
    regions = {r: L.region(ftcp, r) for r in X.REGIONS}
    desc = X.crystal_descriptors(regions)
    names = X.descriptor_names()
    col = {n: i for i, n in enumerate(names)}
    assert desc.shape == (2, len(names)) and np.isfinite(desc).all()
    np.testing.assert_allclose(desc[:, col["log_volume_per_atom"]], np.log([27.0, 32.0]), rtol=1e-5)
    np.testing.assert_allclose(desc[:, col["mean_nn_distance"]], [3.0, 4.0 * np.sqrt(3) / 2], rtol=1e-5)
    np.testing.assert_allclose(desc[:, col["n_elements"]], [1, 2])
    np.testing.assert_allclose(desc[1, col["fraction_0"]:col["fraction_0"] + 2], [0.5, 0.5])
    np.testing.assert_allclose(desc[:, col["mean_Z"]], [29, (11 + 17) / 2])
