"""Figures regenerated from the scenario JSON (matplotlib, Agg backend, PNG).

Honest axes: bar charts start at zero (or use a labelled log scale when values span
orders of magnitude), no broken axes, units on every axis, error bars are the intervals
stored in the JSON (their kind is written in the caption).  The paper's numbers are drawn
as open markers beside ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .report_data import objective_name, probe_rmses

PAPER_STYLE = dict(marker="D", facecolors="none", edgecolors="black", s=46, zorder=5, label="paper")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def _save(fig, path: Path, note: str | None = None, rect=None) -> Path:
    """``rect``: the area the axes may fill (room for a figure legend), as ``tight_layout`` takes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    if note:  # e.g. "SYNTHETIC demo data - not DFT", on every figure of such a report
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.06)
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8, color="firebrick", weight="bold")
    fig.savefig(path, dpi=130)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _pretty_target(t: str) -> str:
    return t.replace("_", " ")


PROTO_STYLE = {"transductive": dict(ls="-", marker="o"), "inductive": dict(ls="--", marker="s")}


def feature_label(f: str) -> str:
    return {"none": "no features", "ftcp": "FTCP 25,200-d", "ssl": "SSL 2,048-d", "magpie": "Magpie"}.get(
        f, f.replace("ftcp_pca", "FTCP PCA-")
    )


def _feat_color(f: str) -> str:
    if f.startswith("ftcp_pca"):
        return "#9ecae1"
    return {"none": "#bdbdbd", "ftcp": "#3182bd", "ssl": "#e6550d", "magpie": "#31a354"}.get(f, "#756bb1")


def _ssl_label(run) -> str:
    if not run.trained:
        return f"SSL random-init ({run.protocol[:5]}.)"
    return f"SSL {run.preset or ''} ({run.protocol[:5]}.)".replace("  ", " ")


# ---------------------------------------------------------------------------------------
def s1_pca_comparison(s1: dict, R, pub: dict, paper: dict, path: Path, note: str | None = None) -> Path | None:
    """Upstream's PCA figure redone on the 90/10 split: test RMSE of every model (log scale), per target;
    the SSL rows of the published run of each protocol and of a random-init control."""
    slots = [(t, slot) for (t, s), slot in s1.items() if s == "random_10"]
    if not slots:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(slots), figsize=(7.6 * len(slots), 5.0), squeeze=False)
    paper_keys = {
        "formation_energy": {
            ("ftcp", "ols"): "s1.ftcp_ols_fe_rmse_90_10",
            ("pca", "pca_ols"): "s1.ftcp_pca_ols_fe_rmse_90_10",
            ("ssl", "ols"): "s1.ssl_ols_fe_rmse_90_10",
        },
        "band_gap": {
            ("ftcp", "ols"): "s1.ftcp_ols_bg_rmse_90_10",
            ("pca", "pca_ols"): "s1.ftcp_pca_ols_bg_rmse_90_10",
            ("ssl", "ols"): "s1.ssl_ols_bg_rmse_90_10",
        },
    }
    for ax, (t, slot) in zip(axes[0], slots, strict=False):
        bars = []  # (label, value, color, paper key)
        src = slot["base"] or next(iter(slot["ssl"].values()), None)
        for r in (src or {}).get("rows", []):
            if r["features"] in ("ssl",) or r["test"]["rmse"] is None:
                continue
            f = "pca" if r["features"].startswith("ftcp_pca") else r["features"]
            bars.append(
                (
                    f"{feature_label(r['features'])}\n{r['label']}",
                    r["test"]["rmse"],
                    _feat_color(r["features"]),
                    (f, r["model"]),
                )
            )
        shown = [run for run in pub.values() if run]
        shown += sorted(
            {R.runs[lab] for lab in slot["ssl"] if lab in R.runs and not R.runs[lab].trained},
            key=lambda r: (r.protocol, r.seed or 0, r.label),
        )[:1]
        for run in shown:
            d = slot["ssl"].get(run.label)
            for model, name in (("ols", "OLS"), ("ridgecv", "RidgeCV (LOO)")):
                row = next(
                    (x for x in (d or {}).get("rows", []) if x["features"] == "ssl" and x["model"] == model), None
                )
                if row:
                    bars.append(
                        (
                            f"{_ssl_label(run)}\n{name}",
                            row["test"]["rmse"],
                            "#e6550d" if run.trained else "#fdae6b",
                            ("ssl", "ols") if run.trained and model == "ols" else None,
                        )
                    )
        x = np.arange(len(bars))
        ax.bar(x, [b[1] for b in bars], color=[b[2] for b in bars])
        for xi, b in zip(x, bars, strict=False):
            ax.annotate(f"{b[1]:.3g}", (xi, b[1]), ha="center", va="bottom", fontsize=7)
            key = paper_keys.get(t, {}).get(b[3]) if b[3] else None
            if key and key in paper:
                ax.scatter([xi], [paper[key]], **PAPER_STYLE)
        ax.set_yscale("log")
        ax.set_xticks(x, [b[0] for b in bars], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"test RMSE ({(src or {}).get('unit') or 'unitless'}, log scale)")
        ax.set_title(
            f"{_pretty_target(t)}, random_10 ({(src or {}).get('n_train')} train / {(src or {}).get('n_test')} test)",
            fontsize=9,
        )
        handles, hl = ax.get_legend_handles_labels()
        if hl:
            ax.legend(handles[:1], hl[:1], fontsize=7, loc="upper right")
    return _save(fig, path, note)


