"""PyTorch regressors: best-epoch restore (deep copy), input restriction, wrapper."""
import numpy as np
import pytest
import torch

from ftcp.evaluation.mlp import (
    TorchMLPRegressor,
    TrainConfig,
    hybrid_mlp,
    inner_split,
    predict,
    regularized_mlp,
    restrict_inputs,
    train_regressor,
)


def _data(n=300, p=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)).astype(np.float32)
    y = x[:, 0] - 2 * x[:, 1] + 0.5 * np.sin(3 * x[:, 2]) + 0.1 * rng.normal(size=n)
    return x, y


def test_best_epoch_weights_are_restored():
    x, y = _data()
    # a large learning rate makes validation R2 bounce, so the best epoch is rarely the last
    cfg = TrainConfig(lr=3e-2, batch_size=32, max_epochs=25, patience=25, monitor="r2")
    torch.manual_seed(0)
    res = train_regressor(hybrid_mlp(12, hidden=(32, 16, 8)), x[:200], y[:200], x[200:], y[200:], cfg, seed=3)
    scores = [h["val_r2"] for h in res.history]
    assert res.best_epoch == int(np.argmax(scores))
    p = predict(res.model, x[200:])
    r2 = 1 - np.sum((y[200:] - p) ** 2) / np.sum((y[200:] - y[200:].mean()) ** 2)
    assert res.best_epoch < res.epochs_run - 1             # the last epoch is worse ...
    assert r2 == pytest.approx(max(scores), abs=1e-5)      # ... and the restored model is the best one
    assert r2 > scores[-1] + 1e-3


def test_early_stopping_stops_and_is_seeded():
    x, y = _data()
    cfg = TrainConfig(lr=1e-3, batch_size=64, max_epochs=200, patience=3, monitor="mse",
                      plateau_factor=0.5, plateau_patience=1, weight_decay=0.01)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)           # the initial weights are drawn by the caller
        runs.append(train_regressor(regularized_mlp(12, hidden=(16, 8)), x[:200], y[:200], x[200:],
                                    y[200:], cfg, seed=1))
    a, b = runs
    assert a.epochs_run < 200 and a.epochs_run == b.epochs_run
    np.testing.assert_allclose(predict(a.model, x[200:]), predict(b.model, x[200:]), rtol=1e-6)


def test_restrict_inputs_keeps_the_function_on_constant_columns():
    torch.manual_seed(0)
    full = hybrid_mlp(10, hidden=(8, 4, 2)).eval()
    x = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    x[:, [2, 7]] = 0.0                          # standardised constant columns are exactly zero
    keep = np.array([0, 1, 3, 4, 5, 6, 8, 9])
    ref = predict(full, x)
    import copy
    small = restrict_inputs(copy.deepcopy(full), keep)
    np.testing.assert_allclose(predict(small, x[:, keep]), ref, rtol=1e-6, atol=1e-7)


def test_inner_split_group_aware():
    groups = np.repeat(np.arange(30), 4)
    tr, va = inner_split(len(groups), 0.2, seed=0, groups=groups)
    assert not set(groups[tr]) & set(groups[va])
    assert len(tr) + len(va) == len(groups)


def test_wrapper_fits_and_restricts():
    x, y = _data(n=240, p=12)
    keep = np.array([i for i in range(12) if i != 5])     # column 5 never varies: not passed

    def make():
        return TorchMLPRegressor(lambda d: regularized_mlp(d, hidden=(16, 8)),
                                 TrainConfig(batch_size=0, max_epochs=30, patience=5, monitor="mse"),
                                 seed=0, init_width=12, init_columns=keep)

    m = make().fit(x[:, keep], y)
    assert m.model_.core[0].in_features == 11
    p = m.predict(x[:, keep])
    assert p.shape == (240,) and np.corrcoef(p, y)[0, 1] > 0.5
    np.testing.assert_allclose(make().fit(x[:, keep], y).predict(x[:, keep]), p, rtol=1e-6)   # seeded
    with pytest.raises(ValueError, match="init_columns"):
        make().fit(x, y)


def test_train_constant_columns_standardise_to_zero_at_predict_time():
    """Columns constant on the fit rows (exactly, or up to float noise) standardise to 0 on every row, so a
    test-only value cannot reach the network (StandardScaler's scale 1 / 1e-13 std gave MLP R2 of -6e27)."""
    from ftcp.evaluation.mlp import column_standardiser

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = x[:, 0] - 0.5 * x[:, 1]
    x[:, 2] = 3.0                      # constant
    x[:, 3] = 0.0
    x[7, 3] = 1e-13                    # float noise
    mean, scale = column_standardiser(x)
    test = rng.normal(size=(6, 5))
    test[:, 2] = 40.0
    test[:, 3] = 0.5
    z = (test - mean) / scale
    assert np.isfinite(z).all() and (z[:, 2] == 0).all() and (z[:, 3] == 0).all()
    assert np.allclose(z[:, [0, 1, 4]], (test[:, [0, 1, 4]] - x[:, [0, 1, 4]].mean(0)) / x[:, [0, 1, 4]].std(0))
    m = TorchMLPRegressor(lambda d: hybrid_mlp(d, hidden=(8,), dropout=(0.0,)),
                          TrainConfig(batch_size=32, max_epochs=5, patience=5), seed=0).fit(x, y)
    same = test.copy()
    same[:, 2], same[:, 3] = 3.0, 0.0
    np.testing.assert_allclose(m.predict(test), m.predict(same), rtol=1e-6)
