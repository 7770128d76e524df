"""Figures regenerated from the scenario JSON (matplotlib, Agg backend, PNG).

Honest axes: bar charts start at zero (or use a labelled log scale when values span
orders of magnitude), no broken axes, units on every axis, error bars are the intervals
stored in the JSON (their kind is written in the caption).  The paper's numbers are drawn
as open markers beside ours.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PAPER_STYLE = dict(marker="D", facecolors="none", edgecolors="black", s=46, zorder=5, label="paper")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def _save(fig, path: Path, note: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    if note:       # e.g. "SYNTHETIC demo data - not DFT", on every figure of such a report
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.06)
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8, color="firebrick", weight="bold")
    fig.savefig(path, dpi=130)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _pretty_target(t: str) -> str:
    return t.replace("_", " ")


# ---------------------------------------------------------------------------------------
def s1_pca_comparison(results: list[dict], paper: dict, path: Path, standin: bool, note: str | None = None) -> Path | None:
    """Upstream's PCA figure redone: test RMSE of every Scenario-1 model, log scale, per target."""
    if not results:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 4.4), squeeze=False)
    for ax, res in zip(axes[0], results):
        rows = [r for r in res["rows"] if r["test"]["rmse"] is not None]
        labels = [f"{_feat_label(r['features'])}\n{r['label']}" for r in rows]
        vals = [r["test"]["rmse"] for r in rows]
        colors = [_feat_color(r["features"]) for r in rows]
        x = np.arange(len(rows))
        ax.bar(x, vals, color=colors)
        for xi, v in zip(x, vals):
            ax.annotate(f"{v:.3g}", (xi, v), ha="center", va="bottom", fontsize=7)
        pk = paper.get(res["target"], {})
        for xi, r in zip(x, rows):
            key = (r["features"].split("_pca")[0] + ("_pca" if "_pca" in r["features"] else ""), r["model"])
            if key in pk:
                ax.scatter([xi], [pk[key]], **PAPER_STYLE)
        ax.set_yscale("log")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        unit = res.get("unit") or "unitless"
        ax.set_ylabel(f"test RMSE ({unit}, log scale)")
        ssl_note = " — SSL = STAND-IN features" if standin else ""
        ax.set_title(f"{_pretty_target(res['target'])}, {res['split']} ({res['n_train']} train / "
                     f"{res['n_test']} test){ssl_note}", fontsize=9)
        handles, hl = ax.get_legend_handles_labels()
        if hl:
            ax.legend(handles[:1], hl[:1], fontsize=7, loc="upper right")
    return _save(fig, path, note)


def _feat_label(f: str) -> str:
    return {"none": "no features", "ftcp": "FTCP 25,200-d", "ssl": "SSL 2,048-d", "magpie": "Magpie"}.get(
        f, f.replace("ftcp_pca", "FTCP PCA-"))


def _feat_color(f: str) -> str:
    if f.startswith("ftcp_pca"):
        return "#9ecae1"
    return {"none": "#bdbdbd", "ftcp": "#3182bd", "ssl": "#e6550d", "magpie": "#31a354"}.get(f, "#756bb1")


def s1_ols_sweep(results: list[dict], path: Path, note: str | None = None) -> Path | None:
    """OLS test RMSE against the singular-value cutoff, and the FTCP singular-value spectrum."""
    res = [r for r in results if r.get("feature_sets", {}).get("ftcp", {}).get("ols_sweep")]
    if not res:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in res:
        sw = r["feature_sets"]["ftcp"]["ols_sweep"]
        t = r["target"]
        conds = [s["cond"] for s in sw]
        rmse = [s["test"]["rmse"] for s in sw]
        a1.plot(conds, rmse, "o-", label=f"{_pretty_target(t)} ({r.get('unit')})")
        for c, v, s in zip(conds, rmse, sw):
            a1.annotate(f"rank {s['rank']}", (c, v), fontsize=6, xytext=(3, 3), textcoords="offset points")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("OLS cutoff: singular values <= cond x s_max treated as zero")
    a1.set_ylabel("test RMSE (log scale; eV/atom or eV)")
    a1.axvline(2.22e-16, color="grey", ls=":", lw=1)
    a1.axvline(1e-6, color="grey", ls="--", lw=1)
    a1.text(2.22e-16, a1.get_ylim()[1], " scipy/LAPACK default\n (sklearn < 1.9)", fontsize=6, va="top")
    a1.text(1e-6, a1.get_ylim()[1], " sklearn 1.9 tol", fontsize=6, va="top")
    a1.legend(fontsize=7)
    a1.set_title(f"raw FTCP + StandardScaler + min-norm OLS, {res[0]['split']}", fontsize=9)
    sv = np.asarray(res[0]["feature_sets"]["ftcp"]["singular_values_relative"], dtype=float)
    if len(sv):
        a2.semilogy(np.arange(1, len(sv) + 1), np.maximum(sv, 1e-20), lw=1)
        a2.set_xlabel("index (descending)")
        a2.set_ylabel("singular value / largest (log scale)")
        a2.set_title(f"singular values of the standardised FTCP design\n({res[0]['feature_sets']['ftcp']['n_active']} "
                     f"non-constant of 25,200 columns, {res[0]['n_train']} rows)", fontsize=9)
    return _save(fig, path, note)


