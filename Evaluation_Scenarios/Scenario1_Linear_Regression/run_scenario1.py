#!/usr/bin/env python
"""Scenario 1 — linear regression on raw FTCP vs SSL features (the paper's first claim).

Protocol, per random split (10/20/30/40 % test) and target:

1. Training and test parts come from the store's split ID lists; labels, FTCP, SSL and
   Magpie rows are joined by material ID (a missing or repeated ID is an error).
2. Feature sets: raw FTCP flattened to 25,200 columns (streamed from disk), the 2,048-d SSL
   table, PCA-2048 of standardised FTCP (upstream's "fair comparison"), and Magpie
   composition features (an external reference).
3. Models, all on StandardScaler'd features fitted on the training part: the mean
   predictor; plain OLS (upstream's ``LinearRegression``; minimum-norm when the design is
   rank-deficient, see the README); Ridge with alpha chosen by exact leave-one-out
   (RidgeCV); Ridge(alpha = 1000) on FTCP (the DESIGN section 7 anchor).
4. Metrics on train and test (R2, RMSE, MAE, median AE, explained variance, max error),
   preprocessing + fit time, prediction time and peak resident memory, and the FTCP/SSL
   fit-time ratio (the paper's 37-40x).

One JSON per (target, split) goes to ``<out>/scenario1/``; RESULTS.md and the figures are
then regenerated from every JSON there.  ``--quick`` subsamples (1,500 train / 500 test
rows) for a smoke run.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ftcp.dataset import open_dataset
from ftcp.errors import UserError, run_main
from ftcp.evaluation import features as F
from ftcp.evaluation import results as R
from ftcp.evaluation.cli import regenerate_report
from ftcp.evaluation.linear import DEFAULT_ALPHAS, array_chunks, evaluate_suite
from ftcp.evaluation.metrics import bootstrap_ci, regression_metrics, target_unit
from ftcp.evaluation.timing import combine, measure
from ftcp.logs import configure

FEATURE_SETS = ("ftcp", "pca", "ssl", "magpie")
QUICK_TRAIN, QUICK_TEST = 1500, 500

log = logging.getLogger(__name__)


def parse_args(argv=None, prog: str | None = None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    R.add_common_arguments(p)
    p.add_argument("--target", default="all",
                   help="label column(s): formation_energy, band_gap, any label name, a comma list, "
                        "or 'all' (the store's targets) (default: %(default)s)")
    p.add_argument("--split", default="all",
                   help="random split by test percent (10, 20, 30, 40), a split name, or 'all' (default: %(default)s)")
    p.add_argument("--features", default=",".join(FEATURE_SETS),
                   help=f"comma list of feature sets among {', '.join(FEATURE_SETS)} (default: all)")
    p.add_argument("--pca-components", type=int, default=2048)
    p.add_argument("--alphas", default=None,
                   help="comma list of ridge alphas for RidgeCV (default: 19 half-decades 1e-3 .. 1e6)")
    p.add_argument("--chunk-size", type=int, default=4096, help="rows per streamed FTCP chunk")
    p.add_argument("--magpie-cache", default=None,
                   help="folder for the Magpie feature cache (default: <data root>/Features)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap resamples of the test rows for the RMSE confidence intervals (default: %(default)s)")
    args = p.parse_args(argv)
    R.apply_quick_caps(args, {})
    return args


def _rmse(pair: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pair[:, 1] - pair[:, 0]) ** 2)))


def model_rows(suite: dict, feature_set: str, labels: dict, fit_phases: list[str], targets: list[str],
               y_test: np.ndarray, n_boot: int, seed: int) -> dict:
    """{target: [row, ...]} from an evaluate_suite result; rows carry metrics, a percentile-bootstrap
    interval of the test RMSE (test rows resampled) and timing."""
    out = {t: [] for t in targets}
    timing = suite["timing"]
    for name, m in suite["models"].items():
        phases = fit_phases + (["train_pass"] if name == "ridgecv" else [])
        fit_time = combine(*(timing[p] for p in phases))
        for j, t in enumerate(targets):
            spec = m["spec"][j]
            out[t].append({
                "features": feature_set, "model": name, "label": labels.get(name, name),
                "spec": spec, "alpha": spec[1] if isinstance(spec, list) and spec[0] == "ridge" else None,
                "train": m["train"][j], "test": m["test"][j],
                "test_rmse_ci": bootstrap_ci(np.stack([y_test[:, j], m["test_pred"][:, j]], 1), _rmse, n_boot,
                                             seed=seed) if n_boot and np.isfinite(m["test_pred"][:, j]).all() else None,
                "timing": {"preprocess_fit_s": fit_time["wall_s"], "preprocess_fit_cpu_s": fit_time["cpu_s"],
                           "phases": fit_time["phases"], "predict_s": timing["predict"]["wall_s"],
                           "peak_rss_mb": max(fit_time["peak_rss_mb"], timing["predict"]["peak_rss_mb"]),
                           "peak_anon_mb": max(fit_time["peak_anon_mb"], timing["predict"]["peak_anon_mb"]),
                           "peak_rss_delta_mb": fit_time["peak_rss_delta_mb"]},
            })
    return out


def ols_failure_diagnostics(suite: dict, y_test: np.ndarray, targets: list[str]) -> dict:
    """Why unregularised OLS fails: extreme standardised test values and where the error sits."""
    z = suite["test_max_abs_z"]
    out = {"test_max_abs_z_quantiles": {q: float(np.quantile(z, q)) for q in (0.5, 0.9, 0.99, 1.0)},
           "test_rows_with_max_abs_z_over_100": int((z > 100).sum()), "per_target": {}}
    pred = suite["models"]["ols"]["test_pred"]
    for j, t in enumerate(targets):
        se = (pred[:, j] - y_test[:, j]) ** 2
        top = np.argsort(se)[::-1][:10]
        out["per_target"][t] = {
            "share_of_test_sse_from_10_worst_rows": float(se[top].sum() / se.sum()) if se.sum() > 0 else None,
            "max_abs_z_of_10_worst_rows": z[top].tolist(),
            "rmse_without_10_worst_rows": float(np.sqrt(np.delete(se, top).mean())) if len(se) > 10 else None}
    return out


def sklearn_crosscheck(x_train, y_train, x_test, ours: np.ndarray) -> dict:
    """Upstream's exact pipeline (StandardScaler + LinearRegression) on an in-memory table."""
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    with measure("sklearn") as rec:
        scaler = StandardScaler().fit(x_train)
        model = LinearRegression().fit(scaler.transform(x_train), y_train)
    pred = model.predict(scaler.transform(x_test))
    pred = pred[:, None] if pred.ndim == 1 else pred
    return {"preprocess_fit_s": rec["wall_s"], "peak_rss_delta_mb": rec["peak_rss_delta_mb"],
            "max_abs_pred_diff_vs_ours": float(np.max(np.abs(pred - ours))),
            "max_abs_pred": float(np.max(np.abs(ours)))}


