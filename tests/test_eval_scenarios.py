"""End-to-end runs of the three scenario scripts and the report on a tiny synthetic store.

The store is synthetic (random values in the FTCP bands, labels that depend on them, real
formulas so that Magpie works and formula groups exist) and its SSL table is a stand-in:
these tests check plumbing, alignment and bookkeeping, not science.
"""
from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftcp import layout as L

REPO = Path(__file__).resolve().parents[1]
FORMULAS = ["NaCl", "KCl", "MgO", "CaO", "Fe2O3", "Al2O3", "SiO2", "TiO2", "ZnO", "GaAs", "CuO", "NiO",
            "LiF", "BaTiO3", "SrTiO3", "CsCl", "ZrO2", "MnO", "CoO", "LiCoO2", "NaF", "KBr", "AlN", "GaN"]


def _load_script(rel: str):
    """The installed module of a script under Evaluation_Scenarios/ (the package the scripts are)."""
    return importlib.import_module("Evaluation_Scenarios." + rel.removesuffix(".py").replace("/", "."))


def make_store(root: Path, n: int = 260, seed: int = 0) -> Path:
    """A tiny native store with splits and a stand-in SSL table."""
    from ftcp.evaluation.features import write_standin_ssl
    from ftcp.splitting import make_splits

    rng = np.random.default_rng(seed)
    x = np.zeros((n, *L.SHAPE), dtype=np.float32)
    n_sites = rng.integers(1, 9, size=n)
    n_elem = rng.integers(1, 4, size=n)
    for i in range(n):
        elems = rng.choice(60, size=n_elem[i], replace=False)
        L.region(x[i], L.ELEMENT_MATRIX)[elems, np.arange(n_elem[i])] = 1.0
        L.region(x[i], L.LATTICE)[0] = rng.uniform(3, 8, 3)
        L.region(x[i], L.LATTICE)[1] = rng.uniform(80, 100, 3)
        L.region(x[i], L.SITE_COORDS)[:n_sites[i]] = rng.uniform(0, 1, (n_sites[i], 3))
        slots = rng.integers(0, n_elem[i], n_sites[i])
        L.region(x[i], L.SITE_OCCUPANCY)[np.arange(n_sites[i]), slots] = 1.0
        L.region(x[i], L.KPOINT_DISTANCES)[:] = np.sort(rng.uniform(0, 3, L.N_KPOINTS))
        L.region(x[i], L.ELEMENT_PROPERTIES)[:, :n_elem[i]] = rng.integers(0, 2, (L.N_PROPERTIES, n_elem[i]))
        # a few property rows only: keeps the number of varying columns (and the test time) small
        L.region(x[i], L.STRUCTURE_FACTORS)[:6] = rng.normal(size=(6, L.N_KPOINTS)) * n_sites[i]
    ids = np.array([f"syn-{i:04d}" for i in range(n)])
    formulas = np.array(FORMULAS)[rng.integers(0, len(FORMULAS), n)]
    lat = L.region(x, L.LATTICE).reshape(n, -1)
    fe = -0.3 * lat[:, 0] + 0.05 * n_sites - 0.2 * n_elem + 0.1 * rng.normal(size=n)
    bg = np.abs(0.5 * lat[:, 1] - 0.3 * n_elem + 0.2 * rng.normal(size=n))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "ftcp.npy", x)
    np.save(root / "material_ids.npy", ids)
    pd.DataFrame({"material_id": ids, "formula": formulas, "formation_energy": fe, "band_gap": bg}).to_csv(
        root / "labels.csv", index=False)
    (root / "manifest.json").write_text(json.dumps({
        "layout_version": L.LAYOUT_VERSION, "targets": ["formation_energy", "band_gap"],
        "source": {"path": "synthetic_eval_test.csv"}}))
    make_splits(root, seed=42)
    write_standin_ssl(root, seed=0)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("eval") / "store")


def _common(store, tmp_path):
    return ["--data", str(store), "--out", str(tmp_path / "Results"), "--report-dir", str(tmp_path / "report"),
            "--quick", "--device", "cpu"]


def _json(tmp_path, scenario):
    files = sorted((tmp_path / "Results" / f"scenario{scenario}").rglob("*.json"))
    return {f.name: json.loads(f.read_text()) for f in files}


