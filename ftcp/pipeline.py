"""The whole pipeline as one command: ``ftcp demo`` and ``ftcp reproduce``.

    python -m ftcp demo [--out demo_output] [--n-crystals 1000] [--seed 42] [--device auto] [--restart]
    python -m ftcp reproduce --source hf|PATH.csv[.gz]|DIR_OF_CIFS [--data DIR] [--device auto]
                             [--preset fast|upstream] [--quick] [--report-dir DIR] [--stages ...]

``demo`` runs the main job end to end on the built-in SYNTHETIC demo data (``ftcp.demo_data``;
not DFT, not Materials Project), everything inside one folder::

    <out>/demo_dataset.csv.gz + demo_dataset.json   the synthetic crystals and their provenance
    <out>/Data/                                     the FTCP store, splits, SSL/ (checkpoints, features)
    <out>/Results/scenario{1,2,3}/*.json            scenario results
    <out>/report/                                   RESULTS.md, figures, pretext_tasks.{md,json}
    <out>/logs/<stage>.log                          output of the scenario scripts
    <out>/pipeline_state.json, pipeline_timing.json

``reproduce`` takes a real data source through the same stages: a CSV with ``material_id``,
``cif`` and label columns, a folder of CIF files (labels from ``--labels-csv``), a JSON file of
pymatgen structures, or ``hf`` (the upstream Hugging Face dataset, downloaded and converted to a
native store with its own splits).

One stage runner serves both.  Every stage records, in ``<out>/pipeline_state.json``, that it
finished, how long it took, and a *key*: the inputs and arguments that decide its result plus
the run token of the stage before it.  A rerun skips a stage whose key is unchanged and whose
outputs still exist, so an interrupted or repeated run resumes where it stopped; a changed
argument reruns that stage and every stage after it.  Several stages also resume internally (the
store build by chunks, SSL blocks from ``last.pt``).  Per-stage wall times of the latest run go to
``pipeline_timing.json``.

Every stage runs in this process and calls the library directly (``ftcp.store``, ``ftcp.splitting``,
``ftcp.ssl.*``, ``ftcp.evaluation.report``); the three evaluation scenarios are the ``main(argv)`` of the
installed ``Evaluation_Scenarios`` package (``ftcp.evaluation.cli.run_scenario``), and the six SSL block
encoders the installed ``SSL_Training`` package, so both commands work after ``pip install`` outside a checkout.
A scenario's messages also go to ``<out>/logs/scenario<N>.log``.  Progress goes through ``logging``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import layout as L
from .errors import UserError, traceback_wanted
from .evaluation.cli import run_scenario
from .evaluation.report import make_report
from .evaluation.results import DEFAULT_REPORT_DIR
from .io_utils import (
    add_data_argument,
    atomic_write_json,
    read_json,
    resolve_data_root,
    sha256_file,
    to_jsonable,
    utc_now,
)
from .logs import LOGGERS, progress_bars_off
from .splits import split_dir
from .ssl import data as D
from .ssl.pretext_table import write_table
from .ssl.train_all import add_arguments as add_train_all_arguments
from .ssl.train_all import ensure_prepared, run_all
from .store import MANIFEST, build_store, format_counts, label_argument

log = logging.getLogger(__name__)
# The stage bodies import the dataset view, the converters, the splitter and the demo generator (pandas, pymatgen)
# when they run: this module is imported whenever the ftcp parser is built, which must stay fast.

STATE_FILE = "pipeline_state.json"
TIMING_FILE = "pipeline_timing.json"
STATE_FORMAT = "crys-rep-enrich/pipeline-state"
STATE_VERSION = 1
DEFAULT_DEMO_OUT = "demo_output"
DEFAULT_DEMO_N = 1000
DEFAULT_SEED = 42
#: Scenario 3 labels 1, 5 and 10 % of all materials (the paper's fractions).  With a small store
#: those are a handful of rows; the smallest subsample must hold at least this many rows, else
#: the fractions are scaled up (and the change is recorded and printed).
S3_FRACTIONS = (1.0, 5.0, 10.0)
S3_MIN_ROWS = 50
S3_QUICK_N_ALL_CAP = 2000      # run_scenario3.py --quick computes sizes on at most this many materials
S3_QUICK_FOLDS, S3_FOLDS = 2, 5
SYNTHETIC_BANNER = ("SYNTHETIC DEMO DATA (ftcp.demo_data): prototype crystals with labels from simple physics "
                    "(point-charge Ewald energy, density). Not Materials Project data; no number here is a DFT "
                    "result or comparable to the paper's.")


class PipelineError(UserError, RuntimeError):
    """A stage could not run or failed; the message is one line that says which and why."""


# ---------------------------------------------------------------------------------------------
# the runner
@dataclass
class Stage:
    """One step: ``run(ctx) -> info`` (JSON-able dict or None).

    ``key(ctx)``: what decides the result (arguments, input checksums); a finished stage whose
    key changed reruns.  ``outputs(ctx, record)``: files that must still exist for a finished
    stage to be skipped.
    """

    name: str
    title: str
    run: Callable
    key: Callable = lambda ctx: {}
    outputs: Callable = lambda ctx, rec: []


@dataclass
class Context:
    out: Path                      # pipeline folder: state, timing, logs
    data: Path                     # data root (store, splits, SSL)
    results: Path                  # scenario JSON
    report_dir: Path               # RESULTS.md, figures, pretext table
    seed: int = DEFAULT_SEED
    device: str = "auto"
    quick: bool = True
    preset: str = "upstream"
    progress: bool = True
    restart: bool = False
    ssl_sets: list = field(default_factory=list)
    protocol: str | None = None    # SSL protocol of a new SSL split (None: train_all's default, transductive)
    targets: list | None = None    # scenario targets (None: the scripts' defaults)
    synthetic: bool = False
    source: dict = field(default_factory=dict)
    scenario_args: dict = field(default_factory=dict)   # {scenario number: extra script arguments}
    command: str = ""
    state: dict = field(default_factory=dict)

    @property
    def ssl_dir(self) -> Path:
        return self.data / "SSL"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    def record(self, name: str) -> dict | None:
        return self.state.get("stages", {}).get(name)


def _canonical(obj):
    """JSON round trip (tuples -> lists, paths -> str) so stored and fresh keys compare equal."""
    return to_jsonable(obj)


def load_state(out: Path) -> dict:
    path = Path(out) / STATE_FILE
    if not path.exists():
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "stages": {}}
    try:
        state = read_json(path)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path} is unreadable ({exc}); delete it (or pass --restart) to start over") from exc
    if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
        raise PipelineError(f"{path} is not a pipeline state file of this version; delete it or pass --restart")
    return state


def _save_state(ctx: Context) -> None:
    ctx.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ctx.out / STATE_FILE, _canonical(ctx.state))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (PipelineError, ValueError, FileNotFoundError, FileExistsError, KeyError)) \
        else f"{type(exc).__name__}: {text}"


def stale_reason(stage: Stage, ctx: Context, key: dict) -> str | None:
    """None when ``stage`` finished with this key and its outputs exist; else why it must run."""
    rec = ctx.record(stage.name)
    if rec is None:
        return "not run yet"
    if rec.get("status") != "done":
        return f"last run {rec.get('status')}"
    if rec.get("key") != key:
        old = rec.get("key") or {}
        changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        return "changed: " + ", ".join(changed)
    missing = [str(p) for p in stage.outputs(ctx, rec) if not Path(p).exists()]
    if missing:
        return f"output missing: {missing[0]}"
    return None


def _last_stage(stages: list[Stage], selected: list[str] | None) -> int:
    """Index of the last stage to consider: the last selected one, or the last of all."""
    if selected is None:
        return len(stages) - 1
    names = [s.name for s in stages]
    unknown = [s for s in selected if s not in names]
    if unknown:
        raise PipelineError(f"unknown stage(s) {unknown}; stages of this run: {' '.join(names)}")
    return max(names.index(s) for s in selected)


def _start_state(ctx: Context, selected: list[str] | None) -> None:
    """The state to run from: a fresh one for ``--restart`` alone (with ``--stages`` it reruns just those)."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    fresh = ctx.restart and selected is None
    ctx.state = {"format": STATE_FORMAT, "version": STATE_VERSION, "stages": {}} if fresh else load_state(ctx.out)
    ctx.state.setdefault("stages", {})
    ctx.state.update(command=ctx.command, synthetic=ctx.synthetic, data=str(ctx.data))


