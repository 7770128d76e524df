#!/usr/bin/env python
"""Scenario 3 — sample efficiency and residual learning: does SSL explain what FTCP misses?

Sample-efficiency protocol (per seed, per labelled fraction, per base model):

1. Labelled pool = one side of a random split (default: the training side of random_10;
   ``--pool test`` is upstream's reversed protocol); test = the other side.  Subsample
   sizes are fractions of ALL materials in the store (upstream: 1 % of 129,473 = 1,294);
   the same sizes are also reported as a percentage of the pool.  Subsamples are nested
   (1 % inside 5 % inside 10 %, one seeded permutation per seed).
2. Base model on FTCP: upstream's RegularizedMLP (25,200 -> 512 -> 256 -> 128 -> 1,
   Linear -> BatchNorm -> ReLU -> Dropout 0.5; Adam lr 1e-3, weight decay 0.01;
   ReduceLROnPlateau 0.5/5; early stopping patience 15 on an 80/20 inner split; best epoch
   restored) or scikit-learn's HistGradientBoosting (the stand-in for upstream's XGBoost).
3. Residual model on standardised SSL (MLP 2,048 -> 256 -> 128 -> 64 -> 1, dropout 0.5,
   weight decay 0.02; or HistGradientBoosting) fitted to K-fold OUT-OF-FOLD residuals of
   the base model (upstream used in-sample residuals; that variant is run beside it).
4. Test prediction = base model refitted on the whole subsample + residual model.
   Reported: residual test R2 ("SSL contribution"; paper 5.77 % at 1 %), delta R2,
   delta MAE (absolute and %), base/combined R2 and MAE, base overfitting gap, each as a
   mean over seeds with a Student-t 95 % interval.

Formula-group variant (``--variants group``): the same residual learning on the store's
formula-group split, the whole group-training side as the pool, with GroupKFold folds and
group-aware inner splits (upstream's FG script used XGBoost and formation energy).

One JSON per (target, variant) goes to ``<out>/scenario3/``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ftcp import layout as L
from ftcp.dataset import open_dataset
from ftcp.errors import UserError, run_main
from ftcp.evaluation import features as F
from ftcp.evaluation import results as R
from ftcp.evaluation.cli import regenerate_report
from ftcp.evaluation.metrics import t_interval, target_unit
from ftcp.evaluation.mlp import TorchMLPRegressor, TrainConfig, regularized_mlp
from ftcp.evaluation.residual import (
    SklearnRegressor,
    base_predictions,
    hist_gradient_boosting,
    residual_metrics,
    xgboost_regressor,
)
from ftcp.evaluation.timing import measure
from ftcp.logs import configure
from ftcp.runtime import resolve_device

QUICK = {"n_all_cap": 2000, "test": 300, "group_pool": 300}     # sizes used by --quick
QUICK_CAPS = {"seeds": 2, "group_seeds": 2, "folds": 2, "max_epochs": 5, "hgb_iter_scale": 0.02}

log = logging.getLogger(__name__)


def parse_args(argv=None, prog: str | None = None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    R.add_common_arguments(p)
    p.add_argument("--target", default="formation_energy", help="label column (default: %(default)s)")
    p.add_argument("--variants", default="sample,group",
                   help="sample (sample efficiency on a random split), group (formula-group residual "
                        "learning) (default: %(default)s)")
    p.add_argument("--split", default="random_10", help="random split for the sample variant (default: %(default)s)")
    p.add_argument("--pool", choices=("train", "test"), default="train",
                   help="side of --split used as the labelled pool; 'test' is upstream's reversed "
                        "protocol (pool = the 10 %% side, test = the 90 %% side) (default: %(default)s)")
    p.add_argument("--fractions", default="1,5,10", help="labelled percent of ALL materials (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--bases", default="mlp,hgb",
                   help="base/residual model pairs: mlp (upstream's RegularizedMLP), xgb (upstream's XGBoost, exact "
                        "parameters), hgb (scikit-learn HistGradientBoosting stand-in) (default: %(default)s)")
    p.add_argument("--also-ssl", metavar="DIR", action="append", default=[],
                   help="another SSL directory (repeatable): its residual models share the base models of --ssl "
                        "(a paired comparison, e.g. of the two protocols; one JSON per SSL directory)")
    p.add_argument("--test-within-excluded", metavar="SSL_DIR", default=None,
                   help="keep only the test materials that this SSL run left out of its split (for an inductive "
                        "comparison on the reversed pool, whose test side is the 90 %% side; use the same SSL_DIR "
                        "for both protocols so they share one test set)")
    p.add_argument("--folds", type=int, default=5, help="K for out-of-fold residuals (default: %(default)s)")
    p.add_argument("--group-split", default="group")
    p.add_argument("--group-bases", default="hgb", help="model pairs for the group variant (default: %(default)s)")
    p.add_argument("--group-seeds", type=int, default=3)
    p.add_argument("--clip-z", type=float, default=5.0,
                   help="clip the MLPs' standardised inputs to +-this (0: no clipping, as upstream; on a "
                        "small labelled subsample, float-noise columns give test z-scores up to ~1e17) "
                        "(default: %(default)s)")
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--hgb-iter-scale", type=float, default=1.0,
                   help="multiply the gradient-boosting iteration counts (500 base / 300 residual)")
    args = p.parse_args(argv)
    R.apply_quick_caps(args, QUICK_CAPS)
    return args


# ---------------------------------------------------------------------------------------
def model_factories(kind: str, seed: int, args, device, ftcp_cols: np.ndarray, ssl_cols: np.ndarray):
    """(make_base, make_resid) for 'mlp', 'xgb' or 'hgb'; MLPs are initialised at full width."""
    if kind == "hgb":
        k = args.hgb_iter_scale
        return (lambda: SklearnRegressor(lambda: hist_gradient_boosting(seed, "base", k)),
                lambda: SklearnRegressor(lambda: hist_gradient_boosting(seed, "residual", k)))
    if kind == "xgb":
        k = args.hgb_iter_scale
        return (lambda: SklearnRegressor(lambda: xgboost_regressor(seed, "base", k)),
                lambda: SklearnRegressor(lambda: xgboost_regressor(seed, "residual", k)))
    if kind != "mlp":
        raise UserError(f"unknown model kind {kind!r} (mlp, xgb, hgb)")
    common = dict(lr=1e-3, batch_size=0, max_epochs=args.max_epochs, patience=args.patience, monitor="mse",
                  plateau_factor=0.5, plateau_patience=5)

    def base():
        return TorchMLPRegressor(lambda d: regularized_mlp(d, (512, 256, 128), 0.5),
                                 TrainConfig(weight_decay=0.01, **common), seed=seed, device=device,
                                 init_width=L.N_VALUES, init_columns=ftcp_cols, clip=args.clip_z or None)

    def resid():
        return TorchMLPRegressor(lambda d: regularized_mlp(d, (256, 128, 64), 0.5),
                                 TrainConfig(weight_decay=0.02, **common), seed=seed, device=device,
                                 init_width=L.SSL_DIM, init_columns=ssl_cols, clip=args.clip_z or None)

    return base, resid


def load_rows(pool_part, test_part, pool_ids, target, tables):
    """FTCP (varying columns only) for the pool rows that any run needs and the test part, and each
    SSL table's rows (``tables``: opened datasets, one per SSL directory, the first being --ssl)."""
    pool = pool_part.subset(pool_ids)
    x_pool, x_test = pool.ftcp(flat=True), test_part.ftcp(flat=True)
    fcols = F.varying_columns(x_pool, x_test)
    ssl = []
    for ds in tables:
        s_pool, s_test = ds.part(ids=pool.ids).ssl_features(), ds.part(ids=test_part.ids).ssl_features()
        scols = F.varying_columns(s_pool, s_test)
        ssl.append({"s": s_pool[:, scols], "s_test": s_test[:, scols], "ssl_cols": scols})
    return {"ids": pool.ids, "pos": {m: i for i, m in enumerate(pool.ids)},
            "x": x_pool[:, fcols], "y": pool.labels([target])[:, 0],
            "x_test": x_test[:, fcols], "y_test": test_part.labels([target])[:, 0],
            "ftcp_cols": fcols, "ssl": ssl, "formulas": pool.formulas()}


