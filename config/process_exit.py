"""Exit a process that used a Temporal client without the PyGILState_Release abort at teardown.

The SDK's Rust runtime keeps native threads that can call into Python while CPython finalizes
(temporalio/sdk-python#300), which aborts the process with exit code 134 about one run in two for
short-lived commands. Everything worth keeping is flushed first, then `os._exit` skips the
interpreter teardown where the race lives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def exit_now(code: int) -> None:
    """Flush stdio and logging, then end the process with `code`, skipping finalization."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe has nothing left to flush.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def exits_cleanly(main: Callable[P, R]) -> Callable[P, None]:
    """Wrap a command's `main` so that its exit code survives and teardown never aborts."""

    @wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        code = 0
        try:
            main(*args, **kwargs)
        except SystemExit as stop:
            code = _code_of(stop)
        except KeyboardInterrupt:
            code = 130
        except BaseException as error:
            report_crash(error)
            code = 1
        exit_now(code)

    return wrapper


def report_crash(error: BaseException) -> None:
    """One line for the user; the traceback goes to a private file, never to the terminal."""
    import tempfile
    import traceback

    try:
        handle, path = tempfile.mkstemp(prefix="trialist-crash-", suffix=".log")
        with os.fdopen(handle, "w") as file:  # mkstemp makes it 0600: tracebacks can hold data
            traceback.print_exception(error, file=file)
        where = f"; details in {path}"
    except OSError:
        where = ""
    print(f"error: unexpected {type(error).__name__}, a bug{where}", file=sys.stderr)


def _code_of(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1