def _skipped(ctx: Context, stage: Stage, timing: dict) -> str:
    """Record a finished stage as skipped in this run's timing; its run token."""
    rec = ctx.record(stage.name)
    timing["stages"][stage.name] = {"status": "skipped", "seconds": 0.0, "seconds_when_run": rec["seconds"]}
    return rec["token"]


def _run_one(ctx: Context, stage: Stage, key: dict, timing: dict) -> str:
    """Run one stage, recording it as running, then done (or interrupted / failed); its new run token."""
    old = ctx.record(stage.name)
    if old is not None:        # keep one level: what ran before (its status, key and facts)
        old = {k: old[k] for k in ("status", "key", "info", "error") if k in old}
    ctx.state["stages"][stage.name] = {"status": "running", "key": key, "started": utc_now(), "previous": old}
    _save_state(ctx)
    t = time.perf_counter()
    try:
        info = stage.run(ctx) or {}
    except KeyboardInterrupt:
        ctx.state["stages"][stage.name] = {"status": "interrupted", "key": key, "previous": old,
                                           "seconds": time.perf_counter() - t}
        _save_state(ctx)
        raise
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised as one line
        if traceback_wanted():
            raise
        _fail(ctx, stage, key, old, t, _one_line(exc))
    seconds = time.perf_counter() - t
    token = uuid.uuid4().hex
    ctx.state["stages"][stage.name] = {"status": "done", "key": key, "token": token, "finished": utc_now(),
                                       "seconds": round(seconds, 3), "info": _canonical(info)}
    _save_state(ctx)
    timing["stages"][stage.name] = {"status": "ran", "seconds": round(seconds, 3)}
    log.info("    %s finished in %.1f s", stage.name, seconds)
    return token


