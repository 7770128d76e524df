"""Assembly of the 2,048-d SSL features (ID checks fail loudly), upstream-layout files, the
pretext-task table, and train-all end to end (tiny models) with skipping of finished blocks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftcp import layout as L
from ftcp.ssl import assemble as A
from ftcp.ssl import pretext_table as P
from ftcp.ssl.export import save_embeddings
from ftcp.ssl.synthetic import synthetic_root_cached

N = 24


def make_root(path, n=N):
    """A minimal native data root: zero FTCP, IDs, labels and two downstream splits."""
    path.mkdir(parents=True, exist_ok=True)
    ids = np.array([f"mp-{1000 + 7 * i}" for i in range(n)])
    np.save(path / "ftcp.npy", np.zeros((n,) + L.SHAPE, dtype=np.float32))
    np.save(path / "material_ids.npy", ids)
    (path / "labels.csv").write_text("material_id,formula,formation_energy,band_gap\n"
                                     + "".join(f"{m},X,{-i / 10},{i / 5}\n" for i, m in enumerate(ids)))
    for folder, n_test in (("Splitted_Data/Split_10Test_90Train", 3), ("Group_Splitting", 4)):
        d = path / folder
        d.mkdir(parents=True)
        rng = np.random.default_rng(n_test)
        test = set(rng.choice(ids, n_test, replace=False).tolist())
        (d / "train_ids.txt").write_text("\n".join(m for m in ids if m not in test) + "\n")
        (d / "test_ids.txt").write_text("\n".join(m for m in ids if m in test) + "\n")
    return path, ids


def write_blocks(ssl_dir, ids, split_seed=42, tweak=None):
    """Fake block outputs: embeddings whose value encodes (block, row) + config.json."""
    rng = np.random.default_rng(0)
    for block in L.BLOCKS:
        d = ssl_dir / f"block{block.number}_{block.name}"
        d.mkdir(parents=True, exist_ok=True)
        emb = rng.normal(size=(len(ids), block.embed_dim)).astype(np.float32)
        emb[:, 0] = block.number * 1000 + np.arange(len(ids))
        block_ids = ids
        if tweak and block.number in tweak:
            block_ids, emb = tweak[block.number](ids, emb)
        save_embeddings(d / "embeddings.npz", block_ids, emb)
        (d / "config.json").write_text(json.dumps({"split": {"seed": split_seed, "sizes": {"train": 19}},
                                                   "train": {"epochs": 1, "seed": 42}}))
    (ssl_dir / "ssl_split.json").write_text("{}")
    (ssl_dir / "normalizer.json").write_text("{}")


def test_assembly_joins_blocks_in_order_and_ftcp_dataset_reads_it(tmp_path):
    from ftcp.dataset import open_dataset

    root, ids = make_root(tmp_path / "root")
    write_blocks(root / "SSL", ids)
    info = A.assemble(root / "SSL", root=root, upstream_layout=True)
    feats = np.load(root / "SSL" / A.FEATURES_FILE)
    assert feats.shape == (N, L.SSL_DIM) and feats.dtype == np.float32
    assert list(np.load(root / "SSL" / A.IDS_FILE)) == list(ids)
    offsets = [b["offset"] for b in info["blocks"]]
    assert offsets == [0, 256, 512, 768, 1024, 1280] and [b["dim"] for b in info["blocks"]] == [256] * 5 + [768]
    for block, off in zip(L.BLOCKS, offsets, strict=False):
        np.testing.assert_array_equal(feats[:, off], block.number * 1000 + np.arange(N))
    saved = json.loads((root / "SSL" / A.INFO_FILE).read_text())
    assert saved["outputs"][A.FEATURES_FILE] and saved["blocks"][5]["sha256"] and saved["normalizer"]["sha256"]
    # ftcp.dataset aligns them by ID, and the upstream-layout files hold the same rows
    ds = open_dataset(root)
    for split in ("random_10", "group"):
        for side in ("train", "test"):
            part = ds.part(split, side)
            np.testing.assert_array_equal(part.ssl_features(), feats[[list(ids).index(m) for m in part.ids]])
            cap = side.capitalize()
            folder = root / ("Splitted_Data/Split_10Test_90Train" if split == "random_10" else "Group_Splitting") / cap
            up_ids = np.load(folder / f"{cap}_Extracted_Features_Material_IDs.npy")
            np.testing.assert_array_equal(np.load(folder / f"{cap}_Extracted_Features_Data.npy"),
                                          feats[[list(ids).index(m) for m in up_ids]])
    assert len(info["upstream_layout"]) == 4


@pytest.mark.parametrize("tweak,message", [
    ({4: lambda ids, e: (ids[::-1].copy(), e)}, r"block 4 \(site_occupancy\).*another order: first differing rows \[0"),
    ({6: lambda ids, e: (ids[:-1], e[:-1])}, r"block 6 \(structure_factors\).*1 missing, e.g. \['mp-1161'\]"),
    ({2: lambda ids, e: (np.concatenate([ids[:-1], ["mp-9"]]), e)},
     r"block 2 .*1 not in the reference, e.g. \['mp-9'\]"),
    ({5: lambda ids, e: (ids, e[:, :100])}, r"block 5 .*100 dims"),
    ({3: lambda ids, e: (ids, np.where(np.arange(e.shape[1]) == 3, np.nan, e).astype(np.float32))}, "non-finite"),
])
def test_assembly_refuses_mismatched_blocks(tmp_path, tweak, message):
    root, ids = make_root(tmp_path / "root")
    write_blocks(root / "SSL", ids, tweak=tweak)
    with pytest.raises(ValueError, match=message):
        A.assemble(root / "SSL", root=root)
    assert not (root / "SSL" / A.FEATURES_FILE).exists()


def test_assembly_refuses_other_store_missing_block_and_mixed_splits(tmp_path):
    root, ids = make_root(tmp_path / "root")
    other = ids.copy()
    other[[2, 5]] = other[[5, 2]]
    write_blocks(root / "SSL", other)
    with pytest.raises(ValueError, match="do not cover the data root .* first differing rows \\[2, 5\\]"):
        A.assemble(root / "SSL", root=root)
    write_blocks(root / "SSL", ids)
    (root / "SSL" / "block6_structure_factors" / "embeddings.npz").unlink()
    with pytest.raises(FileNotFoundError, match="block 6 .*train --block 6"):
        A.assemble(root / "SSL", root=root)
    write_blocks(root / "SSL", ids)
    cfg = root / "SSL" / "block3_atomic_sites" / "config.json"
    cfg.write_text(json.dumps({"split": {"seed": 7, "sizes": {"train": 19}}}))
    with pytest.raises(ValueError, match="different SSL splits"):
        A.assemble(root / "SSL", root=root)


# ------------------------------------------------------------------------------------------
def fake_metrics(ssl_dir, values):
    """metrics.json per block; values[(block, task)] = (val, test, higher_is_better)."""
    per_block = {}
    for _number, block_no, task in P.TASKS:
        val, test, hib = values[task]
        m = per_block.setdefault(block_no, {"status": "finished", "val": {"loss": {}}, "test": {"loss": {}},
                                            "epochs_run": 2, "best_epoch": 2})
        for part, v in (("val", val), ("test", test)):
            base = 0.5 if hib else 1.0
            m[part][task] = {"metric": "accuracy" if hib else "nmse", "higher_is_better": hib, "model": v,
                             "baseline": base, "beats_baseline": (v > base) if hib else (v < base), "n": 10}
    for block_no, m in per_block.items():
        block = L.block(block_no)
        d = ssl_dir / f"block{block.number}_{block.name}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "metrics.json").write_text(json.dumps(m))
        (d / "config.json").write_text(json.dumps({"train": {"seed": 42, "epochs": 2}, "device_name": "cpu",
                                                   "split": {"seed": 42, "sizes": {"train": 8}}, "n_materials": 10}))


def test_pretext_table_counts_test_at_least_val_in_the_better_direction(tmp_path):
    values = {task: (0.8, 0.7, True) for _, _, task in P.TASKS}          # accuracy falls on test: no
    values["masked_element"] = (0.6, 0.6, True)                           # equal: yes
    values["crystal_system"] = (0.6, 0.65, True)                          # higher: yes
    values["stoichiometry"] = (0.3, 0.2, False)                           # lower error: yes
    values["masked_kdistance"] = (0.3, 0.4, False)                        # higher error: no
    values["real_from_reciprocal"] = (0.9, 1.2, False)                    # worse than the baseline on test
    fake_metrics(tmp_path, values)
    table = P.write_table(tmp_path, tmp_path / "out", command="pytest")
    s = table["summary"]
    assert s["tasks_run"] == 13 and s["test_ge_val"] == 3 and s["paper_test_ge_val"] == 6
    assert s["beat_baseline_test"] == 12
    rows = {r["name"]: r for r in table["tasks"]}
    assert rows["stoichiometry"]["test_ge_val"] and not rows["masked_kdistance"]["test_ge_val"]
    assert [r["task"] for r in table["tasks"]] == list(range(1, 14))
    md = (tmp_path / "out" / P.MD_FILE).read_text()
    assert "**3 of 13**" in md and "paper reports 6 of 13" in md and md.count("\n| ") >= 13 + 6
    assert json.loads((tmp_path / "out" / P.JSON_FILE).read_text())["summary"]["test_ge_val"] == 3
    # a block that was not run is reported as such, not silently dropped
    (tmp_path / "block5_reciprocal_space" / "metrics.json").unlink()
    table = P.build_table(tmp_path)
    assert table["summary"]["tasks_run"] == 11
    assert [r["status"] for r in table["tasks"] if r["block"] == 5] == ["not run", "not run"]


# ------------------------------------------------------------------------------------------
TINY_SETS = ["1:slot_width=16", "1:set_width=8", "1:hidden=16", "1:projector_width=16", "2:head_width=8",
             "3:d_model=16", "3:heads=2", "3:ff=16", "3:layers=1", "3:pool_heads=2", "3:head_width=8",
             "4:d_model=16", "4:heads=2", "4:ff=16", "4:layers=1", "4:project_width=16", "4:head_width=8",
             "5:d_model=16", "5:heads=2", "5:ff=16", "5:layers=1", "5:project_width=16", "5:head_width=8",
             "6:d_model=16", "6:heads=2", "6:ff=16", "6:conv_channels=[4,4,4]", "6:project_width=16",
             "6:head_width=8", "6:projector_width=16"]


def _train_all(argv) -> dict:
    """Run ``ftcp ssl-train-all`` (what ``SSL_Training/train_all.py`` runs); its summary as written to the SSL
    directory."""
    from ftcp.cli import main

    assert main(["ssl-train-all", *argv]) == 0
    out = argv[argv.index("--out") + 1]
    return json.loads((Path(out) / "train_all_summary.json").read_text())


def test_train_all_trains_assembles_and_skips_finished_blocks(tmp_path_factory, tmp_path, capsys):
    from ftcp.ssl import data as D

    train_all = _train_all

    root = synthetic_root_cached(tmp_path_factory.mktemp("train_all_root"))  # own copy: <root>/SSL is written below
    D.prepare(root, root / "SSL")          # split + normaliser in <root>/SSL; --out below is another directory
    out, table_dir = tmp_path / "ssl", tmp_path / "table"
    argv = ["--data", str(root), "--out", str(out), "--device", "cpu", "--threads", "1", "--epochs-scale", "0.05",
            "--no-progress", "--table-dir", str(table_dir)] + [a for s in TINY_SETS for a in ("--set", s)]
    argv += [a for n in range(1, 7) for a in ("--set", f"{n}:batch_size=32")]
    first = train_all(argv)
    assert all(v["status"] == "finished" for v in first["blocks"].values())
    run = json.loads((out / A.RUN_FILE).read_text())
    assert run["protocol"] == "transductive" and run["preset"] == "upstream" and run["seed"] == 42
    assert not (out / "ssl_split.json").exists()
    feats = np.load(out / A.FEATURES_FILE)
    assert feats.shape == (112, L.SSL_DIM) and np.isfinite(feats).all()
    assert first["table"]["tasks_run"] == 13
    md = (table_dir / P.MD_FILE).read_text()
    assert "of 13** tasks have test >= validation" in md
    # a checkpoint brought back alone (e.g. from a GPU machine) re-exports the same embeddings
    from ftcp.cli import main as ftcp_main
    from ftcp.ssl.export import load_embeddings

    ftcp_main(["ssl-export", "--block", "4", "--data", str(root), "--out", str(out), "--to", str(tmp_path / "again"),
              "--device", "cpu"])
    ids4, emb4 = load_embeddings(out / "block4_site_occupancy" / "embeddings.npz")
    ids_re, emb_re = load_embeddings(tmp_path / "again" / "block4_site_occupancy" / "embeddings.npz")
    assert list(ids_re) == list(ids4)
    np.testing.assert_allclose(emb_re, emb4, rtol=1e-5, atol=1e-6)
    again = train_all(argv)
    assert all(v["status"] == "skipped (done)" for v in again["blocks"].values())
    assert np.array_equal(np.load(out / A.FEATURES_FILE), feats)
    # another setting for one block: its last.pt is refused (no silent mix), --restart retrains that block only,
    # and the table is re-assembled from the six blocks
    capsys.readouterr()
    assert ftcp_main(["ssl-train-all", *argv, "--set", "5:weight_lattice=0.9", "--blocks", "5"]) == 1
    assert "pass --restart to start over" in capsys.readouterr().err
    changed = train_all(argv + ["--set", "5:weight_lattice=0.9", "--blocks", "5", "--restart"])
    assert list(changed["blocks"]) == ["5"] and changed["blocks"]["5"]["status"] == "finished"
    new = np.load(out / A.FEATURES_FILE)
    assert np.array_equal(new[:, :1024], feats[:, :1024]) and not np.array_equal(new[:, 1024:1280], feats[:, 1024:1280])


def test_cli_inductive_protocol_end_to_end_with_no_flag_repeated(tmp_path_factory, tmp_path):
    """`ftcp ssl-prepare --protocol inductive`, then train-all, export, assemble, the table, the random-init
    control and a region pack: every later command takes the stored split as it is (exit 0, nothing repeated)."""
    import shutil

    from ftcp.cli import main

    root = tmp_path / "root"
    shutil.copytree(synthetic_root_cached(tmp_path_factory.mktemp("inductive_root")), root)
    ids = np.load(root / "material_ids.npy")
    tests = {"Splitted_Data/Split_10Test_90Train": set(ids[::10]), "Group_Splitting": set(ids[3::7])}
    for folder, test in tests.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "train_ids.txt").write_text("".join(f"{m}\n" for m in ids if m not in test))
        (root / folder / "test_ids.txt").write_text("".join(f"{m}\n" for m in ids if m in test))
    labels = "".join(f"{m},{i % 7}\n" for i, m in enumerate(ids))
    (root / "labels.csv").write_text("material_id,formation_energy\n" + labels)
    excluded = set().union(*tests.values())

    assert main(["ssl-prepare", "--data", str(root), "--protocol", "inductive", "--no-crystal-systems"]) == 0
    split = json.loads((root / "SSL" / "ssl_split.json").read_text())
    assert split["protocol"] == "inductive" and set(split["excluded"]) == excluded
    tiny = [a for s in TINY_SETS for a in ("--set", s)]
    tiny += [a for n in range(1, 7) for a in ("--set", f"{n}:batch_size=32")]
    common = ["--data", str(root), "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main(["ssl-train-all", *common, "--epochs-scale", "0.05", "--probe-every", "1", *tiny]) == 0
    assert main(["ssl-export", "--data", str(root), "--device", "cpu", "--to", str(tmp_path / "re")]) == 0
    assert main(["ssl-assemble", "--data", str(root)]) == 0
    assert main(["ssl-pretext-table", "--data", str(root), "--to", str(tmp_path / "table")]) == 0
    info = json.loads((root / "SSL" / A.INFO_FILE).read_text())
    assert info["ssl_split"]["protocol"] == "inductive" and info["run"]["protocol"] == "inductive"
    assert info["ssl_split"]["sizes"]["excluded"] == len(excluded)
    metrics = json.loads((root / "SSL" / "block1_element_matrix" / "metrics.json").read_text())
    assert metrics["probes"][0]["epoch"] == 0 and "formation_energy" in metrics["probes"][-1]["targets"]
    # the random-init control: same encoders, initial weights, assembled like a trained run
    control = root / "SSL" / "random_init_seed7"
    assert main(["ssl-export", "--data", str(root), "--init", "random", "--seed", "7", "--device", "cpu"]) == 0
    assert main(["ssl-assemble", "--data", str(root), "--out", str(control)]) == 0
    control_info = json.loads((control / A.INFO_FILE).read_text())
    assert control_info["init"] == ["random (no SSL training)"]
    assert control_info["ssl_split"]["protocol"] == "inductive"
    assert not np.array_equal(np.load(control / A.FEATURES_FILE), np.load(root / "SSL" / A.FEATURES_FILE))
    # a region pack made from this directory trains without the exclusion asked for again
    assert main(["ssl-pack", "--data", str(root), "--out", str(tmp_path / "pack"), "--blocks", "1"]) == 0
    assert main(["ssl-train-all", "--data", str(tmp_path / "pack"), "--blocks", "1", "--device", "cpu",
                 "--threads", "1", "--no-progress", "--epochs-scale", "0.05", "--no-table", *tiny]) == 0


def test_train_all_with_the_crossmodal_objective(tmp_path_factory, tmp_path):
    """--objective crossmodal: every block gets the cross-modal task (descriptors made and cached once),
    the checkpoints re-export, and the run record says which objective it was."""
    from ftcp.cli import main

    root = synthetic_root_cached(tmp_path_factory.mktemp("crossmodal_root"))
    out = tmp_path / "ssl"
    tiny = [a for s in TINY_SETS for a in ("--set", s)]
    tiny += [a for n in range(1, 7) for a in ("--set", f"{n}:batch_size=32")]
    assert main(["ssl-train-all", "--data", str(root), "--out", str(out), "--device", "cpu", "--threads", "1",
                 "--no-progress", "--epochs-scale", "0.05", "--objective", "crossmodal", "--no-table", *tiny]) == 0
    assert (out / "crossmodal_targets.npz").exists()
    for block in L.BLOCKS:
        metrics = json.loads((out / block.dirname / "metrics.json").read_text())
        assert "cross_modal" in metrics["test"] and metrics["test"]["cross_modal"]["metric"] == "nmse"
    assert json.loads((out / A.RUN_FILE).read_text())["objective"] == "crossmodal"
    assert main(["ssl-export", "--data", str(root), "--out", str(out), "--device", "cpu", "--block", "6",
                 "--to", str(tmp_path / "re")]) == 0
