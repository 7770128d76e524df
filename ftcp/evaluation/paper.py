"""The paper's (and upstream repository's) published numbers, quoted once.

Sources: DESIGN.md section 1 (the paper's claims), upstream_code_notes.md sections 4.6 and 5
(numbers in upstream's README and figures) and DESIGN.md section 7 (anchors measured on
mp_36k by the project).  Each entry: value, unit, and where it was published.
"""

from __future__ import annotations

PAPER = {
    # ---- Scenario 1: linear regression, random splits -----------------------------------
    "s1.ssl_ols_fe_rmse_all_splits": (
        0.826,
        "eV/atom",
        "README: SSL + LR formation-energy RMSE 'across all data splits'",
    ),
    "s1.ssl_ols_fe_rmse_90_10": (0.835, "eV/atom", "PCA_Results.png, 90/10"),
    "s1.ssl_ols_bg_rmse_90_10": (1.299, "eV", "PCA_Results.png, 90/10"),
    "s1.ftcp_ols_fe_rmse_90_10": (37108.0, "eV/atom", "PCA_Results.png, OLS on 25,200-d FTCP"),
    "s1.ftcp_pca_ols_fe_rmse_90_10": (37109.0, "eV/atom", "PCA_Results.png, PCA-2048 of FTCP + OLS"),
    "s1.ftcp_ols_bg_rmse_90_10": (69069.0, "eV", "PCA_Results.png"),
    "s1.ftcp_pca_ols_bg_rmse_90_10": (69070.0, "eV", "PCA_Results.png"),
    "s1.fit_speedup_ftcp_over_ssl": ((37.0, 40.0), "x", "README: SSL 37-40x faster (preprocessing + fit)"),
    "s1.compression": (12.3, "x", "25,200 / 2,048 dimensions"),
    # ---- Scenario 2: hybrid FTCP + SSL, formula-group split, formation energy -------------
    "s2.shap_ssl_share": (0.3281, "", "README: SSL carries 32.81 % of SHAP importance"),
    "s2.ssl_dim_share": (0.07516, "", "2,048 / 27,248 dimensions"),
    "s2.enrichment_ratio": (4.36, "x", "README: 4.36x (= 32.81 % / 7.516 %)"),
    "s2.per_dim_ratio_upstream": (6.01, "x", "what upstream's SHAP script computes from 32.81 % (notes 4.3)"),
    "s2.r2.ftcp_mlp": (0.921, "", "Scenario2_RMSE_Results.png (0.9211 hard-coded in the scripts)"),
    "s2.r2.ssl_mlp": (0.639, "", "Scenario2_RMSE_Results.png (0.6390 hard-coded)"),
    "s2.r2.hybrid_mlp": (0.928, "", "Scenario2_RMSE_Results.png"),
    "s2.r2.hybrid_rf": (0.925, "", "Scenario2_RMSE_Results.png"),
    "s2.rmse.ftcp_mlp": (0.339, "eV/atom", "Scenario2_RMSE_Results.png"),
    "s2.rmse.ssl_mlp": (0.725, "eV/atom", "Scenario2_RMSE_Results.png"),
    "s2.rmse.hybrid_mlp": (0.323, "eV/atom", "Scenario2_RMSE_Results.png"),
    "s2.rmse.hybrid_rf": (0.330, "eV/atom", "Scenario2_RMSE_Results.png"),
    # ---- Scenario 3: sample efficiency / residual learning ------------------------------
    "s3.n_1pct": (1294, "samples", "1 % of 129,473 materials"),
    "s3.mlp.ssl_contribution_1pct": (0.0577, "", "README: SSL residual model explains 5.77 % at 1 %"),
    "s3.xgb.ssl_contribution": ({1: 0.0070, 5: 0.0268, 10: 0.0494}, "", "hard-coded XGBoost results (MLP:514)"),
    "s3.mlp.r2_base_1pct": (0.7242, "", "Scenario3_details.png"),
    "s3.mlp.r2_combined_1pct": (0.7474, "", "Scenario3_details.png"),
    "s3.xgb.r2_base_1pct": (0.8208, "", "Scenario3_details.png"),
    "s3.xgb.r2_combined_1pct": (0.8223, "", "Scenario3_details.png"),
    "s3.mlp.mae_base_1pct": (0.458, "eV/atom", "Scenario3_details.png"),
    "s3.mlp.mae_combined_1pct": (0.433, "eV/atom", "Scenario3_details.png (-6.25 %)"),
    "s3.mlp.delta_mae_pct_1pct": (-6.25, "%", "Scenario3_details.png"),
    "s3.xgb.mae_base_1pct": (0.357, "eV/atom", "Scenario3_details.png"),
    "s3.xgb.mae_combined_1pct": (0.356, "eV/atom", "Scenario3_details.png"),
    "s3.fg.xgb_r2_base": (0.9414, "", "FG script, hard-coded 'random split' result"),
    "s3.fg.ssl_contribution": (0.0435, "", "FG script, hard-coded"),
    "s3.fg.delta_r2_pct": (0.27, "%", "FG script, hard-coded"),
    # ---- SSL pretext tasks ----------------------------------------------------------------
    "ssl.tasks_test_ge_val": ((6, 13), "tasks", "paper: 6 of 13 pretext tasks have test >= validation"),
}

#: Project anchors on mp_36k (DESIGN section 7): random 90/10 split, seed 42, test RMSE.
DESIGN_ANCHORS = {
    ("mean", "formation_energy"): 1.140,
    ("mean", "band_gap"): 1.733,
    ("ftcp_ols", "formation_energy"): 2e4,
    ("ftcp_ols", "band_gap"): 1.6e5,
    ("ftcp_ridge1000", "formation_energy"): 0.460,
    ("ftcp_ridge1000", "band_gap"): 1.085,
    ("magpie_ridge", "formation_energy"): 0.367,
    ("magpie_ridge", "band_gap"): 1.144,
    ("paper_ssl_ols", "formation_energy"): 0.826,
    ("paper_ssl_ols", "band_gap"): 1.299,
}


def value(key: str):
    return PAPER[key][0]
