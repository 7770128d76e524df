"""Per-seed results of a scenario turned into means with Student-t intervals.

Used by the scenario scripts when they write their JSON and by the report when it merges the
per-seed records of several files (e.g. Scenario 2's MLP seeds run as separate processes and
its forests run elsewhere).
"""
from __future__ import annotations

from .metrics import t_interval

SCENARIO2_SETS = ("ftcp", "ssl", "hybrid")


def scenario2_summary(per_seed: list[dict]) -> dict:
    """Mean and t-interval over seeds of the headline numbers."""
    def collect(path):
        vals = []
        for s in per_seed:
            v = s
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
                if v is None:
                    break
            if v is not None:
                vals.append(v)
        return t_interval(vals) if vals else None

    out = {}
    for model in ("mlp", "rf"):
        for name in SCENARIO2_SETS:
            for metric in ("r2", "rmse", "mae"):
                ci = collect([model, name, "test", metric])
                if ci:
                    out[f"{model}.{name}.{metric}"] = ci
    for key in ("ssl_share", "enrichment_ratio", "enrichment_ratio_active", "per_dim_ratio_upstream",
                "per_dim_ratio_active"):
        for src in ("shap", "rf_mdi"):
            ci = collect(["attribution", src, key])
            if ci:
                out[f"{src}.{key}"] = ci
    for game in ("2_players", "block_players"):
        ci = collect(["attribution", "group_shapley", game, "share", "SSL"])
        if ci:
            out[f"group_shapley.{game}.ssl_share"] = ci
    return out
