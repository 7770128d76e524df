"""RESULTS.md: the paper's claims beside this reproduction, regenerated from committed JSON only.

``make_report(results_root, report_dir)`` reads the results tree (``ftcp.evaluation.report_data``:
``scenario1/``, ``scenario2/``, ``scenario3/``, ``probes/`` and ``ssl/``), writes the figures and
``RESULTS.md`` into ``report_dir`` and returns the path of ``RESULTS.md``.  Nothing here
computes a result: every number comes from a JSON file whose command, data, seed, hardware and
date are printed beside its table.  No clock is read, so the same JSON gives the same bytes.

Every SSL number is shown per SSL protocol: *transductive* (upstream's: the SSL trained on every
material, so it saw the test crystals' FTCP, never their labels) and *inductive* (the SSL never
saw any scenario's test crystals; each scenario JSON carries a leak check that proves it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from . import plots
from .metrics import t_interval
from .paper import DESIGN_ANCHORS, PAPER
from .report_data import Results, SSLRun, objective_name, probe_rmses, split_key, target_key

QUICK_NOTE = "**QUICK smoke run** (subsampled, few seeds) — not a benchmark"
STANDIN_NOTE = (
    "**The SSL features behind these numbers are a STAND-IN** (a seeded random projection of FTCP "
    "written by `python -m ftcp.evaluation.cli standin-ssl`), used to exercise the pipeline before the "
    "SSL encoders exist. Every 'SSL' and 'hybrid' number below measures that stand-in, NOT "
    "self-supervised embeddings."
)
SYNTHETIC_NOTE = (
    "**SYNTHETIC DEMO DATA — not DFT.** These results come from the built-in synthetic demo dataset "
    "(`ftcp.demo_data`: prototype crystals; targets are a point-charge Ewald energy and the density, "
    "computed from simple physics). It is not Materials Project data and no number below is a DFT "
    "result or comparable to the paper's; the demo only shows that the pipeline runs end to end."
)
FIGURE_SYNTHETIC_NOTE = "SYNTHETIC demo data (ftcp.demo_data) - not DFT, not comparable to the paper"
PROTOCOL_NOTE = {"transductive": "T", "inductive": "I"}


# ---------------------------------------------------------------------------------------
# formatting
def _fmt(v, digits=4, pct=False):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.2f} %"
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3g}"
    return f"{v:,.{digits}g}" if a >= 1000 else f"{v:.{digits}g}"


def _ci(ci: dict | None, pct=False, digits=4) -> str:
    if not ci or ci.get("mean") is None or not math.isfinite(ci["mean"]):
        return "n/a"
    m = _fmt(ci["mean"], digits, pct)
    lo, hi = ci.get("lo"), ci.get("hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m} (n={ci.get('n')})"
    return f"{m} [{_fmt(lo, digits, pct)}, {_fmt(hi, digits, pct)}]"


def _boot(row: dict) -> str:
    ci = row.get("test_rmse_ci")
    v = _fmt(row["test"]["rmse"])
    return f"{v} [{_fmt(ci['lo'])}, {_fmt(ci['hi'])}]" if ci else v


def _mean_sd(values) -> str:
    """'mean' of one value, 'mean±sd' of several (3 significant digits): a compact table cell."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "n/a"
    if len(v) == 1:
        return _fmt(v[0], 3)
    return f"{_fmt(float(np.mean(v)), 3)}±{float(np.std(v, ddof=1)):.1g}"


def _spread(values) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{_fmt(v[0])} (1 seed)"
    return f"{_fmt(float(np.mean(v)))} ± {_fmt(float(np.std(v, ddof=1)), 2)} ({len(v)} seeds)"


def _prov(d: dict) -> str:
    p = d.get("provenance", {})
    ds = p.get("dataset", {})
    hw = p.get("hardware", {})
    git = p.get("git") or {}
    commit = (git.get("commit") or "?")[:10]
    dirty = " (+local changes)" if git.get("dirty") else ""
    sha = (ds.get("manifest_sha256") or "")[:12]
    synthetic = "SYNTHETIC demo data (not DFT): " if ds.get("synthetic") else ""
    return (
        f"*{synthetic}data `{ds.get('name')}` ({_fmt(ds.get('n_materials'))} materials, manifest sha256 "
        f"{sha or 'n/a'}), seed {p.get('seed')}, {hw.get('cpu')} x{hw.get('cores')} cores, "
        f"{hw.get('gpu') or 'no GPU'}, {p.get('date_utc')}, commit {commit}{dirty}. "
        f"Command: `{p.get('command')}`*"
    )


def _row(res: dict | None, features: str, model: str) -> dict | None:
    if not res:
        return None
    return next((r for r in res["rows"] if r["features"] == features and r["model"] == model), None)


def _rmse(res, features, model):
    r = _row(res, features, model)
    return r["test"]["rmse"] if r else None


def _img(figs, key, caption):
    p = figs.get(key)
    return [f"![{caption}]({p.name})", "", f"*{caption}*", ""] if p else []


def _proto(run: SSLRun | None) -> str:
    return run.protocol if run else "n/a"


# ---------------------------------------------------------------------------------------
SUMMARY_START, SUMMARY_END = "<!-- RESULTS SUMMARY -->", "<!-- /RESULTS SUMMARY -->"


def make_report(results_root, report_dir, readme=None) -> Path:
    """RESULTS.md and its figures in ``report_dir`` from the JSON under ``results_root``; with
    ``readme``, also the headline tables between that file's RESULTS SUMMARY markers."""
    R = Results(results_root)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    everything = R.s1 + R.s2 + R.s3
    standin = any((d.get("provenance", {}).get("ssl") or {}).get("standin") for d in everything)
    synthetic = bool(R.dataset().get("synthetic"))
    note = FIGURE_SYNTHETIC_NOTE if synthetic else None
    ctx = {
        "R": R,
        "s1": R.s1_by_split(),
        "s2": R.s2_merged(),
        "s3": R.s3_merged(),
        "ssl": R.ssl_records(),
        "pub": {p: R.published(p) for p in R.protocols()},
        "synthetic": synthetic,
    }
    figs = _figures(ctx, report_dir, standin, note)
    lines = [
        "# Results: the paper's claims beside this reproduction",
        "",
        f"Regenerated by `python Evaluation_Scenarios/make_report.py --results {_results_arg(results_root)}` "
        "from those JSON files alone. Do not edit by hand.",
        "",
    ]
    if synthetic:
        lines += ["> " + SYNTHETIC_NOTE, ""]
    if standin:
        lines += ["> " + STANDIN_NOTE, ""]
    lines += _protocols(ctx)
    claims = _claims(ctx)
    lines += claims
    lines += _scenario1(ctx, figs)
    controls = _controls(ctx, figs)
    lines += controls
    lines += _scenario2(ctx, figs)
    lines += _scenario3(ctx, figs)
    lines += _pretext(ctx)
    lines += _diagnostics(ctx, figs)
    lines += _objectives(ctx)
    lines += _coverage(ctx)
    lines += _definitions()
    path = report_dir / "RESULTS.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    if readme is not None:
        _write_summary(Path(readme), _summary_lines(claims, controls, results_root))
    return path