def run_stages(stages: list[Stage], ctx: Context, selected: list[str] | None = None) -> dict:
    """Run ``stages`` in order, skipping finished ones; returns the timing record.

    ``selected``: run only these stages (the stages before the last selected one must be
    finished already; the ones after it are left alone).  Raises ``PipelineError``.
    """
    last = _last_stage(stages, selected)
    _start_state(ctx, selected)
    timing = {"command": ctx.command, "started": utc_now(), "stages": {}, "synthetic": ctx.synthetic}
    t_all = time.perf_counter()
    previous = None           # run token of the stage before: a rerun upstream invalidates everything after it
    try:
        for i, stage in enumerate(stages[:last + 1]):
            key = _canonical({**stage.key(ctx), "after": previous})
            why = stale_reason(stage, ctx, key)
            if ctx.restart and (selected is None or stage.name in selected):
                why = "--restart"
            if selected is not None and stage.name not in selected:
                if why is not None:
                    raise PipelineError(f"stage '{stage.name}' must be finished before {selected} can run, but it is "
                                        f"not ({why}); add it to --stages or leave --stages out")
                previous = _skipped(ctx, stage, timing)
            elif why is None:
                log.info("[%d/%d] %s: done earlier (%.1f s), skipped", i + 1, last + 1, stage.name,
                         ctx.record(stage.name)["seconds"])
                previous = _skipped(ctx, stage, timing)
            else:
                log.info("[%d/%d] %s: %s (%s)", i + 1, last + 1, stage.name, stage.title, why)
                previous = _run_one(ctx, stage, key, timing)
    finally:
        timing["total_seconds"] = round(time.perf_counter() - t_all, 3)
        timing["finished"] = utc_now()
        atomic_write_json(ctx.out / TIMING_FILE, _canonical(timing))
    return timing


def _fail(ctx, stage, key, old, t, message: str):
    seconds = time.perf_counter() - t
    ctx.state["stages"][stage.name] = {"status": "failed", "key": key, "error": message, "previous": old,
                                       "seconds": round(seconds, 3), "finished": utc_now()}
    _save_state(ctx)
    raise PipelineError(f"stage '{stage.name}' failed after {seconds:.1f} s: {message}")


