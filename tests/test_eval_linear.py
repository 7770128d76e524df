"""The streamed linear solver equals scikit-learn's StandardScaler + OLS / Ridge / RidgeCV / PCA."""
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, Ridge, RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ftcp.evaluation.linear import array_chunks, fit_linear, select_alpha


@pytest.fixture(scope="module", params=[60, 150], ids=["n<p dual", "n>p primal"])
def problem(request):
    """Constant / collinear / rare columns, 2 targets; fewer (dual path) or more training rows
    than columns.  Rank-deficient either way (the collinear pair)."""
    rng = np.random.default_rng(0)
    n_train, n_test, p = request.param, 25, 90
    x = (rng.normal(size=(n_train + n_test, p)) * rng.uniform(0.5, 50, size=p) + 5).astype(np.float32)
    x[:, :10] = 0.0                    # structurally zero
    x[:, 10] = 3.0                     # constant, non-zero
    x[:, 11] = 2 * x[:, 12]            # collinear pair
    x[:, 13] = 0.0
    x[0, 13] = 1.0                     # rare "element": one training row ...
    x[n_train + 3, 13] = 1.0           # ... and one test row -> huge test z-score
    x[n_train + 5, 0] = 7.0            # a train-constant column that varies in test
    y = np.stack([rng.normal(size=n_train + n_test) + 0.1 * x[:, 20],
                  rng.normal(size=n_train + n_test) - 0.05 * x[:, 30]], axis=1)
    ids = np.array([f"mp-{i}" for i in range(n_train + n_test)])
    tr, te = slice(0, n_train), slice(n_train, None)
    fit = fit_linear(array_chunks(ids[tr], x[tr], chunk_size=17), ids[tr], y[tr])
    return dict(x=x.astype(np.float64), y=y, ids=ids, tr=tr, te=te, fit=fit)


def _sk(problem, *steps):
    x, y, tr, te = problem["x"], problem["y"], problem["tr"], problem["te"]
    return make_pipeline(StandardScaler(), *steps).fit(x[tr], y[tr]).predict(x[te])


def _ours(problem, model):
    ids, te = problem["ids"], problem["te"]
    pred, diag = problem["fit"].predict(array_chunks(ids[te], problem["x"][te], 7), ids[te], {"m": model})
    return pred["m"], diag


def test_constant_columns_dropped_and_rank_deficient(problem):
    fit = problem["fit"]
    assert len(fit.active) == 90 - 11          # 10 zero + 1 constant columns dropped
    assert fit.rank(1e-10) <= min(fit.n - 1, 79 - 1)  # centred rows, and the collinear pair
    assert fit.n_features == 90


@pytest.mark.parametrize("cond", [1e-10, 1e-6])
def test_min_norm_ols_equals_lstsq(problem, cond):
    """OLS(cond) = scipy.linalg.lstsq(cond) on the standardised, centred design."""
    from scipy.linalg import lstsq

    x, y, tr, te = problem["x"], problem["y"], problem["tr"], problem["te"]
    sc = StandardScaler().fit(x[tr])
    z = sc.transform(x[tr])
    zm = z.mean(axis=0)
    coef = lstsq(z - zm, y[tr] - y[tr].mean(axis=0), cond=cond)[0]
    ref = (sc.transform(x[te]) - zm) @ coef + y[tr].mean(axis=0)
    ours, diag = _ours(problem, ("ols", cond))
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())
    # the rare column drives the test row's standardised value to ~sqrt(n)
    assert diag["max_abs_z"][3] > 7.0


def test_ols_equals_sklearn_linear_regression(problem):
    import sklearn

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    cond = 1e-6 if (major, minor) >= (1, 9) else None      # LinearRegression's cutoff changed in 1.9
    ours, _ = _ours(problem, ("ols", cond) if cond else "ols")
    ref = _sk(problem, LinearRegression())
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-7 * np.abs(ref).max())


def test_ridge_and_pcr_equal_sklearn(problem):
    np.testing.assert_allclose(_ours(problem, ("ridge", 10.0))[0], _sk(problem, Ridge(alpha=10.0)),
                               rtol=1e-9, atol=1e-9)
    ref = _sk(problem, PCA(n_components=20, svd_solver="full"), LinearRegression())
    np.testing.assert_allclose(_ours(problem, ("pcr", 20))[0], ref, rtol=1e-8, atol=1e-8)


def test_mean_predictor(problem):
    pred, _ = _ours(problem, "mean")
    np.testing.assert_allclose(pred, np.broadcast_to(problem["y"][problem["tr"]].mean(axis=0), pred.shape))