def _summary_lines(claims: list[str], controls: list[str], results_root) -> list[str]:
    """The README's headline, cut from RESULTS.md's own tables: each claim the paper makes with its
    verdict, and the inductive RidgeCV column of the control table."""
    out = [
        f"`python Evaluation_Scenarios/make_report.py --results {_results_arg(results_root)} --readme README.md` "
        "writes these tables. Our numbers under both SSL protocols, with commands, seeds, hardware and dates: "
        "[RESULTS.md](Supplemental%20Information/RESULTS.md).",
        "",
        "| the paper's claim | paper | verdict |",
        "|---|---|---|",
    ]
    for line in claims:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) != 5 or cells[0] in ("claim", "---") or cells[1] == "not reported":
            continue
        verdict = cells[4]
        short = re.split(r"[:;(]", verdict, maxsplit=1)[0].strip()
        out.append(f"| {cells[0]} | {cells[1]} | {short if len(short) > 3 else verdict} |")
    rows = []
    for line in controls:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if len(cells) == 6 and cells[0] in ("formation_energy", "band_gap"):
            value = cells[5] if cells[5] not in ("n/a", "same") else cells[3]
            rows.append((cells[1], cells[0], value))
    if rows:
        kinds = list(dict.fromkeys(k for k, _, _ in rows))
        table = {(k, t): v for k, t, v in rows}
        out += [
            "",
            "What SSL training adds (the control the paper lacks): Scenario 1, random 90/10, RidgeCV test RMSE of "
            "each 2,048-d table, inductive SSL, mean ± sd over SSL seeds:",
            "",
            "| table | formation energy (eV/atom) | band gap (eV) |",
            "|---|---|---|",
        ]
        out += [f"| {k} | {table.get((k, 'formation_energy'), 'n/a')} | {table.get((k, 'band_gap'), 'n/a')} |"
                for k in kinds]
    return out


def _write_summary(readme: Path, summary: list[str]) -> None:
    text = readme.read_text(encoding="utf-8")
    if SUMMARY_START not in text:
        raise ValueError(f"{readme} has no {SUMMARY_START} marker")
    head, rest = text.split(SUMMARY_START, 1)
    tail = rest.split(SUMMARY_END, 1)[1] if SUMMARY_END in rest else rest
    body = "\n".join(summary).rstrip()
    readme.write_text(f"{head}{SUMMARY_START}\n{body}\n{SUMMARY_END}{tail}", encoding="utf-8")


def _results_arg(results_root) -> str:
    """The results folder as the command line names it: its last two parts (the report folder and
    ``results`` when the JSON is committed beside the report), the same wherever the report is written."""
    parts = Path(results_root).resolve().parts[-2:]
    text = "/".join(parts)
    return f'"{text}"' if " " in text else text


# ---------------------------------------------------------------------------------------
def _protocols(ctx) -> list[str]:
    R, ssl = ctx["R"], ctx["ssl"]
    L = [
        "## SSL runs and the two protocols",
        "",
        "Every SSL number below is given per SSL protocol. **Transductive** (upstream's setting): the SSL trained "
        "on every material, so it saw the test crystals' FTCP (never their labels). **Inductive**: the materials "
        "of every downstream test set (the random splits are nested, 10 % inside 20 % ... inside 40 %, plus the "
        "formula-group test set) were left out of the SSL split, so one SSL run serves every scenario and never "
        "saw a scenario's test crystal; the price is a smaller SSL set. Each scenario JSON carries a leak check "
        "(`leak_check`: how many of its test materials the SSL saw).",
        "",
    ]
    if not R.runs:
        return L + ["No SSL run behind these results.", ""]
    L += [
        "| SSL run | protocol | kind | seed | SSL train / val / test (left out) | trained on | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in sorted(
        R.runs.items(), key=lambda kv: (not kv[1].published, kv[1].kind, kv[1].protocol, kv[1].seed or 0)
    ):
        rec = ssl.get(label, {})
        feats = rec.get("features") or {}
        sizes = (feats.get("ssl_split") or (rec.get("run") or {}).get("split") or R.ssl_split_of(label) or {}).get(
            "sizes"
        ) or {}
        info = R.ssl_info_of(label)
        git = ((rec.get("run") or {}).get("git") or info.get("git") or {}).get("commit") or ""
        device = (rec.get("run") or {}).get("device_name") or info.get("trained_on") or "n/a"
        mark = " (published)" if run.published and ctx["pub"].get(run.protocol) == run else ""
        L.append(
            f"| `{label}`{mark} | {run.protocol} | {run.kind} | {run.seed if run.seed is not None else '—'} | "
            f"{' / '.join(_fmt(sizes.get(k)) for k in ('train', 'val', 'test'))} ({_fmt(sizes.get('excluded'))}) | "
            f"{device} | {git[:10] or 'n/a'} |"
        )
    L += [
        "",
        "*Published* = upstream's hyper-parameters and task set (the paper's replication), seed 42: these "
        "features feed Scenarios 2 and 3. The fast preset (larger batches for GPUs) runs beside them with three "
        "seeds per protocol for the spread. Random-init encoders are the same six encoders with their initial "
        "weights and SSL-train input statistics, no SSL training (the control the paper lacks). The records of "
        "every run (configuration, per-epoch history, pretext metrics) are in `results/ssl/`.",
        "",
    ]
    return L


# ---------------------------------------------------------------------------------------
def _paired_gain(res: dict, model: str, better: str, worse: str) -> dict | None:
    """t-interval over seeds of R2(better) - R2(worse) for one model of a merged Scenario 2 result."""
    diffs = []
    for rec in res["per_seed"]:
        m = rec.get(model) or {}
        if better in m and worse in m:
            diffs.append(m[better]["test"]["r2"] - m[worse]["test"]["r2"])
    return t_interval(diffs) if diffs else None


def _summary(res: dict) -> dict:
    """The summary the verdict rests on: the inductive run's, else the transductive run's."""
    return (res["inductive"] or res["transductive"] or {}).get("summary", {})


def _verdict_interval(ci, paper, rel=0.25) -> str:
    if not ci or ci.get("mean") is None:
        return "not run"
    lo, hi = ci.get("lo"), ci.get("hi")
    if lo is not None and hi is not None and math.isfinite(lo) and lo <= paper <= hi:
        return "reproduced (the paper's value is inside our interval)"
    if abs(ci["mean"] - paper) <= rel * abs(paper):
        return "reproduced within 25 %"
    return "differs"


def _gain_ratio_verdict(res: dict, key: str = "ssl_contribution") -> str:
    """The paper's 'the MLP gains 8.2x more from SSL than XGBoost' against our two intervals (the
    inductive run's where it has both models, else the transductive run's)."""
    for proto in ("inductive", "transductive"):
        r = (res.get(proto) or {}).get("results") or {}
        m, x = r.get("mlp/1"), r.get("xgb/1")
        if m and x:
            break
    else:
        return "not run"
    m, x = m["summary"][key], x["summary"][key]

    def above_zero(ci):
        return ci.get("lo") is not None and ci["lo"] > 0

    if above_zero(x) and (not above_zero(m) or x["mean"] > m["mean"]):
        return (f"not reproduced ({proto}): the XGBoost residual gain is clearly above 0 and larger than the MLP's; "
                "the paper's ordering is reversed")
    if above_zero(m) and m["mean"] > x["mean"]:
        return f"reproduced in direction ({proto}): the MLP gains more than XGBoost"
    if not above_zero(m) and not above_zero(x):
        return "a ratio of two contributions that are within noise of 0 is not meaningful; see the intervals"
    return f"differs ({proto}): both gain; see the intervals"