def test_scenario1_end_to_end(store, tmp_path):
    s1 = _load_script("Scenario1_Linear_Regression/run_scenario1.py")
    assert s1.main(_common(store, tmp_path) + ["--split", "10"]) == 0
    out = _json(tmp_path, 1)
    assert set(out) == {"formation_energy__random_10__quick.json", "band_gap__random_10__quick.json"}
    d = out["formation_energy__random_10__quick.json"]
    models = {(r["features"], r["model"]) for r in d["rows"]}
    for need in [("none", "mean"), ("ftcp", "ols"), ("ftcp", "ridgecv"), ("ftcp", "ridge_alpha1000"),
                 ("ssl", "ols"), ("ssl", "ridgecv"), ("magpie", "ridgecv")]:
        assert need in models
    assert any(f.startswith("ftcp_pca") for f, _ in models)
    ridge = next(r for r in d["rows"] if r["features"] == "ftcp" and r["model"] == "ridgecv")
    assert np.isfinite(ridge["test"]["rmse"]) and ridge["timing"]["preprocess_fit_s"] > 0
    assert ridge["timing"]["peak_rss_mb"] > 0 and ridge["alpha"] > 0
    assert d["time_ratio"]["preprocess_fit_ftcp_over_ssl"] > 0
    assert d["feature_sets"]["ftcp"]["ols_sweep"][0]["test"]["n"] == d["n_test"]
    prov = d["provenance"]
    assert prov["dataset"]["name"] == "synthetic_eval_test" and prov["seed"] == 42
    assert prov["ssl"]["standin"] is True and "run_scenario1.py" in prov["command"]
    assert prov["hardware"]["cores"] >= 1 and "sklearn" in prov["versions"]
    report = (tmp_path / "report" / "RESULTS.md").read_text()
    assert "STAND-IN" in report and "Scenario 1" in report and "QUICK" in report
    assert (tmp_path / "report" / "Scenario1_PCA_comparison.png").stat().st_size > 1000


def test_scenario2_end_to_end(store, tmp_path):
    s2 = _load_script("Scenario2_Hybrid_Enrichment/run_scenario2.py")
    assert s2.main(_common(store, tmp_path)) == 0
    d = _json(tmp_path, 2)["formation_energy__group__quick.json"]
    assert d["settings"]["seeds"] == 2 and len(d["per_seed"]) == 2
    for k in ("mlp.hybrid.r2", "mlp.ftcp.r2", "mlp.ssl.r2", "rf.hybrid.r2", "shap.ssl_share",
              "group_shapley.2_players.ssl_share", "group_shapley.block_players.ssl_share", "rf_mdi.ssl_share"):
        assert k in d["summary"], k
    att = d["per_seed"][0]["attribution"]
    for game in ("2_players", "block_players"):
        gs = att["group_shapley"][game]
        assert gs["efficiency_max_abs_error"] < 1e-8
        assert sum(gs["share"].values()) == pytest.approx(1.0)
    assert set(att["group_shapley"]["block_players"]["names"]) >= {"B1_element_matrix", "B6_structure_factors", "SSL"}
    assert att["shap"]["explainer"] == "shap.GradientExplainer"
    assert att["shap"]["ssl_dim_share"] == pytest.approx(2048 / 27248)
    assert 0 <= att["shap"]["ssl_share"] <= 1
    assert "Scenario 2" in (tmp_path / "report" / "RESULTS.md").read_text()


def test_scenario3_end_to_end(store, tmp_path):
    s3 = _load_script("Scenario3_Sample_Efficiency/run_scenario3.py")
    assert s3.main(_common(store, tmp_path) + ["--fractions", "10,20"]) == 0
    out = _json(tmp_path, 3)
    se = out["formation_energy__sample_efficiency__pool-train__mlp+hgb__quick.json"]
    assert se["protocol"] == "unknown" and se["leak_check"]["n_test_seen_by_ssl"] is None   # a stand-in: no split
    assert se["n_all_materials"] == 260 and se["nested"]
    r = se["results"]["mlp/10"]
    assert r["n_labelled"] == 26 and len(r["runs"]) == 2
    assert r["fraction_of_pool_pct"] == pytest.approx(100 * 26 / se["n_pool"])
    for key in ("ssl_contribution", "delta_r2", "delta_mae", "in_sample.ssl_contribution"):
        assert "mean" in r["summary"][key]
    gr = out["formation_energy__group_residual__hgb__quick.json"]
    assert gr["results"]["hgb"]["runs"][0]["fold_kind"] == "group"
    report = (tmp_path / "report" / "RESULTS.md").read_text()
    assert "Scenario 3" in report and "sample efficiency" in report