def s1_ols_sweep(results: list[dict], path: Path, note: str | None = None) -> Path | None:
    """OLS test RMSE against the singular-value cutoff, and the FTCP singular-value spectrum."""
    res = [r for r in results if r.get("feature_sets", {}).get("ftcp", {}).get("ols_sweep")]
    if not res:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, r in enumerate(res):
        sw = r["feature_sets"]["ftcp"]["ols_sweep"]
        t = r["target"]
        conds = [s["cond"] for s in sw]
        rmse = [s["test"]["rmse"] for s in sw]
        a1.plot(conds, rmse, "o-", label=f"{_pretty_target(t)} ({r.get('unit')})")
        if k == 0:  # the rank depends on the design only: the same for every target, written once
            for c, s in zip(conds, sw, strict=False):
                a1.annotate(
                    f"rank {s['rank']}",
                    (c, 0.0),
                    xycoords=("data", "axes fraction"),
                    fontsize=6,
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    color="dimgrey",
                )
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("OLS cutoff: singular values <= cond x s_max treated as zero")
    a1.set_ylabel("test RMSE (log scale; eV/atom or eV)")
    a1.axvline(2.22e-16, color="grey", ls=":", lw=1, label="scipy/LAPACK default (sklearn < 1.9)")
    a1.axvline(1e-6, color="grey", ls="--", lw=1, label="sklearn 1.9 tolerance")
    a1.legend(fontsize=7, loc="center right")
    a1.set_title(f"raw FTCP + StandardScaler + min-norm OLS, {res[0]['split']}", fontsize=9)
    sv = np.asarray(res[0]["feature_sets"]["ftcp"]["singular_values_relative"], dtype=float)
    if len(sv):
        a2.semilogy(np.arange(1, len(sv) + 1), np.maximum(sv, 1e-20), lw=1)
        a2.set_xlabel("index (descending)")
        a2.set_ylabel("singular value / largest (log scale)")
        a2.set_title(
            f"singular values of the standardised FTCP design\n({res[0]['feature_sets']['ftcp']['n_active']} "
            f"non-constant of 25,200 columns, {res[0]['n_train']} rows)",
            fontsize=9,
        )
    return _save(fig, path, note)