def _claims(ctx) -> list[str]:
    s1, s2, s3, pub = ctx["s1"], ctx["s2"], ctx["s3"], ctx["pub"]
    protos = ["transductive", "inductive"]
    if ctx["synthetic"]:
        return [
            "## The paper's claims and ours",
            "",
            "Not applicable: these results come from synthetic demo data, "
            "which the paper's numbers cannot be compared with.",
            "",
        ]
    L = [
        "## The paper's claims and ours",
        "",
        "| claim | paper | ours, transductive | ours, inductive | verdict |",
        "|---|---|---|---|---|",
    ]

    def ssl_rmse(target, split, proto, model="ols"):
        run = pub.get(proto)
        slot = s1.get((target, split))
        return _rmse(slot["ssl"].get(run.label) if (slot and run) else None, "ssl", model)

    def stability(values):
        v = [x for x in values if x is not None]
        return (max(v) / min(v)) if v else None

    fe_splits = sorted({s for (t, s) in s1 if t == "formation_energy" and s.startswith("random_")}, key=split_key)
    if fe_splits:
        cells, ratios = [], {}
        for proto in protos:
            parts = []
            for model, name in (("ols", "OLS"), ("ridgecv", "RidgeCV")):
                vals = [ssl_rmse("formation_energy", s, proto, model) for s in fe_splits]
                parts.append(
                    f"{name} "
                    + ", ".join(f"{s.split('_')[-1]} %: {_fmt(v)}" for s, v in zip(fe_splits, vals, strict=False))
                )
                ratios[(proto, model)] = (stability(vals), vals)
            cells.append("; ".join(parts))
        verdict = []
        for model, name in (("ols", "OLS"), ("ridgecv", "RidgeCV")):
            rs = [ratios[(p, model)][0] for p in protos if ratios[(p, model)][0]]
            if rs:
                worst = max(rs)
                verdict.append(
                    f"{name}: {'stable' if worst < 1.25 else 'not stable'} (largest max / min over splits {worst:.3g})"
                )
        ridge = [v for p in protos for v in ratios[(p, "ridgecv")][1] if v is not None]
        level = (
            f"differs: RidgeCV is {PAPER['s1.ssl_ols_fe_rmse_all_splits'][0] / float(np.mean(ridge)):.1f}x "
            "below the paper's; "
            if ridge
            else ""
        )
        L.append(
            f"| S1: SSL + OLS formation-energy test RMSE, 'stable across splits' (eV/atom) | 0.826 (all splits); "
            f"0.835 (90/10) | {cells[0]} | {cells[1]} | {level}{'; '.join(verdict) or 'not run'}. Plain OLS on "
            "near-collinear embedding columns fails the way it fails on FTCP (see Scenario 1) |"
        )
    fe10, bg10 = s1.get(("formation_energy", "random_10")), s1.get(("band_gap", "random_10"))
    if fe10 and fe10["base"]:
        b = fe10["base"]
        ols, ridge = _rmse(b, "ftcp", "ols"), _rmse(b, "ftcp", "ridgecv")
        pca = next((r["test"]["rmse"] for r in b["rows"] if r["features"].startswith("ftcp_pca")), None)
        L.append(
            f"| S1: raw-FTCP OLS 'fails catastrophically', FE 90/10 (eV/atom) | 37,108 | {_fmt(ols)} | (no SSL) | "
            f"{'reproduced' if ols and ols > 100 else 'not reproduced'}: a numerical-rank artefact of min-norm OLS "
            f"on standardised near-constant columns; Ridge on the same design: {_fmt(ridge)} |"
        )
        L.append(
            f"| S1: PCA-2048 of FTCP + OLS, FE 90/10 (eV/atom) | 37,109 | {_fmt(pca)} | (no SSL) | "
            f"{'reproduced' if pca and pca > 100 else 'not reproduced'} (the failure survives PCA) |"
        )
    if bg10:
        v = [ssl_rmse("band_gap", "random_10", p) for p in protos]
        r = [ssl_rmse("band_gap", "random_10", p, "ridgecv") for p in protos]
        ok = [x for x in r if x is not None]
        L.append(
            f"| S1: SSL + OLS band-gap test RMSE 90/10 (eV) | 1.299 | OLS {_fmt(v[0])}, RidgeCV {_fmt(r[0])} | "
            f"OLS {_fmt(v[1])}, RidgeCV {_fmt(r[1])} | "
            + (
                "differs: lower (better) with RidgeCV; plain OLS is unstable where the embedding is near-collinear |"
                if ok and max(ok) < 1.299
                else "see Scenario 1 |"
            )
        )
        if bg10["base"]:
            o = _rmse(bg10["base"], "ftcp", "ols")
            L.append(
                f"| S1: raw-FTCP OLS band gap 90/10 (eV) | 69,069 | {_fmt(o)} | (no SSL) | "
                f"{'reproduced' if o and o > 100 else 'not reproduced'} (same artefact) |"
            )
    if fe10 and fe10["base"]:
        cells = []
        for proto in protos:
            run = pub.get(proto)
            d = fe10["ssl"].get(run.label) if run else None
            f_, s_ = _row(fe10["base"], "ftcp", "ols"), _row(d, "ssl", "ols")
            if f_ and s_ and f_.get("timing") and s_.get("timing"):
                cells.append(f"{f_['timing']['preprocess_fit_s'] / s_['timing']['preprocess_fit_s']:.1f}x wall")
            else:
                cells.append("n/a")
        L.append(
            f"| S1: SSL fit 37–40x faster than FTCP (preprocess + fit) | 37–40x | {cells[0]} | {cells[1]} | "
            "not reproduced: ours is faster for both, by less (same exact solver for both; the FTCP fit "
            "streams 25,200 columns from disk, the SSL table is in memory) |"
        )
    for target, _unit in (("formation_energy", "eV/atom"), ("band_gap", "eV")):
        res = {p: s2.get((pub[p].label, target, "group")) if pub.get(p) else None for p in protos}
        if not any(res.values()):
            continue
        short = "FE" if target == "formation_energy" else "BG"
        if target == "formation_energy":
            cells = [_ci((r or {}).get("summary", {}).get("shap.ssl_share"), pct=True) for r in res.values()]
            L.append(
                f"| S2 ({short}): SHAP share of the SSL columns | 32.81 % | {cells[0]} | {cells[1]} | "
                f"{_verdict_interval(_summary(res).get('shap.ssl_share'), 0.3281)} |"
            )
            cells = [_ci((r or {}).get("summary", {}).get("shap.enrichment_ratio")) for r in res.values()]
            L.append(
                f"| S2 ({short}): enrichment ratio (SSL share / SSL dimension share 7.516 %) | 4.36x | {cells[0]} | "
                f"{cells[1]} | {_verdict_interval(_summary(res).get('shap.enrichment_ratio'), 4.36)} |"
            )
        cells, verdicts = [], []
        for p in protos:
            r = res[p]
            if not r:
                cells.append("n/a")
                continue
            sm = r["summary"]
            gain = _paired_gain(r, "mlp", "hybrid", "ftcp")
            cells.append(f"{_ci(sm.get('mlp.hybrid.r2'))} vs {_ci(sm.get('mlp.ftcp.r2'))}; paired gain {_ci(gain)}")
            if gain and gain.get("lo") is not None and math.isfinite(gain["lo"]):
                verdicts.append(
                    "reproduced"
                    if gain["lo"] > 0
                    else "reversed"
                    if gain["hi"] < 0
                    else "not reproduced: no gain beyond seed noise"
                )
        paper = "0.928 vs 0.921" if target == "formation_energy" else "not reported"
        L.append(
            f"| S2 ({short}): hybrid MLP R2 vs FTCP-only MLP R2 (the SSL columns help) | {paper} | {cells[0]} | "
            f"{cells[1]} | {'; '.join(dict.fromkeys(verdicts)) or 'n/a'} |"
        )
        cells = [_ci((r or {}).get("summary", {}).get("mlp.ssl.r2")) for r in res.values()]
        L.append(
            f"| S2 ({short}): SSL-only MLP R2 | {'0.639' if target == 'formation_energy' else 'not reported'} | "
            f"{cells[0]} | {cells[1]} | {'differs: far higher' if target == 'formation_energy' else 'new'} |"
        )
        cells = [_ci((r or {}).get("summary", {}).get("rf.hybrid.r2")) for r in res.values()]
        fe = target == "formation_energy"
        verdict = _verdict_interval(_summary(res).get("rf.hybrid.r2"), 0.925, 0.02) if fe else "new"
        L.append(
            f"| S2 ({short}): hybrid random forest R2 | {'0.925' if fe else 'not reported'} "
            f"| {cells[0]} | {cells[1]} | {verdict} |"
        )
    for pool, pool_name in (("test", "upstream's reversed pool"), ("train", "our pool")):
        res = {
            p: s3.get((pub[p].label, "formation_energy", "sample_efficiency", pool)) if pub.get(p) else None
            for p in protos
        }
        if not any(res.values()):
            continue
        for model, _paper_key, label in (("mlp", "s3.mlp.ssl_contribution_1pct", "MLP"), ("xgb", None, "XGBoost")):
            cells = []
            for p in protos:
                v = ((res[p] or {}).get("results") or {}).get(f"{model}/1")
                cells.append(
                    f"out of fold {_ci(v['summary']['ssl_contribution'], pct=True)}; in-sample "
                    f"{_ci(v['summary']['in_sample.ssl_contribution'], pct=True)}"
                    if v
                    else "n/a"
                )
            paper = 0.0577 if model == "mlp" else PAPER["s3.xgb.ssl_contribution"][0][1]
            pv = next((((res[p] or {}).get("results") or {}).get(f"{model}/1") for p in ("inductive", "transductive")
                       if ((res[p] or {}).get("results") or {}).get(f"{model}/1")), None)
            if pv:
                v_in = _s3_verdict(pv["summary"]["in_sample.ssl_contribution"], paper)
                v_oof = _s3_verdict(pv["summary"]["ssl_contribution"], paper)
                verdict = f"{v_in} with upstream's in-sample residuals; out of fold: {v_oof}"
            else:
                verdict = "not run"
            L.append(
                f"| S3 FE, 1 % labelled ({pool_name}): SSL residual model explains x % of the {label}'s residual "
                f"variance | {paper * 100:.2f} % | {cells[0]} | {cells[1]} | {verdict} |"
            )
        ratio = []
        for p in protos:
            r = (res[p] or {}).get("results") or {}
            m, x = r.get("mlp/1"), r.get("xgb/1")
            parts = [
                f"{name} {m['summary'][key]['mean'] / x['summary'][key]['mean']:.1f}x"
                for key, name in (("in_sample.ssl_contribution", "in-sample"), ("ssl_contribution", "out of fold"))
                if m and x and x["summary"][key]["mean"]
            ]
            ratio.append("; ".join(parts) or "n/a")
        v_in = _gain_ratio_verdict(res, "in_sample.ssl_contribution")
        v_oof = _gain_ratio_verdict(res)
        if v_in.startswith("reproduced in direction") and v_oof.startswith("not reproduced"):
            verdict = ("reproduced only with upstream's in-sample residuals, which are near zero for an overfit "
                       "XGBoost base; out of fold the ordering is reversed")
        else:
            verdict = f"in-sample: {v_in}; out of fold: {v_oof}"
        L.append(f"| S3 FE, 1 % ({pool_name}): MLP gain / XGBoost gain | 8.2x | {ratio[0]} | {ratio[1]} | {verdict} |")
    pre = _pretext_counts(ctx)
    if pre:
        cells = [", ".join(f"{k}/13" for k in pre.get(p, [])) or "n/a" for p in protos]
        allk = [k for p in protos for k in pre.get(p, [])]
        L.append(
            f"| SSL: 6 of 13 pretext tasks have test >= validation | 6 / 13 | {cells[0]} | {cells[1]} | "
            f"{'noise' if allk and max(allk) - min(allk) >= 2 else 'see the pretext section'}: over "
            f"{len(allk)} runs {min(allk)}–{max(allk)} of 13 (mean {np.mean(allk):.1f}); a count of which "
            "split happens to score higher carries no information |"
        )
    L += [
        "",
        "Intervals: Scenario 1 [95 % percentile bootstrap over test rows]; Scenarios 2 and 3 [95 % Student-t "
        "over model seeds]. The paper's numbers are quoted once, with their sources, in `ftcp/evaluation/paper.py`. "
        "Transductive and inductive columns use the published SSL run of that protocol.",
        "",
    ]
    return L