def run_split(ds, split: str, targets: list[str], args, feature_sets: list[str], alphas, prov: dict,
              label: str) -> list[Path]:
    with measure(split) as run:
        rows, extra, info = evaluate_split(ds, split, targets, args, feature_sets, alphas)
    train, test = info["train"], info["test"]
    leak = F.leak_check(ds.ssl_dir, test.ids) if "ssl" in feature_sets else None
    written = []
    for t in targets:
        payload = {
            "ssl_run": label, "protocol": leak["protocol"] if leak else None, "leak_check": leak,
            "scenario": 1, "target": t, "unit": target_unit(t), "split": split,
            "split_info": {k: v for k, v in ds.split_info(split).items()
                           if k in ("seed", "method", "n_train", "n_test")},
            "quick": bool(args.quick), "n_train": len(train), "n_test": len(test),
            "n_dropped_unlabelled": info["dropped"], "rows": rows[t], "time_ratio": info["ratio"].get(t),
            "run": {"wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_mb"], "peak_anon_mb": run["peak_anon_mb"],
                    "note": "all targets of this split together"},
            **for_target(extra, targets.index(t)), "provenance": prov,
        }
        name = f"{t}__{split}" + ("__quick" if args.quick else "")
        written.append(R.write_result(R.results_dir(args), 1, name, payload, run_label=label))
        best = min(rows[t], key=lambda r: r["test"]["rmse"] if np.isfinite(r["test"]["rmse"]) else np.inf)
        log.info(f"[{split}] {t}: best test RMSE {best['test']['rmse']:.4g} {target_unit(t)} "
              f"({best['features']} {best['label']}) -> {written[-1]}")
    return written