# ---------------------------------------------------------------------------------------------
# inputs
def source_fingerprint(path: Path) -> dict:
    """Identity of an input file (sha256) or folder (names, sizes and mtimes of its files)."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": sha256_file(path)}
    if path.is_dir():
        h = hashlib.sha256()
        n = 0
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                n += 1
        return {"path": str(path.resolve()), "files": n, "listing_sha256": h.hexdigest()}
    raise FileNotFoundError(f"source {path} does not exist")


def scenario3_fractions(n_all: int, n_pool: int, quick: bool, base=S3_FRACTIONS,
                        min_rows: int = S3_MIN_ROWS) -> tuple[list[float], str | None]:
    """Labelled fractions (percent of ALL materials) for Scenario 3, and why they differ from ``base``.

    The paper's 1/5/10 % are kept when 1 % holds at least ``min_rows`` rows; otherwise all
    fractions are scaled up by the same factor so that the smallest one does, and the largest is
    capped at the labelled pool.  Raises ``PipelineError`` when even that is impossible.
    """
    n_eff = min(n_all, S3_QUICK_N_ALL_CAP) if quick else n_all
    folds = S3_QUICK_FOLDS if quick else S3_FOLDS
    need = max(min_rows, 2 * folds)
    if n_eff * min(base) / 100.0 >= need:
        return list(base), None
    pool_pct = 100.0 * n_pool / n_eff
    smallest = math.ceil(10000.0 * need / n_eff) / 100.0           # percent, rounded up to 0.01
    scale = smallest / min(base)
    fractions = [round(f * scale, 2) for f in base]
    if fractions[-1] > pool_pct:
        top = math.floor(100 * pool_pct) / 100
        if top < smallest:
            raise PipelineError(f"scenario 3 needs at least {need} labelled rows, but the pool holds {n_pool} of "
                                f"{n_eff} materials; use a larger dataset")
        fractions = sorted({smallest, round((smallest + top) / 2, 2), top})
    why = (f"{min(base):g} % of {n_eff} materials is {int(n_eff * min(base) / 100)} rows (< {need}); "
           f"fractions {', '.join(f'{f:g}' for f in base)} % scaled to {', '.join(f'{f:g}' for f in fractions)} %")
    return fractions, why


# ---------------------------------------------------------------------------------------------
# stage bodies
def _demo_csv(ctx: Context) -> Path:
    return ctx.out / "demo_dataset.csv.gz"


def _stage_demo_data(ctx: Context) -> dict:
    from .demo_data import sidecar_path, write_demo_csv  # pymatgen, pandas

    path, side = write_demo_csv(_demo_csv(ctx), n=ctx.source["n"], seed=ctx.seed, progress=ctx.progress)
    return {"csv": str(path), "sidecar": str(side), "n": ctx.source["n"], "sha256": sha256_file(path),
            "sidecar_synthetic": bool(read_json(sidecar_path(path)).get("synthetic"))}


def _build_source(ctx: Context) -> Path:
    return _demo_csv(ctx) if ctx.source["kind"] == "demo" else Path(ctx.source["path"])


def _build_key(ctx: Context) -> dict:
    key = {"phase": ctx.source.get("phase", "linear"), "labels": ctx.source.get("labels", {}),
           "labels_csv": ctx.source.get("labels_csv"), "require_labels": ctx.source.get("require_labels", "all")}
    if ctx.source["kind"] != "demo":       # the demo CSV's identity is the demo-data stage's token
        key["source"] = source_fingerprint(_build_source(ctx))
        if ctx.source.get("labels_csv"):
            key["labels_csv_sha256"] = sha256_file(ctx.source["labels_csv"])
    return key


def _stage_build(ctx: Context) -> dict:
    source = _build_source(ctx)
    ours = ctx.record("build") or {}
    manifest_path = ctx.data / MANIFEST
    overwrite = ctx.restart or bool((ours.get("previous") or {}).get("key"))
    if manifest_path.exists() and not overwrite:
        existing = read_json(manifest_path)
        same = (existing.get("source", {}).get("sha256") == (sha256_file(source) if source.is_file() else None)
                and existing.get("phase") == ctx.source.get("phase", "linear"))
        if same:
            log.info(f"    {ctx.data} already holds a store of this source: used as it is")
            return {"adopted": True, "counts": existing.get("counts")}
        raise FileExistsError(f"{ctx.data} already holds a store of another source "
                              f"({existing.get('source', {}).get('path')}); choose another --data, or pass "
                              "--restart to replace it")
    restart = _changed_since_done(ctx, "build")
    manifest = build_store(source, ctx.data, labels_csv=ctx.source.get("labels_csv"),
                           label_map=ctx.source.get("labels") or None,
                           require_labels=ctx.source.get("require_labels", "all"),
                           phase=ctx.source.get("phase", "linear"), overwrite=True, restart=restart,
                           progress=ctx.progress)
    log.info("    " + format_counts(manifest).replace("\n", "\n    "))
    if manifest["counts"]["accepted"] < 20:
        raise ValueError(f"only {manifest['counts']['accepted']} crystals were accepted (see "
                         f"{ctx.data / 'rejects.csv'}); the pipeline needs at least 20")
    return {"counts": manifest["counts"], "targets": manifest["targets"], "phase": manifest["phase"],
            "synthetic": bool(manifest.get("synthetic"))}


def _changed_since_done(ctx: Context, name: str) -> bool:
    """Whether this stage reruns because something changed after it had finished (or --restart),
    rather than resuming an interrupted or failed attempt: then its own partial work is discarded."""
    prev = (ctx.record(name) or {}).get("previous") or {}
    return ctx.restart or prev.get("status") == "done"


def _stage_split(ctx: Context) -> dict:
    from .splitting import make_splits  # pandas

    results = make_splits(ctx.data, seed=ctx.seed, overwrite=True)
    return {name: {"n_train": m["n_train"], "n_test": m["n_test"]} for name, m in results.items()}


def _split_outputs(ctx, rec):
    return [split_dir(ctx.data, name) / "split.json" for name in (rec.get("info") or {})]


def _download_dir(ctx: Context) -> Path:
    return ctx.out / "upstream"


def _stage_download(ctx: Context) -> dict:
    from . import hub as H  # the hub client is optional (ftcp.cli lists what it cannot load)

    manifest = H.download_dataset(_download_dir(ctx), repo_id=ctx.source.get("repo_id", H.DEFAULT_REPO_ID),
                                  revision=ctx.source.get("revision"), endpoint=ctx.source.get("endpoint"),
                                  kinds=("ftcp", "labels", "ids"))      # upstream's SSL features are not needed
    return {"commit": manifest["commit"], "files": len(manifest["files"])}


def _stage_convert(ctx: Context) -> dict:
    from .convert import write_native_store  # pandas
    from .dataset import open_dataset

    manifest = write_native_store(open_dataset(_download_dir(ctx)), ctx.data, overwrite=True,
                                  source=f"hf:{ctx.source.get('repo_id')}", progress=ctx.progress)
    return {"n": manifest["shape"][0], "splits": manifest.get("splits")}


def train_all_args(ctx: Context, extra: list[str]):
    """The ``ftcp.ssl.train_all`` argument namespace for this pipeline (its own parser, so its defaults hold)."""
    p = argparse.ArgumentParser(prog="train_all", add_help=False)
    add_train_all_arguments(p, top_level=True)
    argv = ["--data", str(ctx.data), "--out", str(ctx.ssl_dir), "--device", ctx.device, "--seed", str(ctx.seed),
            "--split-seed", str(ctx.seed), "--preset", ctx.preset, "--no-assemble", "--no-table"]
    argv += ["--quick"] if ctx.quick else []
    argv += [] if ctx.progress else ["--no-progress"]
    argv += ["--protocol", ctx.protocol] if ctx.protocol else []
    for s in ctx.ssl_sets:
        argv += ["--set", s]
    return p.parse_args(argv + extra)


def _stage_ssl_prepare(ctx: Context) -> dict:
    from .ssl import targets as T  # pymatgen

    if _changed_since_done(ctx, "ssl-prepare"):
        # the store (or the split seed) changed since these were made: they describe another store
        for name in (D.SPLIT_FILE, D.NORMALIZER_FILE, T.CACHE_FILE, "crystal_system_failures.json"):
            (ctx.ssl_dir / name).unlink(missing_ok=True)
        shutil.rmtree(ctx.ssl_dir / "crystal_system.parts", ignore_errors=True)
    ensure_prepared(ctx.data, ctx.ssl_dir, train_all_args(ctx, []), need_crystal_systems=True)
    split = json.loads((ctx.ssl_dir / D.SPLIT_FILE).read_text())
    return {"ssl_split_sizes": split["sizes"]}


def _ssl_block_stage(number: int) -> Stage:
    block = L.block(number)
    dirname = block.dirname

    def run(ctx: Context) -> dict:
        rerun = _changed_since_done(ctx, f"ssl-block{number}")
        args = train_all_args(ctx, ["--blocks", str(number)] + (["--restart"] if rerun else []))
        summary = run_all(args)
        metrics = json.loads((ctx.ssl_dir / dirname / "metrics.json").read_text())
        beats = metrics.get("tasks_beating_baseline", {}).get("test", {})
        return {"status": summary["blocks"][number]["status"], "epochs_run": metrics.get("epochs_run"),
                "best_epoch": metrics.get("best_epoch"), "tasks_beating_baseline_test": beats}

    def key(ctx: Context) -> dict:
        own = [s for s in ctx.ssl_sets if s.split(":", 1)[0].strip() == str(number)]
        return {"block": number, "quick": ctx.quick, "preset": ctx.preset, "seed": ctx.seed, "sets": own}

    return Stage(f"ssl-block{number}", f"train SSL block {number} ({block.name})", run, key,
                 lambda ctx, rec: [ctx.ssl_dir / dirname / "embeddings.npz", ctx.ssl_dir / dirname / "best.pt"])


def _stage_assemble(ctx: Context) -> dict:
    from .ssl.assemble import assemble  # torch

    info = assemble(ctx.ssl_dir, root=ctx.data)
    return {"n_materials": info["n_materials"], "dims": info["dims"]}


def _stage_pretext(ctx: Context) -> dict:
    table = write_table(ctx.ssl_dir, ctx.report_dir, command=ctx.command, data_root=ctx.data)
    return table["summary"]


def _scenario_argv(ctx: Context, number: int) -> list[str]:
    argv = ["--data", str(ctx.data), "--out", str(ctx.results), "--report-dir", str(ctx.report_dir),
            "--seed", str(ctx.seed), "--device", ctx.device, "--no-report"]
    argv += ["--quick"] if ctx.quick else []
    targets = ctx.targets
    if targets:
        argv += ["--target", ",".join(targets) if number == 1 else targets[0]]
    if number == 3:
        fractions, _ = _s3_fractions(ctx)
        argv += ["--fractions", ",".join(f"{f:g}" for f in fractions)]
    return argv + [str(a) for a in ctx.scenario_args.get(number, [])]


def _s3_fractions(ctx: Context):
    from .dataset import open_dataset  # pandas

    ds = open_dataset(ctx.data)
    pool = len(ds.part("random_10", "train")) if "random_10" in ds.split_names() else len(ds.ids)
    return scenario3_fractions(len(ds.ids), pool, ctx.quick)


def run_logged(ctx: Context, name: str, main: Callable, argv: list[str]) -> None:
    """``main(argv)`` in this process; its log messages and printed lines also go to ``<out>/logs/<name>.log``.

    Raises ``PipelineError`` naming the log file when ``main`` returns a non-zero status.
    """
    ctx.logs.mkdir(parents=True, exist_ok=True)
    log_path = ctx.logs / f"{name}.log"
    with open(log_path, "w", encoding="utf-8") as fh:
        fh.write(f"$ {name} {shlex.join(argv)}\n")
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(message)s"))
        loggers = [logging.getLogger(n) for n in LOGGERS]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            if lg.getEffectiveLevel() > logging.INFO:     # the log file gets the INFO messages in any case
                lg.setLevel(logging.INFO)
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), \
                    (contextlib.nullcontext() if ctx.progress else progress_bars_off()):
                rc = main(argv)
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.removeHandler(handler)
                lg.setLevel(level)
            fh.write(printed.getvalue())
            for line in printed.getvalue().splitlines():
                if line.strip():
                    log.info("    %s", line)
    if isinstance(rc, int) and rc != 0:
        raise PipelineError(f"{name} exited with status {rc} (full output: {log_path})")


def _scenario_stage(number: int) -> Stage:
    def run(ctx: Context) -> dict:
        folder = ctx.results / f"scenario{number}"
        old = (((ctx.record(f"scenario{number}") or {}).get("previous") or {}).get("info") or {}).get("files", [])
        for f in old:                      # the previous run's results, superseded by this one
            Path(f).unlink(missing_ok=True)
        before = {p: p.stat().st_mtime_ns for p in folder.rglob("*.json")} if folder.is_dir() else {}
        info = {}
        if number == 3:
            fractions, why = _s3_fractions(ctx)
            info["fractions"] = fractions
            if why:
                info["fractions_adjusted"] = why
                log.info(f"    scenario 3: {why}")
        run_logged(ctx, f"scenario{number}", lambda argv: run_scenario(number, argv), _scenario_argv(ctx, number))
        files = sorted(str(p) for p in folder.rglob("*.json") if before.get(p) != p.stat().st_mtime_ns)
        if not files:
            raise PipelineError(f"scenario {number} wrote no result under {folder}")
        info["files"] = files
        return info

    def key(ctx: Context) -> dict:
        return {"quick": ctx.quick, "seed": ctx.seed, "targets": ctx.targets,
                "extra_args": [str(a) for a in ctx.scenario_args.get(number, [])]}

    titles = {1: "linear regression on FTCP vs SSL", 2: "hybrid FTCP + SSL, attribution",
              3: "sample efficiency and residual learning"}
    return Stage(f"scenario{number}", f"scenario {number}: {titles[number]}", run, key,
                 lambda ctx, rec: (rec.get("info") or {}).get("files", []))


def _stage_report(ctx: Context) -> dict:
    path = make_report(ctx.results, ctx.report_dir)
    log.info(f"    report: {path}")
    return {"report": str(path), "figures": sorted(p.name for p in ctx.report_dir.glob("*.png"))}


# ---------------------------------------------------------------------------------------------
# stage lists
def ssl_stages() -> list[Stage]:
    return ([Stage("ssl-prepare", "SSL split, normaliser, Block 2 crystal systems", _stage_ssl_prepare,
                   lambda ctx: {"split_seed": ctx.seed, **({"protocol": ctx.protocol} if ctx.protocol else {})},
                   lambda ctx, rec: [ctx.ssl_dir / "ssl_split.json", ctx.ssl_dir / "normalizer.json"])]
            + [_ssl_block_stage(n) for n in range(1, 7)]
            + [Stage("ssl-assemble", "assemble the 2,048-d SSL features", _stage_assemble, lambda ctx: {},
                     lambda ctx, rec: [ctx.ssl_dir / "ssl_features.npy", ctx.ssl_dir / "ssl_material_ids.npy"]),
               Stage("ssl-pretext-table", "pretext-task table (val/test vs baselines)", _stage_pretext,
                     lambda ctx: {"report_dir": str(ctx.report_dir)},
                     lambda ctx, rec: [ctx.report_dir / "pretext_tasks.md"])])


def evaluation_stages() -> list[Stage]:
    return [_scenario_stage(n) for n in (1, 2, 3)] + [
        Stage("report", "RESULTS.md and figures", _stage_report, lambda ctx: {"report_dir": str(ctx.report_dir)},
              lambda ctx, rec: [ctx.report_dir / "RESULTS.md"])]


def _build_stage() -> Stage:
    return Stage("build", "featurize into an FTCP store", _stage_build, _build_key,
                 lambda ctx, rec: [ctx.data / "manifest.json", ctx.data / "ftcp.npy"])


def _split_stage() -> Stage:
    return Stage("split", "random 10/20/30/40 % and formula-group splits", _stage_split,
                 lambda ctx: {"seed": ctx.seed}, _split_outputs)


def demo_stages() -> list[Stage]:
    return ([Stage("demo-data", "generate the synthetic demo crystals (not DFT)", _stage_demo_data,
                   lambda ctx: {"n": ctx.source["n"], "seed": ctx.seed, "generator": _demo_version()},
                   lambda ctx, rec: [_demo_csv(ctx)]),
             _build_stage(), _split_stage()]
            + ssl_stages() + evaluation_stages())


def reproduce_stages(kind: str) -> list[Stage]:
    if kind == "hf":
        data = [Stage("download", "download the upstream Hugging Face dataset", _stage_download,
                      lambda ctx: {"repo_id": ctx.source.get("repo_id"), "revision": ctx.source.get("revision")},
                      lambda ctx, rec: [_download_dir(ctx) / "download_manifest.json"]),
                Stage("convert", "upstream layout -> native store with the upstream splits", _stage_convert,
                      lambda ctx: {}, lambda ctx, rec: [ctx.data / "manifest.json", ctx.data / "ftcp.npy"])]
    else:
        data = [_build_stage(), _split_stage()]
    return data + ssl_stages() + evaluation_stages()


def _demo_version() -> str:
    from .demo_data import GENERATOR_VERSION  # pymatgen, pandas

    return GENERATOR_VERSION


STAGE_GROUPS = {"data": ("demo-data", "download", "convert", "build", "split"),
                "ssl": ("ssl-prepare", *(f"ssl-block{n}" for n in range(1, 7)), "ssl-assemble", "ssl-pretext-table"),
                "scenarios": ("scenario1", "scenario2", "scenario3"),
                "evaluation": ("scenario1", "scenario2", "scenario3", "report")}


def expand_stages(names, stages: list[Stage]) -> list[str] | None:
    """``--stages`` values (stage names or the groups data, ssl, scenarios, evaluation) -> stage names."""
    if not names:
        return None
    have = [s.name for s in stages]
    out = []
    for n in names:
        for part in n.split(","):
            part = part.strip()
            if not part:
                continue
            group = STAGE_GROUPS.get(part)
            out += [s for s in group if s in have] if group else [part]
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------
# entry points
def run_demo(out=DEFAULT_DEMO_OUT, n_crystals: int = DEFAULT_DEMO_N, seed: int = DEFAULT_SEED, device: str = "auto",
             restart: bool = False, progress: bool = True, ssl_sets=(), stages=None, quick: bool = True,
             scenario_args: dict | None = None, command: str | None = None) -> dict:
    """The demo end to end in ``out`` (see the module docstring); returns the timing record.

    ``ssl_sets``: per-block SSL settings (``N:KEY=VALUE``, as ``train-all --set``);
    ``scenario_args``: {1|2|3: extra arguments of that scenario script} (e.g. smaller runs in tests).
    """
    from .demo_data import BAND_GAP_LIKE, FORMATION_ENERGY_LIKE, LABELS  # pymatgen, pandas

    if n_crystals < 60:
        raise PipelineError(f"--n-crystals {n_crystals} is too small: the splits, SSL split and scenarios need at "
                            "least 60 crystals")
    out = Path(out)
    ctx = Context(out=out, data=out / "Data", results=out / "Results", report_dir=out / "report", seed=seed,
                  device=device, quick=quick, progress=progress, restart=restart, ssl_sets=list(ssl_sets),
                  targets=[FORMATION_ENERGY_LIKE, BAND_GAP_LIKE], synthetic=True,
                  source={"kind": "demo", "n": int(n_crystals), "labels": {k: k for k in LABELS}},
                  scenario_args=dict(scenario_args or {}), command=command or "python -m ftcp demo")
    all_stages = demo_stages()
    timing = run_stages(all_stages, ctx, expand_stages(stages, all_stages))
    _write_demo_readme(ctx, timing)
    return timing


def run_reproduce(source: str, data=None, device: str = "auto", preset: str = "upstream", quick: bool = False,
                  report_dir=None, results=None, stages=None, seed: int = DEFAULT_SEED, restart: bool = False,
                  progress: bool = True, labels_csv=None, labels=None, targets=None, ssl_sets=(),
                  repo_id: str | None = None, revision: str | None = None, endpoint: str | None = None,
                  command: str | None = None, protocol: str | None = None) -> dict:
    """``source`` (``hf``, a CSV/JSON file or a folder of CIFs) through every stage to the report."""
    data = resolve_data_root(data)
    if source == "hf":
        from .hub import DEFAULT_REPO_ID  # the hub client is optional (ftcp.cli lists what it cannot load)

        src = {"kind": "hf", "repo_id": repo_id or DEFAULT_REPO_ID, "revision": revision, "endpoint": endpoint}
    else:
        path = Path(source)
        if not path.exists():
            raise PipelineError(f"--source {source}: no such file or folder (expected 'hf', a .csv/.csv.gz/.json "
                                "file or a folder of .cif files)")
        if path.is_dir() and not any(path.glob("*.cif")):
            raise PipelineError(f"--source {source}: the folder holds no .cif files")
        if path.is_file() and not path.name.lower().endswith((".csv", ".csv.gz", ".json")):
            raise PipelineError(f"--source {source}: expected a .csv, .csv.gz or .json file, or a folder of CIFs")
        src = {"kind": "dir" if path.is_dir() else "file", "path": str(path.resolve()),
               "labels_csv": str(Path(labels_csv).resolve()) if labels_csv else None,
               "labels": dict(labels or {})}
    ctx = Context(out=data, data=data, results=Path(results) if results else data / "Results",
                  report_dir=Path(report_dir) if report_dir else DEFAULT_REPORT_DIR, seed=seed, device=device,
                  quick=quick, preset=preset, progress=progress, restart=restart, ssl_sets=list(ssl_sets),
                  targets=list(targets) if targets else None, source=src, protocol=protocol,
                  command=command or "python -m ftcp reproduce")
    all_stages = reproduce_stages(src["kind"])
    return run_stages(all_stages, ctx, expand_stages(stages, all_stages))


def _write_demo_readme(ctx: Context, timing: dict) -> None:
    lines = ["# Demo output — SYNTHETIC DATA", "", f"> {SYNTHETIC_BANNER}", "",
             f"Made by `{ctx.command}` ({utc_now()}).", "",
             "| what | where |", "|---|---|",
             "| synthetic crystals + provenance | `demo_dataset.csv.gz`, `demo_dataset.json` |",
             "| FTCP store, splits, SSL checkpoints and 2,048-d features | `Data/`, `Data/SSL/` |",
             "| scenario results (JSON) | `Results/scenario{1,2,3}/` |",
             "| report, figures, pretext-task table | `report/RESULTS.md`, `report/*.png`, `report/pretext_tasks.md` |",
             "| scenario script output | `logs/` |",
             "| stage state / wall times | `pipeline_state.json`, `pipeline_timing.json` |", "",
             "| stage | status | seconds |", "|---|---|---|"]
    for name, t in timing["stages"].items():
        lines.append(f"| {name} | {t['status']} | {_stage_seconds(t):.1f} |")
    lines += ["", f"Total of this run: {timing['total_seconds']:.1f} s."]
    (ctx.out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _stage_seconds(t: dict) -> float:
    """A timing row's seconds: this run's, or for a skipped stage those of the run that made it."""
    return t["seconds"] if t["status"] == "ran" else t.get("seconds_when_run", 0.0)


def format_timing(timing: dict) -> str:
    rows = [f"{'stage':<20} {'status':<8} {'seconds':>9}"]
    for name, t in timing["stages"].items():
        rows.append(f"{name:<20} {t['status']:<8} {_stage_seconds(t):>9.1f}")
    rows.append(f"{'total (this run)':<29} {timing['total_seconds']:>9.1f}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# CLI
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, metavar="N", default=DEFAULT_SEED,
                   help="seed of the data, splits, SSL and scenarios (default %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="torch device for SSL training and the scenario MLPs (auto: GPU when present)")
    p.add_argument("--restart", action="store_true", help="ignore pipeline_state.json and run every stage again")
    p.add_argument("--stages", nargs="+", default=None, metavar="STAGE",
                   help="run only these stages (names, or the groups data, ssl, scenarios, evaluation); the stages "
                        "before them must have finished")
    p.add_argument("--ssl-set", action="append", default=[], metavar="N:KEY=VALUE",
                   help="per-block SSL setting passed to train-all --set (repeatable), e.g. 3:epochs=2")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (they show only on a terminal anyway)")


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole pipeline on the built-in SYNTHETIC demo data (minutes on a laptop CPU)",
        description="Generate synthetic demo crystals (not DFT), build the FTCP store and splits, train the six SSL "
                    "blocks with short schedules, assemble the 2,048-d features, run scenarios 1-3 in --quick mode "
                    "and write RESULTS.md + figures, all inside --out. A rerun skips finished stages.")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_DEMO_OUT, help="output folder (default %(default)s)")
    p.add_argument("--n-crystals", type=int, metavar="N", default=DEFAULT_DEMO_N,
                   help="synthetic crystals (default %(default)s; at least 60)")
    _add_common(p)
    p.set_defaults(func=_cli_demo)

    q = subparsers.add_parser(
        "reproduce", help="a data source through every stage (store, splits, SSL, scenarios) to the report",
        description="Take --source (hf = the upstream Hugging Face dataset; a .csv/.csv.gz with material_id, cif "
                    "and label columns; a .json of structures; or a folder of .cif files with --labels-csv) "
                    "through the store, splits, six SSL blocks, assembly, pretext table, scenarios 1-3 and the "
                    "report. State and timings go to <data>/pipeline_state.json and pipeline_timing.json; a "
                    "rerun resumes.")
    q.add_argument("--source", required=True, metavar="SOURCE", help="hf | PATH.csv[.gz] | PATH.json | DIR_OF_CIFS")
    add_data_argument(q)
    q.add_argument("--preset", choices=("upstream", "fast"), default="upstream",
                   help="SSL settings: upstream's per-block lr/batch/epochs, or fast (larger batches, for GPUs)")
    q.add_argument("--quick", action="store_true", help="short SSL schedules and --quick scenarios (smoke run)")
    q.add_argument("--protocol", choices=("transductive", "inductive"), default=None,
                   help="SSL protocol: transductive (upstream's: the SSL sees every material) or inductive (the test "
                        "materials of every downstream split left out of the SSL); default transductive")
    q.add_argument("--report-dir", default=None, metavar="DIR",
                   help="where RESULTS.md, figures and the pretext table go (default: the repository's "
                        "'Supplemental Information' in a checkout, else ./Supplemental Information)")
    q.add_argument("--results", default=None, metavar="DIR", help="scenario JSON folder (default <data>/Results)")
    q.add_argument("--labels-csv", metavar="FILE", default=None,
                   help="labels for a CIF folder (material_id + label columns)")
    q.add_argument("--label", action="append", type=label_argument, default=[], metavar="NAME=COLUMN",
                   help="store input column COLUMN as label NAME (repeatable)")
    q.add_argument("--target", metavar="NAMES", default=None,
                   help="scenario target(s), comma list (default: the scenario scripts' own: formation_energy)")
    q.add_argument("--repo-id", metavar="USER/REPO", default=None,
                   help="with --source hf: dataset repository (default: upstream's)")
    q.add_argument("--revision", metavar="REV", default=None, help="with --source hf: branch, tag or commit")
    q.add_argument("--endpoint", metavar="URL", default=None,
                   help="with --source hf: hub URL (default $HF_ENDPOINT or huggingface.co)")
    _add_common(q)
    q.set_defaults(func=_cli_reproduce)


def _command(argv_fallback: str) -> str:
    if sys.argv and sys.argv[0].endswith(("__main__.py", "ftcp")):
        return "python -m ftcp " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return argv_fallback


def _cli_demo(args) -> int:
    timing = run_demo(args.out, args.n_crystals, args.seed, args.device, args.restart, args.progress,
                      args.ssl_set, args.stages, command=_command("python -m ftcp demo"))
    print(format_timing(timing))
    out = Path(args.out)
    print(f"demo finished: {out / 'report' / 'RESULTS.md'} (SYNTHETIC demo data, not DFT); "
          f"timings in {out / TIMING_FILE}")
    return 0


def _cli_reproduce(args) -> int:
    labels = dict(args.label)
    targets = [t.strip() for t in args.target.split(",") if t.strip()] if args.target else None
    timing = run_reproduce(args.source, args.data, args.device, args.preset, args.quick, args.report_dir,
                           args.results, args.stages, args.seed, args.restart, args.progress,
                           args.labels_csv, labels, targets, args.ssl_set, args.repo_id, args.revision,
                           args.endpoint, command=_command("python -m ftcp reproduce"), protocol=args.protocol)
    print(format_timing(timing))
    return 0


__all__ = ["run_demo", "run_reproduce", "run_stages", "Stage", "Context", "PipelineError", "scenario3_fractions",
           "run_logged", "format_timing", "register_cli", "STATE_FILE", "TIMING_FILE"]