def _s3_verdict(ci, paper) -> str:
    if not ci:
        return "not run"
    lo, hi = ci.get("lo"), ci.get("hi")
    if lo is None or not math.isfinite(lo):
        return "one seed: no verdict"
    if lo <= 0 <= hi:
        return (
            "not reproduced: indistinguishable from 0 across seeds"
            if not (lo <= paper <= hi)
            else "consistent with the paper, and with 0: not distinguishable across seeds"
        )
    return "reproduced (inside our interval)" if lo <= paper <= hi else "differs"


# ---------------------------------------------------------------------------------------
_BASE_ROWS = (
    ("none", "mean"),
    ("ftcp", "ols"),
    ("ftcp", "ridge_alpha1000"),
    ("ftcp", "ridgecv"),
    ("pca", "pca_ols"),
    ("magpie", "ols"),
    ("magpie", "ridgecv"),
)


def _base_rows(base: dict | None, any_res: dict | None):
    src = base or any_res
    if not src:
        return []
    out = []
    for f, m in _BASE_ROWS:
        r = next(
            (
                x
                for x in src["rows"]
                if (x["features"].startswith("ftcp_pca") if f == "pca" else x["features"] == f) and x["model"] == m
            ),
            None,
        )
        if r is not None:
            out.append(r)
    return out


def _ssl_groups(slot: dict, R: Results) -> list[tuple[str, list[tuple[SSLRun, dict]]]]:
    """SSL rows of one split grouped: each published run alone, then seeds of one kind and protocol together."""
    groups: dict[tuple, list] = {}
    for label, d in slot["ssl"].items():
        run = R.runs.get(label)
        if run is None:
            continue
        key = (
            ("1 published", run.protocol, label)
            if (run.published and R.published(run.protocol) == run)
            else ("2 " + run.kind, run.protocol, "")
        )
        groups.setdefault(key, []).append((run, d))
    out = []
    for key in sorted(groups):
        runs = groups[key]
        name = (
            f"`{key[2]}`"
            if key[0].startswith("1")
            else f"{key[0][2:]}, {key[1]} ({', '.join(str(r.seed) for r, _ in runs)})"
        )
        out.append((name, runs))
    return out


