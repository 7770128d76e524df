"""The results tree as the report reads it: scenario JSON merged across files, SSL runs classified.

A results root holds ``scenario1/``, ``scenario2/``, ``scenario3/`` and ``probes/`` with one folder
per SSL run (``baselines`` for Scenario 1's rows without SSL features) and, optionally, ``ssl/``
with the records of every SSL run (``ftcp collect-results``).  Nothing here computes a new
number: files are grouped, per-seed records of one experiment written by several processes are
put back together, and the intervals are recomputed from those per-seed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..io_utils import read_json_if_exists
from .results import load_results
from .summaries import scenario2_summary

TARGET_ORDER = {"formation_energy": 0, "band_gap": 1}


@dataclass(frozen=True)
class SSLRun:
    """What a result's SSL table was: run label, protocol (from the leak check), preset, objective, seed, init."""

    label: str
    protocol: str
    preset: str | None
    objective: str | None
    seed: int | None
    init: str

    @property
    def trained(self) -> bool:
        return self.init == "trained"

    @property
    def published(self) -> bool:
        """Upstream's settings and task set: the features the scenarios report."""
        return self.trained and self.preset in (None, "upstream") and self.objective in (None, "upstream")

    @property
    def kind(self) -> str:
        if not self.trained:
            return "random-init encoders"
        return f"{self.preset or 'default'} preset" + (
            f", {self.objective} objective" if self.objective not in (None, "upstream") else ""
        )


def objective_name(objective: str | None, crossmodal_weight=None) -> str:
    """The objective as the tables name it: ``upstream``, ``crossmodal`` (loss weight 1) or
    ``crossmodal (weight 4)``."""
    name = objective or "upstream"
    if name == "crossmodal" and crossmodal_weight not in (None, 1, 1.0):
        name += f" (weight {float(crossmodal_weight):g})"
    return name


def ssl_run_of(d: dict, weights: dict | None = None) -> SSLRun | None:
    """``weights``: {run label: cross-modal loss weight} from the SSL-run records, for results whose
    provenance predates the weight being recorded there."""
    ssl = (d.get("provenance") or {}).get("ssl")
    if not ssl:
        return None
    init = ssl.get("init") or ["trained"]
    init = "random" if any("random" in str(i) for i in init) else "trained"
    protocol = d.get("protocol") or ssl.get("protocol") or "unknown"
    label = ssl.get("label") or d.get("ssl_run") or "SSL"
    weight = ssl.get("crossmodal_weight", (weights or {}).get(label))
    objective = ssl.get("objective")
    return SSLRun(
        label,
        protocol,
        ssl.get("preset"),
        objective_name(objective, weight) if objective else None,
        ssl.get("seed"),
        init,
    )


def probe_rmses(probes: list[dict], columns: str, model: str, target: str) -> list[float]:
    """Test RMSE of one probe row (columns 'all', 'B3', '-B6', ...; model 'ols' or 'ridgecv') over several
    ``ftcp probe`` results."""
    return [
        r["test"]["rmse"]
        for d in probes
        for r in d["rows"]
        if r["columns"] == columns and r["model"] == model and r["target"] == target
    ]


def target_key(t: str):
    return (TARGET_ORDER.get(t, 2), t)


def split_key(s: str):
    tail = s.split("_")[-1]
    return (0, int(tail)) if s.startswith("random_") and tail.isdigit() else (1, s)


