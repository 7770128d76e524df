"""Metric, CI and timing plumbing of ftcp.evaluation."""
import numpy as np
import pytest
from sklearn import metrics as skm

from ftcp.evaluation.metrics import bootstrap_ci, regression_metrics, t_interval, target_unit
from ftcp.evaluation.timing import anon_mb, combine, measure


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    p = y + rng.normal(scale=0.3, size=200)
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["median_ae"] == pytest.approx(skm.median_absolute_error(y, p))
    assert m["explained_variance"] == pytest.approx(skm.explained_variance_score(y, p))
    assert m["max_error"] == pytest.approx(skm.max_error(y, p))
    assert m["n"] == 200 and m["n_nonfinite_pred"] == 0


def test_regression_metrics_rejects_bad_input_and_counts_overflow():
    with pytest.raises(ValueError, match="values"):
        regression_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        regression_metrics([1.0, np.nan], [1.0, 2.0])
    m = regression_metrics([1.0, 2.0, 3.0], [1.0, np.inf, 3.0])
    assert m["n_nonfinite_pred"] == 1 and not np.isfinite(m["rmse"])


def test_t_interval_and_bootstrap():
    ci = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci["mean"] == 3.0 and ci["lo"] < 3.0 < ci["hi"]
    # t(0.975, 4) = 2.776, std = 1.5811 -> half width 1.963
    assert ci["hi"] - ci["mean"] == pytest.approx(2.7764451 * 1.5811388 / np.sqrt(5), rel=1e-5)
    rows = np.arange(100, dtype=float)
    b = bootstrap_ci(rows, np.mean, n_boot=300, seed=1)
    assert b["estimate"] == pytest.approx(49.5) and b["lo"] < 49.5 < b["hi"]
    assert bootstrap_ci(rows, np.mean, n_boot=300, seed=1) == b     # seeded


def test_units():
    assert target_unit("formation_energy") == "eV/atom" and target_unit("band_gap") == "eV"
    assert target_unit("some_other_label") == ""
    # the synthetic demo targets carry their units (the demo report showed empty units before)
    assert target_unit("ewald_energy_per_atom") == "eV/atom" and target_unit("density") == "g/cm^3"


def test_measure_sees_numpy_allocations_and_nesting():
    anon_before = anon_mb()
    with measure("outer") as outer:
        with measure("inner") as inner:
            a = np.ones(40_000_000)          # 320 MB, outside tracemalloc's view
            a += 1
            del a
        small = np.ones(10)
    assert inner["peak_rss_delta_mb"] > 250
    assert inner["peak_anon_mb"] - anon_before > 250        # anonymous memory, sampled
    assert outer["peak_anon_mb"] >= inner["peak_anon_mb"]
    assert outer["peak_rss_mb"] >= inner["peak_rss_mb"]      # inner peak reaches the outer block
    assert inner["wall_s"] > 0 and outer["wall_s"] >= inner["wall_s"]
    tot = combine(inner, outer)
    assert tot["wall_s"] == pytest.approx(inner["wall_s"] + outer["wall_s"])
    assert tot["peak_rss_mb"] == max(inner["peak_rss_mb"], outer["peak_rss_mb"])
    del small