def s1_splits(s1: dict, R, pub: dict, path: Path, note: str | None = None) -> Path | None:
    """Test RMSE against the test share of the random split (the paper's 'stable across splits'), for the
    regularised FTCP and Magpie baselines and the SSL tables of both protocols (FTCP OLS and PCA + OLS, at
    1e3-1e11, would flatten the axis: they are in the tables)."""
    targets = sorted({t for (t, s) in s1 if s.startswith("random_")})
    if not targets:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(targets), figsize=(6.2 * len(targets), 4.3), squeeze=False)
    for ax, t in zip(axes[0], targets, strict=False):
        splits = sorted(
            (s for (tt, s) in s1 if tt == t and s.startswith("random_")), key=lambda s: int(s.split("_")[-1])
        )
        pct = [int(s.split("_")[-1]) for s in splits]
        series = []
        for f, m, lab in (("ftcp", "ridgecv", "FTCP RidgeCV"), ("magpie", "ridgecv", "Magpie RidgeCV")):
            vals = [
                next(
                    (
                        r["test"]["rmse"]
                        for r in ((s1[(t, s)]["base"] or {}).get("rows") or [])
                        if r["features"] == f and r["model"] == m
                    ),
                    None,
                )
                for s in splits
            ]
            if any(v is not None for v in vals):
                series.append((lab, vals, dict(color=_feat_color(f), ls=":", marker="^")))
        runs = [run for run in pub.values() if run]
        randoms = sorted(
            {
                R.runs[lab]
                for (tt, s), slot in s1.items()
                if tt == t
                for lab in slot["ssl"]
                if lab in R.runs and not R.runs[lab].trained
            },
            key=lambda r: (r.protocol, r.seed or 0, r.label),
        )
        for run in runs + randoms[:1]:
            for model, name, alpha in (("ridgecv", "RidgeCV", 1.0), ("ols", "OLS", 0.45)):
                vals = [
                    next(
                        (
                            r["test"]["rmse"]
                            for r in (s1[(t, s)]["ssl"].get(run.label) or {}).get("rows", [])
                            if r["features"] == "ssl" and r["model"] == model
                        ),
                        None,
                    )
                    for s in splits
                ]
                style = dict(PROTO_STYLE.get(run.protocol, {}), color="#e6550d" if run.trained else "#fdae6b",
                             alpha=alpha)
                if model == "ols":
                    style["marker"] = "x"
                series.append((f"{_ssl_label(run)} {name}", vals, style))
        for lab, vals, style in series:
            ax.plot(pct, [np.nan if v is None else v for v in vals], label=lab, **style)
        finite = [v for _, vals, _ in series for v in vals if v is not None and np.isfinite(v) and v > 0]
        # plain OLS on a near-collinear table can be 100x off: a log axis keeps the other lines readable
        log_axis = bool(finite) and max(finite) / min(finite) > 20
        unit = next(
            (sl["base"] or next(iter(sl["ssl"].values()), {})).get("unit") for (tt, _), sl in s1.items() if tt == t
        )
        ax.set_xlabel("test share of the random split (%)")
        ax.set_ylabel(f"test RMSE ({unit or 'unitless'})")
        ax.set_xticks(pct)
        if log_axis:
            ax.set_yscale("log")
            ax.set_ylabel(f"test RMSE ({unit or 'unitless'}, log scale)")
        else:
            ax.set_ylim(bottom=0)
        ax.set_title(_pretty_target(t), fontsize=9)
        ax.legend(fontsize=6.5, ncol=2)
    return _save(fig, path, note)