def for_target(extra: dict, j: int) -> dict:
    """The per-target slice of the feature-set facts (OLS sweep, RidgeCV curve) for target ``j``."""
    out = {"feature_sets": {}, "diagnostics": extra["diagnostics"]}
    for name, fs in extra["feature_sets"].items():
        fs = dict(fs)
        if fs.get("ols_sweep"):
            fs["ols_sweep"] = [{"cond": e["cond"], "rank": e["rank"], "train": e["train"][j], "test": e["test"][j]}
                               for e in fs["ols_sweep"]]
        if fs.get("ridgecv"):
            rc = fs["ridgecv"]
            fs["ridgecv"] = {"alphas": rc["alphas"], "loo_mse": [row[j] for row in rc["loo_mse"]],
                             "alpha": rc["alpha"][j], "at_grid_edge": rc["at_grid_edge"][j]}
        out["feature_sets"][name] = fs
    return out


def evaluate_split(ds, split: str, targets: list[str], args, feature_sets: list[str], alphas):
    train, y_tr, drop_tr = F.labelled(ds.part(split, "train"), targets)
    test, y_te, drop_te = F.labelled(ds.part(split, "test"), targets)
    if args.quick:
        train = train.subset(F.subsample_ids(train.ids, QUICK_TRAIN, args.seed))
        test = test.subset(F.subsample_ids(test.ids, QUICK_TEST, args.seed + 1))
        y_tr, y_te = train.labels(targets), test.labels(targets)
    log.info(f"[{split}] train {len(train)}, test {len(test)} (targets {targets})")
    rows = {t: [] for t in targets}
    extra = {"feature_sets": {}, "diagnostics": {}}

    mean = y_tr.mean(axis=0)
    for j, t in enumerate(targets):
        rows[t].append({"features": "none", "model": "mean", "label": "mean predictor",
                        "train": regression_metrics(y_tr[:, j], np.full(len(y_tr), mean[j])),
                        "test": regression_metrics(y_te[:, j], np.full(len(y_te), mean[j])), "timing": None})

    fit_phases = ["column_stats", "qr", "svd"]
    if "ftcp" in feature_sets or "pca" in feature_sets:
        k = min(args.pca_components, len(train) - 1)
        models = {"ols": "ols", "ridge_alpha1000": ("ridge", 1000.0), "pca_ols": ("pcr", k)}
        log.info(f"[{split}] FTCP: streaming {len(train)} x 25,200 ...")
        suite = evaluate_suite(F.ftcp_chunks(train, args.chunk_size), train.ids, y_tr,
                               F.ftcp_chunks(test, args.chunk_size), test.ids, y_te, models, alphas)
        extra["feature_sets"]["ftcp"] = dict(suite["fit"], ridgecv=suite["ridgecv"], ols_sweep=suite["ols_sweep"],
                                             pca_components=k)
        extra["diagnostics"]["ftcp_ols"] = ols_failure_diagnostics(suite, y_te, targets)
        labels = {"ols": "OLS (min-norm, cond=eps)", "ridge_alpha1000": "Ridge (alpha 1000)",
                  "ridgecv": "RidgeCV (LOO)", "pca_ols": f"PCA-{k} + OLS"}
        for t, rs in model_rows(suite, "ftcp", labels, fit_phases, targets, y_te, args.n_boot, args.seed).items():
            for r in rs:
                if r["model"] == "pca_ols":
                    r["features"] = f"ftcp_pca{k}"
                wanted = "pca" if r["model"] == "pca_ols" else "ftcp"
                if wanted in feature_sets:
                    rows[t].append(r)

    if "ssl" in feature_sets:
        x_tr, x_te = train.ssl_features(), test.ssl_features()
        suite = evaluate_suite(array_chunks(train.ids, x_tr), train.ids, y_tr,
                               array_chunks(test.ids, x_te), test.ids, y_te, {"ols": "ols"}, alphas)
        extra["feature_sets"]["ssl"] = dict(suite["fit"], ridgecv=suite["ridgecv"], ols_sweep=suite["ols_sweep"])
        extra["diagnostics"]["ssl_sklearn_crosscheck"] = sklearn_crosscheck(
            x_tr, y_tr, x_te, suite["models"]["ols"]["test_pred"])
        for t, rs in model_rows(suite, "ssl", {"ols": "OLS (min-norm, cond=eps)", "ridgecv": "RidgeCV (LOO)"},
                                fit_phases, targets, y_te, args.n_boot, args.seed).items():
            rows[t].extend(rs)

    if "magpie" in feature_sets:
        cache = Path(args.magpie_cache) if args.magpie_cache else Path(ds.root) / F.MAGPIE_DIR
        mtr, mte = F.magpie_table(train, cache), F.magpie_table(test, cache)
        ytr_m = train.subset(mtr["ids"]).labels(targets)
        yte_m = test.subset(mte["ids"]).labels(targets)
        suite = evaluate_suite(array_chunks(mtr["ids"], mtr["x"]), mtr["ids"], ytr_m,
                               array_chunks(mte["ids"], mte["x"]), mte["ids"], yte_m, {"ols": "ols"}, alphas)
        extra["feature_sets"]["magpie"] = dict(
            suite["fit"], ridgecv=suite["ridgecv"], ols_sweep=suite["ols_sweep"], n_train_failed=len(mtr["failures"]),
            n_test_failed=len(mte["failures"]), failures=(mtr["failures"] + mte["failures"])[:50],
            featurizer="matminer ElementProperty.from_preset('magpie') on pymatgen Composition(reduced formula)")
        for t, rs in model_rows(suite, "magpie", {"ols": "OLS (min-norm, cond=eps)", "ridgecv": "RidgeCV (LOO)"},
                                fit_phases, targets, yte_m, args.n_boot, args.seed).items():
            rows[t].extend(rs)

    ratio = {}
    for t in targets:
        by = {(r["features"], r["model"]): r for r in rows[t]}
        if ("ftcp", "ols") in by and ("ssl", "ols") in by:
            f, s = by[("ftcp", "ols")]["timing"], by[("ssl", "ols")]["timing"]
            ratio[t] = {"preprocess_fit_ftcp_over_ssl": f["preprocess_fit_s"] / s["preprocess_fit_s"],
                        "preprocess_fit_cpu_ftcp_over_ssl": f["preprocess_fit_cpu_s"] / s["preprocess_fit_cpu_s"],
                        "predict_ftcp_over_ssl": f["predict_s"] / s["predict_s"]}

    info = {"train": train, "test": test, "dropped": {"train": drop_tr, "test": drop_te}, "ratio": ratio}
    return rows, extra, info