def _scenario1(ctx, figs) -> list[str]:
    s1, R = ctx["s1"], ctx["R"]
    L = ["## Scenario 1 — linear regression on random splits", ""]
    if not s1:
        return L + ["Not run yet: `python Evaluation_Scenarios/Scenario1_Linear_Regression/run_scenario1.py`.", ""]
    L += _img(
        figs,
        "s1_pca",
        "Upstream's PCA comparison redone, 90/10 split: test RMSE of every model (log scale); "
        "open diamonds = the paper's figure",
    )
    L += _img(
        figs,
        "s1_sweep",
        "Minimum-norm OLS on raw FTCP against the singular-value cutoff, and the design's "
        "singular values: the 'catastrophic failure' is a numerical-rank artefact",
    )
    L += _img(
        figs, "s1_splits", "Test RMSE across the four random splits (FTCP OLS and PCA + OLS left out: see the tables)"
    )
    anchors = [
        (t, slot)
        for (t, s), slot in s1.items()
        if s == "random_10" and t in ("formation_energy", "band_gap") and slot["base"] and not ctx["synthetic"]
    ]
    if anchors:
        L += [
            "### Project anchors (random 90/10, test RMSE)",
            "",
            "| target | mean predictor | FTCP OLS (min-norm) | FTCP Ridge (alpha 1000) | Magpie Ridge |",
            "|---|---|---|---|---|",
        ]
        for t, slot in anchors:
            cells = []
            for key, f, m in (
                ("mean", "none", "mean"),
                ("ftcp_ols", "ftcp", "ols"),
                ("ftcp_ridge1000", "ftcp", "ridge_alpha1000"),
                ("magpie_ridge", "magpie", "ridgecv"),
            ):
                cells.append(f"{_fmt(_rmse(slot['base'], f, m))} (anchor {_fmt(DESIGN_ANCHORS.get((key, t)))})")
            L.append(f"| {t} ({slot['base']['unit']}) | " + " | ".join(cells) + " |")
        L += ["", "The anchors were measured earlier on the same split procedure (seed 42).", ""]
    for (t, split), slot in s1.items():
        any_res = slot["base"] or next(iter(slot["ssl"].values()), None)
        L += [
            f"### {t} ({any_res['unit'] or 'unitless'}), {split}: {any_res['n_train']:,} train / "
            f"{any_res['n_test']:,} test",
            "",
        ]
        if any_res.get("quick"):
            L += [QUICK_NOTE, ""]
        L += [
            "| features | model | SSL run (protocol) | test RMSE [95 % CI] | test R2 | test MAE "
            "| preprocess + fit (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in _base_rows(slot["base"], any_res):
            tm = r.get("timing") or {}
            alpha = f" (alpha {r['alpha']:.3g})" if r.get("alpha") and r["model"] == "ridgecv" else ""
            L.append(
                f"| {plots.feature_label(r['features'])} | {r['label']}{alpha} | — | {_boot(r)} | "
                f"{_fmt(r['test']['r2'])} | {_fmt(r['test']['mae'])} | {_fmt(tm.get('preprocess_fit_s'), 3)} |"
            )
        for name, runs in _ssl_groups(slot, R):
            for model in ("ols", "ridgecv"):
                rows = [_row(d, "ssl", model) for _, d in runs]
                rows = [r for r in rows if r]
                if not rows:
                    continue
                proto = runs[0][0].protocol
                if len(rows) == 1:
                    r = rows[0]
                    tm = r.get("timing") or {}
                    alpha = f" (alpha {r['alpha']:.3g})" if r.get("alpha") and model == "ridgecv" else ""
                    L.append(
                        f"| SSL 2,048-d | {r['label']}{alpha} | {name} ({proto}) | {_boot(r)} | "
                        f"{_fmt(r['test']['r2'])} | {_fmt(r['test']['mae'])} | "
                        f"{_fmt(tm.get('preprocess_fit_s'), 3)} |"
                    )
                else:
                    L.append(
                        f"| SSL 2,048-d | {rows[0]['label']} | {name} | "
                        f"{_spread([r['test']['rmse'] for r in rows])} | "
                        f"{_spread([r['test']['r2'] for r in rows])} | {_spread([r['test']['mae'] for r in rows])} "
                        f"| — |"
                    )
        base = slot["base"]
        fs = (base or {}).get("feature_sets", {}).get("ftcp")
        if fs:
            sweep = " · ".join(
                f"cond {s['cond']:.0e}: rank {s['rank']}, RMSE {_fmt(s['test']['rmse'])}"
                for s in fs.get("ols_sweep", [])
            )
            L += [
                "",
                f"FTCP design: {fs['n_active']:,} of {fs['n_features']:,} columns vary in training; numerical "
                f"rank at cond = eps {fs['rank']:,}. OLS cutoff sweep (test): {sweep}.",
            ]
        L += ["", _prov(base), ""] if base else [""]
        for _, runs in _ssl_groups(slot, R):
            if len(runs) == 1:
                d = runs[0][1]
                leak = d.get("leak_check") or {}
                L.append(
                    f"SSL rows `{runs[0][0].label}`: leak check {leak.get('n_test_seen_by_ssl')} of "
                    f"{_fmt(leak.get('n_test'))} test materials seen by the SSL. {_prov(d)}"
                )
                L.append("")
    return L


# ---------------------------------------------------------------------------------------
def _controls(ctx, figs) -> list[str]:
    R, s1 = ctx["R"], ctx["s1"]
    probes = R.probes_by_run()
    L = ["## Controls the paper lacks: what SSL training adds", ""]
    rows = []
    for t in ("formation_energy", "band_gap"):
        slot = s1.get((t, "random_10"))
        if not slot:
            continue
        base = slot["base"]
        groups = {}
        for label, d in slot["ssl"].items():
            run = R.runs.get(label)
            if run:
                g = groups.setdefault((run.kind, run.protocol), {"ols": [], "ridgecv": []})
                g["ols"].append(_rmse(d, "ssl", "ols"))
                g["ridgecv"].append(_rmse(d, "ssl", "ridgecv"))
        rows.append((t, base, groups))
    if rows:
        L += [
            "Scenario 1, random 90/10, test RMSE on each 2,048-d table, OLS and RidgeCV (mean ± standard deviation "
            "over seeds). Plain OLS fails on a run whose embedding has near-collinear columns (the probes below "
            "locate them); RidgeCV is the stable reading:",
            "",
            "| target | SSL table | transductive OLS | transductive RidgeCV | inductive OLS | inductive RidgeCV |",
            "|---|---|---|---|---|---|",
        ]
        for t, base, groups in rows:
            kinds = sorted({k for k, _ in groups}, key=lambda k: (k.startswith("random"), k))
            for kind in kinds:
                cells = [
                    _spread((groups.get((kind, p)) or {}).get(m, []))
                    for p in ("transductive", "inductive")
                    for m in ("ols", "ridgecv")
                ]
                L.append(f"| {t} | {kind} | " + " | ".join(cells) + " |")
            if base:
                L.append(
                    f"| {t} | (no SSL) FTCP Ridge (alpha 1000) / RidgeCV; Magpie RidgeCV | "
                    f"{_fmt(_rmse(base, 'ftcp', 'ridge_alpha1000'))} | "
                    f"{_fmt(_rmse(base, 'ftcp', 'ridgecv'))}; {_fmt(_rmse(base, 'magpie', 'ridgecv'))} | same | same |"
                )
        L.append("")
    if probes:
        L += _img(
            figs,
            "blocks",
            "Per-block RidgeCV test RMSE on random 90/10 (inductive SSL runs): each block alone and all blocks "
            "but one, the encoders with random weights against each trained objective",
        )
        L += [
            "Per block and leaving one block out (`ftcp probe`, random 90/10, RidgeCV test RMSE, FE eV/atom / BG eV; "
            "mean±sd over the runs of each kind). The OLS rows are in the same JSON: plain OLS fails on Block 3 of "
            "some upstream-objective runs, whose Block 3 embedding has near-collinear columns, and on every table "
            "that contains it:",
            "",
        ]
        cols = ["all"] + [f"B{n}" for n in range(1, 7)] + [f"-B{n}" for n in range(1, 7)]
        L += ["| SSL table | runs | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        groups: dict[tuple, list[dict]] = {}
        for label, d in probes.items():
            run = R.runs.get(label)
            if run:
                groups.setdefault((run.kind, run.protocol), []).append(d)
        for (kind, proto), ds in sorted(groups.items(), key=lambda kv: (kv[0][0].startswith("random"), kv[0])):
            cells = []
            for c in cols:
                cells.append(
                    f"{_mean_sd(probe_rmses(ds, c, 'ridgecv', 'formation_energy'))} / "
                    f"{_mean_sd(probe_rmses(ds, c, 'ridgecv', 'band_gap'))}"
                )
            L.append(f"| {kind}, {proto} | {len(ds)} | " + " | ".join(cells) + " |")
        L += [
            "",
            "Command per run: `ftcp probe --data Data --ssl runs/<run> --split 10` (JSON under `results/probes/`).",
            "",
        ]
    return L


# ---------------------------------------------------------------------------------------
def _scenario2(ctx, figs) -> list[str]:
    s2 = ctx["s2"]
    L = ["## Scenario 2 — hybrid FTCP + SSL on the formula-group split", ""]
    if not s2:
        return L + ["Not run yet: `python Evaluation_Scenarios/Scenario2_Hybrid_Enrichment/run_scenario2.py`.", ""]
    targets = sorted({k[1] for k in s2}, key=target_key)
    for t in targets:
        L += _img(
            figs,
            ("s2", t),
            f"Scenario 2 ({t}): test R2 of each model and feature set, and the share of "
            "importance on the SSL columns, per SSL protocol (mean over seeds, 95 % t-intervals; "
            "open diamonds = paper)",
        )
        items = [(k, d) for k, d in s2.items() if k[1] == t]
        d0 = items[0][1]
        L += [f"### {t} ({d0['unit']}), {d0['split']}: {d0['n_train']:,} train / {d0['n_test']:,} test", ""]
        if d0.get("quick"):
            L += [QUICK_NOTE, ""]
        L += [
            "| model | features | SSL run (protocol) | seeds | test R2 | test RMSE | test MAE | paper R2 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (label, _, _), d in items:
            sm = d["summary"]
            for model in ("mlp", "rf"):
                for s in ("ftcp", "ssl", "hybrid"):
                    if f"{model}.{s}.r2" not in sm:
                        continue
                    pr = PAPER.get(f"s2.r2.{s}_{model}") if t == "formation_energy" else None
                    L.append(
                        f"| {model.upper()} | {s} | `{label}` ({d['protocol']}) | {len(d['seeds'][model])} | "
                        f"{_ci(sm[f'{model}.{s}.r2'])} | {_ci(sm[f'{model}.{s}.rmse'])} | "
                        f"{_ci(sm[f'{model}.{s}.mae'])} | {_fmt(pr[0]) if pr else '—'} |"
                    )
        L += [
            "",
            "| importance on the SSL columns | SSL run (protocol) | share | enrichment ratio | ratio over varying "
            "FTCP columns | upstream per-dimension ratio |",
            "|---|---|---|---|---|---|",
        ]
        for (label, _, _), d in items:
            sm = d["summary"]
            for src, name in (("shap", "SHAP, GradientExplainer"), ("rf_mdi", "random forest MDI")):
                if f"{src}.ssl_share" in sm:
                    L.append(
                        f"| {name} | `{label}` ({d['protocol']}) | {_ci(sm[f'{src}.ssl_share'], pct=True)} | "
                        f"{_ci(sm.get(f'{src}.enrichment_ratio'))} | {_ci(sm.get(f'{src}.enrichment_ratio_active'))} "
                        f"| {_ci(sm.get(f'{src}.per_dim_ratio_upstream'))} |"
                    )
            for game, name in (
                ("2_players", "exact group Shapley, FTCP vs SSL"),
                ("block_players", "exact group Shapley, six FTCP blocks + SSL"),
            ):
                k = f"group_shapley.{game}.ssl_share"
                if k in sm:
                    L.append(f"| {name} | `{label}` ({d['protocol']}) | {_ci(sm[k], pct=True)} | — | — | — |")
        if t == "formation_energy":
            L.append("| paper (SHAP) | — | 32.81 % | 4.36x | — | ~6.0x (code) |")
        L.append("")
        for (label, _, _), d in items:
            leak = d.get("leak_check") or {}
            files = ", ".join(f"`{f}`" for f in d["files"][:3]) + (
                f" and {len(d['files']) - 3} more" if len(d["files"]) > 3 else ""
            )
            L += [
                f"`{label}`: seeds MLP {d['seeds']['mlp']}, forest {d['seeds']['rf']}; leak check "
                f"{leak.get('n_test_seen_by_ssl')} of {_fmt(leak.get('n_test'))} test materials seen by the SSL; "
                f"files {files}. {_prov(d)}",
                "",
            ]
    return L


# ---------------------------------------------------------------------------------------
def _scenario3(ctx, figs) -> list[str]:
    s3 = ctx["s3"]
    L = ["## Scenario 3 — sample efficiency and residual learning", ""]
    if not s3:
        return L + ["Not run yet: `python Evaluation_Scenarios/Scenario3_Sample_Efficiency/run_scenario3.py`.", ""]
    for t in sorted({k[1] for k in s3}, key=target_key):
        L += _img(
            figs,
            ("s3", t),
            f"Scenario 3 ({t}): SSL contribution (test R2 of the SSL residual model) against "
            "the labelled fraction, per model, pool and protocol (mean over seeds, 95 % "
            "t-intervals)",
        )
        for (label, _, variant, _pool), d in [(k, d) for k, d in s3.items() if k[1] == t]:
            if variant == "sample_efficiency":
                restricted = d.get("test_restricted_to_excluded")
                L += [
                    f"### {t}: sample efficiency, pool = {d['split']}/{d['pool_side']} ({d['n_pool']:,}), test "
                    f"{d['n_test']:,}"
                    + (
                        f" (the test side restricted to the {restricted['n_after']:,} materials "
                        f"the inductive SSL left out)"
                        if restricted
                        else ""
                    )
                    + f", SSL run `{label}` ({d['protocol']})",
                    "",
                ]
                if d.get("quick"):
                    L += [QUICK_NOTE, ""]
                L += [
                    "| base model | labelled (% of all / n / % of pool) | seeds | base R2 | + SSL residual R2 | "
                    "SSL contribution (OOF) | SSL contribution (in-sample, upstream) | delta R2 | delta MAE (%) |",
                    "|---|---|---|---|---|---|---|---|---|",
                ]
                for _key, v in sorted(
                    d["results"].items(), key=lambda kv: (kv[1]["model"], kv[1]["fraction_of_all_pct"])
                ):
                    sm = v["summary"]
                    L.append(
                        f"| {v['model']} | {v['fraction_of_all_pct']:g} % / {v['n_labelled']:,} / "
                        f"{v['fraction_of_pool_pct']:.2f} % | {len(v['runs'])} | {_ci(sm['base_r2'])} | "
                        f"{_ci(sm['combined_r2'])} | {_ci(sm['ssl_contribution'], pct=True)} | "
                        f"{_ci(sm['in_sample.ssl_contribution'], pct=True)} | {_ci(sm['delta_r2'])} | "
                        f"{_ci(sm['delta_mae_pct'], digits=3)} |"
                    )
            else:
                L += [
                    f"### {t}: formula-group residual learning, pool {d['n_pool']:,}, test {d['n_test']:,}, SSL run "
                    f"`{label}` ({d['protocol']})",
                    "",
                    "| model | seeds | base R2 | + SSL residual R2 | SSL contribution (OOF) | in-sample (upstream) "
                    "| delta R2 |",
                    "|---|---|---|---|---|---|---|",
                ]
                for m, v in d["results"].items():
                    sm = v["summary"]
                    L.append(
                        f"| {m} | {len(v['runs'])} | {_ci(sm['base_r2'])} | {_ci(sm['combined_r2'])} | "
                        f"{_ci(sm['ssl_contribution'], pct=True)} | {_ci(sm['in_sample.ssl_contribution'], pct=True)} "
                        f"| {_ci(sm['delta_r2'])} |"
                    )
            paired = (d.get("settings") or {}).get("paired_with") or []
            L += [
                "",
                (f"Paired with {', '.join(f'`{p}`' for p in paired)} (same base models). " if len(paired) > 1 else "")
                + _prov(d),
                "",
            ]
        if t == "formation_energy":
            L += [
                "Paper (formation energy, upstream's reversed pool, 1 %): MLP base R2 0.7242 -> 0.7474 with SSL, SSL "
                "contribution 5.77 %, MAE -6.25 %; XGBoost 0.8208 -> 0.8223, SSL contribution 0.70 % (5 %: 2.68 %, "
                "10 %: 4.94 %).",
                "",
            ]
    return L


# ---------------------------------------------------------------------------------------
def _pretext_tables(ctx) -> dict[str, dict]:
    from ..ssl.pretext_table import build_table

    out = {}
    for label, rec in ctx["ssl"].items():
        run = ctx["R"].runs.get(label)
        if rec["blocks"] and (run is None or run.trained):
            table = build_table(rec["dir"])
            if table["summary"]["tasks_run"]:
                out[label] = table
    return out


def _pretext_counts(ctx) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for _label, table in _pretext_tables(ctx).items():
        if table["summary"]["tasks_run"] == 13:
            proto = (table.get("split") or {}).get("protocol") or "transductive"
            counts.setdefault(proto, []).append(table["summary"]["test_ge_val"])
    return counts


def _pretext(ctx) -> list[str]:
    tables = _pretext_tables(ctx)
    L = ["## Pretext tasks", ""]
    if not tables:
        return L + ["No SSL run records under `results/ssl/`.", ""]
    pub = {p: r.label for p, r in ctx["pub"].items() if r}
    L += [
        "All 13 tasks on SSL-validation and SSL-test from each block's best checkpoint, next to a trivial baseline "
        "(`ftcp ssl-pretext-table`). Published runs in full; every finished run in the spread column.",
        "",
        "| # | block | task | metric | baseline (test) | "
        + " | ".join(f"{p}: val / test" for p in pub)
        + " | all runs, test (mean ± sd) | beats baseline (runs) |",
        "|---|---|---|---|---|" + "---|" * len(pub) + "---|---|",
    ]
    labels = sorted(tables)
    for i in range(13):
        rows = {lab: tables[lab]["tasks"][i] for lab in labels}
        r0 = next((r for r in rows.values() if r["status"] == "ok"), None)
        if r0 is None:
            continue
        cells = []
        for _p, lab in pub.items():
            r = rows.get(lab)
            cells.append(f"{_fmt(r['val'])} / {_fmt(r['test'])}" if r and r["status"] == "ok" else "n/a")
        tests = [r["test"] for r in rows.values() if r["status"] == "ok"]
        beats = sum(r["beats_baseline_test"] for r in rows.values() if r["status"] == "ok")
        L.append(
            f"| {r0['task']} | B{r0['block']} | {r0['name']} | {r0['metric']} | {_fmt(r0['baseline_test'])} | "
            + " | ".join(cells)
            + f" | {_fmt(float(np.mean(tests)))} ± {_fmt(float(np.std(tests, ddof=1)) if len(tests) > 1 else 0.0, 2)} "
            f"| {beats} of {len(tests)} |"
        )
    counts = [
        (lab, t["summary"]["test_ge_val"], (t.get("split") or {}).get("protocol"))
        for lab, t in tables.items()
        if t["summary"]["tasks_run"] == 13
    ]
    if counts:
        ks = [k for _, k, _ in counts]
        L += [
            "",
            f"**Tasks with test >= validation:** {', '.join(f'`{lab}` {k}' for lab, k, _ in counts)} — "
            f"{min(ks)} to {max(ks)} of 13 over {len(ks)} runs (mean {np.mean(ks):.1f}, sd "
            f"{np.std(ks, ddof=1) if len(ks) > 1 else 0:.1f}); the paper reports 6 of 13. Which of two equally sized "
            "random splits scores higher is a coin flip per task, so the count is noise around 6.5, as the spread "
            "shows.",
            "",
        ]
    return L


def _diagnostics(ctx, figs) -> list[str]:
    recs = ctx["ssl"]
    rows: dict[int, dict[str, list]] = {}
    for _label, rec in recs.items():
        for n, b in rec["blocks"].items():
            probes = ((b.get("metrics") or {}).get("probes")) or []
            if len(probes) < 2:
                continue
            first, last = probes[0], probes[-1]
            r = rows.setdefault(n, {"fe0": [], "fe1": [], "bg0": [], "bg1": [], "rk0": [], "rk1": [], "runs": 0})
            r["runs"] += 1
            for key, tgt in (("fe", "formation_energy"), ("bg", "band_gap")):
                if tgt in first["targets"] and tgt in last["targets"]:
                    r[key + "0"].append(first["targets"][tgt]["rmse"])
                    r[key + "1"].append(last["targets"][tgt]["rmse"])
            r["rk0"].append(first["effective_rank"])
            r["rk1"].append(last["effective_rank"])
    if not rows:
        return []
    L = [
        "## SSL training diagnostics: does the embedding get better for properties while it trains?",
        "",
        "A label probe runs inside every training run on SSL-train crystals only (4,000 of them, cut 3:1; ridge with "
        "alpha by leave-one-out; never used for training or selection): before the first step (the random-init "
        "control of the same run) and every few epochs (`--probe-every`, `ftcp.ssl.probe`). RMSE of the probe "
        "(FE eV/atom, BG eV) at the start and at the end, and the effective rank of the embedding (exp of the "
        "entropy of its normalised singular values; collapse shows as a small rank), mean over runs:",
        "",
        "| block | runs | FE probe: initial -> trained | BG probe: initial -> trained "
        "| effective rank: initial -> trained |",
        "|---|---|---|---|---|",
    ]
    for n in sorted(rows):
        r = rows[n]

        def ch(a, b):
            if not a:
                return "n/a"
            ma, mb = float(np.mean(a)), float(np.mean(b))
            return f"{_fmt(ma, 3)} -> {_fmt(mb, 3)} ({100 * (mb - ma) / ma:+.1f} %)"

        L.append(
            f"| B{n} | {r['runs']} | {ch(r['fe0'], r['fe1'])} | {ch(r['bg0'], r['bg1'])} | "
            f"{_fmt(float(np.mean(r['rk0'])), 3)} -> {_fmt(float(np.mean(r['rk1'])), 3)} |"
        )
    L += [""] + _img(
        figs,
        "probe_curves",
        "Label probe (formation energy, SSL-train crystals) over training epochs, "
        "per block: every run is one line; epoch 0 is the random-init control; the y axes differ",
    )
    return L


def _objectives(ctx) -> list[str]:
    """Per-block label probe of every SSL objective: initial (random weights) -> trained, over seeds."""
    groups: dict[tuple, dict] = {}
    for _label, rec in ctx["ssl"].items():
        run = rec.get("run") or {}
        for n, b in rec["blocks"].items():
            m = b.get("metrics") or {}
            probes = m.get("probes") or []
            if m.get("status") != "finished" or len(probes) < 2:
                continue
            key = (
                objective_name(run.get("objective"), run.get("crossmodal_weight")),
                run.get("preset") or "?",
                run.get("max_samples"),
                (run.get("split") or {}).get("protocol") or "?",
            )
            g = groups.setdefault(key, {}).setdefault(n, {"seeds": [], "fe0": [], "fe1": [], "bg0": [], "bg1": []})
            g["seeds"].append(run.get("seed"))
            for k, tgt in (("fe", "formation_energy"), ("bg", "band_gap")):
                g[k + "0"].append(probes[0]["targets"].get(tgt, {}).get("rmse"))
                g[k + "1"].append(probes[-1]["targets"].get(tgt, {}).get("rmse"))
    objectives = {k[0] for k in groups}
    if len(objectives) < 2:
        return []
    L = [
        "## SSL objectives compared (label probe on SSL-train crystals)",
        "",
        "Upstream's 13 tasks against the optional cross-modal objective (`--objective crossmodal`: every block also "
        "predicts a 204-value summary of the whole crystal through a linear head, `ftcp.ssl.crossmodal`). Each cell: "
        "probe RMSE with the initial (random) weights -> after training, mean ± sd over seeds; selection uses this "
        "probe only (SSL-train crystals), never a scenario's test set. Rows with a training cap were trained on that "
        "many SSL-train crystals (a reduced-scale comparison where the GPU was not available).",
        "",
        "| objective | preset | SSL-train cap | protocol | block | seeds | FE (eV/atom) | BG (eV) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(a, b):
        a, b = [x for x in a if x is not None], [x for x in b if x is not None]
        if not a or not b:
            return "n/a"

        def sd(v):
            return f" ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else ""

        return (
            f"{np.mean(a):.3f}{sd(a)} -> **{np.mean(b):.3f}**{sd(b)} "
            f"({100 * (np.mean(b) - np.mean(a)) / np.mean(a):+.0f} %)"
        )

    for key in sorted(groups, key=lambda k: (str(k[2]), k[1], k[3], k[0])):
        obj, preset, cap, proto = key
        for n, g in sorted(groups[key].items()):
            L.append(
                f"| {obj} | {preset} | {_fmt(cap) if cap else 'none'} | {proto} | B{n} | "
                f"{', '.join(str(x) for x in sorted(g['seeds']))} | {cell(g['fe0'], g['fe1'])} | "
                f"{cell(g['bg0'], g['bg1'])} |"
            )
    L += [
        "",
        "Commands: `ftcp ssl-train-all --data Data --out runs/<run> --protocol inductive --preset fast --seed S "
        "--objective {upstream,crossmodal} --probe-every 5 [--max-samples 4000 --blocks ...]`; records under "
        "`results/ssl/`.",
        "",
    ]
    return L


def _coverage(ctx) -> list[str]:
    s2, s3, pub = ctx["s2"], ctx["s3"], ctx["pub"]
    if ctx["synthetic"] or not pub:
        return []
    L = ["## What is and is not in these results", "", "| experiment | transductive | inductive |", "|---|---|---|"]
    for t in ("formation_energy", "band_gap"):
        cells = []
        for p in ("transductive", "inductive"):
            d = s2.get((pub[p].label, t, "group")) if pub.get(p) else None
            cells.append(
                f"MLP seeds {len(d['seeds']['mlp'])}, forest seeds {len(d['seeds']['rf'])}" if d else "not run"
            )
        L.append(f"| S2 {t} | {cells[0]} | {cells[1]} |")
        for pool in ("train", "test"):
            cells = []
            for p in ("transductive", "inductive"):
                d = s3.get((pub[p].label, t, "sample_efficiency", pool)) if pub.get(p) else None
                models = sorted({v["model"] for v in d["results"].values()}) if d else []
                cells.append(
                    ", ".join(
                        f"{m} ({max(len(v['runs']) for v in d['results'].values() if v['model'] == m)} seeds)"
                        for m in models
                    )
                    if d
                    else "not run"
                )
            L.append(f"| S3 {t}, pool {pool} | {cells[0]} | {cells[1]} |")
        cells = []
        for p in ("transductive", "inductive"):
            d = s3.get((pub[p].label, t, "group_residual", "-")) if pub.get(p) else None
            cells.append("run" if d else "not run")
        L.append(f"| S3 {t}, formula-group residual learning | {cells[0]} | {cells[1]} |")
    L += [
        "",
        "Anything 'not run' above or with fewer seeds than the others was left out for lack of compute time for this "
        "report; the commands to run it are those of the neighbouring rows.",
        "",
    ]
    return L


def _definitions() -> list[str]:
    return [
        "## Definitions",
        "",
        "- **OLS (min-norm, cond)**: minimum-norm least squares on StandardScaler'd features; singular values "
        "<= cond x s_max are treated as zero. cond = eps (2.2e-16) is scipy's `lstsq` default, which "
        "`LinearRegression` used up to scikit-learn 1.8 (upstream); scikit-learn 1.9 uses 1e-6.",
        "- **RidgeCV (LOO)**: Ridge with alpha on a log grid (1e-3 .. 1e6) chosen by exact leave-one-out error.",
        "- **Scenario 1 intervals**: 95 % percentile bootstrap of the test RMSE over test rows (1,000 resamples).",
        "- **Enrichment ratio**: SSL share of summed mean |attribution| / SSL share of the dimensions "
        "(2,048 / 27,248 = 7.516 %); *over varying FTCP columns*: the same with the dimension share computed over "
        "the FTCP columns that vary in the data. **Upstream per-dimension ratio**: (SSL sum / 2,048) / "
        "(FTCP sum / 25,200).",
        "- **SSL contribution**: test R2 of the SSL residual model on the base model's test residuals. **OOF**: "
        "the residual model is trained on K-fold out-of-fold residuals; **in-sample**: on the base model's own "
        "training residuals (upstream). In Scenario 3 the two protocols share their base models (paired).",
        "- **Paired gain** (Scenario 2): R2(hybrid) - R2(FTCP only) of the same seed, Student-t interval over seeds.",
        "",
    ]


# ---------------------------------------------------------------------------------------
def _figures(ctx, report_dir: Path, standin: bool, note) -> dict:
    figs = {}
    paper = {} if note else {k: v[0] for k, v in PAPER.items()}
    pub = ctx["pub"]
    figs["s1_pca"] = plots.s1_pca_comparison(
        ctx["s1"], ctx["R"], pub, paper, report_dir / "Scenario1_PCA_comparison.png", note
    )
    figs["s1_sweep"] = plots.s1_ols_sweep(
        [slot["base"] for (t, s), slot in ctx["s1"].items() if s == "random_10" and slot["base"]],
        report_dir / "Scenario1_OLS_cutoff.png",
        note,
    )
    figs["s1_splits"] = plots.s1_splits(ctx["s1"], ctx["R"], pub, report_dir / "Scenario1_splits.png", note)
    figs["blocks"] = plots.block_probes(ctx["R"], report_dir / "Controls_block_probes.png", note)
    # the scenario figures show the published run of each protocol (other runs are in the tables)
    published = {run.label for run in pub.values() if run}

    def shown(key) -> bool:
        return not published or key[0] in published

    for t in sorted({k[1] for k in ctx["s2"]}, key=target_key):
        figs[("s2", t)] = plots.s2_figure(
            {k: d for k, d in ctx["s2"].items() if k[1] == t and shown(k)},
            paper,
            report_dir / f"Scenario2_{t}.png",
            standin,
            note,
        )
    for t in sorted({k[1] for k in ctx["s3"]}, key=target_key):
        figs[("s3", t)] = plots.s3_figure(
            {k: d for k, d in ctx["s3"].items() if k[1] == t and k[2] == "sample_efficiency" and shown(k)},
            paper,
            report_dir / f"Scenario3_{t}.png",
            standin,
            note,
        )
    figs["probe_curves"] = plots.probe_curves(ctx["ssl"], report_dir / "SSL_probe_over_training.png", note)
    return figs