def block_probes(R, path: Path, note: str | None = None) -> Path | None:
    """Per-block RidgeCV test RMSE (each block alone, all but one) of the inductive runs, one bar per kind of
    SSL table (random-init encoders, each trained objective), mean ± sd over runs, both targets."""
    probes = R.probes_by_run()
    cols = ["all"] + [f"B{n}" for n in range(1, 7)] + [f"-B{n}" for n in range(1, 7)]
    groups: dict[str, list[dict]] = {}
    for label, d in probes.items():
        run = R.runs.get(label)
        if run and run.protocol == "inductive":
            groups.setdefault(run.kind, []).append(d)
    if not groups:
        return None
    order = sorted(groups, key=lambda k: (not k.startswith("random"), "crossmodal" in k, k))
    palettes = {"random": iter(["#bdbdbd", "#969696"]), "crossmodal": iter(["#6baed6", "#2171b5", "#08306b"]),
                "upstream": iter(["#fdae6b", "#e6550d", "#a63603", "#7f2704"])}
    colors = [next(palettes["random" if k.startswith("random") else "crossmodal" if "crossmodal" in k
                            else "upstream"], "#636363") for k in order]
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(13, 7.6))
    width = 0.8 / len(order)
    for ax, (t, unit) in zip(axes, (("formation_energy", "eV/atom"), ("band_gap", "eV")), strict=False):
        for k, name in enumerate(order):
            ds = groups[name]
            means, errs = [], []
            for c in cols:
                v = probe_rmses(ds, c, "ridgecv", t)
                means.append(np.mean(v) if v else np.nan)
                errs.append(np.std(v, ddof=1) if len(v) > 1 else 0.0)
            x = np.arange(len(cols)) + (k - (len(order) - 1) / 2) * width
            runs = f"{len(ds)} run" + ("" if len(ds) == 1 else "s")
            ax.bar(x, means, width, yerr=errs, capsize=1.5, label=f"{name} ({runs})",
                   color=colors[k], hatch="//" if name.startswith("random") else "",
                   edgecolor="black", linewidth=0.4)
        ax.set_xticks(np.arange(len(cols)), cols, fontsize=8)
        ax.set_ylabel(f"RidgeCV test RMSE ({unit})")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{_pretty_target(t)}, random_10, inductive SSL: 'Bn' = block n alone, "
                     "'-Bn' = all blocks but n (lower is better)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    return _save(fig, path, note, rect=(0, 0.07, 1, 1))


