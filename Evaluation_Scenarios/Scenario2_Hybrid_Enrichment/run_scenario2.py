#!/usr/bin/env python
"""Scenario 2 — hybrid FTCP + SSL features (27,248 columns) on the formula-group split.

Protocol (formation energy by default; any label works):

1. Train/test = the store's formula-group split (no reduced formula on both sides).  FTCP
   (25,200), SSL (2,048) and labels are joined by material ID.  Columns are standardised
   with the training part's mean and std (StandardScaler).
2. Feature sets: FTCP-only, SSL-only, hybrid [FTCP | SSL].  Models per set and seed:
   * upstream's MLP (512-256-128, ReLU, dropout 0.2/0.2/0.1, Adam 1e-3, batch 256,
     <= 100 epochs, early stopping with patience 15 on validation R2) where the validation
     rows are 10 % of the training *formula groups* (upstream drew them at random), and the
     best epoch's weights are restored;
   * a random forest (500 trees, depth 20, sqrt features, leaf 2, split 5).
3. Attribution on the hybrid models:
   * ``shap.GradientExplainer`` on the MLP (200 training rows as background, 500 test rows
     explained): SSL share of summed mean |SHAP|, the enrichment ratio (SSL share / SSL
     dimension share; the paper's 4.36), upstream's per-dimension ratio, and versions that
     count only the FTCP columns that vary in the data; percentile-bootstrap CIs over the
     explained rows;
   * exact group Shapley values of the MLP with 2 players (FTCP, SSL) and 7 players (the six
     FTCP blocks of ``ftcp.layout`` + SSL) on the same rows, checked for efficiency;
   * random-forest impurity (MDI) shares.
   Every number is repeated over ``--seeds`` model seeds; means come with Student-t CIs.

Columns that are constant over every training and test row are dropped before the
networks' first layer after initialising it at full width (exactly the function the
27,248-wide network computes: such inputs are 0 after standardisation everywhere); the
forest samples int(sqrt(27,248)) features per split, as at full width (scikit-learn skips
constant features when drawing them).  One JSON per (target, split) goes to
``<out>/scenario2/``.
"""
from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from ftcp import layout as L
from ftcp.dataset import open_dataset
from ftcp.errors import UserError, run_main
from ftcp.evaluation import features as F
from ftcp.evaluation import results as R
from ftcp.evaluation.cli import regenerate_report
from ftcp.evaluation.metrics import bootstrap_ci, regression_metrics, target_unit
from ftcp.evaluation.mlp import (
    TrainConfig,
    column_standardiser,
    hybrid_mlp,
    inner_split,
    predict,
    restrict_inputs,
    train_regressor,
)
from ftcp.evaluation.summaries import scenario2_summary as summarise
from ftcp.evaluation.timing import measure
from ftcp.logs import configure
from ftcp.runtime import resolve_device, seed_everything

SETS = ("ftcp", "ssl", "hybrid")
QUICK = {"train": 1000, "test": 300}       # rows kept by --quick
QUICK_CAPS = {"seeds": 2, "max_epochs": 8, "rf_trees": 20, "shap_background": 40, "shap_explained": 60,
              "shap_nsamples": 20, "n_boot": 200}

log = logging.getLogger(__name__)