def run_one(data, rows, kind, seed, args, device, groups=None) -> list[dict]:
    """One seed: the base model once, then a residual model per SSL table (one result each)."""
    g = None if groups is None else groups[rows]
    make_base, _ = model_factories(kind, seed, args, device, data["ftcp_cols"], data["ssl"][0]["ssl_cols"])
    with measure(kind) as rec:
        base = base_predictions(make_base, data["x"][rows], data["y"][rows], data["x_test"], args.folds, seed, g)
    out = []
    for table in data["ssl"]:
        _, make_resid = model_factories(kind, seed, args, device, data["ftcp_cols"], table["ssl_cols"])
        with measure(kind) as rrec:
            res = residual_metrics(make_resid, table["s"][rows], table["s_test"], data["y"][rows], data["y_test"],
                                   base, g)
        res.pop("predictions")
        res["overfit_gap_r2"] = res["base_train_in_sample"]["r2"] - res["base_test"]["r2"]
        res["seconds"] = rec["wall_s"] + rrec["wall_s"]
        res["peak_rss_mb"], res["peak_anon_mb"] = rec["peak_rss_mb"], rec["peak_anon_mb"]
        out.append(res)
    return out


def summarise(runs: list[dict]) -> dict:
    keys = {"ssl_contribution": ("oof", "ssl_contribution"), "delta_r2": ("oof", "delta_r2"),
            "delta_mae": ("oof", "delta_mae"), "delta_mae_pct": ("oof", "delta_mae_pct"),
            "delta_rmse": ("oof", "delta_rmse"),
            "base_r2": ("base_test", "r2"), "base_mae": ("base_test", "mae"), "base_rmse": ("base_test", "rmse"),
            "combined_r2": ("oof", "combined_test", "r2"), "combined_mae": ("oof", "combined_test", "mae"),
            "in_sample.ssl_contribution": ("in_sample", "ssl_contribution"),
            "in_sample.delta_r2": ("in_sample", "delta_r2"), "in_sample.delta_mae": ("in_sample", "delta_mae"),
            "overfit_gap_r2": ("overfit_gap_r2",), "seconds": ("seconds",)}
    out = {}
    for name, path in keys.items():
        vals = []
        for r in runs:
            v = r
            for k in path:
                v = v[k]
            vals.append(v)
        out[name] = t_interval(vals)
    return out


