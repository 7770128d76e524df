"""`ftcp demo` / `ftcp reproduce`: the demo end to end (tiny settings), the stage runner's resume, rerun on a
changed argument and one-line errors, Scenario 3's fractions, and the Hugging Face path (download + convert)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from test_hub import hf_sandbox  # noqa: F401  (autouse: huggingface_hub isolated, loopback only)
from test_ssl_assemble import TINY_SETS

from ftcp import pipeline as P
from ftcp.logs import LOGGERS

DEMO_N = 80
DEMO_SETS = (TINY_SETS + [f"{n}:epochs=1" for n in range(1, 7)] + [f"{n}:batch_size=16" for n in range(1, 7)])
DEMO_SCENARIO_ARGS = {3: ["--bases", "hgb"]}     # the MLP pair triples Scenario 3's time; tested in test_eval_*


class _Lines(logging.Handler):
    """Collects the messages of the project's loggers (the pipeline's progress and the scenarios' output)."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_output"
    handler = _Lines()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        timing = P.run_demo(out, n_crystals=DEMO_N, seed=42, device="cpu", progress=False, ssl_sets=DEMO_SETS,
                            scenario_args=DEMO_SCENARIO_ARGS)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    return {"out": out, "timing": timing, "log": handler.lines}


def test_demo_runs_end_to_end_inside_its_folder_and_says_synthetic(demo):
    out, timing = demo["out"], demo["timing"]
    assert [n for n, t in timing["stages"].items() if t["status"] == "ran"] == [s.name for s in P.demo_stages()]
    for rel in ("demo_dataset.csv.gz", "demo_dataset.json", "Data/manifest.json", "Data/SSL/ssl_features.npy",
                "Data/Splitted_Data/Split_10Test_90Train/split.json", "Data/Group_Splitting/split.json",
                "report/RESULTS.md", "report/pretext_tasks.md", "README.md", P.STATE_FILE, P.TIMING_FILE):
        assert (out / rel).is_file(), rel
    assert np.load(out / "Data/SSL/ssl_features.npy").shape == (DEMO_N, 2048)
    assert len(list((out / "report").glob("Scenario*.png"))) >= 4
    for n in (1, 2, 3):
        assert list((out / f"Results/scenario{n}").rglob("*__quick.json")), n
    # synthetic, never DFT: the store manifest, every scenario JSON, the report and the pretext table say so
    assert json.loads((out / "Data/manifest.json").read_text())["synthetic"]["generator"] == "ftcp.demo_data"
    for f in (out / "Results").rglob("*.json"):
        assert json.loads(f.read_text())["provenance"]["dataset"]["synthetic"], f
    results = (out / "report/RESULTS.md").read_text()
    assert "SYNTHETIC DEMO DATA — not DFT" in results and "SYNTHETIC" in (out / "report/pretext_tasks.md").read_text()
    assert "SYNTHETIC" in (out / "README.md").read_text()
    # units of the demo targets (were empty) and no mp_36k anchors beside synthetic numbers
    assert "### ewald_energy_per_atom (eV/atom), random_10" in results and "### density (g/cm^3)" in results
    assert "DESIGN §7 anchors" not in results
    # Scenario 3: 1 % of 80 crystals is no sample; the scaled fractions are recorded and used
    s3 = json.loads(next((out / "Results/scenario3").rglob("*sample_efficiency*")).read_text())
    state = json.loads((out / P.STATE_FILE).read_text())
    info = state["stages"]["scenario3"]["info"]
    assert "scaled" in info["fractions_adjusted"] and min(s3["sizes"].values()) >= P.S3_MIN_ROWS
    assert s3["settings"]["fractions"] == ",".join(f"{f:g}" for f in info["fractions"])
    timing_file = json.loads((out / P.TIMING_FILE).read_text())
    assert set(timing_file["stages"]) == set(state["stages"]) and timing_file["total_seconds"] > 0
    # nothing outside the output folder: the repository's report folder is untouched by the demo
    assert not any("Supplemental Information" in line for line in demo["log"])


