"""Regression metrics and confidence intervals shared by every scenario."""
from __future__ import annotations

import math

import numpy as np

from ..demo_data import LABELS as _DEMO_LABELS

#: Units of the known targets (the paper's two and the synthetic demo dataset's labels); any other
#: label column is reported without a unit.
TARGET_UNITS = {"formation_energy": "eV/atom", "band_gap": "eV",
                **{name: spec["unit"] for name, spec in _DEMO_LABELS.items()}}


def target_unit(target: str) -> str:
    return TARGET_UNITS.get(target, "")


def regression_metrics(y_true, y_pred) -> dict:
    """R2, RMSE, MAE, median AE, explained variance, max error, MSE and n for one target.

    Non-finite predictions are not an error (an unregularised fit can overflow); they make
    the affected metrics non-finite, and ``n_nonfinite_pred`` says how many there were.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_pred has {p.size}")
    if y.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if not np.all(np.isfinite(y)):
        raise ValueError("y_true contains non-finite values")
    err = p - y
    with np.errstate(over="ignore", invalid="ignore"):
        mse = float(np.mean(err ** 2))
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        var_err = float(np.var(err))
        var_y = float(np.var(y))
    r2 = 1.0 - mse * y.size / ss_tot if ss_tot > 0 else float("nan")
    evs = 1.0 - var_err / var_y if var_y > 0 else float("nan")
    return {
        "n": int(y.size),
        "r2": r2,
        "rmse": math.sqrt(mse) if mse == mse else float("nan"),
        "mae": float(np.mean(np.abs(err))),
        "median_ae": float(np.median(np.abs(err))),
        "explained_variance": evs,
        "max_error": float(np.max(np.abs(err))),
        "mse": mse,
        "n_nonfinite_pred": int(np.sum(~np.isfinite(p))),
    }


def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean and Student-t confidence interval of independent repeats (e.g. seeds)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    out = {"mean": float(v.mean()) if v.size else float("nan"), "n": int(v.size),
           "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
           "method": f"student-t {confidence:.0%} over repeats"}
    if v.size > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * out["std"] / math.sqrt(v.size))
        out.update(lo=out["mean"] - half, hi=out["mean"] + half)
    else:
        out.update(lo=float("nan"), hi=float("nan"))
    return out


def bootstrap_ci(samples, statistic, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> dict:
    """Percentile bootstrap of ``statistic(samples[idx])`` resampling the first axis.

    ``statistic`` maps an array shaped like ``samples`` (rows resampled) to a float.
    """
    x = np.asarray(samples)
    if len(x) < 2:
        raise ValueError("bootstrap needs at least 2 rows")
    rng = np.random.default_rng(seed)
    point = float(statistic(x))
    reps = np.array([statistic(x[rng.integers(0, len(x), len(x))]) for _ in range(n_boot)])
    a = (1 - confidence) / 2
    return {"estimate": point, "lo": float(np.quantile(reps, a)), "hi": float(np.quantile(reps, 1 - a)),
            "n_boot": int(n_boot), "n_rows": int(len(x)),
            "method": f"percentile bootstrap {confidence:.0%} over rows"}
