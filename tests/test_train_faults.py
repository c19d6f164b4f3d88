"""swiftlib.train when things go wrong: bad flags answered in one line before any work, resumes of another
run or with changed settings, nan losses, a full disk, killed writes (stale temporary files, best.pth),
kill -9 at random moments, batches BatchNorm cannot train on. The recipes: tests/test_train_recipe.py.

References: exit status 2 and one ``error:`` line naming the flag (the CLI contract); checkpoints checked
with ``torch.isfinite`` and loaded with ``torch.load``; resumed runs against uninterrupted ones, tensor
for tensor.
"""
import dataclasses
import errno
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import write_image_folder
from test_train import _env  # noqa: F401  (autouse: a private cache, one torch thread)
from torch import nn

import swiftlib.train as T
from swiftlib.models import create_model
from swiftlib.train.cli import cli
from swiftlib.train.config import TrainConfig
from swiftlib.train.state import Checkpointer, TrainState

ROOT = Path(__file__).resolve().parent.parent
WNIDS = ["n01440764", "n02102040", "n02979186"]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("SWIFTLIB_DEBUG", raising=False)  # errors are answered, not raised


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 8 JPEGs per split: 24 training images, 3 steps of 8 an epoch."""
    return write_image_folder(tmp_path_factory.mktemp("tree"), WNIDS, 8)


def _kw(tree, out, **more):
    return {**dict(data="folder", data_dir=str(tree), model="swiftformer_xs", img_size=32, batch_size=8, epochs=1,
                   out=str(out), progress=False, seed=1), **more}


def _argv(tree, out, *more):
    return ["--data", "folder", "--data-dir", str(tree), "--img-size", "32", "--batch-size", "8", "--epochs", "1",
            "--out", str(out), "--no-progress", "--seed", "1", *more]


@pytest.fixture(scope="module")
def finished(tree, tmp_path_factory):
    """A finished 1-epoch run (last.pth, best.pth, metrics); tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    torch.set_num_threads(1)
    T.fit(**_kw(tree, out))
    return out


