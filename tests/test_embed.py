"""ftcp.embed / `ftcp embed`: the trained encoders reproduce the assembled SSL features of the training
store, clear rejections, CIF/CSV inputs with a rejects file, and checkpoints fetched from a (loopback) hub."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from test_hub import hf_sandbox  # noqa: F401  (autouse: huggingface_hub isolated, loopback only)
from test_ssl_assemble import TINY_SETS

import ftcp
from ftcp import layout as L
from ftcp.ssl.synthetic import make_synthetic_root, random_structures

N, SEED = 48, 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny synthetic store, six tiny blocks trained briefly, features assembled in <root>/SSL."""
    from ftcp.cli import main as ftcp_main
    from ftcp.ssl.data import open_source
    from ftcp.ssl.targets import compute_crystal_systems

    root = make_synthetic_root(tmp_path_factory.mktemp("embed") / "root", n=N, seed=SEED)
    compute_crystal_systems(open_source(root), root / "SSL", workers=1, progress=False)
    argv = ["--data", str(root), "--device", "cpu", "--threads", "1", "--epochs-scale", "0.05", "--no-progress",
            "--no-table"] + [a for s in TINY_SETS for a in ("--set", s)]
    argv += [a for n in range(1, 7) for a in ("--set", f"{n}:batch_size=16")]
    assert ftcp_main(["ssl-train-all", *argv]) == 0
    ssl = root / "SSL"
    feats = np.load(ssl / "ssl_features.npy")
    ids = np.load(ssl / "ssl_material_ids.npy")
    row = {m: i for i, m in enumerate(ids)}
    return {"root": root, "ssl": ssl, "structures": random_structures(N, SEED),
            "features": lambda idx: feats[[row[f"syn-{i}"] for i in idx]]}


def test_embed_reproduces_the_assembled_training_features(trained):
    idx = [31, 2, 17, 40, 5, 23, 11]               # any order, any subset: rows follow the input
    x = ftcp.embed([trained["structures"][i] for i in idx], trained["ssl"], batch_size=3)
    assert x.shape == (len(idx), L.SSL_DIM) and x.dtype == np.float32
    np.testing.assert_allclose(x, trained["features"](idx), rtol=1e-5, atol=2e-6)
    one = ftcp.embed(trained["structures"][40], trained["ssl"])          # a single structure
    np.testing.assert_allclose(one[0], x[3], rtol=1e-5, atol=2e-6)