def test_demo_rerun_skips_every_finished_stage(demo):
    before = json.loads((demo["out"] / P.STATE_FILE).read_text())
    timing = P.run_demo(demo["out"], n_crystals=DEMO_N, seed=42, device="cpu", progress=False, ssl_sets=DEMO_SETS,
                        scenario_args=DEMO_SCENARIO_ARGS)
    assert {t["status"] for t in timing["stages"].values()} == {"skipped"}
    assert timing["total_seconds"] < 10
    after = json.loads((demo["out"] / P.STATE_FILE).read_text())
    assert {k: v["token"] for k, v in after["stages"].items()} == {k: v["token"] for k, v in before["stages"].items()}


def test_demo_changed_ssl_setting_reruns_that_block_only_up_to_the_selected_stage(demo):
    feats = np.load(demo["out"] / "Data/SSL/ssl_features.npy")
    sets = DEMO_SETS + ["6:weight_real=0.5"]
    timing = P.run_demo(demo["out"], n_crystals=DEMO_N, seed=42, device="cpu", progress=False, ssl_sets=sets,
                        scenario_args=DEMO_SCENARIO_ARGS, stages=["ssl-block6", "ssl-assemble"])
    status = {k: t["status"] for k, t in timing["stages"].items()}
    assert status["ssl-block6"] == "ran" and status["ssl-assemble"] == "ran"
    assert all(status[k] == "skipped" for k in ("demo-data", "build", "split", "ssl-prepare", "ssl-block5"))
    assert "scenario1" not in status
    new = np.load(demo["out"] / "Data/SSL/ssl_features.npy")
    assert np.array_equal(new[:, :1280], feats[:, :1280]) and not np.array_equal(new[:, 1280:], feats[:, 1280:])
    # the stages after the selected ones are now stale (the pretext table follows the new assembly, and its
    # rerun gives a new token that every later stage sees): a plain rerun runs them again
    from ftcp.demo_data import BAND_GAP_LIKE, FORMATION_ENERGY_LIKE

    ctx = P.Context(out=demo["out"], data=demo["out"] / "Data", results=demo["out"] / "Results",
                    report_dir=demo["out"] / "report", targets=[FORMATION_ENERGY_LIKE, BAND_GAP_LIKE])
    ctx.state = P.load_state(demo["out"])
    stage = next(s for s in P.demo_stages() if s.name == "ssl-pretext-table")
    key = {**stage.key(ctx), "after": ctx.state["stages"]["ssl-assemble"]["token"]}
    assert P.stale_reason(stage, ctx, P._canonical(key)) == "changed: after"


# --------------------------------------------------------------------------- the runner alone (fast)
def _stages(calls, fail_at=None):
    def make(name):
        def run(ctx):
            calls.append(name)
            if name == fail_at:
                raise ValueError(f"{name} cannot read\nits input")
            (ctx.out / f"{name}.txt").write_text(str(ctx.seed))
            return {"seed": ctx.seed}
        return P.Stage(name, f"stage {name}", run, key=lambda ctx: {"seed": ctx.seed} if name != "a" else {},
                       outputs=lambda ctx, rec: [ctx.out / f"{name}.txt"])
    return [make(n) for n in ("a", "b", "c")]


def _ctx(tmp_path, seed=1):
    return P.Context(out=tmp_path, data=tmp_path, results=tmp_path, report_dir=tmp_path, seed=seed)


def test_runner_resumes_reruns_changed_and_downstream_and_missing_outputs(tmp_path):
    calls = []
    P.run_stages(_stages(calls), _ctx(tmp_path))
    assert calls == ["a", "b", "c"]
    P.run_stages(_stages(calls), _ctx(tmp_path))
    assert calls == ["a", "b", "c"]                              # all skipped
    P.run_stages(_stages(calls), _ctx(tmp_path, seed=2))          # b's key changed -> b and everything after it
    assert calls[3:] == ["b", "c"]
    (tmp_path / "c.txt").unlink()
    timing = P.run_stages(_stages(calls), _ctx(tmp_path, seed=2))
    assert calls[5:] == ["c"] and timing["stages"]["a"]["status"] == "skipped"
    state = json.loads((tmp_path / P.STATE_FILE).read_text())
    assert state["stages"]["b"]["key"]["seed"] == 2 and state["stages"]["b"]["info"] == {"seed": 2}
    ctx = _ctx(tmp_path, seed=2)
    ctx.restart = True
    P.run_stages(_stages(calls), ctx)
    assert calls[6:] == ["a", "b", "c"]


