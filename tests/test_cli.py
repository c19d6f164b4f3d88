"""swiftlib.cli: every tool answers a user error in one stderr line with exit status 2, a traceback only
with --debug or SWIFTLIB_DEBUG, bugs still raise, Ctrl-C exits 130, parser errors and warnings are one line;
--expect bounds are parsed, judged, refused when unknown and printed the same way by every tool.

References: the exit statuses are the shell conventions (2: usage error, 130: SIGINT); the messages are
those the test raises itself; the expectation verdicts are worked out by hand from the numbers given.
"""
import argparse
import errno
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from swiftlib.cli import (USER_ERRORS, ArgumentParser, Expectation, ExpectationSyntaxError, add_expect_argument,
                          check_expectations, debug_requested, one_line, parse_expectation, print_expectations,
                          require_known, run)

ROOT = Path(__file__).resolve().parent.parent


def _raising(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("exc", [ValueError("bad --lr nan\nsecond line"), FileNotFoundError("no such file x.pth"),
                                 OSError(errno.ENOSPC, "no space left"), FloatingPointError("loss is nan"),
                                 TypeError("epochs must be an int"), EOFError("file ends early")])
def test_user_errors_are_one_line_and_exit_2(exc, capsys, monkeypatch):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        run(_raising(exc), [], prog="tool")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool: error: ") and "Traceback" not in err
    assert " ".join(str(exc).split()) in err  # the message, with its newlines folded


def test_debug_flag_or_environment_shows_the_traceback(monkeypatch):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)
    seen = []
    with pytest.raises(ValueError, match="bad"):
        run(lambda argv: seen.append(argv) or _raising(ValueError("bad"))(argv), ["--x", "--debug"], prog="tool")
    assert seen == [["--x"]]  # --debug is not passed on
    monkeypatch.setenv("SWIFTLIB_DEBUG", "1")
    with pytest.raises(ValueError):
        run(_raising(ValueError("bad")), [], prog="tool")
    assert debug_requested([])
    monkeypatch.setenv("SWIFTLIB_DEBUG", "0")
    assert not debug_requested(["--x"])


def test_bugs_still_raise_with_their_traceback(monkeypatch):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)
    assert not issubclass(KeyError, USER_ERRORS) and not issubclass(RuntimeError, USER_ERRORS)
    with pytest.raises(KeyError):
        run(_raising(KeyError("x")), [], prog="tool")


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        run(_raising(KeyboardInterrupt()), [], prog="tool")
    assert info.value.code == 130 and capsys.readouterr().err == "tool: interrupted\n"


def test_return_value_and_argv_pass_through():
    assert run(lambda argv: argv, ["a", "b"], prog="tool") == ["a", "b"]


def test_parser_errors_are_one_line(capsys):
    p = ArgumentParser(prog="tool")
    p.add_argument("--epochs", type=int)
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--epochs", "three"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("tool: error: ") and "--epochs" in err and "three" in err and "usage" not in err


def test_warnings_are_one_line_while_running_and_restored_after(capsys):
    before = warnings.showwarning

    def main(argv):
        warnings.warn("first line\nsecond line", UserWarning)
        return 0

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        run(main, [], prog="tool")
    assert capsys.readouterr().err == "tool: warning: first line second line\n"
    assert warnings.showwarning is before
    assert one_line(" a\n  b\tc ") == "a b c"


SCRIPT = textwrap.dedent("""
    import sys
    from swiftlib.cli import run
    def main(argv):
        raise ValueError("--img-size 16 is below the minimum")
    run(main, prog="python -m tool")
""")