def _disordered():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Ni": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _bad_structures():
    from pymatgen.core import Lattice, Structure

    five = Structure(Lattice.cubic(8.0), ["Li", "Na", "K", "Rb", "Cs"],
                     [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])
    big = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]]) * (5, 5, 5)       # 125 sites
    heavy = Structure(Lattice.cubic(5.0), ["Md", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return {"disordered": _disordered(), "too_many_elements": five, "too_many_sites": big,
            "unsupported_element": heavy}


@pytest.mark.parametrize("code", ["disordered", "too_many_elements", "too_many_sites", "unsupported_element"])
def test_unrepresentable_crystals_raise_with_the_reason(trained, code):
    good = trained["structures"][0]
    with pytest.raises(ftcp.RejectedStructure, match=f"{code}.*structure 1") as err:
        ftcp.embed([good, _bad_structures()[code]], trained["ssl"])
    assert err.value.code == code


def test_unparsable_cif_and_missing_checkpoints(trained, tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 3\nthis is not a CIF loop\n")
    with pytest.raises(ftcp.RejectedStructure, match="unparsable_cif.*broken.cif") as err:
        ftcp.embed([bad], trained["ssl"])
    assert err.value.code == "unparsable_cif"
    from ftcp.embedding import CheckpointError

    with pytest.raises(CheckpointError, match="normalizer.json"):
        ftcp.embed(trained["structures"][:1], tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        ftcp.embed(trained["structures"][:1], tmp_path / "no" / "such" / "dir")


def test_cli_embeds_cifs_and_csv_and_lists_rejects(trained, tmp_path, capsys):
    from ftcp.cli import main

    folder = tmp_path / "cifs"
    folder.mkdir()
    for i in (3, 8, 13):
        trained["structures"][i].to(filename=str(folder / f"syn-{i}.cif"))
    _disordered().to(filename=str(folder / "alloy.cif"))
    table = tmp_path / "more.csv"
    with open(table, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["material_id", "cif"])
        w.writerow(["syn-21", trained["structures"][21].to(fmt="cif")])
        w.writerow(["garbage", "not a cif at all"])
        w.writerow(["syn-3", trained["structures"][3].to(fmt="cif")])          # same ID as a file above
    out = tmp_path / "emb.npz"
    assert main(["embed", str(folder), str(table), "--checkpoints", str(trained["ssl"]), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "embedded 4 crystal(s)" in printed and "rejected 3" in printed
    with np.load(out) as f:
        ids, emb, meta = list(f["material_id"]), f["embedding"], json.loads(str(f["meta"]))
    assert ids == ["syn-13", "syn-3", "syn-8", "syn-21"] and emb.shape == (4, L.SSL_DIM)
    assert meta["n_rejected"] == 3 and meta["phase"] == "linear"
    # the CIF round trip rounds coordinates: compare with the API on the same files
    ref = ftcp.embed([folder / "syn-13.cif", folder / "syn-3.cif", folder / "syn-8.cif"], trained["ssl"])
    np.testing.assert_allclose(emb[:3], ref, rtol=1e-5, atol=2e-6)
    from pymatgen.core import Structure

    ref21 = ftcp.embed(Structure.from_str(trained["structures"][21].to(fmt="cif"), fmt="cif"), trained["ssl"])
    np.testing.assert_allclose(emb[3:], ref21, rtol=1e-5, atol=2e-6)
    with open(tmp_path / "emb.rejects.csv") as fh:
        rejects = {r["material_id"]: r for r in csv.DictReader(fh)}
    assert {k: v["reason"] for k, v in rejects.items()} == {
        "alloy": "disordered", "garbage": "unparsable_cif", "syn-3": "duplicate_id"}
    # .csv output, and a run where nothing can be embedded is an error with a clear line
    assert main(["embed", str(folder / "syn-8.cif"), "--checkpoints", str(trained["ssl"]),
                 "--out", str(tmp_path / "one.csv"), "--no-progress"]) == 0
    with open(tmp_path / "one.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:2] == ["material_id", "ssl_0"] and len(rows[0]) == 1 + L.SSL_DIM and rows[1][0] == "syn-8"
    np.testing.assert_allclose(np.array(rows[1][1:], dtype=np.float32), emb[2], rtol=1e-5, atol=2e-6)
    capsys.readouterr()
    assert main(["embed", str(folder / "alloy.cif"), "--checkpoints", str(trained["ssl"]),
                 "--out", str(tmp_path / "none.npz"), "--no-progress"]) == 1
    assert "none of the 1 inputs could be embedded" in capsys.readouterr().err


def test_checkpoints_from_a_hub_repository(trained, tmp_path):
    from fake_hub import DEFAULT_TOKEN, FakeHub

    from ftcp import hub as H
    from ftcp.cli import main

    with FakeHub() as fake:
        H.publish_checkpoints(trained["ssl"], "tester/ssl-demo", endpoint=fake.url, token=DEFAULT_TOKEN)
        idx = [4, 9, 30]
        x = ftcp.embed([trained["structures"][i] for i in idx], "tester/ssl-demo", endpoint=fake.url)
        np.testing.assert_allclose(x, trained["features"](idx), rtol=1e-5, atol=2e-6)
        assert fake.requests_for("/api/models/tester/ssl-demo", "GET")          # really fetched from the hub
        trained["structures"][4].to(filename=str(tmp_path / "syn-4.cif"))
        assert main(["embed", str(tmp_path / "syn-4.cif"), "--checkpoints", "tester/ssl-demo", "--endpoint",
                     fake.url, "--out", str(tmp_path / "hub.npy"), "--no-progress"]) == 0
    assert np.load(tmp_path / "hub.npy").shape == (1, L.SSL_DIM)
    assert (tmp_path / "hub.material_ids.txt").read_text() == "syn-4\n"
