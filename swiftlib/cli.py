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

Expectations (``--expect 'NAME<=VALUE'`` or ``'NAME>=VALUE'``, repeatable) are how a tool takes a
bound on a figure it computes (a latency ratio, an op count) without holding a target of its own:
:func:`add_expect_argument` adds the option, :func:`parse_expectation` reads one (an
:class:`Expectation`), :func:`require_known` refuses names the run does not compute,
:func:`check_expectations` judges them against the computed figures (records
``{"name", "op", "value", "actual", "met"}`` for the results JSON) and :func:`print_expectations`
prints one ``expect ...: met`` / ``NOT met`` line each.

    >>> bounds = [parse_expectation("ratio@3136<=0.8")]
    >>> check_expectations(bounds, {"ratio@3136": 0.72})
    [{'name': 'ratio@3136', 'op': '<=', 'value': 0.8, 'actual': 0.72, 'met': True}]
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn

__all__ = ["USER_ERRORS", "ArgumentParser", "add_debug_argument", "debug_requested", "one_line", "run", "Expectation",
           "ExpectationSyntaxError", "parse_expectation", "add_expect_argument", "require_known",
           "check_expectations", "print_expectations"]

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


# =========================================================================== --expect
_EXPECTATION = re.compile(r"^\s*(?P<name>\S+?)\s*(?P<op><=|>=)\s*(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class Expectation:
    """A bound on a figure a run computes: ``name <= value`` or ``name >= value`` (``op``)."""
    name: str
    op: str
    value: float

    def holds(self, actual: float) -> bool:
        """Whether the computed figure ``actual`` satisfies the bound."""
        return bool(actual <= self.value if self.op == "<=" else actual >= self.value)


class ExpectationSyntaxError(argparse.ArgumentTypeError, ValueError):
    """Text that is not ``NAME<=VALUE`` / ``NAME>=VALUE``: argparse shows the message as it is, and
    :func:`run` answers it in one line like any ValueError."""


def parse_expectation(text: str) -> Expectation:
    """``"NAME<=VALUE"`` or ``"NAME>=VALUE"`` (spaces allowed around the operator, VALUE a finite
    number) -> :class:`Expectation`; anything else is an :class:`ExpectationSyntaxError`. The
    argparse ``type`` of ``--expect``."""
    m = _EXPECTATION.match(text)
    try:
        value = float(m["value"]) if m else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ExpectationSyntaxError(f"expected NAME<=VALUE or NAME>=VALUE with a finite number, e.g. "
                                     f"'ratio@3136<=0.8', got {text!r}")
    return Expectation(m["name"], m["op"], value)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """List ``--debug`` in ``parser``'s help; :func:`run` acts on it and removes it before parsing."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also: SWIFTLIB_DEBUG=1)")


def add_expect_argument(parser: argparse.ArgumentParser, figures: str) -> None:
    """Add the repeatable ``--expect 'NAME<=VALUE'`` option to ``parser``; ``figures`` says which names
    the command computes (it ends the option's help)."""
    parser.add_argument("--expect", type=parse_expectation, action="append", default=[], metavar="'NAME<=VALUE'",
                        help="repeatable; NAME<=VALUE or NAME>=VALUE on a figure the run computes: prints met / "
                             "NOT met and records it under 'expectations' in the results JSON (the exit status "
                             f"does not change). {figures}")


def require_known(expectations: Sequence[Expectation], names: Collection[str]) -> None:
    """A ValueError naming every expectation whose name is not among ``names`` (with close matches)."""
    unknown = [e.name for e in expectations if e.name not in names]
    if not unknown:
        return
    close = dict.fromkeys(c for name in unknown for c in difflib.get_close_matches(name, list(names), n=3, cutoff=0.6))
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"--expect names {unknown} are not computed here{hint}; choose from {sorted(names)}")


def check_expectations(expectations: Sequence[Expectation], values: dict[str, float]) -> list[dict[str, Any]]:
    """One record per expectation, in order: ``{"name", "op", "value", "actual", "met"}`` with the
    computed figure ``values[name]`` and whether the bound holds; ``actual`` and ``met`` are None for a
    name missing from ``values`` (:func:`require_known` refuses those)."""
    records = []
    for e in expectations:
        actual = values.get(e.name)
        met = None if actual is None else e.holds(actual)
        records.append({"name": e.name, "op": e.op, "value": e.value, "actual": actual, "met": met})
    return records


def print_expectations(records: Sequence[dict[str, Any]], file: IO[str] | None = None) -> None:
    """``expect NAME <= VALUE: measured ACTUAL: met`` (or ``NOT met``), one line per judged record."""
    for r in records:
        if r["met"] is not None:
            print(f"expect {r['name']} {r['op']} {r['value']:g}: measured {r['actual']:.4g}: "
                  f"{'met' if r['met'] else 'NOT met'}", file=file)