def sample_efficiency(ds, args, device, n_all: int, tables) -> list[dict]:
    other = "test" if args.pool == "train" else "train"
    pool_part, _, drop_pool = F.labelled(ds.part(args.split, args.pool), [args.target])
    test_part, _, drop_test = F.labelled(ds.part(args.split, other), [args.target])
    restricted = None
    if args.test_within_excluded:
        from ftcp.io_utils import read_json

        excluded = set(read_json(Path(args.test_within_excluded) / "ssl_split.json").get("excluded", []))
        keep = np.array([m in excluded for m in test_part.ids])
        restricted = {"ssl_dir": Path(args.test_within_excluded).name, "n_before": int(len(test_part)),
                      "n_after": int(keep.sum())}
        if not keep.any():
            raise ValueError(f"none of the {len(test_part)} test materials is excluded by "
                             f"{args.test_within_excluded}: is it an inductive SSL run?")
        test_part = test_part.subset(test_part.ids[keep])
    if args.quick:
        n_all = min(n_all, QUICK["n_all_cap"])
        test_part = test_part.subset(F.subsample_ids(test_part.ids, QUICK["test"], args.seed + 1))
    fractions = [float(f) for f in args.fractions.split(",")]
    sizes = {f: int(n_all * f / 100.0) for f in fractions}
    if max(sizes.values()) > len(pool_part):
        raise UserError(f"{max(fractions)} % of {n_all} materials = {max(sizes.values())} rows, but the pool "
                         f"({args.split}/{args.pool}) holds only {len(pool_part)}")
    if min(sizes.values()) < 2 * args.folds:
        raise UserError(f"{min(fractions)} % of {n_all} = {min(sizes.values())} rows: too few for {args.folds} folds")
    perms = {k: np.random.default_rng([args.seed, k]).permutation(len(pool_part)) for k in range(args.seeds)}
    top = max(sizes.values())
    needed = np.unique(np.concatenate([p[:top] for p in perms.values()]))
    data = load_rows(pool_part, test_part, pool_part.ids[needed], args.target, tables)
    log.info(f"sample efficiency: pool {len(pool_part)}, test {len(test_part)}, sizes {sizes}; varying FTCP "
          f"{len(data['ftcp_cols'])}, SSL tables {len(tables)}")
    results = [{} for _ in tables]
    for kind in [b for b in args.bases.split(",") if b]:
        for f in fractions:
            runs = [[] for _ in tables]
            for k in range(args.seeds):
                ids = pool_part.ids[perms[k][:sizes[f]]]         # nested: a prefix of one permutation
                rows = np.array([data["pos"][m] for m in ids])
                for t, r in enumerate(run_one(data, rows, kind, args.seed + k, args, device)):
                    r["seed"] = args.seed + k
                    runs[t].append(r)
                r = runs[0][-1]
                log.info(f"  {kind} {f:g} % (n={sizes[f]}) seed {args.seed + k}: base R2 {r['base_test']['r2']:.4f}, "
                      f"SSL contribution {r['oof']['ssl_contribution']:+.4f}, dR2 {r['oof']['delta_r2']:+.4f} "
                      f"({r['seconds']:.0f} s)")
            for t in range(len(tables)):
                results[t][f"{kind}/{f:g}"] = {"model": kind, "fraction_of_all_pct": f, "n_labelled": sizes[f],
                                               "fraction_of_pool_pct": 100.0 * sizes[f] / len(pool_part),
                                               "runs": runs[t], "summary": summarise(runs[t])}
    return [{"variant": "sample_efficiency", "split": args.split, "pool_side": args.pool,
             "test_restricted_to_excluded": restricted, "test_ids": test_part.ids,
             "n_all_materials": n_all, "n_pool": len(pool_part), "n_test": len(test_part),
             "n_dropped_unlabelled": {"pool": drop_pool, "test": drop_test}, "sizes": sizes,
             "nested": True, "n_varying_ftcp": len(data["ftcp_cols"]), "n_varying_ssl": len(table["ssl_cols"]),
             "results": res} for table, res in zip(data["ssl"], results, strict=False)]


