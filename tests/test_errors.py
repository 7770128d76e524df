"""The error boundary (ftcp.errors): expected errors are one line, Ctrl-C is 130, a bug keeps its traceback."""
from __future__ import annotations

import errno
import gzip
import zlib

import pytest

from ftcp import errors as E


def _raises(exc):
    def main(argv):
        raise exc
    return main


@pytest.fixture(autouse=True)
def no_traceback_env(monkeypatch):
    # set (not deleted), so that monkeypatch also undoes the "1" that `--debug` puts there
    monkeypatch.setenv(E.TRACEBACK_ENV, "")


@pytest.mark.parametrize("exc,expected", [
    (E.UserError("data.csv holds no crystals"), "data.csv holds no crystals"),
    (ValueError("phase must be one of ..."), "phase must be one of ..."),
    (KeyError("split 'random_5' not found under Data"), "split 'random_5' not found under Data"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "Data/x.npy"),
     "Data/x.npy: No such file or directory"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "afile/.build"), "afile/.build: Not a directory"),
    (OSError(errno.EROFS, "Read-only file system", "ro/.build"), "ro/.build: Read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "a", None, "b"), "a -> b: Permission denied"),
    (gzip.BadGzipFile("Not a gzipped file (b'ab')"), "Not a gzipped file (b'ab')"),
    (EOFError("Compressed file ended before the end-of-stream marker was reached"), "truncated"),
    (zlib.error("invalid stored block lengths"), "corrupt compressed data"),
])
def test_expected_errors_are_one_line(exc, expected, capsys):
    assert E.run_main(_raises(exc), [], prog="prog") == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("prog: error: ") and expected in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), AttributeError("no attribute x"),
                                 KeyError("column_name"), IndexError("list index out of range"),
                                 RuntimeError("internal error")])
def test_a_bug_keeps_its_traceback(bug):
    with pytest.raises(type(bug)):
        E.run_main(_raises(bug), [], prog="prog")


def test_debug_flag_and_env_show_the_traceback_of_expected_errors(monkeypatch):
    seen = []

    def main(argv):
        seen.append(argv)
        raise E.UserError("bad input")

    with pytest.raises(E.UserError):
        E.run_main(main, ["build", "--debug", "x.csv"], prog="prog")
    assert seen == [["build", "x.csv"]]            # --debug is taken off before the script parses argv
    monkeypatch.setenv(E.TRACEBACK_ENV, "1")
    with pytest.raises(E.UserError):
        E.run_main(main, ["build"], prog="prog")


def test_interrupt_is_one_line_and_130(capsys):
    assert E.run_main(_raises(KeyboardInterrupt()), [], prog="ftcp build") == E.INTERRUPTED_EXIT == 130
    err = capsys.readouterr().err
    assert err == "ftcp build: interrupted; run the same command again to resume\n"


def test_exit_status_of_main(capsys):
    assert E.run_main(lambda argv: 3, []) == 3
    assert E.run_main(lambda argv: {"status": "finished"}, []) == 0     # block scripts return their metrics
    assert E.run_main(lambda argv: None, []) == 0


def test_strip_debug_flag():
    assert E.strip_debug_flag(["--debug", "a", "--", "--debug"]) == (["a", "--", "--debug"], True)
    assert E.strip_debug_flag(["a"]) == (["a"], False)
