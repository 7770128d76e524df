"""One error boundary for every command: ``python -m ftcp ...``, the SSL block scripts and the scenario scripts.

An *expected* error -- bad input, a missing or unreadable file, an OS error on a user's path (not a folder,
read-only file system, no permission, disk full), a truncated or corrupt data file or checkpoint -- is shown as
one line, ``<prog>: error: <what, naming the file>``, with exit status 1.  Ctrl-C is one line saying the work
was interrupted and that the same command resumes it, exit status 130.  Anything else is a bug and keeps its
traceback.  ``--debug`` (anywhere on the command line) or ``FTCP_TRACEBACK=1`` shows the traceback always.

Library code raises ``UserError`` (or a standard exception of the expected kinds below) for problems the user
can fix; it never calls ``sys.exit``.  Scripts end with::

    if __name__ == "__main__":
        sys.exit(run_main(main))
"""
from __future__ import annotations

import os
import pickle
import sys
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

#: Environment variable that shows tracebacks of expected errors too (``--debug`` sets it for child processes).
TRACEBACK_ENV = "FTCP_TRACEBACK"
DEBUG_FLAG = "--debug"
#: Exit status of an interrupted command (128 + SIGINT, as a shell reports it).
INTERRUPTED_EXIT = 130
INTERRUPTED_MESSAGE = "interrupted; run the same command again to resume"


class UserError(ValueError):
    """Bad input or a state the user can fix.  The message is complete: it says what is wrong, naming the file,
    and (where there is one) what to do.  A ``ValueError``, so callers that catch bad values still catch it."""


def _os_error_message(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return str(exc) or type(exc).__name__
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{where}: {what}"


def expected_message(exc: BaseException) -> str | None:
    """The one-line message of an expected error; ``None`` when ``exc`` is a bug (keep its traceback).

    Expected: ``UserError`` and the other ``ValueError``s and ``KeyError``s (with a message, not a bare key)
    the library raises for bad input,
    every ``OSError`` (missing file, not a folder, read-only file system, permission, bad gzip file, ...),
    ``EOFError`` and ``zlib.error`` (truncated or corrupt compressed data), ``pickle.UnpicklingError``.
    """
    if isinstance(exc, KeyError):
        # the library's KeyErrors carry a sentence ("split 'x' not found ..."); a bare key is a lookup bug
        arg = exc.args[0] if len(exc.args) == 1 else None
        return arg if isinstance(arg, str) and " " in arg.strip() else None
    if isinstance(exc, OSError):
        return _os_error_message(exc)
    if isinstance(exc, EOFError):
        return f"unexpected end of data, the file is truncated ({exc or 'EOFError'})"
    if isinstance(exc, zlib.error):
        return f"corrupt compressed data ({exc})"
    if isinstance(exc, pickle.UnpicklingError):
        return f"unreadable pickled data ({exc})"
    if isinstance(exc, ValueError):
        return str(exc) or type(exc).__name__
    return None


def traceback_wanted() -> bool:
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def strip_debug_flag(argv) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (looked for before a ``--`` separator), and whether it was there."""
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != DEBUG_FLAG]
    return kept + argv[end:], len(kept) != end


def add_debug_argument(parser) -> None:
    """Document ``--debug`` in a parser's help (``run_main`` takes it off the command line before parsing)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the full traceback of any error (same as {TRACEBACK_ENV}=1)")


def _leave_quietly_on_broken_pipe() -> int:
    # the reader of our output went away (`ftcp info | head`): nothing to report to anyone
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def guarded_call(func: Callable, *args, prog: str) -> int:
    """``func(*args)`` inside the error boundary: its exit status (0 for a non-integer result), 1 after an
    expected error, 130 after Ctrl-C.  A bug (or any error under ``--debug``) propagates with its traceback."""
    try:
        result = func(*args)
    except KeyboardInterrupt:
        if traceback_wanted():
            traceback.print_exc()
        _print_line(f"{prog}: {INTERRUPTED_MESSAGE}")
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        return _leave_quietly_on_broken_pipe()
    except Exception as exc:  # noqa: BLE001 - classified: a bug is re-raised untouched
        message = expected_message(exc)
        if message is None or traceback_wanted():
            raise
        _print_line(f"{prog}: error: {message}")
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _print_line(text: str) -> None:
    try:
        sys.stdout.flush()   # what the command printed so far comes before the error line
    except (OSError, ValueError):
        pass
    print(text, file=sys.stderr, flush=True)


def run_main(main: Callable, argv=None, prog: str | None = None) -> int:
    """Run a script's ``main(argv)`` inside the error boundary and return its exit status.

    ``argv`` defaults to ``sys.argv[1:]``; ``--debug`` is taken off it (and sets ``FTCP_TRACEBACK=1``, so child
    processes show tracebacks too).  ``prog`` defaults to the script's file name.
    """
    argv, debug = strip_debug_flag(sys.argv[1:] if argv is None else argv)
    if debug:
        os.environ[TRACEBACK_ENV] = "1"
    if prog is None:
        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "ftcp"
    return guarded_call(main, argv, prog=prog)


__all__ = ["UserError", "expected_message", "guarded_call", "run_main", "strip_debug_flag", "add_debug_argument",
           "traceback_wanted", "INTERRUPTED_EXIT", "TRACEBACK_ENV"]
