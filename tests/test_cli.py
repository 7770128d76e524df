"""The ``ftcp`` command line: registry, --help everywhere, data-root resolution, build/split/info."""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftcp import cli
from ftcp.io_utils import resolve_data_root

REPO = Path(__file__).resolve().parents[1]


def run_main(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_python_dash_m_help_lists_commands():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "ftcp", "--help"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for cmd in ("build", "split", "info"):
        assert cmd in proc.stdout


def test_every_command_has_help(capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"build", "split", "info"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            cli.main([name, "--help"])
        assert exc.value.code == 0
        assert f"usage: ftcp {name}" in capsys.readouterr().out


def test_registry_takes_new_modules(monkeypatch, capsys):
    mod = types.ModuleType("ftcp_fake_cmd")

    def register_cli(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.set_defaults(func=lambda args: print("hello from the registry") or 0)

    mod.register_cli = register_cli
    monkeypatch.setitem(sys.modules, "ftcp_fake_cmd", mod)
    monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ["ftcp_fake_cmd"])
    rc, out, _ = run_main(["hello"], capsys)
    assert rc == 0 and "hello from the registry" in out


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("CRYS_REP_DATA", raising=False)
    assert resolve_data_root() == Path("Data")
    monkeypatch.setenv("CRYS_REP_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path
    assert resolve_data_root("elsewhere") == Path("elsewhere")
    parser = cli.build_parser()
    assert parser.parse_args(["--data", "A", "split"]).data == "A"
    assert parser.parse_args(["split", "--data", "B"]).data == "B"
    assert parser.parse_args(["split"]).data is None


def _small_csv(path: Path) -> Path:
    from test_store import bad_structures, cif, good_rows

    rows = good_rows(n_repeat=3)
    rows.append({"material_id": "bad-5el", "cif": cif(bad_structures()["too_many_elements"]),
                 "formation_energy_per_atom": 0.0, "band_gap": 0.0, "volume": 1.0})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_build_split_info_end_to_end(tmp_path, monkeypatch, capsys):
    src = _small_csv(tmp_path / "in.csv")
    root = tmp_path / "store"
    monkeypatch.setenv("CRYS_REP_DATA", str(root))       # no --data: the environment decides
    rc, out, _ = run_main(["build", src, "--workers", "1", "--no-progress", "--chunk-size", "5"], capsys)
    assert rc == 0
    assert "accepted" in out and "too_many_elements" in out and "25" in out
    assert (root / "manifest.json").exists() and len(np.load(root / "material_ids.npy")) == 24

    rc, out, err = run_main(["build", src, "--workers", "1", "--no-progress"], capsys)
    assert rc == 1 and "already holds a store" in err

    rc, out, _ = run_main(["split", "--seed", "1"], capsys)
    assert rc == 0 and "random_10" in out and "group" in out
    rc, out, _ = run_main(["--data", root, "info", "--verify"], capsys)
    assert rc == 0 and "all match" in out and "random_40" in out and "too_many_elements" in out

    # a changed file is caught by --verify
    with open(root / "labels.csv", "a") as fh:
        fh.write("x,y,1,2\n")
    rc, out, _ = run_main(["info", "--data", root, "--verify"], capsys)
    assert rc == 1 and "MISMATCH" in out and "labels.csv" in out


def test_missing_dataset_is_one_clear_line(tmp_path, capsys):
    rc, _, err = run_main(["--data", tmp_path / "nothing", "info"], capsys)
    assert rc == 1 and "no FTCP dataset" in err and "Traceback" not in err


def test_top_level_data_reaches_a_subcommand_with_its_own_data_option(tmp_path, monkeypatch):
    # ssl-* subcommands declare --data with default None; `ftcp --data X ssl-...` must still use X
    from ftcp import cli
    from ftcp.ssl import cli as ssl_cli

    seen = {}
    monkeypatch.setattr(ssl_cli, "cmd_assemble", lambda a: seen.setdefault("data", a.data) and 0)
    assert cli.build_parser().parse_args(["--data", str(tmp_path), "ssl-assemble"]).data is None  # argparse alone
    cli.main(["--data", str(tmp_path), "ssl-assemble"])
    assert seen["data"] == str(tmp_path)
    seen.clear()
    cli.main(["--data", "elsewhere", "ssl-assemble", "--data", str(tmp_path)])   # the subcommand's own wins
    assert seen["data"] == str(tmp_path)
