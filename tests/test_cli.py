"""swiftlib.cli: every tool answers a user error in one stderr line with exit status 2, a traceback only
with --debug or SWIFTLIB_DEBUG, bugs still raise, Ctrl-C exits 130, parser errors and warnings are one line.

References: the exit statuses are the shell conventions (2: usage error, 130: SIGINT); the messages are
those the test raises itself.
"""
import errno
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from swiftlib.cli import USER_ERRORS, ArgumentParser, debug_requested, one_line, run

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