def s1_splits(results: list[dict], path: Path, note: str | None = None) -> Path | None:
    """Test RMSE against the test share of the random split (the 'stable across splits' claim)."""
    by_target: dict[str, list[dict]] = {}
    for r in results:
        by_target.setdefault(r["target"], []).append(r)
    by_target = {t: sorted(v, key=lambda r: int(r["split"].split("_")[-1])) for t, v in by_target.items()
                 if all(r["split"].startswith("random_") for r in v) and len(v) > 1}
    if not by_target:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(by_target), figsize=(6 * len(by_target), 4), squeeze=False)
    for ax, (t, rs) in zip(axes[0], by_target.items()):
        pct = [int(r["split"].split("_")[-1]) for r in rs]
        keys = [(row["features"], row["model"], row["label"]) for row in rs[0]["rows"]]
        for f, m, lab in keys:
            if m in ("ols",) and f == "ftcp":
                continue          # catastrophic values would flatten the axis; in the table
            if f.startswith("ftcp_pca"):
                continue
            vals = [next((x["test"]["rmse"] for x in r["rows"] if x["features"] == f and x["model"] == m), None)
                    for r in rs]
            ax.plot(pct, vals, marker="o", label=f"{_feat_label(f)} {lab}", color=_feat_color(f),
                    ls="-" if m != "ols" else "--")
        ax.set_xlabel("test share of the random split (%)")
        ax.set_ylabel(f"test RMSE ({rs[0].get('unit') or 'unitless'})")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{_pretty_target(t)} (FTCP OLS omitted: see the sweep figure)", fontsize=9)
        ax.legend(fontsize=6)
    return _save(fig, path, note)


# ---------------------------------------------------------------------------------------
def s2_figure(res: dict, paper: dict, path: Path, standin: bool, note: str | None = None) -> Path | None:
    """R2 and RMSE of each model/feature set with t-intervals over seeds; importance shares."""
    if not res:
        return None
    plt = _plt()
    summ = res["summary"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.3))
    names, r2, r2e, rmse, rmsee, keys = [], [], [], [], [], []
    for model in ("mlp", "rf"):
        for s in ("ftcp", "ssl", "hybrid"):
            k = f"{model}.{s}.r2"
            if k in summ:
                names.append(f"{s.upper() if s != 'hybrid' else 'Hybrid'} ({model.upper()})")
                keys.append(f"{s}_{model}")
                r2.append(summ[k]["mean"])
                r2e.append(_half(summ[k]))
                rmse.append(summ[f"{model}.{s}.rmse"]["mean"])
                rmsee.append(_half(summ[f"{model}.{s}.rmse"]))
    y = np.arange(len(names))
    for ax, vals, errs, metric in ((a1, r2, r2e, "r2"), (a2, rmse, rmsee, "rmse")):
        ax.barh(y, vals, xerr=errs, color=["#3182bd" if "FTCP" in n else "#e6550d" if "SSL" in n else "#756bb1"
                                             for n in names], capsize=3)
        for yi, k in zip(y, keys):
            pv = paper.get(f"s2.{metric}.{k}")
            if pv is not None:
                ax.scatter([pv], [yi], **PAPER_STYLE)
        ax.set_yticks(y, names)
        ax.set_xlim(left=0)
    a1.set_xlabel("test R2 (mean over seeds, 95 % t-interval)")
    a2.set_xlabel(f"test RMSE ({res.get('unit') or 'unitless'}; mean, 95 % t-interval)")
    a1.set_title(f"{_pretty_target(res['target'])}, formula-group split, {res['settings']['seeds']} seeds", fontsize=9)
    # importance shares
    bars = []
    for key, label in (("shap.ssl_share", "SHAP (GradientExplainer)"),
                       ("group_shapley.2_players.ssl_share", "exact group Shapley, 2 players"),
                       ("group_shapley.block_players.ssl_share", "exact group Shapley, blocks + SSL"),
                       ("rf_mdi.ssl_share", "random forest MDI")):
        if key in summ:
            bars.append((label, summ[key]["mean"], _half(summ[key])))
    if bars:
        yy = np.arange(len(bars))
        a3.barh(yy, [100 * b[1] for b in bars], xerr=[100 * b[2] for b in bars], color="#e6550d", capsize=3)
        a3.set_yticks(yy, [b[0] for b in bars])
        dim = 100 * 2048 / (25200 + 2048)
        a3.axvline(dim, color="black", ls="--", lw=1)
        a3.text(dim, len(bars) - 0.5, f" SSL share of dims {dim:.1f} %", fontsize=7)
        if paper.get("s2.shap_ssl_share") is not None:
            a3.scatter([100 * paper["s2.shap_ssl_share"]], [0], **PAPER_STYLE)
        a3.set_xlim(0, 100)
        a3.set_xlabel("share of importance on the SSL columns (%)")
        a3.set_title("hybrid model attribution" + (" — SSL = STAND-IN" if standin else ""), fontsize=9)
    return _save(fig, path, note)