def _copy_run(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _one_error_line(capsys, *needles, alone=False) -> str:
    """The one ``error:`` line on stderr of a refused command (with every needle; no traceback). ``alone``:
    nothing else was printed either (refused before any work)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not alone or err.count("\n") == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _refused(argv, capsys, *needles, alone=False) -> str:
    with pytest.raises(SystemExit) as info:
        cli(argv)
    assert info.value.code == 2
    return _one_error_line(capsys, *needles, alone=alone)


# --------------------------------------------------------------------------- flags, before any work
@pytest.fixture
def no_work(monkeypatch):
    """Building a dataset or a model fails the test: the flag must be refused before that."""
    def forbidden(*a, **k):
        raise AssertionError("work started before the flags were checked")
    monkeypatch.setattr("swiftlib.train.config.build_dataset", forbidden)
    monkeypatch.setattr("swiftlib.train.setup.create_model", forbidden)


FLOAT_FLAGS = ["--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig) if "float" in str(f.type)]


@pytest.mark.parametrize("args, flag", [
    (["--img-size", "16"], "--img-size"), (["--img-size", "0"], "--img-size"), (["--img-size", "-4"], "--img-size"),
    (["--workers", "-1"], "--workers"), (["--epochs", "-1"], "--epochs"), (["--epochs", "0"], "--epochs"),
    (["--batch-size", "-2"], "--batch-size"), (["--eval-every", "-1"], "--eval-every"),
    (["--save-every", "-3"], "--save-every"), (["--threads", "0"], "--threads"), (["--lr", "abc"], "--lr"),
    (["--data", "mnist"], "--data"), (["--recipe", "fast"], "--recipe"), (["--attention", "linear"], "--attention"),
    (["--model", "swiftformer_xxl"], "--model"), (["--re-mode", "blur"], "--re-mode"),
    (["--sched-on", "batch"], "--sched-on"), (["--clip-mode", "l3"], "--clip-mode"),
    (["--teacher", "not_a_timm_model"], "--teacher"), (["--lr-batch", "-1"], "--lr-batch"),
    (["--teacher-checkpoint", "x.pth"], "--teacher-checkpoint"),
    (["--init-checkpoint", "missing.pth"], "--init-checkpoint"),
    (["--resume", "missing/last.pth"], "--resume"),
] + [([f, v], f) for f in FLOAT_FLAGS for v in ("nan", "inf", "-inf")])
def test_bad_flags_are_one_line_naming_the_flag_before_any_work(args, flag, tree, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    _refused(_argv(tree, out, *args), capsys, flag, alone=True)
    assert not out.exists() or not any(out.iterdir())  # nothing was written


def test_data_dir_missing_or_absent_and_out_a_file(tree, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    base = ["--img-size", "32", "--out", str(out), "--no-progress"]
    _refused(["--data", "folder", *base], capsys, "--data-dir", "--data folder")
    _refused(["--data", "imagenet", *base], capsys, "--data-dir", "--data imagenet")
    _refused(["--data", "folder", "--data-dir", str(tmp_path / "nope"), *base], capsys, "--data-dir", "does not exist")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _refused(_argv(tree, a_file), capsys, "--out", "is a file")
    _refused(_argv(tree, a_file / "sub"), capsys, "--out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(tree, tmp_path, capsys, no_work):
    _refused(_argv(tree, tmp_path / "o", "--device", "cuda"), capsys, "--device cuda", "cuda")


def _make_read_only(folder: Path):
    """A folder this process cannot write into: mode 0555, or (root ignores modes) the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root, which writes into mode-0555 folders, on a file system without chattr +i")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_out_not_writable(tree, tmp_path, capsys, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    undo = _make_read_only(locked)
    try:
        _refused(_argv(tree, locked), capsys, "--out", "not writable")
        _refused(_argv(tree, locked / "new_run"), capsys, "--out", "not writable")  # would be created there
    finally:
        undo()


def test_library_users_get_the_same_checks(tree, tmp_path):
    with pytest.raises(ValueError, match="--lr must be a finite number, got nan"):
        T.resolve_config(lr=float("nan"))
    with pytest.raises(ValueError, match=r"--img-size 16 is below .*\(32 px"):
        T.fit(**_kw(tree, tmp_path, img_size=16))
    with pytest.raises(ValueError, match="--epochs must be an integer >= 1, got True"):
        T.resolve_config(epochs=True)


@pytest.mark.slow  # an interpreter start-up
def test_python_m_swiftlib_train_answers_in_one_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "swiftlib.train", "--img-size", "16", "--out", str(tmp_path / "o")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if "cpp_extension" not in line]  # torch's import notice
    assert r.returncode == 2 and len(lines) == 1 and "error:" in lines[0] and "--img-size" in lines[0], r.stderr
    r = subprocess.run([sys.executable, "-m", "swiftlib.train", "--img-size", "16", "--debug"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" in r.stderr and "--img-size" in r.stderr


# --------------------------------------------------------------------------- resume
def test_bare_resume_means_auto(finished, tree, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    res = cli(_argv(tree, out, "--epochs", "2", "--resume"))
    assert [row["epoch"] for row in res["history"]] == [1, 2] and res["config"].resume == "auto"
    fresh = cli(_argv(tree, tmp_path / "new", "--resume"))  # nothing to resume yet: a new run, said
    assert len(fresh["history"]) == 1 and "no " in capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--model", "s"], "--model swiftformer_s (the checkpoint has swiftformer_xs)"),
    (["--attention", "transposed"], "--attention transposed (the checkpoint has additive)"),
    (["--img-size", "64"], "--img-size 64 (the checkpoint has 32)"),
    (["--no-distillation"], "--distillation False (the checkpoint has True)"),
    (["--seed", "2"], "--seed 2 (the checkpoint has 1)"),
    (["--batch-size", "4"], "--batch-size 4 (the checkpoint has 8)"),
])
def test_resume_of_another_run_says_which_setting_differs(args, needle, finished, tree, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    line = _refused(_argv(tree, out, "--epochs", "2", "--resume", *args), capsys, needle, "--init-checkpoint")
    assert "missing keys" not in line and "size mismatch" not in line


def test_resume_with_another_class_count(finished, tree, tmp_path, capsys):
    two = tmp_path / "two"
    for split in ("train", "val"):
        for wnid in WNIDS[:2]:
            shutil.copytree(tree / split / wnid, two / split / wnid)
    out = _copy_run(finished, tmp_path)
    _refused(_argv(two, out, "--batch-size", "8", "--resume", str(out / "last.pth")), capsys,
             "2 classes in the data (the checkpoint has 3)")


def test_resume_with_changed_settings_applies_them_and_says_so(finished, tree, tmp_path, capsys):
    """Policy: applied from the resume on, said in one line, recorded in config.json and the checkpoints."""
    out = _copy_run(finished, tmp_path)
    res = cli(_argv(tree, out, "--epochs", "3", "--lr", "1e-3", "--sched-on", "epoch", "--warmup-epochs", "0",
                    "--lr-batch", "0", "--resume"))
    said = capsys.readouterr().err
    assert "changed settings, applied" in said and "--lr 0.002 -> 0.001" in said and "--epochs 1 -> 3" in said
    # cosine over 3 epochs without warmup, stepped per epoch: epoch 3 runs at lr(t=1) with the NEW base lr
    expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 1 / 3))
    assert res["history"][2]["lr"] == pytest.approx(expected, rel=1e-9)
    recorded = json.loads((out / "config.json").read_text())
    last = torch.load(out / "last.pth", weights_only=True)
    assert recorded["lr"] == last["config"]["lr"] == 1e-3 and recorded["epochs"] == 3 == last["epoch"]
    with pytest.raises(SystemExit):  # fewer epochs than already done: refused
        cli(_argv(tree, out, "--epochs", "2", "--resume"))
    _one_error_line(capsys, "--epochs 2", "already completed 3")