def test_raw_coefficients_reproduce_predictions(problem):
    w, b = problem["fit"].raw_coefficients(("ridge", 3.0))
    x_te = problem["x"][problem["te"]]
    np.testing.assert_allclose(x_te @ w + b, _ours(problem, ("ridge", 3.0))[0], rtol=1e-9, atol=1e-9)


def test_leave_one_out_equals_ridgecv(problem):
    x, y, ids, tr = problem["x"], problem["y"], problem["ids"], problem["tr"]
    alphas = np.logspace(-2, 4, 7)
    loo = problem["fit"].loo_mse(array_chunks(ids[tr], x[tr], 11), ids[tr], y[tr], alphas)
    z = StandardScaler().fit_transform(x[tr])
    for t in range(2):
        ref = RidgeCV(alphas=alphas, store_cv_results=True).fit(z, y[tr][:, t])
        np.testing.assert_allclose(loo[:, t], ref.cv_results_.mean(axis=0), rtol=1e-8)
        assert select_alpha(loo, alphas)[1][t] == ref.alpha_


def test_misaligned_ids_raise(problem):
    x, y, ids, tr = problem["x"], problem["y"], problem["ids"], problem["tr"]
    te = problem["te"]
    with pytest.raises(ValueError, match=f"no feature rows for {len(ids[tr]) - 10} of"):
        fit_linear(array_chunks(ids[:10], x[:10]), ids[tr], y[tr])
    with pytest.raises(ValueError, match="not among the labelled"):
        fit_linear(array_chunks(ids[te], x[te]), ids[tr], y[tr])
    dup = np.concatenate([ids[tr], ids[:1]])
    with pytest.raises(ValueError, match="repeated"):
        fit_linear(array_chunks(dup, np.concatenate([x[tr], x[:1]])), ids[tr], y[tr])


def test_chunks_in_any_order_join_by_id(problem):
    """A source yielding rows in another order gives the same fit (rows joined by ID)."""
    x, y, ids, tr, te = problem["x"], problem["y"], problem["ids"], problem["tr"], problem["te"]
    perm = np.random.default_rng(1).permutation(len(ids[tr]))
    fit = fit_linear(array_chunks(ids[tr][perm], x[tr][perm], 13), ids[tr], y[tr])
    perm_te = np.random.default_rng(2).permutation(25)
    pred, _ = fit.predict(array_chunks(ids[te][perm_te], x[te][perm_te], 6), ids[te], {"r": ("ridge", 1.0)})
    ref, _ = _ours(problem, ("ridge", 1.0))
    np.testing.assert_allclose(pred["r"], ref, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="non-finite"):
        bad = y[tr].copy()
        bad[0, 0] = np.nan
        fit_linear(array_chunks(ids[tr], x[tr]), ids[tr], bad)


def test_float_noise_training_column_counts_as_constant():
    """A column that is 0 on every training row but for float noise must get coefficient 0: with
    StandardScaler's tiny std a test value of 0.5 becomes z ~ 1e13 and even Ridge predicts ~1e12
    (the demo's FTCP Ridge RMSE of ~1e13)."""
    rng = np.random.default_rng(1)
    n, p = 80, 6
    x = rng.normal(size=(n + 10, p))
    y = 2.0 * x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=n + 10)
    x[:, 5] = 0.0
    x[3, 5] = 1e-13                    # rounding noise on one training row
    x[n + 2, 5] = 0.5                  # a real value on one test row
    ids = np.array([f"mp-{i}" for i in range(n + 10)])
    fit = fit_linear(array_chunks(ids[:n], x[:n]), ids[:n], y[:n])
    assert 5 not in fit.active
    clean = fit_linear(array_chunks(ids[:n], x[:n, :5]), ids[:n], y[:n])
    models = {"ridge": ("ridge", 1.0), "ols": "ols"}
    pred, _ = fit.predict(array_chunks(ids[n:], x[n:]), ids[n:], models)
    ref, _ = clean.predict(array_chunks(ids[n:], x[n:, :5]), ids[n:], models)
    for m in models:
        np.testing.assert_allclose(pred[m], ref[m], rtol=1e-10, atol=1e-10)
        assert np.abs(pred[m][:, 0] - y[n:]).max() < 1.0


def test_constant_columns_tolerance():
    from ftcp.evaluation.linear import constant_columns

    lo = np.array([0.0, 0.0, 90.0, 0.0, -5.0])
    hi = np.array([0.0, 1e-12, 90.0 + 5e-6, 1e-3, 5.0])
    assert constant_columns(lo, hi).tolist() == [True, True, True, False, False]