def _half(ci: dict) -> float:
    lo, hi = ci.get("lo"), ci.get("hi")
    if lo is None or hi is None or not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0
    return (hi - lo) / 2


# ---------------------------------------------------------------------------------------
def s3_figure(res: dict, paper: dict, path: Path, standin: bool, note: str | None = None) -> Path | None:
    """SSL contribution, delta R2, delta MAE and base/combined R2 against the labelled fraction."""
    if not res or not res.get("results"):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    models = sorted({v["model"] for v in res["results"].values()})
    colors = {"mlp": "#e6550d", "hgb": "#3182bd"}
    names = {"mlp": "RegularizedMLP", "hgb": "HistGradientBoosting (XGBoost stand-in)"}
    for m in models:
        pts = sorted((v for v in res["results"].values() if v["model"] == m), key=lambda v: v["fraction_of_all_pct"])
        x = [v["fraction_of_all_pct"] for v in pts]
        for ax, key, scale in ((axes[0], "ssl_contribution", 100), (axes[1], "delta_r2", 100),
                               (axes[2], "delta_mae_pct", 1)):
            mean = [scale * v["summary"][key]["mean"] for v in pts]
            err = [scale * _half(v["summary"][key]) for v in pts]
            ax.errorbar(x, mean, yerr=err, fmt="o-", capsize=3, color=colors.get(m), label=names.get(m, m))
        for key, ls in (("base_r2", "--"), ("combined_r2", "-")):
            axes[3].errorbar(x, [v["summary"][key]["mean"] for v in pts], yerr=[_half(v["summary"][key]) for v in pts],
                             fmt="o" + ls, capsize=3, color=colors.get(m),
                             label=f"{names.get(m, m)}: {'FTCP base' if key == 'base_r2' else '+ SSL residual'}")
    p_mlp = paper.get("s3.mlp.ssl_contribution_1pct")
    if p_mlp is not None:
        axes[0].scatter([1], [100 * p_mlp], **PAPER_STYLE)
    for frac, v in (paper.get("s3.xgb.ssl_contribution") or {}).items():
        axes[0].scatter([frac], [100 * v], marker="s", facecolors="none", edgecolors="black", s=40, zorder=5)
    axes[0].set_ylabel("SSL contribution: residual-model test R2 (%)")
    axes[1].set_ylabel("delta test R2, combined - base (percentage points)")
    axes[2].set_ylabel("delta test MAE, combined vs base (%)")
    axes[3].set_ylabel("test R2")
    for ax in axes:
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("labelled data (% of all materials)")
        ax.set_xticks(sorted({v["fraction_of_all_pct"] for v in res["results"].values()}))
    axes[0].legend(fontsize=6, title="paper: diamond MLP, square XGB", title_fontsize=6)
    axes[3].legend(fontsize=6)
    fig.suptitle(f"Scenario 3, {_pretty_target(res['target'])}: {res.get('n_test')} test rows, mean over "
                 f"{res['settings']['seeds']} seeds with 95 % t-intervals, OOF residuals"
                 + (" — SSL = STAND-IN features" if standin else ""), fontsize=9)
    return _save(fig, path, note)