def test_resume_from_best_or_with_training_flags_on_evaluate(finished, tree, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    _refused(_argv(tree, out, "--epochs", "2", "--resume", str(out / "best.pth")), capsys, "last.pth",
             "--init-checkpoint")
    _refused(["--evaluate", str(out / "best.pth"), "--lr", "0.1"], capsys, "--lr", "no effect with --evaluate")
    _refused(_argv(tree, out, "--epochs", "2", "--resume", "--init-checkpoint", str(out / "best.pth")), capsys,
             "--init-checkpoint", "started from scratch")
    warm = cli(_argv(tree, tmp_path / "ft", "--init-checkpoint", str(out / "last.pth"), "--epochs", "1"))
    assert warm["status"] == "done"


def test_a_checkpoint_with_nan_weights_is_refused_for_training_and_warned_for_evaluation(finished, tree, tmp_path):
    out = _copy_run(finished, tmp_path)
    for name in ("last.pth", "best.pth"):
        payload = torch.load(out / name, weights_only=True)
        payload["model"]["head.weight"][0, 0] = float("nan")
        torch.save(payload, out / name)
    with pytest.raises(ValueError, match="--resume .*hold nan/inf.*head.weight"):
        T.fit(**_kw(tree, out, epochs=2), resume="auto")
    with pytest.raises(ValueError, match="--init-checkpoint .*nan/inf"):
        T.fit(**_kw(tree, tmp_path / "ft"), init_checkpoint=str(out / "last.pth"))
    with pytest.warns(UserWarning, match="nan/inf.*scores mean nothing"):
        T.evaluate_checkpoint(out / "best.pth")


def test_refused_untrusted_resume_file_is_one_line(tree, tmp_path, capsys):
    class RunsCode:
        def __reduce__(self):
            return open, (str(tmp_path / "marker"), "w")

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "train_state": {"rng": [RunsCode()]}}, out / "last.pth")
    _refused(_argv(tree, out, "--resume"), capsys, "open")
    _refused(["--evaluate", str(out / "last.pth")], capsys, "open")
    assert not (tmp_path / "marker").exists()


# --------------------------------------------------------------------------- nan: stop, keep the last good file
def _poisoning(model, at_step, what):
    """A callback that writes a nan into ``model`` after global step ``at_step``."""
    def callback(event, info):
        if event == "step" and info["global_step"] == at_step:
            with torch.no_grad():
                what(model).view(-1)[0] = float("nan")
    return callback


def _all_finite(path) -> bool:
    payload = torch.load(path, weights_only=True)
    tensors = list(payload["model"].values()) + list((payload.get("ema") or {}).values())
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


@pytest.mark.parametrize("at_step, where, message", [
    # a nan weight after step 4 (epoch 2, step 1): the loss of the next step is nan
    (4, lambda m: m.head.weight, r"loss is nan at epoch 2, step 2.*last good checkpoint is .*last.pth \(end of epoch 1\)"),
    # a nan BatchNorm statistic after the last step of epoch 2: no step sees it, the save does
    (6, lambda m: m.norm.running_var, r"non-finite values .*norm.running_var.*not saved.*last good checkpoint is "
                                      r".*last.pth \(end of epoch 1\)"),
])
def test_nan_stops_the_run_naming_where_and_the_last_good_checkpoint_which_is_finite(at_step, where, message, tree,
                                                                                    tmp_path):
    out = tmp_path / "run"
    torch.manual_seed(1)
    model = create_model("swiftformer_xs", num_classes=3)
    with pytest.raises(FloatingPointError, match=message):
        T.fit(**_kw(tree, out, epochs=2, ema_decay=0.5), net=model, callback=_poisoning(model, at_step, where))
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1
    assert _all_finite(out / "last.pth") and _all_finite(out / "best.pth")