def test_runner_failure_is_one_line_recorded_and_resumable(tmp_path):
    calls = []
    with pytest.raises(P.PipelineError, match=r"^stage 'b' failed after .* s: b cannot read its input$"):
        P.run_stages(_stages(calls, fail_at="b"), _ctx(tmp_path))
    state = json.loads((tmp_path / P.STATE_FILE).read_text())
    assert state["stages"]["a"]["status"] == "done" and state["stages"]["b"]["status"] == "failed"
    assert "cannot read" in state["stages"]["b"]["error"] and "c" not in state["stages"]
    P.run_stages(_stages(calls), _ctx(tmp_path))                  # fixed: resumes at b
    assert calls == ["a", "b", "b", "c"]


def test_runner_stage_selection(tmp_path):
    calls = []
    with pytest.raises(P.PipelineError, match="stage 'a' must be finished before \\['b'\\]"):
        P.run_stages(_stages(calls), _ctx(tmp_path), selected=["b"])
    with pytest.raises(P.PipelineError, match="unknown stage"):
        P.run_stages(_stages(calls), _ctx(tmp_path), selected=["zz"])
    P.run_stages(_stages(calls), _ctx(tmp_path), selected=["a", "b"])
    assert calls == ["a", "b"] and not (tmp_path / "c.txt").exists()
    ctx = _ctx(tmp_path)
    ctx.restart = True                                            # with --stages: only those run again
    P.run_stages(_stages(calls), ctx, selected=["b"])
    assert calls == ["a", "b", "b"]
    assert P.expand_stages(["ssl", "report"], P.demo_stages())[:2] == ["ssl-prepare", "ssl-block1"]


def test_reproduce_protocol_reaches_the_ssl_split_and_its_stage_key(tmp_path):
    ctx = _ctx(tmp_path)
    assert P.train_all_args(ctx, []).protocol is None                 # train_all's default (transductive)
    prepare = P.ssl_stages()[0]
    plain_key = prepare.key(ctx)
    ctx.protocol = "inductive"
    assert P.train_all_args(ctx, ["--blocks", "3"]).protocol == "inductive"
    assert prepare.key(ctx) == {**plain_key, "protocol": "inductive"}   # a new protocol remakes the SSL split
    # the three stages a GPU machine without pymatgen splits into
    assert P.expand_stages(["data"], P.reproduce_stages("file")) == ["build", "split"]
    assert P.expand_stages(["ssl"], P.reproduce_stages("file"))[-1] == "ssl-pretext-table"
    assert P.expand_stages(["evaluation"], P.reproduce_stages("file")) == ["scenario1", "scenario2", "scenario3",
                                                                            "report"]


def test_scenario3_fractions():
    assert P.scenario3_fractions(129_473, 116_525, quick=False) == ([1.0, 5.0, 10.0], None)
    fr, why = P.scenario3_fractions(1000, 900, quick=True)
    assert fr == [5.0, 25.0, 50.0] and "10 rows" in why
    fr, why = P.scenario3_fractions(30_000, 27_000, quick=True)        # --quick sizes come from <= 2,000
    assert fr == [2.5, 12.5, 25.0] and "2000 materials" in why
    fr, _ = P.scenario3_fractions(80, 72, quick=True)
    assert fr[0] == 62.5 and fr[-1] == 90.0 and len(fr) == 3
    with pytest.raises(P.PipelineError, match="at least 50 labelled rows"):
        P.scenario3_fractions(60, 40, quick=True)


