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
    # every subcommand declares --data through io_utils.add_data_argument: `ftcp --data X cmd` and `ftcp cmd --data X`
    from ftcp import cli
    from ftcp.ssl import cli as ssl_cli

    seen = {}
    monkeypatch.setattr(ssl_cli, "cmd_assemble", lambda a: seen.setdefault("data", a.data) and 0)
    assert cli.build_parser().parse_args(["--data", str(tmp_path), "ssl-assemble"]).data == str(tmp_path)
    cli.main(["--data", str(tmp_path), "ssl-assemble"])
    assert seen["data"] == str(tmp_path)
    seen.clear()
    cli.main(["--data", "elsewhere", "ssl-assemble", "--data", str(tmp_path)])   # the subcommand's own wins
    assert seen["data"] == str(tmp_path)


def _subcommands():
    parser = cli.build_parser()
    return parser, parser._subparsers._group_actions[0].choices


def test_every_option_has_help_text_and_one_metavar_style():
    """Every option of every command says what it does; metavars are upper case (DIR, FILE, N, ...)."""
    import re

    parser, commands = _subcommands()
    missing, bad_metavar = [], []
    for name, sub in [("ftcp", parser), *commands.items()]:
        for action in sub._actions:
            if not action.option_strings or action.help == "==SUPPRESS==":
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {action.option_strings[0]}")
            metavar = action.metavar
            takes_value = action.nargs != 0 and action.choices is None
            if (takes_value and not getattr(sub, "_passthrough", False) and metavar is None) or (
                    isinstance(metavar, str) and not re.fullmatch(r"[A-Z0-9_:=./|,\[\]-]+", metavar)):
                bad_metavar.append(f"{name} {action.option_strings[0]} {metavar}")
    assert missing == [] and bad_metavar == []


def test_every_device_option_defaults_to_auto():
    parser, commands = _subcommands()
    found = {name: a.default for name, sub in commands.items() for a in sub._actions if "--device" in a.option_strings}
    assert {"ssl-train", "ssl-train-all", "ssl-export", "embed", "demo", "reproduce"} <= set(found)
    assert set(found.values()) == {"auto"}


def test_data_is_declared_once_per_command_through_io_utils(tmp_path):
    """`ftcp --data X cmd` and `ftcp cmd --data X` both reach every command that takes a data root."""
    parser, commands = _subcommands()
    checked = []
    for name, sub in commands.items():
        required = any(a.required or (not a.option_strings and a.nargs not in ("?", "*")) for a in sub._actions)
        if any("--data" in a.option_strings for a in sub._actions) and not required:
            checked.append(name)
            before = parser.parse_known_args(["--data", str(tmp_path), name])[0]
            after = parser.parse_known_args([name, "--data", str(tmp_path)])[0]
            assert before.data == after.data == str(tmp_path), name
    assert {"info", "split", "ssl-prepare", "ssl-train-all", "ssl-assemble", "ssl-export", "probe"} <= set(checked)


def test_training_flags_are_generated_from_train_config():
    from dataclasses import fields

    from ftcp.ssl.config import TrainConfig

    _, commands = _subcommands()
    dests = {a.dest for a in commands["ssl-train"]._actions}
    assert {f.name for f in fields(TrainConfig)} <= dests
    args = commands["ssl-train"].parse_args(["--block", "3", "--restart", "--no-bucket", "--model", "layers=2",
                                             "--epochs", "4"])
    from ftcp.ssl.blocks import load_block
    from ftcp.ssl.options import train_config

    cfg = train_config(load_block(3), args)
    assert (cfg.resume, cfg.bucket, cfg.model, cfg.epochs, cfg.batch_size) == (False, False, {"layers": 2}, 4, 32)


def test_scenario_commands_hand_their_arguments_to_the_scenario(monkeypatch, capsys, tmp_path):
    from ftcp.evaluation import cli as ecli

    seen = {}

    def fake(argv, prog):
        seen.update(argv=argv, prog=prog)
        return 0

    monkeypatch.setattr(ecli, "scenario_main", lambda n: fake)
    assert cli.main(["--data", str(tmp_path), "scenario2", "--quick", "--seed", "3"]) == 0
    assert seen == {"argv": ["--data", str(tmp_path), "--quick", "--seed", "3"], "prog": "ftcp scenario2"}
    with pytest.raises(SystemExit):
        cli.main(["info", "--no-such-option"])
