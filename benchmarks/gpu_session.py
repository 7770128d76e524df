"""Run a matrix of SSL trainings and their probes on one GPU machine, within a time budget.

    python3 benchmarks/gpu_session.py ssl --csv CSV --prep PREP --work WORK --out OUT [--budget S] [--plan NAME]
    python3 benchmarks/gpu_session.py scenarios --work WORK --out OUT [--budget S]

``ssl``: builds the store from the MP CSV when ``WORK/data`` has none (``ftcp build`` + ``ftcp
split``), copies the prepared SSL files of each protocol (``PREP/<protocol>/{ssl_split,
normalizer}.json``; ``PREP/crystal_system.npz``), then runs every (SSL run, block) of the plan as
its own ``ftcp ssl-train-all --blocks N`` process, longest first, several at a time (the blocks
are small: one process leaves the GPU mostly idle).  A job that the budget interrupts resumes
from its ``last.pt`` in the next call.  Finished runs are assembled; each gets its pretext
table, the Scenario 1 SSL rows (``--features ssl``) and the block probes; the random-init
controls are exported and probed the same way.  What comes back (``OUT``): ``results.tar``
(every JSON and log) and the checkpoints of the runs named by ``--return-checkpoints``, in
parts of at most 15 MiB.

``scenarios``: Scenario 2 (MLP + SHAP) and Scenario 3 (MLP) on the published runs, concurrently.

Only the standard library is imported here; the commands it runs are the project's own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from ftcp.io_utils import utc_now
from ftcp.splits import GROUP_NAME, split_dir

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
DEVICE = "cuda"
#: rough solo seconds per block on one H200 before the step engine's CUDA graphs (ordering only)
WEIGHT = {"upstream": {1: 20, 2: 25, 3: 340, 4: 355, 5: 95, 6: 640},
          "fast": {1: 20, 2: 25, 3: 62, 4: 47, 5: 95, 6: 76}}
PLANS = {
    # label: (preset, protocol, seed, objective[, cross-modal loss weight])
    "main": [("upstream", "transductive", 42, "upstream"), ("upstream", "inductive", 42, "upstream")]
            + [("fast", p, s, "upstream") for s in (42, 43, 44) for p in ("inductive", "transductive")]
            + [("fast", "inductive", s, "crossmodal") for s in (42, 43, 44)],
    "smoke": [("fast", "inductive", 42, "upstream")],
    # the third seed of the fast inductive upstream-objective runs
    "fill": [("fast", "inductive", 44, "upstream")],
    # the cross-modal objective at two loss weights, three seeds each (issue: pretext objectives vs random init)
    "crossmodal": [("fast", "inductive", s, "crossmodal", w) for w in (1.0, 4.0) for s in (42, 43, 44)],
}
CONTROLS = [("inductive", 42), ("inductive", 43), ("inductive", 44), ("transductive", 42)]


def label(preset, protocol, seed, objective, weight=1.0) -> str:
    tail = "" if objective != "crossmodal" else "_crossmodal" if weight == 1.0 else f"_crossmodal-w{weight:g}"
    return f"{preset}_{protocol}_seed{seed}{tail}"


def env(threads: int = 1) -> dict:
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
             OPENBLAS_NUM_THREADS=str(threads))
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return e


def say(msg: str) -> None:
    print(f"[{utc_now()}] {msg}", flush=True)


def run(cmd: list[str], log: Path | None = None, threads: int = 1, timeout: float | None = None) -> int:
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") if log else open(os.devnull, "w") as fh:
        try:
            return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env(threads), cwd=REPO,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return 124


def pool(jobs: list[tuple[list[str], Path]], width: int, deadline: float, threads: int = 1) -> dict:
    """Run (command, log) jobs, ``width`` at a time, in order; stop launching at ``deadline``
    and interrupt what still runs there (SIGINT, then kill).  Returns {log name: returncode}."""
    pending, running, codes = list(jobs), [], {}
    while pending or running:
        while pending and len(running) < width and time.time() < deadline:
            cmd, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "a")
            running.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env(threads), cwd=REPO),
                            log, fh))
        if time.time() >= deadline:
            for p, _log, _fh in running:
                p.send_signal(2)
            t = time.time()
            while any(p.poll() is None for p, _, _ in running) and time.time() - t < 20:
                time.sleep(0.5)
            for p, log, fh in running:
                if p.poll() is None:
                    p.kill()
                codes[str(log)] = "interrupted"
                fh.close()
            for _, log in pending:
                codes[str(log)] = "not started"
            return codes
        still = []
        for p, log, fh in running:
            if p.poll() is None:
                still.append((p, log, fh))
            else:
                codes[str(log)] = p.returncode
                fh.close()
        running = still
        time.sleep(0.5)
    return codes


def ensure_store(csv: Path, data: Path, logs: Path) -> None:
    if (data / "manifest.json").exists() and (split_dir(data, GROUP_NAME) / "test_ids.txt").exists():
        return
    t = time.time()
    rc = run([PY, "-m", "ftcp", "build", str(csv), "--data", str(data), "--workers", str(os.cpu_count() or 4),
              "--no-progress"], logs / "build.log")
    rc = rc or run([PY, "-m", "ftcp", "split", "--data", str(data)], logs / "build.log")
    if rc:
        raise SystemExit(f"store build failed (see {logs / 'build.log'})")
    say(f"store built in {time.time() - t:.0f} s")


def prepare_runs(plan, prep: Path, data: Path, runs: Path) -> None:
    (data / "SSL").mkdir(parents=True, exist_ok=True)
    for name in ("crystal_system.npz",):
        if (prep / name).exists() and not (data / "SSL" / name).exists():
            shutil.copy(prep / name, data / "SSL" / name)
    for spec in plan:
        d = runs / label(*spec)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("ssl_split.json", "normalizer.json"):
            if not (d / name).exists():
                shutil.copy(prep / spec[1] / name, d / name)


def ssl_jobs(plan, data: Path, runs: Path, probe_every: int) -> list[tuple[list[str], Path]]:
    jobs = []
    for spec in plan:
        preset, protocol, seed, objective = spec[:4]
        d = runs / label(*spec)
        for n in range(1, 7):
            cmd = [PY, "-m", "ftcp", "ssl-train-all", "--data", str(data), "--out", str(d), "--blocks", str(n),
                   "--preset", preset, "--seed", str(seed), "--objective", objective, "--device", DEVICE,
                   "--threads", "1", "--no-progress", "--no-assemble", "--no-table", "--probe-every", str(probe_every)]
            if objective == "crossmodal":
                cmd += ["--crossmodal-weight", str(spec[4] if len(spec) > 4 else 1.0)]
            # cross-modal runs last: their targets are made first
            weight = WEIGHT[preset][n] - (1000 if objective == "crossmodal" else 0)
            weight -= 2000 * (len(spec) > 4 and spec[4] != 1.0)   # whole runs of one setting before the next
            jobs.append((weight, cmd, d / "logs" / f"block{n}.log"))
    jobs.sort(key=lambda j: -j[0])
    return [(cmd, log) for _, cmd, log in jobs]


def finished(run_dir: Path) -> bool:
    for n in range(1, 7):
        m = next(run_dir.glob(f"block{n}_*/metrics.json"), None)
        if (m is None or json.loads(m.read_text()).get("status") != "finished"
                or not (m.parent / "embeddings.npz").exists()):
            return False
    return True


def post_jobs(run_dirs: list[Path], data: Path, results: Path) -> list[tuple[list[str], Path]]:
    """One chained job per run: assemble, pretext table, block probes, Scenario 1 (SSL rows)."""
    import shlex

    s1 = str(REPO / "Evaluation_Scenarios/Scenario1_Linear_Regression/run_scenario1.py")
    jobs = []
    for d in run_dirs:
        steps = [[PY, "-m", "ftcp", "ssl-assemble", "--data", str(data), "--out", str(d)],
                 [PY, "-m", "ftcp", "ssl-pretext-table", "--data", str(data), "--out", str(d)],
                 [PY, "-m", "ftcp", "probe", "--data", str(data), "--ssl", str(d), "--split", "10", "--out",
                  str(results)],
                 [PY, s1, "--data", str(data), "--ssl", str(d), "--features", "ssl", "--out", str(results),
                  "--no-report", "--device", "cpu"]]
        chain = " && ".join(shlex.join(c) for c in steps) + f" && touch {shlex.quote(str(d / 'logs' / 'post.done'))}"
        jobs.append((["bash", "-c", chain], d / "logs" / "post.log"))
    return jobs


def pack(out: Path, work: Path, checkpoints: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "results.tar", "w") as tar:
        for p in sorted(work.rglob("*")):
            if p.is_file() and (p.suffix in (".json", ".log", ".md") or p.name == "session.log") \
                    and "data/Splitted" not in str(p) and "data/Group" not in str(p):
                tar.add(p, arcname=str(p.relative_to(work)))
    parts = []
    for name in checkpoints:
        d = work / "runs" / name
        if finished(d):
            parts += [(p, str(p.relative_to(work))) for p in sorted(d.glob("block*/best.pt"))]
    if parts:
        with tarfile.open(work / "checkpoints.tar", "w") as tar:
            for p, arc in parts:
                tar.add(p, arcname=arc)
        data = (work / "checkpoints.tar").read_bytes()
        step = 15 * 2 ** 20
        for k in range(0, len(data), step):
            (out / f"checkpoints.tar.part{k // step:02d}").write_bytes(data[k:k + step])
    say("packed: " + ", ".join(f"{p.name} {p.stat().st_size / 2 ** 20:.1f} MiB" for p in sorted(out.iterdir())))


def smoke(data: Path, prep: Path, work: Path) -> bool:
    """Blocks 3 and 6 for a few hundred steps with CUDA graphs: True if both finish with graphs on."""
    ok = True
    procs = []
    for n in (3, 6):
        d = work / "smoke" / f"block{n}"
        d.mkdir(parents=True, exist_ok=True)
        for name in ("ssl_split.json", "normalizer.json"):
            shutil.copy(prep / "transductive" / name, d / name)
        cmd = [PY, "-m", "ftcp", "ssl-train", "--block", str(n), "--data", str(data), "--out", str(d), "--epochs", "1",
               "--max-samples", "3200", "--no-export", "--device", DEVICE, "--threads", "1", "--no-progress"]
        procs.append((n, d, subprocess.Popen(cmd, stdout=open(d / "smoke.log", "w"), stderr=subprocess.STDOUT,
                                             env=env(1), cwd=REPO)))
    for n, d, p in procs:
        rc = p.wait(timeout=300)
        m = next(d.glob("block*/metrics.json"), None)
        engine = json.loads(m.read_text())["timing"].get("step_engine") if m else None
        say(f"smoke block {n}: rc {rc}, step engine {engine}")
        ok = ok and rc == 0 and bool(engine) and engine.get("cuda_graphs") == "on"
    return ok


def start_mps(logs: Path) -> bool:
    """CUDA MPS lets the kernels of the concurrent block processes share the GPU instead of taking
    turns; started only if the control daemon exists and a CUDA call works under it."""
    if not shutil.which("nvidia-cuda-mps-control"):
        say("no nvidia-cuda-mps-control: processes time-share the GPU")
        return False
    rc = run(["nvidia-cuda-mps-control", "-d"], logs / "mps.log")
    check = run([PY, "-c", "import torch; x = torch.ones(4, device='cuda'); assert float(x.sum()) == 4"],
                logs / "mps.log", timeout=120) if rc == 0 else rc
    if check != 0:
        subprocess.run("echo quit | nvidia-cuda-mps-control", shell=True)
        say(f"MPS did not work (rc {rc}/{check}): processes time-share the GPU")
        return False
    say("MPS started")
    return True


def cmd_ssl(args) -> None:
    t0 = time.time()
    deadline = t0 + args.budget
    work = Path(args.work).resolve()
    data, runs, logs = work / "data", work / "runs", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    plan = PLANS[args.plan]
    if args.mps:
        start_mps(logs)
    ensure_store(Path(args.csv), data, logs)
    prepare_runs(plan, Path(args.prep), data, runs)
    if any(spec[3] == "crossmodal" for spec in plan) and not (data / "SSL" / "crossmodal_targets.npz").exists():
        # once, before the jobs: each cross-modal process would otherwise compute the same targets
        t = time.time()
        rc = run([PY, "-c", "from ftcp.ssl.data import open_source; from ftcp.ssl.crossmodal import "
                  f"ensure_descriptors; ensure_descriptors(open_source({str(data)!r}), {str(data / 'SSL')!r})"],
                 logs / "crossmodal.log", threads=os.cpu_count() or 4)
        say(f"cross-modal targets: rc {rc} in {time.time() - t:.0f} s")
    todo = [spec for spec in plan if not finished(runs / label(*spec))]
    jobs = ssl_jobs(todo, data, runs, args.probe_every)
    if todo and args.smoke and not smoke(data, Path(args.prep), work):
        say("CUDA graphs did not pass the smoke run: the matrix trains eagerly")
        jobs = [(cmd + ["--no-cuda-graphs"], log) for cmd, log in jobs]
    say(f"{len(jobs)} block jobs of {len(todo)} runs, {args.width} at a time; budget left "
        f"{deadline - time.time():.0f} s")
    t = time.time()
    codes = pool(jobs, args.width, deadline - args.post_reserve)
    bad = {k: v for k, v in codes.items() if v not in (0,)}
    say(f"SSL jobs done in {time.time() - t:.0f} s; not finished: {bad if bad else 'none'}")
    (logs / "ssl_jobs.json").write_text(json.dumps(codes, indent=1))
    done = [runs / label(*spec) for spec in plan if finished(runs / label(*spec))]
    controls = []
    if args.controls:
        for protocol, seed in CONTROLS:
            src = next((d for d in done if f"_{protocol}_" in d.name), None)
            if src is None:
                continue
            d = runs / f"random-init_{protocol}_seed{seed}"
            if not finished(d):
                d.mkdir(parents=True, exist_ok=True)
                for name in ("ssl_split.json", "normalizer.json"):
                    shutil.copy(src / name, d / name)
                run([PY, "-m", "ftcp", "ssl-export", "--data", str(data), "--out", str(d), "--init", "random",
                     "--seed", str(seed), "--device", DEVICE, "--to", str(d)], d / "logs" / "export.log")
            if len(list(d.glob("block*_*/embeddings.npz"))) == 6:
                controls.append(d)
    say(f"finished runs: {[d.name for d in done]}; random-init controls: {[d.name for d in controls]}")
    pack(Path(args.out), work, args.return_checkpoints)
    say(f"session done in {time.time() - t0:.0f} s")


def cmd_scenarios(args) -> None:
    """Scenario 2 (MLP + SHAP, one process per seed) and Scenario 3 (MLP) on the published runs on the
    GPU, and the CPU post-processing of every finished run (assembly, tables, probes, Scenario 1)."""
    t0 = time.time()
    work = Path(args.work).resolve()
    data, runs, results = work / "data", work / "runs", work / "results"
    s2 = str(REPO / "Evaluation_Scenarios/Scenario2_Hybrid_Enrichment/run_scenario2.py")
    s3 = str(REPO / "Evaluation_Scenarios/Scenario3_Sample_Efficiency/run_scenario3.py")
    jobs = []
    inductive = runs / args.inductive
    for name in args.published:
        d = runs / name
        if not finished(d):
            say(f"{name} is not finished: no scenarios for it")
            continue
        if not (d / "ssl_features.json").exists():
            run([PY, "-m", "ftcp", "ssl-assemble", "--data", str(data), "--out", str(d)], d / "logs" / "assemble.log")
        for target in ("formation_energy", "band_gap"):
            common = ["--data", str(data), "--ssl", str(d), "--out", str(results), "--no-report", "--device", DEVICE,
                      "--target", target]
            for k in range(args.s2_seeds):
                jobs.append(([PY, s2] + common + ["--models", "mlp", "--seeds", "1", "--seed", str(42 + k)],
                             d / "logs" / f"s2_{target}_seed{42 + k}.log"))
            jobs.append(([PY, s3] + common + ["--variants", "sample", "--bases", "mlp", "--seeds", "5"],
                         d / "logs" / f"s3_{target}.log"))
            jobs.append(([PY, s3] + common + ["--variants", "sample", "--bases", "mlp", "--seeds", "5",
                                              "--pool", "test", "--test-within-excluded", str(inductive)],
                         d / "logs" / f"s3_reversed_{target}.log"))
    done = [d for d in sorted(runs.iterdir()) if d.is_dir() and (finished(d) or
                                                                 len(list(d.glob("block*_*/embeddings.npz"))) == 6)]
    post = [d for d in done if not (d / "logs" / "post.done").exists()]
    jobs += post_jobs(post, data, results)
    say(f"{len(jobs)} jobs ({len(post)} post-processing), {args.width} at a time")
    codes = pool(jobs, args.width, t0 + args.budget - 30, threads=2)
    say(f"scenarios: {codes}")
    (work / "logs" / "scenario_jobs.json").write_text(json.dumps(codes, indent=1))
    pack(Path(args.out), work, args.return_checkpoints)
    say(f"session done in {time.time() - t0:.0f} s")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ssl")
    a.add_argument("--csv", required=True)
    a.add_argument("--prep", required=True)
    a.add_argument("--plan", default="main", choices=sorted(PLANS))
    a.add_argument("--probe-every", type=int, default=4)
    a.add_argument("--width", type=int, default=12)
    a.add_argument("--post-reserve", type=float, default=60, help="seconds kept for exports and packing")
    a.add_argument("--no-controls", dest="controls", action="store_false")
    a.add_argument("--no-smoke", dest="smoke", action="store_false")
    a.add_argument("--mps", action="store_true", help="start CUDA MPS first (kept if a CUDA call works under it)")
    b = sub.add_parser("scenarios")
    b.add_argument("--published", nargs="+", default=["upstream_transductive_seed42", "upstream_inductive_seed42"])
    b.add_argument("--inductive", default="upstream_inductive_seed42")
    b.add_argument("--width", type=int, default=14)
    b.add_argument("--s2-seeds", type=int, default=5)
    for x in (a, b):
        x.add_argument("--work", required=True)
        x.add_argument("--out", required=True)
        x.add_argument("--budget", type=float, default=560)
        x.add_argument("--return-checkpoints", nargs="*", default=[])
    p.add_argument("--device", default="cuda", help="cuda (the point of this script) or cpu (a dry run)")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    {"ssl": cmd_ssl, "scenarios": cmd_scenarios}[args.cmd](args)


if __name__ == "__main__":
    main()