def main(argv=None, prog: str | None = None) -> int:
    """The scenario with these arguments (``prog``: the name its help and errors show); its exit status."""
    configure()
    args = parse_args(argv, prog)
    feature_sets = [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = sorted(set(feature_sets) - set(FEATURE_SETS))
    if unknown:
        raise UserError(f"unknown feature set(s) {unknown}; choose from {FEATURE_SETS}")
    ds = open_dataset(args.data, R.ssl_dir_of(args) if "ssl" in feature_sets else None)
    targets = F.resolve_targets(ds, args.target)
    splits = F.resolve_splits(ds, args.split)
    alphas = DEFAULT_ALPHAS if args.alphas is None else tuple(float(a) for a in args.alphas.split(","))
    extra = {"ssl": F.ssl_info(ds.ssl_dir)} if "ssl" in feature_sets else {}
    label = extra["ssl"]["label"] if extra else "baselines"
    if extra.get("ssl", {}).get("standin"):
        log.warning("the SSL table is a marked STAND-IN, not SSL embeddings")
    prov = R.provenance(F.dataset_info(ds), args.seed, extra,
                        command=R.command_line(__file__, argv))
    with measure("scenario1") as total:
        for split in splits:
            run_split(ds, split, targets, args, feature_sets, alphas, prov, label)
    print(f"scenario 1 done in {total['wall_s']:.1f} s, peak RSS {total['peak_rss_mb']:.0f} MB "
          f"(anonymous {total['peak_anon_mb']:.0f} MB)", flush=True)
    regenerate_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
