"""How every ``python -m swiftlib.<tool>`` answers a mistake: one line on stderr, exit status 2.

The library raises ValueError, FileNotFoundError (and the other errors below) with a message that
names the problem; a command-line tool turns them into ``error: <message>`` and exits 2, with no
traceback. ``--debug`` on the command line (or ``SWIFTLIB_DEBUG=1`` in the environment) shows the
traceback instead. Anything else (a bug) still raises with its traceback.

No tensors here: argument strings in, an exit status and one stderr line out.

The same holds for the argument parser (:class:`ArgumentParser`: a bad or missing value is one
``error:`` line, not a usage block) and for warnings while the tool runs (one ``warning:`` line each,
not Python's two-line ``file:line: UserWarning`` form).

    >>> from swiftlib.cli import ArgumentParser, run
    >>> def main(argv):
    ...     args = ArgumentParser(prog="python -m swiftlib.mytool").parse_args(argv)
    ...     ...
    >>> if __name__ == "__main__":
    ...     run(main, prog="python -m swiftlib.mytool")
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = ["USER_ERRORS", "ArgumentParser", "debug_requested", "one_line", "run"]

#: Errors that mean "the input or the machine is not as needed" (bad values, missing, truncated or
#: unwritable files, a full disk, a loss that turned nan): answered in one line. OSError covers
#: FileNotFoundError, PermissionError, IsADirectoryError and a full disk (ENOSPC); EOFError a file
#: that ends early.
USER_ERRORS = (ValueError, TypeError, OSError, EOFError, FloatingPointError)


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is among ``argv`` or ``SWIFTLIB_DEBUG`` is set to a non-empty, non-"0" value."""
    return "--debug" in argv or os.environ.get("SWIFTLIB_DEBUG", "0") not in ("", "0")


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``prog: error: <message> (see --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


@contextlib.contextmanager
def _one_line_warnings(prog: str) -> Iterator[None]:
    """While inside: every warning shown is printed as ``prog: warning: <message>`` (one line)."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {one_line(message)}", file=sys.stderr if file is None else file)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None, prog: str = "swiftlib") -> Any:
    """``main(argv)`` with user errors answered as ``{prog}: error: <message>`` on stderr and exit status 2.

    ``--debug`` is removed from ``argv`` before ``main`` sees it. A KeyboardInterrupt exits with 130
    after one line (whatever ``main`` saved on the way out stays saved). Warnings are one line each.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    with _one_line_warnings(prog):
        try:
            return main(argv)
        except USER_ERRORS as e:
            if debug:
                raise
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            if debug:
                raise
            print(f"{prog}: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