# --------------------------------------------------------------------------- errors
def test_clear_errors(tmp_path, capsys):
    from ftcp.cli import main

    with pytest.raises(P.PipelineError, match="too small"):
        P.run_demo(tmp_path / "d", n_crystals=10)
    assert main(["reproduce", "--source", str(tmp_path / "nope.csv"), "--data", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ftcp reproduce: error: --source") and "no such file" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(P.PipelineError, match="no .cif files"):
        P.run_reproduce(str(tmp_path / "empty"), data=tmp_path / "r")


def test_a_scenario_runs_in_process_with_its_output_in_a_log(tmp_path):
    """Scenario mains run in this process: their messages and printed lines go to <out>/logs/<name>.log too;
    a non-zero status names the log, an error propagates (the stage runner records it as one line)."""
    import logging

    def main(argv):
        logging.getLogger("Evaluation_Scenarios.fake").info("working on %s", argv)
        print("scenario done")
        return 3

    ctx = _ctx(tmp_path)
    with pytest.raises(P.PipelineError, match=r"boom exited with status 3 \(full output: .*boom.log\)"):
        P.run_logged(ctx, "boom", main, ["--quick"])
    text = (tmp_path / "logs" / "boom.log").read_text()
    assert "$ boom --quick" in text and "working on ['--quick']" in text and "scenario done" in text

    def fails(argv):
        raise ValueError("scenario 3: 1 % of 50 = 0 rows: too few for 2 folds")

    with pytest.raises(ValueError, match="too few for 2 folds"):
        P.run_logged(ctx, "boom", fails, [])


# --------------------------------------------------------------------------- --source hf
def test_reproduce_from_the_hub_downloads_and_converts(tmp_path, monkeypatch):
    from fake_hub import FakeHub

    from ftcp.convert import write_upstream_layout
    from ftcp.dataset import open_dataset
    from ftcp.demo_data import write_demo_csv
    from ftcp.splitting import make_splits
    from ftcp.store import build_store

    csv_path, _ = write_demo_csv(tmp_path / "demo.csv.gz", n=30, seed=1, progress=False)
    build_store(csv_path, tmp_path / "native", label_map={"formation_energy": "ewald_energy_per_atom",
                                                         "band_gap": "density"}, workers=1, progress=False)
    make_splits(tmp_path / "native", seed=3)
    native = open_dataset(tmp_path / "native")
    up = write_upstream_layout(native, tmp_path / "upstream", seed=0, ssl=False)
    files = {p.relative_to(up).as_posix(): p.read_bytes() for p in up.rglob("*.npy")}
    for var in ("HF_TOKEN", "HF_ENDPOINT", "CRYS_REP_DATA"):
        monkeypatch.delenv(var, raising=False)
    with FakeHub() as hub:
        hub.commit_files("tester/crys", files, repo_type="dataset")
        timing = P.run_reproduce("hf", data=tmp_path / "root", repo_id="tester/crys", endpoint=hub.url,
                                 stages=["download", "convert"], progress=False)
    assert [k for k, t in timing["stages"].items() if t["status"] == "ran"] == ["download", "convert"]
    got = open_dataset(tmp_path / "root")
    assert got.layout == "native" and sorted(got.ids) == sorted(native.ids)
    ids = np.array(sorted(native.ids))
    np.testing.assert_array_equal(got.part(ids=ids).ftcp(), native.part(ids=ids).ftcp())
    np.testing.assert_array_equal(got.part(ids=ids).labels(["formation_energy", "band_gap"]),
                                  native.part(ids=ids).labels(["formation_energy", "band_gap"]))
    assert list(got.part(ids=ids).formulas()) == list(native.part(ids=ids).formulas())   # recovered from FTCP
    for split in native.split_names():
        for side in ("train", "test"):
            assert sorted(got.part(split, side).ids) == sorted(native.part(split, side).ids)
    assert json.loads((tmp_path / "root" / "manifest.json").read_text())["source"]["path"] == "hf:tester/crys"