# ---------------------------------------------------------------------------------------
def s2_figure(items: dict, paper: dict, path: Path, standin: bool, note: str | None = None) -> Path | None:
    """Test R2 per model and feature set, and the SSL share of importance, one bar per protocol."""
    if not items:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.9))
    first = next(iter(items.values()))
    t = first["target"]
    keys = [
        (m, s)
        for m in ("mlp", "rf")
        for s in ("ftcp", "ssl", "hybrid")
        if any(f"{m}.{s}.r2" in d["summary"] for d in items.values())
    ]
    n = len(items)
    h = 0.8 / max(1, n)
    for k, ((label, _, _), d) in enumerate(items.items()):
        sm = d["summary"]
        y = np.arange(len(keys)) + (k - (n - 1) / 2) * h
        vals = [sm.get(f"{m}.{s}.r2", {}).get("mean", np.nan) for m, s in keys]
        errs = [_half(sm[f"{m}.{s}.r2"]) if f"{m}.{s}.r2" in sm else 0 for m, s in keys]
        a1.barh(
            y,
            vals,
            h,
            xerr=errs,
            capsize=2,
            label=f"{d['protocol']} ({label})",
            color="#3182bd" if d["protocol"] == "transductive" else "#9ecae1",
            edgecolor="black",
            linewidth=0.4,
            hatch="" if d["protocol"] == "transductive" else "//",
        )
    labelled = False
    for i, (m, s) in enumerate(keys):
        pv = paper.get(f"s2.r2.{s}_{m}") if t == "formation_energy" else None
        if pv is not None:
            a1.scatter([pv], [i], **dict(PAPER_STYLE, label=None if labelled else "paper"))
            labelled = True
    a1.set_yticks(np.arange(len(keys)), [f"{s} ({m.upper()})" for m, s in keys])
    lo = min((d["summary"].get(f"{m}.{s}.r2", {}).get("mean", 1) for d in items.values() for m, s in keys), default=0)
    a1.set_xlim(max(0.0, min(lo, 0.6) - 0.1), 1.0)
    a1.set_xlabel("test R2 (mean over seeds, 95 % t-interval; the axis starts above 0)")
    a1.set_title(f"{_pretty_target(t)}, formula-group split" + (" — SSL = STAND-IN" if standin else ""), fontsize=9)
    a1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    shares = [
        ("shap.ssl_share", "SHAP (GradientExplainer)"),
        ("group_shapley.2_players.ssl_share", "group Shapley, 2"),
        ("group_shapley.block_players.ssl_share", "group Shapley, blocks + SSL"),
        ("rf_mdi.ssl_share", "forest MDI"),
    ]
    shares = [(k, lab) for k, lab in shares if any(k in d["summary"] for d in items.values())]
    for k, d in enumerate(items.values()):
        y = np.arange(len(shares)) + (k - (n - 1) / 2) * h
        sm = d["summary"]
        a2.barh(
            y,
            [100 * sm.get(key, {}).get("mean", np.nan) for key, _ in shares],
            h,
            xerr=[100 * _half(sm[key]) if key in sm else 0 for key, _ in shares],
            capsize=2,
            color="#e6550d" if d["protocol"] == "transductive" else "#fdae6b",
            edgecolor="black",
            linewidth=0.4,
            hatch="" if d["protocol"] == "transductive" else "//",
            label=d["protocol"],
        )
    if shares:
        a2.set_yticks(np.arange(len(shares)), [lab for _, lab in shares])
        dim = 100 * 2048 / (25200 + 2048)
        a2.axvline(dim, color="black", ls="--", lw=1)
        a2.text(dim, len(shares) - 0.6, f" SSL share of the dims {dim:.1f} %", fontsize=7)
        if t == "formation_energy" and paper.get("s2.shap_ssl_share") is not None:
            a2.scatter([100 * paper["s2.shap_ssl_share"]], [0], **PAPER_STYLE)
        a2.set_xlim(0, 100)
        a2.set_xlabel("share of importance on the SSL columns (%)")
        a2.set_title("hybrid model attribution", fontsize=9)
        a2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    return _save(fig, path, note)


def _half(ci: dict) -> float:
    lo, hi = ci.get("lo"), ci.get("hi")
    if lo is None or hi is None or not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0
    return (hi - lo) / 2