def group_residual(ds, args, device, tables) -> list[dict]:
    pool_part, _, drop_pool = F.labelled(ds.part(args.group_split, "train"), [args.target])
    test_part, _, drop_test = F.labelled(ds.part(args.group_split, "test"), [args.target])
    if args.quick:
        pool_part = pool_part.subset(F.subsample_ids(pool_part.ids, QUICK["group_pool"], args.seed))
        test_part = test_part.subset(F.subsample_ids(test_part.ids, QUICK["test"], args.seed + 1))
    data = load_rows(pool_part, test_part, pool_part.ids, args.target, tables)
    shared = set(data["formulas"]) & set(test_part.formulas())
    if shared:
        raise ValueError(f"the group split shares {len(shared)} formulas between train and test")
    groups = data["formulas"]
    rows = np.arange(len(data["ids"]))
    log.info(f"group residual: pool {len(rows)}, test {len(test_part)}")
    results = [{} for _ in tables]
    for kind in [b for b in args.group_bases.split(",") if b]:
        runs = [[] for _ in tables]
        for k in range(args.group_seeds):
            for t, r in enumerate(run_one(data, rows, kind, args.seed + k, args, device, groups=groups)):
                r["seed"] = args.seed + k
                runs[t].append(r)
            r = runs[0][-1]
            log.info(f"  {kind} seed {args.seed + k}: base R2 {r['base_test']['r2']:.4f}, SSL contribution "
                  f"{r['oof']['ssl_contribution']:+.4f} ({r['seconds']:.0f} s)")
        for t in range(len(tables)):
            results[t][kind] = {"model": kind, "runs": runs[t], "summary": summarise(runs[t])}
    return [{"variant": "group_residual", "split": args.group_split, "n_pool": len(rows), "n_test": len(test_part),
             "test_ids": test_part.ids,
             "n_dropped_unlabelled": {"pool": drop_pool, "test": drop_test},
             "n_varying_ftcp": len(data["ftcp_cols"]), "n_varying_ssl": len(table["ssl_cols"]),
             "folds": "GroupKFold over reduced formula (seeded group order); inner splits group-aware",
             "results": res} for table, res in zip(data["ssl"], results, strict=False)]


