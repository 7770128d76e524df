"""ftcp collect-results: results and SSL-run records copied into the repository's tree with machine paths
rewritten, absolute paths refused, stale commits corrected, and the same inputs giving the same bytes."""
from __future__ import annotations

import json

import pytest

from ftcp.errors import UserError
from ftcp.evaluation.collect import collect


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_collect_rewrites_paths_and_keeps_only_records(tmp_path):
    src, runs, dest = tmp_path / "machine" / "results", tmp_path / "machine" / "runs", tmp_path / "repo"
    res = {"provenance": {"command": f"python run.py --data {tmp_path}/machine/data --ssl {runs}/r1",
                          "git": {"commit": "aaa", "dirty": True}}, "rows": [1, 2]}
    _write(src / "scenario1" / "r1" / "fe.json", res)
    _write(runs / "r1" / "ssl_features.json", {"ssl_dir": f"{runs}/r1"})
    _write(runs / "r1" / "block1_element_matrix" / "metrics.json", {"out_dir": f"{runs}/r1/block1_element_matrix"})
    (runs / "r1" / "ssl_features.npy").write_bytes(b"arrays stay behind")
    pairs = [(f"{tmp_path}/machine/data", "Data"), (str(runs), "runs")]
    counts = collect([src], [runs], dest, pairs, {"aaa": "bbb"})
    assert counts == {"scenario1": 1, "ssl runs": 1}
    out = json.loads((dest / "scenario1" / "r1" / "fe.json").read_text())
    assert out["provenance"]["command"] == "python run.py --data Data --ssl runs/r1"
    assert out["provenance"]["git"] == {"commit": "bbb", "dirty": None, "corrected_from": "aaa"}
    assert json.loads((dest / "ssl" / "r1" / "block1_element_matrix" / "metrics.json").read_text())["out_dir"] == \
        "runs/r1/block1_element_matrix"
    assert not (dest / "ssl" / "r1" / "ssl_features.npy").exists()
    first = (dest / "scenario1" / "r1" / "fe.json").read_bytes()
    collect([src], [runs], dest, pairs, {"aaa": "bbb"})
    assert (dest / "scenario1" / "r1" / "fe.json").read_bytes() == first


def test_collect_refuses_a_record_that_still_names_a_machine_path(tmp_path):
    _write(tmp_path / "results" / "probes" / "r1" / "x.json", {"command": "ftcp probe --data /srv/stores/mp"})
    with pytest.raises(UserError, match="absolute paths remain"):
        collect([tmp_path / "results"], [], tmp_path / "repo", [])