# ---------------------------------------------------------------------------------------
def s3_figure(items: dict, paper: dict, path: Path, standin: bool, note: str | None = None) -> Path | None:
    """SSL contribution against the labelled fraction: one panel per pool, one colour per model, one line
    style (and marker) per protocol."""
    if not items:
        return None
    plt = _plt()
    pools = sorted({k[3] for k in items}, reverse=True)
    fig, axes = plt.subplots(1, len(pools), figsize=(6.4 * len(pools), 4.3), squeeze=False)
    colors = {"mlp": "#e6550d", "xgb": "#3182bd", "hgb": "#31a354"}
    names = {"mlp": "RegularizedMLP", "xgb": "XGBoost", "hgb": "HistGradientBoosting"}
    t = next(iter(items.values()))["target"]
    for ax, pool in zip(axes[0], pools, strict=False):
        k = 0
        for (_label, _, _, p), d in items.items():
            if p != pool:
                continue
            for m in sorted({v["model"] for v in d["results"].values()}):
                pts = sorted(
                    (v for v in d["results"].values() if v["model"] == m), key=lambda v: v["fraction_of_all_pct"]
                )
                x = [v["fraction_of_all_pct"] + 0.12 * (k - 1.5) for v in pts]  # dodged: intervals stay apart
                k += 1
                style = PROTO_STYLE.get(d["protocol"], {})
                ax.errorbar(
                    x,
                    [100 * v["summary"]["ssl_contribution"]["mean"] for v in pts],
                    yerr=[100 * _half(v["summary"]["ssl_contribution"]) for v in pts],
                    capsize=3,
                    color=colors.get(m),
                    ls=style.get("ls", "-"),
                    marker=style.get("marker", "o"),
                    mfc="white" if d["protocol"] == "inductive" else colors.get(m),
                    label=f"{names.get(m, m)}, {d['protocol']}",
                )
        if t == "formation_energy" and pool == "test":
            if paper.get("s3.mlp.ssl_contribution_1pct") is not None:
                ax.scatter([1], [100 * paper["s3.mlp.ssl_contribution_1pct"]], **dict(PAPER_STYLE, label="paper MLP"))
            for frac, v in (paper.get("s3.xgb.ssl_contribution") or {}).items():
                ax.scatter(
                    [frac],
                    [100 * v],
                    marker="s",
                    facecolors="none",
                    edgecolors="black",
                    s=40,
                    zorder=5,
                    label="paper XGBoost" if frac == 1 else None,
                )
        d0 = next(d for k, d in items.items() if k[3] == pool)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("labelled data (% of all materials)")
        ax.set_ylabel("SSL contribution: residual-model test R2 (%)")
        ax.set_xticks(sorted({v["fraction_of_all_pct"] for d in items.values() for v in d["results"].values()}))
        ax.set_title(
            f"{_pretty_target(t)}, pool = {d0['split']}/{pool} ({d0['n_pool']}), test {d0['n_test']}"
            + (" — SSL = STAND-IN" if standin else ""),
            fontsize=9,
        )
        ax.legend(fontsize=6)
    return _save(fig, path, note)


def probe_curves(ssl_records: dict, path: Path, note: str | None = None) -> Path | None:
    """The label probe of every full-data run over its training epochs, per block (formation energy):
    colour = objective, line style = protocol.  Runs trained on a capped subset are left out (their
    probe is not comparable)."""
    series: dict[int, list] = {}
    for rec in ssl_records.values():
        run = rec.get("run") or {}
        if run.get("max_samples"):
            continue
        objective = objective_name(run.get("objective"), run.get("crossmodal_weight"))
        proto = (run.get("split") or {}).get("protocol") or run.get("protocol") or "transductive"
        for n, b in rec["blocks"].items():
            probes = ((b.get("metrics") or {}).get("probes")) or []
            pts = [
                (p["epoch"], p["targets"]["formation_energy"]["rmse"])
                for p in probes
                if "formation_energy" in p.get("targets", {})
            ]
            if len(pts) > 1:
                series.setdefault(n, []).append((objective, proto, pts))
    if not series:
        return None
    objectives = sorted({o for runs in series.values() for o, _, _ in runs}, key=lambda o: (o != "upstream", o))
    colors = dict(zip(objectives, ["#e6550d", "#6baed6", "#08519c", "#31a354"], strict=False))
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.9))
    for ax, n in zip(axes.flat, range(1, 7), strict=False):
        for objective, proto, pts in series.get(n, []):
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                lw=1,
                alpha=0.8,
                color=colors.get(objective, "#636363"),
                **{"ls": PROTO_STYLE[proto]["ls"]} if proto in PROTO_STYLE else {},
            )
        ax.set_title(f"block {n}", fontsize=9)
        ax.set_xlabel("epoch (0 = initial weights)")
        ax.set_ylabel("probe RMSE, FE (eV/atom)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[o]) for o in objectives]
    handles += [Line2D([], [], color="grey", ls=PROTO_STYLE[p]["ls"]) for p in ("transductive", "inductive")]
    labels = [f"objective: {o}" for o in objectives] + ["transductive", "inductive"]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    return _save(fig, path, note, rect=(0, 0.05, 1, 1))