def main(argv=None, prog: str | None = None) -> int:
    """The scenario with these arguments (``prog``: the name its help and errors show); its exit status."""
    configure()
    args = parse_args(argv, prog)
    device = resolve_device(args.device)
    tables = [open_dataset(args.data, d) for d in [R.ssl_dir_of(args)] + [Path(p) for p in args.also_ssl]]
    ds = tables[0]
    if args.target not in ds.label_names:
        raise UserError(f"target {args.target!r} not among {ds.label_names}")
    infos = [F.ssl_info(t.ssl_dir) for t in tables]
    if len({i["label"] for i in infos}) != len(infos):
        raise UserError(f"the SSL directories need distinct folder names (results go under them): "
                        f"{[i['label'] for i in infos]}")
    if any(i["standin"] for i in infos):
        log.warning("an SSL table is a marked STAND-IN, not SSL embeddings")
    settings = {k: getattr(args, k) for k in ("seeds", "group_seeds", "folds", "max_epochs", "patience", "bases",
                                               "group_bases", "fractions", "pool", "clip_z", "hgb_iter_scale")}
    settings["paired_with"] = [i["label"] for i in infos]      # these share every base model
    variants = {"sample": lambda: sample_efficiency(ds, args, device, len(ds.ids), tables),
                "group": lambda: group_residual(ds, args, device, tables)}
    for v in [v for v in args.variants.split(",") if v]:
        if v not in variants:
            raise UserError(f"unknown variant {v!r} (sample, group)")
        with measure(v) as total:
            outs = variants[v]()
        for table, ssl, out in zip(tables, infos, outs, strict=False):
            prov = R.provenance(F.dataset_info(ds), args.seed, {"ssl": ssl, "device": str(device)},
                                command=R.command_line(__file__, argv))
            leak = F.leak_check(table.ssl_dir, out.pop("test_ids"))
            tag = "" if out["variant"] != "sample_efficiency" else f"__pool-{args.pool}"
            tag += "__" + "+".join(b for b in (args.bases if v == "sample" else args.group_bases).split(",") if b)
            name = f"{args.target}__{out['variant']}{tag}" + ("__quick" if args.quick else "")
            payload = {"scenario": 3, "ssl_run": ssl["label"], "protocol": leak["protocol"], "leak_check": leak,
                       "target": args.target, "unit": target_unit(args.target), "quick": bool(args.quick),
                       **out, "settings": settings, "residual_protocol": f"{args.folds}-fold out-of-fold residuals",
                       "ci": "Student-t 95 % over seeds", "run": {"wall_s": total["wall_s"],
                                                                  "peak_rss_mb": total["peak_rss_mb"],
                                                                  "peak_anon_mb": total["peak_anon_mb"],
                                                                  "note": "all paired SSL tables together"},
                       "provenance": prov}
            path = R.write_result(R.results_dir(args), 3, name, payload, run_label=ssl["label"])
            print(f"scenario 3 {v} ({ssl['label']}) done in {total['wall_s']:.0f} s, peak RSS "
                  f"{total['peak_rss_mb']:.0f} MB -> {path}", flush=True)
    regenerate_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