def test_a_real_process_exits_2_with_one_line(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(SCRIPT)
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if "cpp_extension" not in line]  # torch's import notice
    assert r.returncode == 2 and lines == ["python -m tool: error: --img-size 16 is below the minimum"]
    r = subprocess.run([sys.executable, str(script), "--debug"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr


# --------------------------------------------------------------------------- --expect
@pytest.mark.parametrize("text,expected", [
    ("ratio@3136<=0.8", Expectation("ratio@3136", "<=", 0.8)),
    ("  exponent_additive >= 1e-3 ", Expectation("exponent_additive", ">=", 0.001)),
    ("a_over_b@16:min<=-2", Expectation("a_over_b@16:min", "<=", -2.0)),
])
def test_parse_expectation_reads_name_operator_number(text, expected):
    assert parse_expectation(text) == expected


@pytest.mark.parametrize("bad", ["ratio", "ratio<0.8", "ratio=0.8", "ratio<=abc", "<=0.8", "ratio>=nan",
                                 "ratio<=inf", "ratio <= 0.8 extra", ""])
def test_parse_expectation_refuses_anything_else(bad):
    with pytest.raises(ExpectationSyntaxError, match="NAME<=VALUE or NAME>=VALUE") as info:
        parse_expectation(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, argparse.ArgumentTypeError)


def test_check_expectations_judges_each_bound_in_order():
    bounds = [parse_expectation(t) for t in ("a<=0.8", "b<=1", "b>=2", "a>=0.5", "c<=1")]
    records = check_expectations(bounds, {"a": 0.5, "b": 2.0})
    assert records == [  # 0.5 <= 0.8 holds, 2 <= 1 does not, the bounds themselves are included, c is unknown
        {"name": "a", "op": "<=", "value": 0.8, "actual": 0.5, "met": True},
        {"name": "b", "op": "<=", "value": 1.0, "actual": 2.0, "met": False},
        {"name": "b", "op": ">=", "value": 2.0, "actual": 2.0, "met": True},
        {"name": "a", "op": ">=", "value": 0.5, "actual": 0.5, "met": True},
        {"name": "c", "op": "<=", "value": 1.0, "actual": None, "met": None},
    ]
    assert check_expectations([], {"a": 1.0}) == []


def test_require_known_names_the_unknown_and_the_choices():
    bounds = [parse_expectation("ratio_non_cnst<=0.8"), parse_expectation("tile>=0"), parse_expectation("zzz<=1")]
    with pytest.raises(ValueError) as info:
        require_known(bounds, ["ratio_non_const", "tile"])
    msg = str(info.value)
    assert msg.startswith("--expect names ['ratio_non_cnst', 'zzz']") and "did you mean ratio_non_const?" in msg
    assert "choose from ['ratio_non_const', 'tile']" in msg
    require_known(bounds[1:2], {"tile": 0.0})  # every name known: no error


def test_print_expectations_prints_one_line_per_judged_bound(capsys):
    records = check_expectations([parse_expectation("a<=0.8"), parse_expectation("a>=0.8"),
                                  parse_expectation("c<=1")], {"a": 0.51234})
    print_expectations(records)
    assert capsys.readouterr().out.splitlines() == ["expect a <= 0.8: measured 0.5123: met",
                                                    "expect a >= 0.8: measured 0.5123: NOT met"]


def test_expect_option_is_repeatable_and_a_bad_one_is_one_line(capsys):
    p = ArgumentParser(prog="tool")
    add_expect_argument(p, "figures: a, b")
    assert p.parse_args([]).expect == []
    got = p.parse_args(["--expect", "a<=1", "--expect", "b >= 2"]).expect
    assert got == [Expectation("a", "<=", 1.0), Expectation("b", ">=", 2.0)]
    with pytest.raises(SystemExit) as info:
        p.parse_args(["--expect", "a<1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "--expect" in err and "'a<1'" in err
    p.print_help()
    assert "figures: a, b" in " ".join(capsys.readouterr().out.split())


def test_a_bad_expectation_inside_a_tool_is_a_user_error(capsys, monkeypatch):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        run(lambda argv: parse_expectation(argv[0]), ["x<1"], prog="tool")
    assert info.value.code == 2 and capsys.readouterr().err.startswith("tool: error: expected NAME<=VALUE")
