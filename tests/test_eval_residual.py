"""Out-of-fold residual learning never lets a row's residual come from a model that saw it."""
import numpy as np
from sklearn.linear_model import Ridge

from ftcp.evaluation.residual import fold_indices, out_of_fold_predictions, residual_learning


class Recorder:
    """A model that remembers the rows (by their unique first-column value) it was fitted on."""
    seen: list = []

    def fit(self, x, y, groups=None):
        self.rows = set(x[:, 0].astype(int))
        self.mean = float(np.mean(y))
        return self

    def predict(self, x):
        overlap = self.rows & set(x[:, 0].astype(int))
        Recorder.seen.append(len(overlap))
        return np.full(len(x), self.mean)


def test_oof_rows_never_seen_by_their_model():
    x = np.arange(50, dtype=float)[:, None]
    y = np.arange(50, dtype=float)
    Recorder.seen = []
    folds = fold_indices(50, 5, seed=0)
    oof = out_of_fold_predictions(Recorder, x, y, folds)
    assert Recorder.seen == [0] * 5          # no fold model predicted a row it was fitted on
    for train_idx, held in folds:            # row i's prediction is the mean of the other folds' labels
        np.testing.assert_allclose(oof[held], y[train_idx].mean())
    assert sorted(np.concatenate([h for _, h in folds])) == list(range(50))


def test_group_folds_keep_groups_together():
    groups = np.repeat(np.arange(20), 3)
    for tr, te in fold_indices(len(groups), 4, seed=1, groups=groups):
        assert not set(groups[tr]) & set(groups[te])


class RidgeModel:
    def __init__(self, alpha=1.0):
        self.m = Ridge(alpha=alpha)

    def fit(self, x, y, groups=None):
        self.m.fit(x, y)
        return self

    def predict(self, x):
        return self.m.predict(x)


def test_residual_learning_finds_signal_only_ssl_has():
    rng = np.random.default_rng(0)
    n = 600
    a = rng.normal(size=(n, 5))        # "FTCP"
    b = rng.normal(size=(n, 3))        # "SSL": carries a term FTCP cannot see
    y = a @ np.array([1.0, -1.0, 0.5, 0, 0]) + 0.8 * b[:, 0] + 0.1 * rng.normal(size=n)
    res = residual_learning(RidgeModel, RidgeModel, a[:400], b[:400], y[:400], a[400:], b[400:], y[400:],
                            n_folds=5, seed=0)
    assert res["oof"]["ssl_contribution"] > 0.5
    assert res["oof"]["delta_r2"] > 0 and res["oof"]["delta_mae"] < 0
    assert res["base_test"]["r2"] < res["oof"]["combined_test"]["r2"]
    assert "in_sample" in res and res["n_pool"] == 400