def test_nan_optimizer_moment_is_not_saved(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    opt.state[model.weight]["exp_avg_sq"][0, 0] = float("inf")
    saver = Checkpointer(model, None, TrainConfig(), [], [], tmp_path)
    with pytest.raises(FloatingPointError, match=r"optimizer exp_avg_sq of weight.*none yet"):
        saver.save_last(TrainState(epoch=1), None, opt, torch.amp.GradScaler("cpu", enabled=False), CPU)
    assert not (tmp_path / "last.pth").exists()


# --------------------------------------------------------------------------- killed writes, a full disk
def _fail_fsync_of(monkeypatch, prefix, error):
    """``os.fsync`` raising ``error`` for the temporary file of ``prefix`` (e.g. '.last.pth.'): the write of
    swiftlib.io fails after the data went into the temporary file, before the rename."""
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(prefix):
            raise error
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(finished, tree, tmp_path, capsys,
                                                                               monkeypatch):
    out = _copy_run(finished, tmp_path)
    before = (out / "last.pth").read_bytes()
    _fail_fsync_of(monkeypatch, ".last.pth.", OSError(errno.ENOSPC, "No space left on device"))
    line = _refused(_argv(tree, out, "--epochs", "2", "--resume"), capsys, "no space left", "last.pth", "free",
                    "end of epoch 1")
    assert float(line.split(" free in ")[0].split("(")[-1].split()[0]) >= 0  # the free space, e.g. "77.7 GB"
    assert (out / "last.pth").read_bytes() == before  # untouched
    assert not list(out.glob(".*.tmp"))


def test_stale_temp_files_are_removed_and_said(finished, tree, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    stale = [out / ".last.pth.k3j2h1g0.tmp", out / ".metrics.json.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    other = out / ".notes.txt.12345678.tmp"  # not a file of the run: left alone
    other.write_bytes(b"x")
    cli(_argv(tree, out, "--epochs", "2", "--resume"))
    err = capsys.readouterr().err
    assert "removed 2 stale temporary file(s)" in err and all(p.name in err for p in stale)
    assert not any(p.exists() for p in stale) and other.exists()


class _Killed(BaseException):
    """What the process sees of a kill -9: nothing more runs (the atomic write's own cleanup aside)."""


def test_a_run_killed_while_writing_best_ends_with_a_best(tree, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _fail_fsync_of(monkeypatch, ".best.pth.", _Killed())
    with pytest.raises(_Killed):
        T.fit(**_kw(tree, out, epochs=2))
    # best.pth is written before last.pth: the killed epoch is not in any last.pth, so it is redone
    assert not (out / "best.pth").exists() and not (out / "last.pth").exists()
    monkeypatch.undo()
    res = T.fit(**_kw(tree, out, epochs=2), resume="auto")
    assert res["status"] == "done" and (out / "best.pth").is_file()
    assert torch.load(out / "best.pth", weights_only=True)["val_top1"] == max(r["val_top1"] for r in res["history"])


def test_missing_best_is_recovered_from_last_when_it_holds_those_weights(finished, tree, tmp_path, capsys):
    out = _copy_run(finished, tmp_path)
    (out / "best.pth").unlink()
    T.fit(**_kw(tree, out, epochs=1), resume="auto")  # nothing left to train; setup repairs best.pth
    assert "best.pth was missing; written again" in capsys.readouterr().err
    best, last = (torch.load(out / n, weights_only=True) for n in ("best.pth", "last.pth"))
    assert best["epoch"] == last["epoch"] == 1 and best["val_top1"] == last["val_top1"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


# --------------------------------------------------------------------------- BatchNorm and a batch of one
def test_batch_of_one_at_a_1x1_last_map_is_refused_before_any_step(tree, tmp_path):
    steps = []
    with pytest.raises(ValueError, match=r"--batch-size 1 at --img-size 32: BatchNorm .* more than one value per "
                                         r"channel.*--batch-size 2 or more.*--img-size above 32"):
        T.fit(**_kw(tree, tmp_path / "a", batch_size=1), callback=lambda e, i: steps.append(i))
    one = T.build_train_dataset(T.resolve_config(**_kw(tree, tmp_path / "b", images_per_class=1)))
    one = torch.utils.data.Subset(one, [0])  # one training image: the batch is clamped to 1
    one.classes, one.targets = WNIDS, [0]
    with pytest.warns(UserWarning, match="using batch_size 1"), \
            pytest.raises(ValueError, match=r"--batch-size 8 clamped to the 1 training image"):
        T.fit(**_kw(tree, tmp_path / "b"), train_dataset=one)
    assert steps == []
    res = T.fit(**_kw(tree, tmp_path / "c", batch_size=1, img_size=40, epochs=1))  # 2x2 last map: trains
    assert res["status"] == "done"


class _TinyBNNet(nn.Module):
    """Not a SwiftFormer: [B, 3, 32, 32] -> conv to [B, 4, 1, 1] -> BatchNorm -> logits [B, 3]."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 32), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).flatten(1))    # [B, 4, 1, 1] -> [B, 4] -> [B, 3]


def test_batchnorm_error_of_any_network_is_explained(tree, tmp_path):
    with pytest.raises(ValueError, match=r"batch of shape \(1, 3, 32, 32\) failed: BatchNorm .*--batch-size 2"):
        T.fit(**_kw(tree, tmp_path, batch_size=1, ema_decay=0.0), net=_TinyBNNet())


# --------------------------------------------------------------------------- kill -9, resume, bit for bit
#: ``python -m swiftlib.train`` with a test-only hook: every atomic write prints ``@write <temp name>`` before its
#: fsync, and the one whose temp name starts with $SLOW_WRITE then sleeps, so that a SIGKILL lands mid-write.
HOOKED = r"""
import os, runpy, sys, time
_fsync = os.fsync
def _announcing_fsync(fd):
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    print(f"@write {name}", file=sys.stderr, flush=True)
    if name.startswith(os.environ.get("SLOW_WRITE") or "\0"):
        time.sleep(120)
    return _fsync(fd)
os.fsync = _announcing_fsync
sys.argv = ["swiftlib.train"] + sys.argv[1:]
runpy.run_module("swiftlib.train", run_name="__main__", alter_sys=True)
"""


def _train_killed(args, *, marker, delay=0.0, slow=None):
    """Run the hooked CLI, SIGKILL it ``delay`` s after the stderr line starting with ``marker`` (or let it finish
    if the marker never comes); returns ``(returncode, stderr)``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SLOW_WRITE": slow or ""}
    proc = subprocess.Popen([sys.executable, "-c", HOOKED, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if marker and line.startswith(marker):
                time.sleep(delay)
                proc.kill()
                break
        seen += proc.stderr.read().splitlines(keepends=True)
        return proc.wait(timeout=120), "".join(seen)
    finally:
        proc.kill()


@pytest.mark.slow  # five interpreter start-ups, ~45 s on 2 cores
def test_kill_9_at_random_moments_resumes_bit_for_bit(tree, tmp_path):
    common = ["--epochs", "3", "--threads", "1", "--ema-decay", "0.9", "--auto-augment", "rand-m9-mstd0.5-inc1"]
    straight = cli(_argv(tree, tmp_path / "straight", *common))
    out = tmp_path / "killed"
    args = _argv(tree, out, *common, "--resume")
    # 1. killed inside the very first best.pth write: nothing but its temporary file on disk
    rc, _ = _train_killed(args, marker="@write .best.pth.", slow=".best.pth.")
    assert rc == -9 and not (out / "best.pth").exists() and not (out / "last.pth").exists()
    assert len(list(out.glob(".best.pth.*.tmp"))) == 1
    # 2. killed inside the first last.pth write; this run removed the stale temporary file first
    rc, err = _train_killed(args, marker="@write .last.pth.", slow=".last.pth.")
    assert rc == -9 and "removed 1 stale temporary file(s)" in err and ".best.pth." in err
    assert (out / "best.pth").is_file() and not (out / "last.pth").exists()
    # 3. killed inside a metrics write, after the epoch's last.pth
    rc, err = _train_killed(args, marker="@write .metrics.json.", slow=".metrics.json.")
    assert rc == -9 and (out / "last.pth").is_file()
    # 4. killed at a random moment after setup (mid-step, mid-evaluation or mid-write)
    rc, err = _train_killed(args, marker="@write .config.json.", delay=random.Random(0).uniform(0.1, 1.5))
    assert rc in (-9, 0), err[-2000:]
    # 5. to the end
    rc, err = _train_killed(args, marker=None)
    assert rc == 0, err[-3000:]
    assert not list(out.glob(".*.tmp"))
    a = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    b = torch.load(out / "last.pth", weights_only=True)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), [k for k in a[part]
                                                                            if not torch.equal(a[part][k], b[part][k])]
    timing = ("img_per_s", "epoch_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(b["train_state"]["history"]) == strip(straight["history"])
    best_a, best_b = (torch.load(d / "best.pth", weights_only=True) for d in (tmp_path / "straight", out))
    assert best_a["epoch"] == best_b["epoch"] and all(torch.equal(best_a["model"][k], best_b["model"][k])
                                                      for k in best_a["model"])
