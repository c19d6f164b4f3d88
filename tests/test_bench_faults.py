"""python -m swiftlib.bench answers every bad flag in one line: exit status 2, one ``error:`` line on
stderr naming the flag, no traceback, and nothing measured first; a library error during the run is
one line too, with the traceback only under --debug.

References: the exit status is the shell's usage-error convention (2); the flags and their limits are
the command line's documented ones (``--help``); "nothing measured" is seen by replacing every
benchmark function with one that fails the test if called.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import swiftlib.bench.attention as bench_attention
import swiftlib.bench.data_loading as bench_data_loading
import swiftlib.bench.models as bench_models
import swiftlib.bench.train as bench_train
from swiftlib.bench.cli import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_work(monkeypatch):
    """Every benchmark the CLI can start fails the test if it is called."""
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)

    def measured(*args, **kwargs):
        raise AssertionError("a benchmark ran although a flag was bad")

    for module, name in ((bench_attention, "attention_sweep"), (bench_models, "models_benchmark"),
                         (bench_train, "train_throughput"), (bench_data_loading, "data_loading_throughput")):
        monkeypatch.setattr(module, name, measured)


def _refused(argv, capsys, *needles) -> str:
    """The one stderr line of a refused command line (exit 2, no traceback), holding every needle."""
    with pytest.raises(SystemExit) as done:
        cli(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


ATTENTION = [
    (["--n", "0,16"], "--n"), (["--n", "16,abc"], "--n"), (["--n", ""], "--n"),
    (["--d", "0"], "--d"), (["--d", "x"], "--d"), (["--d", "30", "--heads", "4"], "--heads 4"),
    (["--heads", "0"], "--heads"), (["--batch", "0"], "--batch"), (["--batch", "-3"], "--batch"),
    (["--rounds", "0"], "--rounds"),
    (["--min-run-time", "0"], "--min-run-time"), (["--min-run-time", "-1"], "--min-run-time"),
    (["--min-run-time", "nan"], "--min-run-time"), (["--min-run-time", "inf"], "--min-run-time"),
    (["--max-seconds-per-point", "0"], "--max-seconds-per-point"),
    (["--max-seconds-per-point", "inf"], "--max-seconds-per-point"),
    (["--threads", "0"], "--threads"), (["--threads", "two"], "--threads"),
    (["--variants", "self,linformer"], "--variants"), (["--variants", ","], "--variants"),
    (["--device", "tpu"], "--device"), (["--clock", "sundial"], "--clock"), (["--malloc", "fast"], "--malloc"),
    (["--resume"], "--resume"),
    (["--expect", "ratio<0.8"], "--expect"), (["--expect", "ratio<=abc"], "--expect"),
    (["--expect", "<=0.8"], "--expect"), (["--expect", "ratio>=nan"], "--expect"),
]
MODELS = [
    (["--model", "swiftformer_xxl"], "--model"), (["--img", "100"], "--img"), (["--img", "0"], "--img"),
    (["--img", "16"], "--img"), (["--batches", "0,1"], "--batches"), (["--peers", "resnet50"], "--peers"),
    (["--rounds", "0"], "--rounds"), (["--min-run-time", "0"], "--min-run-time"),
    (["--max-seconds", "-5"], "--max-seconds"), (["--max-seconds", "nan"], "--max-seconds"),
]
TRAIN = [
    (["--sizes", "16,64"], "--sizes"), (["--sizes", "0"], "--sizes"), (["--model", "resnet"], "--model"),
    (["--batch", "0"], "--batch"), (["--batch", "1", "--sizes", "32"], "--batch 1"), (["--steps", "0"], "--steps"),
    (["--rounds", "0"], "--rounds"), (["--workers", "-1"], "--workers"), (["--data-images", "3"], "--data-images"),
    (["--skip-data", "--skip-train"], "--skip-train"),
]


@pytest.mark.parametrize("cmd,args,flag", [("attention", *c) for c in ATTENTION] + [("models", *c) for c in MODELS]
                         + [("train", *c) for c in TRAIN])
def test_bad_flags_are_one_line_naming_the_flag_before_any_work(cmd, args, flag, no_work, capsys):
    _refused([cmd, *args], capsys, flag)


def test_device_cuda_without_a_gpu(no_work, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for cmd in ("attention", "models", "train"):
        _refused([cmd, "--device", "cuda"], capsys, "--device cuda", "torch.cuda.is_available() is False")


def test_json_must_be_a_file_in_an_existing_folder(no_work, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _refused(["attention", "--json", str(tmp_path)], capsys, "--json", "is a folder")
    _refused(["models", "--json", str(tmp_path / "missing" / "r.json")], capsys, "--json", "does not exist")
    _refused(["train", "--json", str(a_file / "r.json")], capsys, "--json", "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing created


def test_json_folder_not_writable(no_work, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder does not stop this user")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _refused(["attention", "--json", str(locked / "r.json")], capsys, "--json", "not writable")
    finally:
        locked.chmod(0o700)


def test_resume_with_json_is_accepted(no_work, tmp_path, capsys):
    """The flags are good: the run starts (and meets the stand-in benchmark, which fails the test)."""
    with pytest.raises(AssertionError, match="a benchmark ran"):
        cli(["attention", "--resume", "--json", str(tmp_path / "a.json")])


def test_a_library_error_during_the_run_is_one_line_and_debug_shows_it(monkeypatch, capsys):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)

    def sweep(*args, **kwargs):
        raise ValueError("the sweep could not run\nsecond line")

    monkeypatch.setattr(bench_attention, "attention_sweep", sweep)
    _refused(["attention", "--n", "16"], capsys, "the sweep could not run second line")
    with pytest.raises(ValueError, match="could not run"):
        cli(["attention", "--n", "16", "--debug"])


@pytest.mark.slow  # a fresh interpreter imports torch, timm and swiftlib
def test_python_m_swiftlib_bench_answers_in_one_line():
    r = subprocess.run([sys.executable, "-m", "swiftlib.bench", "attention", "--d", "30", "--heads", "4"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert errors == ["python -m swiftlib.bench: error: --d 30 is not divisible by --heads 4 "
                      "(each head gets D / heads channels) (see --help)"]