def parse_args(argv=None, prog: str | None = None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    R.add_common_arguments(p)
    p.add_argument("--target", default="formation_energy", help="label column (default: %(default)s)")
    p.add_argument("--split", default="group", help="split name (default: the formula-group split)")
    p.add_argument("--seeds", type=int, default=3, help="model seeds: seed, seed+1, ... (default: %(default)s)")
    p.add_argument("--models", default="mlp,rf", help="comma list of mlp, rf (default: %(default)s)")
    p.add_argument("--sets", default=",".join(SETS), help="feature sets (default: %(default)s)")
    p.add_argument("--rf-sets", default=",".join(SETS), help="feature sets for the forest (default: %(default)s)")
    p.add_argument("--rf-trees", type=int, default=500)
    p.add_argument("--rf-depth", type=int, default=20)
    p.add_argument("--max-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of training formula groups used "
                   "for early stopping (default: %(default)s)")
    p.add_argument("--shap-background", type=int, default=200)
    p.add_argument("--shap-explained", type=int, default=500)
    p.add_argument("--shap-nsamples", type=int, default=200, help="GradientExplainer samples per row")
    p.add_argument("--no-shap", action="store_true", help="skip SHAP and group Shapley")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    args = p.parse_args(argv)
    R.apply_quick_caps(args, QUICK_CAPS)
    return args


# ---------------------------------------------------------------------------------------
def load_tables(ds, args):
    """Standardised train/test matrices over the varying columns, and how they map back."""
    train, y_tr, drop_tr = F.labelled(ds.part(args.split, "train"), [args.target])
    test, y_te, drop_te = F.labelled(ds.part(args.split, "test"), [args.target])
    if args.quick:
        train = train.subset(F.subsample_ids(train.ids, QUICK["train"], args.seed))
        test = test.subset(F.subsample_ids(test.ids, QUICK["test"], args.seed + 1))
        y_tr, y_te = train.labels([args.target]), test.labels([args.target])
    formulas = train.formulas()
    leak = set(formulas) & set(test.formulas())
    if leak and args.split == "group":
        raise ValueError(f"the group split shares {len(leak)} formulas between train and test, e.g. {sorted(leak)[:3]}")
    x_tr, x_te = F.hybrid_matrix(train), F.hybrid_matrix(test)
    n_ftcp, n_ssl = L.N_VALUES, x_tr.shape[1] - L.N_VALUES
    keep = F.varying_columns(x_tr, x_te)                 # indices into the 27,248 columns
    x_tr, x_te = x_tr[:, keep], x_te[:, keep]             # copies; the full matrices are freed
    mean, scale = column_standardiser(x_tr)
    for x in (x_tr, x_te):
        for s in range(0, len(x), 4096):
            x[s:s + 4096] = (x[s:s + 4096] - mean) / scale
    is_ssl = keep >= n_ftcp
    info = {"n_train": len(train), "n_test": len(test), "n_dropped_unlabelled": {"train": drop_tr, "test": drop_te},
            "n_ftcp": n_ftcp, "n_ssl": n_ssl, "n_ftcp_varying": int((~is_ssl).sum()),
            "n_ssl_varying": int(is_ssl.sum()), "n_formula_groups_train": int(len(set(formulas))),
            "split_info": ds.split_info(args.split)}
    return dict(train_ids=train.ids, test_ids=test.ids, y_tr=y_tr[:, 0], y_te=y_te[:, 0], x_tr=x_tr,
                x_te=x_te, keep=keep, is_ssl=is_ssl, formulas=formulas, info=info)


def set_columns(tab: dict, name: str) -> tuple[np.ndarray, int, np.ndarray]:
    """(columns of the standardised matrix, nominal width, those columns in nominal coordinates)."""
    keep, is_ssl = tab["keep"], tab["is_ssl"]
    n_ftcp, n_ssl = tab["info"]["n_ftcp"], tab["info"]["n_ssl"]
    if name == "ftcp":
        cols = np.flatnonzero(~is_ssl)
        return cols, n_ftcp, keep[cols]
    if name == "ssl":
        cols = np.flatnonzero(is_ssl)
        return cols, n_ssl, keep[cols] - n_ftcp
    return np.arange(len(keep)), n_ftcp + n_ssl, keep


def fit_mlp(tab, name, seed, args, device):
    cols, width, nominal = set_columns(tab, name)
    tr, va = inner_split(len(tab["y_tr"]), args.val_fraction, seed, groups=tab["formulas"])
    seed_everything(seed)
    net = restrict_inputs(hybrid_mlp(width), nominal)      # initialised at full width
    cfg = TrainConfig(lr=1e-3, batch_size=args.batch_size, max_epochs=args.max_epochs,
                      patience=args.patience, monitor="r2")
    x = tab["x_tr"][:, cols] if name != "hybrid" else tab["x_tr"]
    with measure(f"mlp {name}") as rec:
        res = train_regressor(net, x[tr], tab["y_tr"][tr], x[va], tab["y_tr"][va], cfg, seed=seed,
                              device=device, progress=True)
    x_te = tab["x_te"][:, cols] if name != "hybrid" else tab["x_te"]
    pred = predict(res.model, x_te)
    out = {"test": regression_metrics(tab["y_te"], pred),
           "train": regression_metrics(tab["y_tr"][tr], predict(res.model, x[tr])),
           "val_r2_best": res.best_score, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
           "n_inner_train": int(len(tr)), "n_val": int(len(va)), "fit_s": rec["wall_s"],
           "peak_rss_mb": rec["peak_rss_mb"], "peak_anon_mb": rec["peak_anon_mb"], "device": str(device)}
    return res.model.cpu(), out


def fit_rf(tab, name, seed, args):
    from sklearn.ensemble import RandomForestRegressor

    cols, width, _ = set_columns(tab, name)
    rf = RandomForestRegressor(n_estimators=args.rf_trees, max_depth=args.rf_depth, min_samples_split=5,
                               min_samples_leaf=2, max_features=int(np.sqrt(width)), random_state=seed,
                               n_jobs=-1)
    x = tab["x_tr"][:, cols] if name != "hybrid" else tab["x_tr"]
    with measure(f"rf {name}") as rec:
        rf.fit(x, tab["y_tr"])
    x_te = tab["x_te"][:, cols] if name != "hybrid" else tab["x_te"]
    out = {"test": regression_metrics(tab["y_te"], rf.predict(x_te)),
           "train": regression_metrics(tab["y_tr"], rf.predict(x)), "fit_s": rec["wall_s"],
           "peak_rss_mb": rec["peak_rss_mb"], "peak_anon_mb": rec["peak_anon_mb"], "n_trees": args.rf_trees,
           "max_features": int(np.sqrt(width))}
    return rf, out


def player_groups(tab) -> dict[str, dict[str, np.ndarray]]:
    """Column groups (in the standardised hybrid matrix) for the 2- and 7-player games."""
    keep, is_ssl = tab["keep"], tab["is_ssl"]
    ftcp_cols, ssl_cols = np.flatnonzero(~is_ssl), np.flatnonzero(is_ssl)
    two = {"FTCP": ftcp_cols, "SSL": ssl_cols}
    seven = {}
    for name, flat in F.ftcp_block_columns().items():
        cols = np.flatnonzero(np.isin(keep, flat) & ~is_ssl)
        if name != "outside_blocks" or len(cols):     # outside columns get their own player only if they vary
            seven[name] = cols
    seven["SSL"] = ssl_cols
    return {"2_players": two, "block_players": seven}


def attribution(tab, model, rf, seed, args, groups) -> dict:
    from ftcp.evaluation.attribution import gradient_shap, group_importance, group_shapley, shap_share_ci, share_summary

    info = tab["info"]
    ssl_cols = np.flatnonzero(tab["is_ssl"])
    dims = (info["n_ftcp"], info["n_ssl"], info["n_ftcp_varying"])
    out = {}
    rng = np.random.default_rng(seed)
    bg = rng.choice(len(tab["y_tr"]), size=min(args.shap_background, len(tab["y_tr"])), replace=False)
    ex = rng.choice(len(tab["y_te"]), size=min(args.shap_explained, len(tab["y_te"])), replace=False)
    background, explain = tab["x_tr"][np.sort(bg)], tab["x_te"][np.sort(ex)]
    if model is not None:
        with measure("shap") as rec:
            sh = gradient_shap(model, background, explain, nsamples=args.shap_nsamples, seed=seed)
        vals = sh.pop("values")
        absmean = np.abs(vals.astype(np.float64)).mean(axis=0)
        out["shap"] = {**sh, **share_summary(absmean, ssl_cols, *dims), "seconds": rec["wall_s"],
                       "ci": shap_share_ci(vals, ssl_cols, *dims, n_boot=args.n_boot, seed=seed),
                       "groups": group_importance(vals, groups["block_players"]),
                       "top_columns": _top_columns(absmean, tab, 20)}
        out["group_shapley"] = {}
        for game, g in groups.items():
            with measure(f"group shapley {game}") as rec:
                gs = group_shapley(model, explain, background, g)
            phi = gs.pop("phi")
            ssl_i = gs["names"].index("SSL")

            def share_of(a, ssl_i=ssl_i):
                return float(np.abs(a).mean(axis=0)[ssl_i] / np.abs(a).mean(axis=0).sum())

            gs.pop("prediction")
            out["group_shapley"][game] = {
                **gs, "seconds": rec["wall_s"], "n_players": len(gs["names"]),
                "ssl_share_ci": bootstrap_ci(phi, share_of, n_boot=args.n_boot, seed=seed),
                "value_function": "interventional: v(S)(x) = mean over background b of f(x_S, b_rest)"}
    if rf is not None:
        mdi = rf.feature_importances_.astype(np.float64)
        out["rf_mdi"] = {**share_summary(mdi, ssl_cols, *dims),
                         "groups": {g: float(mdi[c].sum()) for g, c in groups["block_players"].items()}}
    return out


def _top_columns(absmean, tab, k):
    order = np.argsort(absmean)[::-1][:k]
    out = []
    for i in order:
        col = int(tab["keep"][i])
        if col >= L.N_VALUES:
            label = f"SSL[{col - L.N_VALUES}]"
        else:
            r, c = divmod(col, L.N_COLS)
            label = f"FTCP[{r},{c}]"
        out.append({"column": col, "label": label, "mean_abs_shap": float(absmean[i])})
    return out


def main(argv=None, prog: str | None = None) -> int:
    """The scenario with these arguments (``prog``: the name its help and errors show); its exit status."""
    configure()
    args = parse_args(argv, prog)
    device = resolve_device(args.device)
    ds = open_dataset(args.data, R.ssl_dir_of(args))
    if args.target not in ds.label_names:
        raise UserError(f"target {args.target!r} not among {ds.label_names}")
    sets = [s for s in args.sets.split(",") if s]
    rf_sets = [s for s in args.rf_sets.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    ssl = F.ssl_info(ds.ssl_dir)
    prov = R.provenance(F.dataset_info(ds), args.seed, {"ssl": ssl, "device": str(device)},
                        command=R.command_line(__file__, argv))
    if prov["ssl"]["standin"]:
        log.warning("the SSL table is a marked STAND-IN, not SSL embeddings")
    with measure("scenario2") as total:
        tab = load_tables(ds, args)
        log.info(f"train {tab['info']['n_train']}, test {tab['info']['n_test']}; varying columns: "
              f"FTCP {tab['info']['n_ftcp_varying']}, SSL {tab['info']['n_ssl_varying']}")
        groups = player_groups(tab)
        per_seed = []
        for k in range(args.seeds):
            seed = args.seed + k
            rec = {"seed": seed, "mlp": {}, "rf": {}}
            hybrid_mlp_model = hybrid_rf = None
            for name in sets:
                if "mlp" in models:
                    model, rec["mlp"][name] = fit_mlp(tab, name, seed, args, device)
                    if name == "hybrid":
                        hybrid_mlp_model = model
                    log.info(f"seed {seed} MLP {name}: test R2 {rec['mlp'][name]['test']['r2']:.4f} "
                          f"({rec['mlp'][name]['epochs_run']} epochs, {rec['mlp'][name]['fit_s']:.0f} s)")
                if "rf" in models and name in rf_sets:
                    rf, rec["rf"][name] = fit_rf(tab, name, seed, args)
                    if name == "hybrid":
                        hybrid_rf = rf
                    log.info(f"seed {seed} RF {name}: test R2 {rec['rf'][name]['test']['r2']:.4f} "
                          f"({rec['rf'][name]['fit_s']:.0f} s)")
            if not args.no_shap and "hybrid" in sets:
                rec["attribution"] = attribution(tab, hybrid_mlp_model, hybrid_rf, seed, args, groups)
                if "shap" in rec["attribution"]:
                    log.info(f"seed {seed} SHAP SSL share {rec['attribution']['shap']['ssl_share']:.4f}")
            per_seed.append(rec)
    leak = F.leak_check(ds.ssl_dir, tab["test_ids"])
    payload = {"scenario": 2, "ssl_run": ssl["label"], "protocol": leak["protocol"], "leak_check": leak,
               "target": args.target, "unit": target_unit(args.target), "split": args.split,
               "quick": bool(args.quick), **tab["info"], "sets": sets, "models": models,
               "groups": {g: {k: int(len(v)) for k, v in gg.items()} for g, gg in groups.items()},
               "settings": {k: getattr(args, k) for k in ("seeds", "rf_trees", "rf_depth", "max_epochs", "patience",
                                                          "batch_size", "val_fraction", "shap_background",
                                                          "shap_explained", "shap_nsamples", "n_boot")},
               "per_seed": per_seed, "summary": summarise(per_seed),
               "run": {"wall_s": total["wall_s"], "peak_rss_mb": total["peak_rss_mb"],
                                "peak_anon_mb": total["peak_anon_mb"]}, "provenance": prov}
    parts = "" if set(models) == {"mlp", "rf"} else "__" + "+".join(models)
    parts += f"__seed{args.seed}" if args.seeds == 1 else ""     # one seed per process: one file per seed
    name = f"{args.target}__{args.split}{parts}" + ("__quick" if args.quick else "")
    path = R.write_result(R.results_dir(args), 2, name, payload, run_label=ssl["label"])
    print(f"scenario 2 done in {total['wall_s']:.0f} s, peak RSS {total['peak_rss_mb']:.0f} MB -> {path}", flush=True)
    regenerate_report(args)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
