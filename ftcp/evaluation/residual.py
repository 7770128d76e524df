"""Residual learning with out-of-fold base predictions (Scenario 3).

A base model on FTCP predicts the target; a residual model on SSL features learns what
the base model gets wrong; the final prediction is the sum.  Upstream fitted the residual
model to the base model's *in-sample* residuals, which are much smaller than the errors it
makes on new crystals (the residual model then learns a shifted target).  Here the
training residuals are K-fold out-of-fold: row i's residual comes from a base model fitted
without row i (its fold held out; scalers and early stopping inside that fit see only the
fold's training rows).  The test prediction uses a base model refitted on the whole pool.

Models are any objects with ``fit(x, y, groups=None) -> self`` and ``predict(x)``; they
are built by zero-argument factories so that every fit starts fresh.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .metrics import regression_metrics


def fold_indices(n: int, n_folds: int, seed: int, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """K (train_idx, held_out_idx) pairs; GroupKFold-style (no group on both sides) with ``groups``."""
    from sklearn.model_selection import GroupKFold, KFold

    if n_folds < 2:
        raise ValueError("need at least 2 folds for out-of-fold residuals")
    if groups is not None:
        groups = np.asarray(groups)
        # shuffle group identities with the seed, then balanced GroupKFold
        uniq, inv = np.unique(groups, return_inverse=True)
        perm = np.random.default_rng(seed).permutation(len(uniq))
        return list(GroupKFold(n_splits=n_folds).split(np.zeros(n), groups=perm[inv]))
    return list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def out_of_fold_predictions(make_model: Callable, x, y, folds, groups=None) -> np.ndarray:
    """Prediction for every row from the fold model that did not see it."""
    y = np.asarray(y, dtype=np.float64)
    oof = np.full(len(y), np.nan)
    for train_idx, held_idx in folds:
        if np.intersect1d(train_idx, held_idx).size:
            raise ValueError("a fold's training rows include held-out rows")
        g = None if groups is None else np.asarray(groups)[train_idx]
        model = make_model().fit(x[train_idx], y[train_idx], groups=g)
        oof[held_idx] = model.predict(x[held_idx])
    if np.isnan(oof).any():
        raise ValueError(f"{int(np.isnan(oof).sum())} rows were never held out by the folds")
    return oof


def base_predictions(make_base: Callable, base_pool, y_pool, base_test, n_folds: int = 5, seed: int = 0,
                     groups=None) -> dict:
    """The base model's K-fold out-of-fold pool predictions, and the test and in-sample predictions of
    the base model refitted on the whole pool (what every residual model of one seed shares)."""
    y_pool = np.asarray(y_pool, dtype=np.float64)
    folds = fold_indices(len(y_pool), n_folds, seed, groups)
    oof = out_of_fold_predictions(make_base, base_pool, y_pool, folds, groups)
    base = make_base().fit(base_pool, y_pool, groups=groups)
    return {"oof": oof, "test": base.predict(base_test), "in_sample": base.predict(base_pool),
            "n_folds": int(n_folds), "fold_kind": "group" if groups is not None else "random"}


def residual_metrics(make_resid: Callable, resid_pool, resid_test, y_pool, y_test, base: dict, groups=None,
                     in_sample_variant: bool = True) -> dict:
    """Fit the residual model on the base model's out-of-fold (and, for comparison, in-sample)
    residuals; base, combined and residual test metrics (see :func:`residual_learning`)."""
    y_pool = np.asarray(y_pool, dtype=np.float64)
    y_test = np.asarray(y_test, dtype=np.float64)
    test_resid = y_test - base["test"]

    def with_residuals(train_resid):
        resid_model = make_resid().fit(resid_pool, train_resid, groups=groups)
        r_pred = resid_model.predict(resid_test)
        return _combined_metrics(y_test, base["test"], r_pred, test_resid), r_pred

    out = {"n_pool": int(len(y_pool)), "n_test": int(len(y_test)), "n_folds": base["n_folds"],
           "fold_kind": base["fold_kind"],
           "base_test": regression_metrics(y_test, base["test"]),
           "base_oof": regression_metrics(y_pool, base["oof"])}
    out["oof"], r_pred = with_residuals(y_pool - base["oof"])
    out["base_train_in_sample"] = regression_metrics(y_pool, base["in_sample"])
    if in_sample_variant:
        out["in_sample"], _ = with_residuals(y_pool - base["in_sample"])
    out["predictions"] = {"base_test": base["test"], "residual_test": r_pred}
    return out


def residual_learning(make_base: Callable, make_resid: Callable, base_pool, resid_pool, y_pool,
                      base_test, resid_test, y_test, n_folds: int = 5, seed: int = 0, groups=None,
                      in_sample_variant: bool = True) -> dict:
    """Fit base + residual models and report base, combined and residual test metrics.

    Returns a dict of metrics (and the test predictions under ``"predictions"``):
    ``ssl_contribution`` = test R2 of the residual model on the base model's test
    residuals (upstream's "SSL explains x % of the residual variance"), ``delta_r2`` and
    ``delta_mae`` = combined minus base.  With ``in_sample_variant`` the upstream protocol
    (residual model on in-sample residuals) is run beside it for comparison.
    """
    base = base_predictions(make_base, base_pool, y_pool, base_test, n_folds, seed, groups)
    return residual_metrics(make_resid, resid_pool, resid_test, y_pool, y_test, base, groups, in_sample_variant)


def _combined_metrics(y_test, base_pred, resid_pred, test_resid) -> dict:
    base = regression_metrics(y_test, base_pred)
    comb = regression_metrics(y_test, base_pred + resid_pred)
    resid = regression_metrics(test_resid, resid_pred)
    return {"combined_test": comb, "residual_test": resid,
            "ssl_contribution": resid["r2"],
            "delta_r2": comb["r2"] - base["r2"],
            "delta_rmse": comb["rmse"] - base["rmse"],
            "delta_mae": comb["mae"] - base["mae"],
            "delta_mae_pct": 100.0 * (comb["mae"] - base["mae"]) / base["mae"]}


class SklearnRegressor:
    """fit/predict wrapper for a scikit-learn regressor factory, on columns ``keep``."""

    def __init__(self, make_estimator: Callable, keep: np.ndarray | None = None):
        self.make_estimator, self.keep = make_estimator, keep

    def _x(self, x):
        return x if self.keep is None else x[:, self.keep]

    def fit(self, x, y, groups=None):
        self.model_ = self.make_estimator().fit(self._x(x), y)
        return self

    def predict(self, x):
        return self.model_.predict(self._x(x))


def hist_gradient_boosting(seed: int, role: str = "base", iter_scale: float = 1.0):
    """scikit-learn HistGradientBoosting with upstream's XGBoost settings mapped where possible.

    Upstream (FG script): base XGBRegressor(500 trees, depth 8, lr 0.05, subsample 0.8,
    colsample_bytree 0.8, min_child_weight 3, gamma 0.1, alpha 0.1, lambda 1.0); residual
    XGBRegressor(300, depth 6, lr 0.05, subsample 0.8, colsample 0.8, min_child_weight 5,
    gamma 0.2, alpha 0.2, lambda 2.0).  HistGradientBoostingRegressor has no row
    subsampling, no L1 term and no split-gain threshold; colsample maps to its per-split
    ``max_features``, min_child_weight (hessian = row count for squared error) to
    ``min_samples_leaf``, lambda to ``l2_regularization``.  A stand-in, not XGBoost.
    ``iter_scale`` shrinks the iteration counts (quick runs only).
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    if role == "base":
        params = dict(max_iter=500, max_depth=8, learning_rate=0.05, max_features=0.8,
                      min_samples_leaf=3, l2_regularization=1.0)
    else:
        params = dict(max_iter=300, max_depth=6, learning_rate=0.05, max_features=0.8,
                      min_samples_leaf=5, l2_regularization=2.0)
    params["max_iter"] = max(1, int(round(params["max_iter"] * iter_scale)))
    return HistGradientBoostingRegressor(early_stopping=False, random_state=seed, **params)


def xgboost_regressor(seed: int, role: str = "base", iter_scale: float = 1.0, n_jobs: int | None = None):
    """Upstream's XGBoost models with their exact parameters (FG script; the CPU build of
    xgboost is enough: ``pip install crys-rep-enrich[xgboost]``).

    base: 500 trees, depth 8, lr 0.05, subsample 0.8, colsample_bytree 0.8, min_child_weight 3,
    gamma 0.1, alpha 0.1, lambda 1.0; residual: 300 trees, depth 6, lr 0.05, subsample 0.8,
    colsample 0.8, min_child_weight 5, gamma 0.2, alpha 0.2, lambda 2.0; ``tree_method='hist'``.
    """
    try:
        from xgboost import XGBRegressor
    except ImportError as exc:
        raise ImportError("the xgb models need xgboost: pip install 'crys-rep-enrich[xgboost]' "
                          "(or xgboost-cpu)") from exc
    if role == "base":
        params = dict(n_estimators=500, max_depth=8, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                      min_child_weight=3, gamma=0.1, reg_alpha=0.1, reg_lambda=1.0)
    else:
        params = dict(n_estimators=300, max_depth=6, learning_rate=0.05, subsample=0.8, colsample_bytree=0.8,
                      min_child_weight=5, gamma=0.2, reg_alpha=0.2, reg_lambda=2.0)
    params["n_estimators"] = max(1, int(round(params["n_estimators"] * iter_scale)))
    return XGBRegressor(random_state=seed, tree_method="hist", device="cpu", n_jobs=n_jobs, **params)