class Results:
    """Every result of one results root, grouped for the report."""

    def __init__(self, root):
        self.root = Path(root)
        self.s1 = [d for d in load_results(self.root, 1)]
        self.s2 = [d for d in load_results(self.root, 2)]
        self.s3 = [d for d in load_results(self.root, 3)]
        self.probes = [d for d in load_results(self.root, "probes")]
        self.weights = {
            label: (rec.get("run") or {}).get("crossmodal_weight") for label, rec in self.ssl_records().items()
        }
        self.runs: dict[str, SSLRun] = {}
        for d in self.s1 + self.s2 + self.s3 + self.probes:
            run = ssl_run_of(d, self.weights)
            if run is not None:
                self.runs.setdefault(run.label, run)

    # -- SSL runs ------------------------------------------------------------------------------
    def ssl_info_of(self, label: str) -> dict:
        """What a result recorded about SSL run ``label`` (``provenance.ssl``; for runs without a record)."""
        for d in self.s1 + self.s2 + self.s3 + self.probes:
            ssl = (d.get("provenance") or {}).get("ssl") or {}
            if ssl.get("label") == label:
                return ssl
        return {}

    def ssl_split_of(self, label: str) -> dict | None:
        return self.ssl_info_of(label).get("ssl_split")

    def published(self, protocol: str) -> SSLRun | None:
        cands = sorted(
            (r for r in self.runs.values() if r.published and r.protocol == protocol),
            key=lambda r: (r.seed is None, r.seed or 0, r.label),
        )
        return cands[0] if cands else None

    def protocols(self) -> list[str]:
        order = {"transductive": 0, "inductive": 1}
        return sorted({r.protocol for r in self.runs.values() if r.trained}, key=lambda p: (order.get(p, 2), p))

    def ssl_records(self) -> dict[str, dict]:
        """{run label: {"run", "features", "pretext", "blocks": {n: {"config", "metrics"}}}} from ``ssl/``
        (read once)."""
        if getattr(self, "_ssl_records", None) is None:
            self._ssl_records = self._read_ssl_records()
        return self._ssl_records

    def _read_ssl_records(self) -> dict[str, dict]:
        out = {}
        base = self.root / "ssl"
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            if not d.is_dir():
                continue
            blocks = {}
            for b in sorted(d.glob("block*_*")):
                n = int(b.name[len("block") :].split("_")[0])
                blocks[n] = {
                    "config": read_json_if_exists(b / "config.json"),
                    "metrics": read_json_if_exists(b / "metrics.json"),
                }
            out[d.name] = {
                "dir": d,
                "run": read_json_if_exists(d / "ssl_run.json"),
                "features": read_json_if_exists(d / "ssl_features.json"),
                "pretext": read_json_if_exists(d / "pretext_tasks.json"),
                "blocks": blocks,
            }
        return out

    # -- Scenario 1 ----------------------------------------------------------------------------
    def s1_by_split(self) -> dict[tuple[str, str], dict]:
        """{(target, split): {"base": result with the non-SSL rows, "ssl": {run label: result}}}."""
        out: dict[tuple[str, str], dict] = {}
        for d in sorted(self.s1, key=lambda d: d["_file"]):
            slot = out.setdefault((d["target"], d["split"]), {"base": None, "ssl": {}})
            if any(r["features"] not in ("ssl", "none") for r in d["rows"]) and slot["base"] is None:
                slot["base"] = d
            run = ssl_run_of(d, self.weights)
            if run is not None and any(r["features"] == "ssl" for r in d["rows"]):
                slot["ssl"][run.label] = d
        return dict(sorted(out.items(), key=lambda kv: (target_key(kv[0][0]), split_key(kv[0][1]))))

    # -- Scenario 2 ----------------------------------------------------------------------------
    def s2_merged(self) -> dict[tuple[str, str, str], dict]:
        """{(run label, target, split): result} with the per-seed records of every file of that experiment
        (MLP seeds run one per process, forests run separately) merged by seed, and the summary recomputed."""
        groups: dict[tuple, list[dict]] = {}
        for d in self.s2:
            run = ssl_run_of(d, self.weights)
            groups.setdefault((run.label if run else "SSL", d["target"], d["split"]), []).append(d)
        out = {}
        for key, files in groups.items():
            by_seed: dict[int, dict] = {}
            models, sets = set(), set()
            for d in sorted(files, key=lambda d: d["_file"]):
                models.update(d.get("models", []))
                sets.update(d.get("sets", []))
                for rec in d["per_seed"]:
                    m = by_seed.setdefault(rec["seed"], {"seed": rec["seed"], "mlp": {}, "rf": {}, "attribution": {}})
                    m["mlp"].update(rec.get("mlp") or {})
                    m["rf"].update(rec.get("rf") or {})
                    m["attribution"].update(rec.get("attribution") or {})
            first = files[0]
            per_seed = [by_seed[s] for s in sorted(by_seed)]
            merged = {k: v for k, v in first.items() if k not in ("per_seed", "summary", "_file")}
            merged.update(
                per_seed=per_seed,
                summary=scenario2_summary(per_seed),
                models=sorted(models),
                sets=sorted(sets),
                files=sorted(d["_file"] for d in files),
                seeds={
                    "mlp": sorted(s["seed"] for s in per_seed if s["mlp"]),
                    "rf": sorted(s["seed"] for s in per_seed if s["rf"]),
                },
            )
            out[key] = merged
        return dict(sorted(out.items(), key=lambda kv: (target_key(kv[0][1]), kv[0][2], kv[0][0])))

    # -- Scenario 3 ----------------------------------------------------------------------------
    def s3_merged(self) -> dict[tuple, dict]:
        """{(run label, target, variant, pool side): result} with the model/fraction results of every file."""
        out: dict[tuple, dict] = {}
        for d in sorted(self.s3, key=lambda d: d["_file"]):
            run = ssl_run_of(d, self.weights)
            key = (run.label if run else "SSL", d["target"], d["variant"], d.get("pool_side", "-"))
            if key not in out:
                out[key] = {**{k: v for k, v in d.items() if k not in ("results", "_file")}, "results": {}, "files": []}
            out[key]["results"].update(d["results"])
            out[key]["files"].append(d["_file"])
        return dict(sorted(out.items(), key=lambda kv: (target_key(kv[0][1]), kv[0][2], kv[0][3], kv[0][0])))

    # -- probes --------------------------------------------------------------------------------
    def probes_by_run(self) -> dict[str, dict]:
        runs = ((ssl_run_of(d, self.weights), d) for d in sorted(self.probes, key=lambda d: d["_file"]))
        return {run.label: d for run, d in runs if run}

    def dataset(self) -> dict:
        for d in self.s1 + self.s2 + self.s3:
            ds = (d.get("provenance") or {}).get("dataset")
            if ds:
                return ds
        return {}