def _copy_store(store: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in ("ftcp.npy", "material_ids.npy", "labels.csv", "manifest.json"):
        (dst / f).symlink_to(store / f)
    for d in ("Splitted_Data", "Group_Splitting"):
        shutil.copytree(store / d, dst / d)
    (dst / "SSL").mkdir()
    return dst


def test_missing_ssl_ids_fail_clearly(store, tmp_path):
    bad = _copy_store(store, tmp_path / "bad")
    ids = np.load(store / "SSL" / "ssl_material_ids.npy")
    feats = np.load(store / "SSL" / "ssl_features.npy")
    keep = np.array([i for i, m in enumerate(ids) if m != "syn-0007"])   # one material loses its features
    np.save(bad / "SSL" / "ssl_material_ids.npy", ids[keep])
    np.save(bad / "SSL" / "ssl_features.npy", feats[keep])
    s1 = _load_script("Scenario1_Linear_Regression/run_scenario1.py")
    split = next(n for n in ("random_10", "random_20", "random_30", "random_40")
                 if "syn-0007" in (store / "Splitted_Data").joinpath(
                     f"Split_{n.split('_')[1]}Test_{100 - int(n.split('_')[1])}Train", "train_ids.txt").read_text())
    with pytest.raises(ValueError, match="missing"):
        s1.main(["--data", str(bad), "--out", str(tmp_path / "R"), "--no-report", "--split", split.split("_")[1],
                 "--features", "ssl"])
    dup = _copy_store(store, tmp_path / "dup")
    np.save(dup / "SSL" / "ssl_material_ids.npy", np.concatenate([ids, ids[:1]]))
    np.save(dup / "SSL" / "ssl_features.npy", np.concatenate([feats, feats[:1]]))
    with pytest.raises(ValueError, match="duplicated"):
        s1.main(["--data", str(dup), "--out", str(tmp_path / "R"), "--no-report", "--split", "10",
                 "--features", "ssl"])


def test_group_split_never_shares_a_formula(store, tmp_path):
    from ftcp.dataset import open_dataset

    ds = open_dataset(store)
    tr, te = ds.part("group", "train"), ds.part("group", "test")
    assert not set(tr.formulas()) & set(te.formulas())
    # a forged split that puts one formula on both sides is refused by the scenario scripts
    forged = _copy_store(store, tmp_path / "forged")
    for f in ("ssl_features.npy", "ssl_material_ids.npy"):
        (forged / "SSL" / f).symlink_to(store / "SSL" / f)
    train_ids = (forged / "Group_Splitting" / "train_ids.txt").read_text().split()
    test_ids = (forged / "Group_Splitting" / "test_ids.txt").read_text().split()
    (forged / "Group_Splitting" / "train_ids.txt").write_text("\n".join(train_ids + test_ids[:1]) + "\n")
    (forged / "Group_Splitting" / "test_ids.txt").write_text("\n".join(test_ids[1:] + train_ids[:1]) + "\n")
    s2 = _load_script("Scenario2_Hybrid_Enrichment/run_scenario2.py")
    with pytest.raises(ValueError, match="shares"):
        s2.main(["--data", str(forged), "--out", str(tmp_path / "R"), "--no-report", "--quick", "--device", "cpu"])


def test_make_report_script(store, tmp_path):
    """make_report.py regenerates RESULTS.md from whatever JSON exists (here: Scenario 1 only), and the same
    JSON gives the same bytes (no clock in the report)."""
    s1 = _load_script("Scenario1_Linear_Regression/run_scenario1.py")
    assert s1.main(_common(store, tmp_path) + ["--split", "20", "--no-report", "--features", "ftcp,ssl"]) == 0
    mk = _load_script("make_report.py")
    assert mk.main(["--results", str(tmp_path / "Results"), "--report-dir", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "RESULTS.md").read_text()
    assert "random_20" in text and "Not run yet" in text      # scenarios 2 and 3 have no results
    assert mk.main(["--results", str(tmp_path / "Results"), "--report-dir", str(tmp_path / "rep2")]) == 0
    assert (tmp_path / "rep2" / "RESULTS.md").read_text() == text


def _ssl_run_dir(store: Path, dst: Path, protocol: str) -> Path:
    """A copy of the store's SSL table that says which run made it: a published run of ``protocol``."""
    dst.mkdir(parents=True)
    for f in ("ssl_features.npy", "ssl_material_ids.npy"):
        shutil.copy(store / "SSL" / f, dst / f)
    ids = np.load(store / "material_ids.npy").astype(str).tolist()
    test = set((store / "Splitted_Data/Split_10Test_90Train/test_ids.txt").read_text().split())
    seen = [m for m in ids if m not in test] if protocol == "inductive" else ids
    split = {"seed": 42, "protocol": protocol, "train": seen, "val": [], "test": [],
             "excluded": [m for m in ids if m not in seen]}
    (dst / "ssl_split.json").write_text(json.dumps(split))
    (dst / "ssl_features.json").write_text(json.dumps({
        "ssl_split": {"protocol": protocol, "sizes": {"train": len(seen), "val": 0, "test": 0,
                                                      "excluded": len(ids) - len(seen)}},
        "init": ["trained"], "run": {"preset": "upstream", "objective": "upstream", "seed": 42}}))
    return dst


def test_report_shows_both_protocols_side_by_side(store, tmp_path):
    """Two SSL runs of the two protocols: their Scenario 1 rows, leak checks and the claims table columns."""
    from ftcp.evaluation.report import make_report

    s1 = _load_script("Scenario1_Linear_Regression/run_scenario1.py")
    out = tmp_path / "Results"
    assert s1.main(_common(store, tmp_path) + ["--split", "10", "--no-report", "--features", "ftcp"]) == 0
    for protocol in ("transductive", "inductive"):
        run = _ssl_run_dir(store, tmp_path / f"upstream_{protocol}_seed42", protocol)
        assert s1.main(_common(store, tmp_path) + ["--split", "10", "--no-report", "--features", "ssl",
                                                   "--ssl", str(run)]) == 0
        res = json.loads((out / f"scenario1/upstream_{protocol}_seed42/formation_energy__random_10__quick.json")
                         .read_text())
        assert res["protocol"] == protocol
        assert (res["leak_check"]["n_test_seen_by_ssl"] == 0) == (protocol == "inductive")
        row = next(r for r in res["rows"] if r["features"] == "ssl" and r["model"] == "ols")
        assert row["test_rmse_ci"]["lo"] <= row["test"]["rmse"] <= row["test_rmse_ci"]["hi"]
    text = make_report(out, tmp_path / "rep").read_text()
    claim = next(line for line in text.splitlines() if line.startswith("| S1: SSL + OLS formation-energy"))
    cells = [c.strip() for c in claim.split("|")]
    assert "n/a" not in cells[3] and "n/a" not in cells[4]          # transductive and inductive columns filled
    assert "`upstream_inductive_seed42` (published) | inductive" in text
    assert "`upstream_transductive_seed42` (published) | transductive" in text


def test_scenario3_pairs_ssl_tables_on_the_same_base_models(store, tmp_path):
    """--also-ssl: one JSON per SSL table, every base-model number identical (the base fits are shared),
    the residual numbers their own."""
    other = tmp_path / "other_ssl"
    other.mkdir()
    ids = np.load(store / "SSL" / "ssl_material_ids.npy")
    feats = np.load(store / "SSL" / "ssl_features.npy")
    np.save(other / "ssl_material_ids.npy", ids)
    np.save(other / "ssl_features.npy", np.random.default_rng(1).permutation(feats, axis=0))   # rows shuffled
    s3 = _load_script("Scenario3_Sample_Efficiency/run_scenario3.py")
    assert s3.main(_common(store, tmp_path) + ["--variants", "sample", "--bases", "hgb", "--fractions", "10,20",
                                               "--also-ssl", str(other), "--no-report"]) == 0
    a = json.loads((tmp_path / "Results/scenario3/SSL/formation_energy__sample_efficiency__pool-train__hgb__quick.json")
                   .read_text())
    b = json.loads((tmp_path / "Results/scenario3/other_ssl/formation_energy__sample_efficiency__pool-train__hgb__quick"
                    ".json").read_text())
    assert a["settings"]["paired_with"] == ["SSL", "other_ssl"] and b["ssl_run"] == "other_ssl"
    for key in a["results"]:
        for ra, rb in zip(a["results"][key]["runs"], b["results"][key]["runs"], strict=False):
            assert ra["base_test"] == rb["base_test"] and ra["base_oof"] == rb["base_oof"]
            assert ra["oof"]["residual_test"] != rb["oof"]["residual_test"]


def test_the_mlp_over_xgboost_verdict_follows_the_intervals():
    from ftcp.evaluation.report import _gain_ratio_verdict

    def res(mlp, xgb, proto="inductive"):
        ci = lambda m, lo, hi: {"summary": {"ssl_contribution": {"mean": m, "lo": lo, "hi": hi}}}  # noqa: E731
        return {proto: {"results": {"mlp/1": ci(*mlp), "xgb/1": ci(*xgb)}}, "transductive": None}

    assert _gain_ratio_verdict(res((0.05, -0.05, 0.15), (0.2, 0.17, 0.23))).startswith("not reproduced (inductive)")
    assert _gain_ratio_verdict(res((0.06, 0.02, 0.1), (0.007, -0.01, 0.02))).startswith("reproduced in direction")
    assert "not meaningful" in _gain_ratio_verdict(res((0.05, -0.05, 0.15), (0.01, -0.02, 0.04)))
    assert _gain_ratio_verdict({"inductive": None, "transductive": None}) == "not run"
