"""swiftlib.train: the CLI on a tiny JPEG tree, learning, bit-exact resume, batch augmentation, DDP, NaN
stop, checkpoints that load with ``weights_only=True`` and files that would run code. The recipes:
tests/test_train_recipe.py; faults: tests/test_train_faults.py.

References: resume and DDP are checked against an uninterrupted run and against the other rank, weight
for weight; RNG states against the draws of the saved generators.
"""
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_image_folder
from torch.utils.data import DataLoader, Dataset

import swiftlib.data as D
import swiftlib.train as T
import swiftlib.train.report as train_report
from swiftlib.models import create_model, save_checkpoint
from swiftlib.train.config import use_batch_augment
from swiftlib.train.report import merge_failures
from swiftlib.train.state import decode_rng, encode_rng

ROOT = Path(__file__).resolve().parent.parent
WNIDS = ["n01440764", "n02102040", "n02979186"]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("SWIFTLIB_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: on a shared 2-core machine oversubscription costs 10x
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 8 JPEGs per split, one corrupt JPEG per split."""
    return write_image_folder(tmp_path_factory.mktemp("tree"), WNIDS, 8, corrupt=1)


def _run(args, tmp=None, **kw):
    """``args`` in a subprocess from the repository root; ``tmp``: its TMPDIR (torchrun's agent writes a
    ``torchelastic_*`` log folder there, which would otherwise stay behind in /tmp)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **({"TMPDIR": str(tmp)} if tmp else {})}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


# --------------------------------------------------------------------------- the command line
@pytest.mark.slow  # three interpreter start-ups (train, resume, evaluate)
def test_cli_trains_tiny_tree_then_resumes(tree, tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "swiftlib.train", "--data", "folder", "--data-dir", str(tree),
            "--model", "swiftformer_xs", "--img-size", "32", "--out", str(out)]  # the subset recipe's batch 128 > 24
    r = _run(base + ["--epochs", "1"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "last.pth").is_file() and (out / "best.pth").is_file()
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 1 and rows[0]["epoch"] == 1
    assert 0 < rows[0]["train_loss"] < 10 and 0 <= rows[0]["val_top1"] <= 100
    assert (out / "metrics.csv").read_text().startswith("epoch,train_loss,train_top1,val_loss")
    report = json.loads((out / "data_report.json").read_text())
    assert [len(r["skipped"]) for r in report] == [1, 1]
    assert report[0]["skipped"][0][0].endswith("corrupt_0.JPEG") and report[0]["num_samples"] == 24
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done"

    r = _run(base + ["--epochs", "2", "--resume", "auto"])
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [1, 2]
    state = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["train_state"]["global_step"] == 2  # batch clamped to 24 images: 1 step

    r = _run([sys.executable, "-m", "swiftlib.train", "--evaluate", str(out / "best.pth"), "--batch-size", "8"])
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads(r.stdout.strip().splitlines()[-1])
    assert ev["count"] == 24 and ev["top1"] == pytest.approx(max(row["val_top1"] for row in rows), abs=1e-3)


# --------------------------------------------------------------------------- learning works
def test_overfits_a_small_fixed_batch(tree, tmp_path):
    torch.set_num_threads(1)
    ds = D.build_dataset("folder", tree, "val", 32, images_per_class=3, seed=1,
                         transform=D.build_transform(32, False, crop_pct=1.0))
    assert len(ds) == 9 and ds.report.skipped == []
    res = T.fit(train_dataset=ds, val_dataset=ds, data="folder", recipe="subset", epochs=20, batch_size=9,
                lr=2e-3, lr_batch=9, warmup_epochs=0, smoothing=0.0, img_size=32, out=str(tmp_path / "o"),
                progress=False, eval_every=20, save_every=20)
    assert res["history"][-1]["train_top1"] == 100.0  # train mode, on the batch before the last step
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"] / 4


# --------------------------------------------------------------------------- resume is exact
def _resume_kw(tree, out):
    train = D.build_dataset("folder", tree, "train", 32)
    val = D.build_dataset("folder", tree, "val", 32, images_per_class=2)
    train.transform = D.build_transform(32, True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    return dict(train_dataset=train, val_dataset=val, data="folder", recipe="paper", model="swiftformer_xs",
                epochs=2, batch_size=8, lr_batch=8, warmup_epochs=0.5, mixup=0.8, cutmix=1.0, ema_decay=0.9,
                repeated_aug=1, img_size=32, out=str(out), progress=False, seed=3)


def test_resume_after_interrupt_equals_uninterrupted_run(tree, tmp_path):
    torch.set_num_threads(1)
    straight = T.fit(**_resume_kw(tree, tmp_path / "a"))
    assert straight["status"] == "done"

    def interrupt_at_step_4(event, info):  # mid-epoch 2 (3 steps an epoch): a real SIGINT, as Ctrl-C sends
        if event == "step" and info["global_step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)

    first = T.fit(**_resume_kw(tree, tmp_path / "b"), callback=interrupt_at_step_4)
    assert first["status"] == "interrupted"
    saved = torch.load(tmp_path / "b" / "last.pth", map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["train_state"]["step_in_epoch"], saved["train_state"]["global_step"]) == (1, 1, 4)
    resumed = T.fit(**_resume_kw(tree, tmp_path / "b"), resume="auto")
    assert resumed["status"] == "done"

    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    ea, eb = straight["ema"].state_dict(), resumed["ema"].state_dict()
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("img_per_s", "epoch_seconds")} for r in h]  # noqa: E731
    assert strip(straight["history"]) == strip(resumed["history"])
    # last.pth is a checkpoint like any other: its weights start a fine-tuning run (--init-checkpoint)
    warm = create_model("swiftformer_xs", num_classes=3, checkpoint=tmp_path / "b" / "last.pth").state_dict()
    assert all(torch.equal(warm[k], b[k]) for k in b)
    # the run really moved: weights differ from a fresh model with the same seed
    torch.manual_seed(3)
    fresh = create_model("swiftformer_xs", num_classes=3).state_dict()
    assert not torch.equal(fresh["head.weight"], a["head.weight"])


def _batch_augment_kw(tree, out):
    """The cached tree: uint8 images in memory, crop + flip only, so fit augments per batch."""
    return dict(data="folder", data_dir=str(tree), cache=True, cache_size=40, recipe="subset", model="swiftformer_xs",
                epochs=2, batch_size=8, lr_batch=8, warmup_epochs=0.5, img_size=32, scale_min=0.3, color_jitter=0.0,
                out=str(out), progress=False, seed=3)


def test_batch_augment_is_used_for_cached_data_and_resumes_bit_for_bit(tree, tmp_path):
    straight = T.fit(**_batch_augment_kw(tree, tmp_path / "a"))
    assert straight["config"].batch_augment is True

    def interrupt_at_step_4(event, info):
        if event == "step" and info["global_step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)

    assert T.fit(**_batch_augment_kw(tree, tmp_path / "b"), callback=interrupt_at_step_4)["status"] == "interrupted"
    resumed = T.fit(**_batch_augment_kw(tree, tmp_path / "b"), resume="auto")
    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_batch_augment_needs_images_in_memory_and_crop_flip_only(tree, tmp_path):
    """fit decides, for a training set built from the config; build_datasets returns plain datasets."""
    kw = dict(data="folder", data_dir=str(tree), img_size=32, batch_augment=True, out=str(tmp_path / "o"),
              progress=False)
    with pytest.raises(ValueError, match="in memory"):  # JPEGs on disk
        T.fit(**kw)
    with pytest.raises(ValueError, match="color_jitter=0.4"):
        T.fit(**kw, cache=True, color_jitter=0.4)
    cfg = T.resolve_config(data="folder", data_dir=str(tree), img_size=32, cache=True, color_jitter=0.4)
    train, val = T.build_datasets(cfg)
    assert isinstance(train, D.ArrayDataset) and not train.raw and train.transform is not None
    assert not hasattr(train, "batch_transform") and val.transform is not None
    assert not use_batch_augment(cfg, train)  # auto: per image, the recipe has colour jitter


def test_explicit_batch_augment_with_an_unsuitable_passed_in_dataset_is_an_error(tree, tmp_path):
    on_disk = D.build_dataset("folder", tree, "train", 32)
    cached = D.build_dataset("folder", tree, "train", 32, cache=True, cache_size=40)
    kw = dict(val_dataset=cached, data="folder", img_size=32, color_jitter=0.0, batch_augment=True,
              out=str(tmp_path / "o"), progress=False)
    with pytest.raises(ValueError, match="in memory.*ImageListDataset"):
        T.fit(train_dataset=on_disk, **kw)
    with pytest.raises(ValueError, match="re_prob=0.25"):
        T.fit(train_dataset=cached, **{**kw, "re_prob": 0.25})
    with pytest.raises(ValueError, match="raw=True"):  # uint8 rows, nothing to turn them into images
        T.fit(train_dataset=cached.raw_view(), **{**kw, "batch_augment": False})
    assert not cached.raw and cached.transform is not None


def test_passed_in_array_dataset_is_batch_augmented_through_a_raw_view(tree, tmp_path):
    """batch_augment=None turns it on for a suitable passed-in dataset, which is left as it was: the run
    equals the one whose cached dataset fit builds from the config, weight for weight."""
    cached = D.build_dataset("folder", tree, "train", 32, cache=True, cache_size=40)
    transform = cached.transform
    kw = {**_batch_augment_kw(tree, tmp_path / "a"), "epochs": 1}
    passed = T.fit(train_dataset=cached, **{**kw, "cache": False})
    assert passed["config"].batch_augment is True
    assert json.loads((tmp_path / "a" / "config.json").read_text())["batch_augment"] is True
    view = passed["train_dataset"]
    assert view is not cached and view.raw and view.transform is None
    assert view.images is cached.images and not cached.raw and cached.transform is transform
    built = T.fit(**{**kw, "out": str(tmp_path / "b")})
    assert built["config"].batch_augment is True
    a, b = passed["model"].state_dict(), built["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_evaluate_checkpoint_of_a_batch_augmented_run_without_cache(tree, tmp_path):
    """Its config says batch_augment=True, cache=False: evaluating must not rebuild (and judge) the train split."""
    cached = D.build_dataset("folder", tree, "train", 32, cache=True, cache_size=40)
    out = tmp_path / "run"
    T.fit(train_dataset=cached, **{**_batch_augment_kw(tree, out), "epochs": 1, "cache": False})
    best = torch.load(out / "best.pth", map_location="cpu", weights_only=True)
    assert best["config"]["batch_augment"] is True and best["config"]["cache"] is False
    ev = T.evaluate_checkpoint(out / "best.pth")
    assert ev["count"] == 24 and ev["top1"] == pytest.approx(best["val_top1"], abs=1e-3)


def test_evaluate_checkpoint_builds_only_the_validation_split(tree, tmp_path):
    root = tmp_path / "val_only"
    shutil.copytree(tree / "val", root / "val")
    for wnid in WNIDS:  # a broken train split: class folders without images
        (root / "train" / wnid).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="hold no images"):
        D.build_dataset("folder", root, "train", 32)
    cfg = T.resolve_config(data="folder", data_dir=str(root), img_size=32, batch_size=8)
    torch.manual_seed(0)
    model = create_model(cfg.model, num_classes=len(WNIDS))
    save_checkpoint(model, tmp_path / "w.pth", ema=None, config=dataclasses.asdict(cfg), class_names=WNIDS)
    ev = T.evaluate_checkpoint(tmp_path / "w.pth")
    ref = T.evaluate(model, DataLoader(T.build_val_dataset(cfg), batch_size=8), torch.device("cpu"))
    assert ev["count"] == 24 and ev["top1"] == ref["top1"] and ev["loss"] == pytest.approx(ref["loss"])


# --------------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    import swiftlib.train as T
    tree, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    res = T.fit(data="folder", data_dir=tree, model="swiftformer_xs", epochs=2, batch_size=4, img_size=32,
                out=out, progress=False, workers=1)
    rank = int(os.environ["RANK"])
    torch.save({"model": res["model"].state_dict(), "history": res["history"]}, f"{out}/rank{rank}.pt")
""")


@pytest.mark.slow  # torchrun start-up of two processes
def test_ddp_two_cpu_processes_keep_identical_weights(tree, tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              str(script), str(tree), str(out)], tmp=tmp_path)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k
    timing = ("img_per_s", "epoch_seconds")
    assert [{k: v for k, v in row.items() if k not in timing} for row in r0["history"]] == \
        [{k: v for k, v in row.items() if k not in timing} for row in r1["history"]]
    assert len(r0["history"]) == 2
    # 24 images over 2 ranks x batch 4: 3 steps an epoch; validation counts every image exactly once
    state = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert state["train_state"]["global_step"] == 6 and len(state["train_state"]["rng"]) == 2
    ev = T.evaluate(_loaded(state), DataLoader(D.build_dataset("folder", tree, "val", 32), batch_size=8),
                    torch.device("cpu"))
    assert ev["count"] == 24 and ev["top1"] == pytest.approx(r0["history"][-1]["val_top1"], abs=1e-3)


def _loaded(state):
    model = create_model("swiftformer_xs", num_classes=state["num_classes"])
    model.load_state_dict(state["model"])
    return model


def test_sampler_shards_are_disjoint_and_resume_skips_exactly():
    data = list(range(10))
    full = [list(T.ResumableSampler(data, 2, r, seed=5)) for r in (0, 1)]
    idx = [i for part in full for i, _ in part]
    assert len(idx) == 10 and sorted(idx) == data
    late = T.ResumableSampler(data, 2, 0, seed=5)
    late.start = 2
    assert list(late) == full[0][2:] and len(late) == 3
    rep = T.ResumableSampler(data, 1, 0, seed=5, repeats=3)
    seen = [i for i, _ in rep]  # DeiT's RASampler: same epoch length, each image 3 times in a row
    assert len(seen) == 10 and len(set(seen)) == 4 and seen[0] == seen[1] == seen[2] != seen[3]
    assert len({s for _, s in rep}) == 10  # each repeated copy gets its own augmentation seed


# --------------------------------------------------------------------------- failures
class _NaNImages(Dataset):
    classes = ["a", "b"]
    targets = [0, 1] * 4

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.full((3, 32, 32), float("nan")), self.targets[i]


def test_nan_loss_stops_with_clear_message(tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, step 1.*last good checkpoint"):
        T.fit(train_dataset=_NaNImages(), val_dataset=_NaNImages(), data="folder", epochs=1, batch_size=4,
              img_size=32, out=str(tmp_path / "nan"), progress=False)
    assert not (tmp_path / "nan" / "last.pth").exists()


def test_bad_settings_are_clear_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="recipe must be 'paper' or 'subset', got 'fast'"):
        T.resolve_config(recipe="fast")
    with pytest.raises(ValueError, match="unknown dataset"):
        T.resolve_config(data="mnist")
    with pytest.warns(UserWarning, match="batch_size 64 per process is larger than the 24 .* using batch_size 24"):
        res = T.fit(data="folder", data_dir=str(tree), batch_size=64, img_size=32, out=str(tmp_path / "w"),
                    progress=False)
    assert res["config"].batch_size == 24 and res["history"][0]["epoch"] == 1
    kw = dict(data="folder", data_dir=str(tree), batch_size=8, img_size=32, out=str(tmp_path), progress=False)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        T.fit(**kw, resume=str(tmp_path / "nope.pth"))
    weights_only = save_checkpoint(create_model("swiftformer_xs", num_classes=3), tmp_path / "best.pth")
    with pytest.raises(ValueError, match="no training state.*resume from the run's last.pth"):
        T.fit(**kw, resume=str(weights_only))
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda"):
        T.fit(**kw, device="tpu")
    with pytest.raises(ValueError, match="unknown model 'swiftformer_xxl'"):
        T.resolve_config(model="swiftformer_xxl")


@pytest.mark.parametrize("workers", [0, 2])
def test_decode_failures_of_every_worker_reach_data_report(workers, tmp_path):
    """Files that pass the build but cannot be read any more (one training file deleted, one validation
    file replaced by junk) are served by a neighbour and listed in data_report.json after the epoch, also
    when DataLoader worker processes (holding their own copies of the datasets) met them."""
    tree = write_image_folder(tmp_path / "t", WNIDS, 4)
    train, val = D.build_dataset("folder", tree, "train", 32), D.build_dataset("folder", tree, "val", 32)
    gone, junk = train.samples[5][0], val.samples[2][0]
    os.remove(gone)
    Path(junk).write_bytes(b"not an image any more")
    out = tmp_path / "o"
    with warnings.catch_warnings():  # the data package names each file as it meets it (tested there)
        warnings.simplefilter("ignore", RuntimeWarning)
        T.fit(train_dataset=train, val_dataset=val, data="folder", epochs=1, batch_size=4, img_size=32,
              workers=workers, out=str(out), progress=False)
    report = json.loads((out / "data_report.json").read_text())
    assert [(r["split"], [p for p, _ in r["failed"]]) for r in report] == [("train", [gone]), ("val", [junk])]
    assert all(reason for r in report for _, reason in r["failed"])
    if workers:  # the main process read no image itself: the records came from the workers
        assert len((out / "decode_failures.jsonl").read_text().splitlines()) >= 2


def test_failure_log_merges_each_record_once_and_skips_a_cut_line(tmp_path):
    log = tmp_path / "decode_failures.jsonl"
    line = json.dumps({"dataset": "train", "path": "a.JPEG", "reason": "OSError: truncated"})
    other = json.dumps({"dataset": "val", "path": "b.JPEG", "reason": "gone"})
    log.write_text(f"{line}\n{line}\n{other}\n" + '{"dataset": "train", "pa')  # two workers, then a kill -9
    report = D.DataReport("folder", "train")
    assert merge_failures({"train": report}, log) == 1 and report.failed == [("a.JPEG", "OSError: truncated")]
    assert merge_failures({"train": report}, log) == 0 and len(report.failed) == 1
    assert merge_failures({"train": report}, tmp_path / "none.jsonl") == 0


def test_epoch_summaries_are_a_table_on_stdout_and_bars_are_closed(tree, tmp_path, capsys, monkeypatch):
    """One header, then one fixed-width row per epoch on stdout holding the metrics of metrics.json ('-'
    where validation did not run); the per-epoch progress bars (stderr) are closed and not left behind."""
    bars = []

    class RecordingBar(train_report.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.leave_arg, self.closed_by_loop = kwargs.get("leave"), False
            bars.append(self)

        def close(self):
            self.closed_by_loop = True
            super().close()

    monkeypatch.setattr(train_report, "tqdm", RecordingBar)
    T.fit(data="folder", data_dir=str(tree), epochs=2, eval_every=2, batch_size=8, img_size=32,
          out=str(tmp_path / "o"), progress=True)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["epoch", "train", "loss", "train", "top-1", "val", "loss", "val", "top-1", "val",
                                "top-5", "lr", "img/s", "seconds"]
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1  # fixed width
    rows = json.loads((tmp_path / "o" / "metrics.json").read_text())
    for line, row in zip(lines[1:], rows):
        want = [f"{row['epoch']}/2", f"{row['train_loss']:.4f}", f"{row['train_top1']:.2f}"]
        want += ["-"] * 3 if row["val_top1"] is None else [f"{row['val_loss']:.4f}", f"{row['val_top1']:.2f}",
                                                           f"{row['val_top5']:.2f}"]
        want += [f"{row['lr']:.2e}", f"{row['img_per_s']:.1f}", f"{row['epoch_seconds']:.1f}"]
        assert line.split() == want
    assert rows[0]["val_top1"] is None and rows[1]["val_top1"] is not None
    assert "train loss" not in captured.err and "train_loss" not in captured.err
    assert len(bars) == 2 and all(b.closed_by_loop and b.leave_arg is False for b in bars)


NOTEBOOK_BARS = textwrap.dedent("""
    from swiftlib.train.report import progress_bar
    for desc, leave in (("epoch 1/1", False), ("kept", True)):
        bar = progress_bar(total=3, desc=desc, leave=leave)
        for _ in range(3):
            bar.update(1)
        bar.close()
    print("done")
""")


@pytest.mark.slow  # a Jupyter kernel starts and imports swiftlib.train
def test_closed_bars_leave_no_frozen_text_in_a_saved_notebook(tmp_path):
    """What a saved notebook keeps of a bar (its text copy, shown wherever the widget is not) after the
    bar finished: nothing for leave=False (the epoch bars), the finished bar (100%) for leave=True."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_BARS)])
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = ["".join(o.get("data", {}).get("text/plain", "")) or "".join(o.get("text", ""))
             for o in nb.cells[0].outputs]
    assert not any("epoch 1/1" in t for t in texts) and not any(" 0%|" in t for t in texts), texts
    assert any(t.startswith("kept: 100%") for t in texts) and texts[-1] == "done\n", texts


# --------------------------------------------------------------------------- nothing runs from a file
def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    """Python's, NumPy's and torch's generators (cached Gaussians included) draw on as if never saved."""
    D.seed_everything(7)
    random.gauss(0, 1), np.random.randn(1), torch.rand(1)  # odd normal draws: a cached Gaussian each
    torch.save(encode_rng(D.rng_state()), tmp_path / "rng.pth")
    expected = random.gauss(0, 1), random.random(), np.random.randn(3).tolist(), torch.rand(3)
    D.seed_everything(99)
    D.set_rng_state(decode_rng(torch.load(tmp_path / "rng.pth", weights_only=True)))
    drawn = random.gauss(0, 1), random.random(), np.random.randn(3).tolist(), torch.rand(3)
    assert drawn[:3] == expected[:3] and torch.equal(drawn[3], expected[3])


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the loader executes the pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_files_that_would_run_code_are_refused_by_every_entry_point(tree, tmp_path):
    marker = tmp_path / "marker"
    out = tmp_path / "run"
    out.mkdir()
    evil = out / "last.pth"
    torch.save({"model": {"head.weight": torch.zeros(3, 220)}, "epoch": 0, "config": {},
                "train_state": {"rng": [_RunsCode(marker)]}}, evil)
    kw = dict(data="folder", data_dir=str(tree), batch_size=8, img_size=32, out=str(out), progress=False)
    blocked = r"io\.open|builtins\.open"
    with pytest.raises(ValueError, match=blocked):
        T.fit(**kw, resume=str(evil))
    with pytest.raises(ValueError, match=blocked):
        T.fit(**kw, resume="auto")  # out/last.pth
    with pytest.raises(ValueError, match=blocked):
        T.fit(**kw, init_checkpoint=str(evil))
    with pytest.raises(ValueError, match=blocked):
        T.evaluate_checkpoint(evil)
    with pytest.raises(ValueError, match=blocked):
        T.main(["--evaluate", str(evil)])
    with pytest.raises(ValueError, match=blocked):
        T.main(["--data", "folder", "--data-dir", str(tree), "--img-size", "32", "--out", str(out), "--resume",
                str(evil), "--no-progress"])
    with pytest.raises(Exception, match=blocked):  # the teacher's file is read by timm, also weights only
        T.fit(**kw, teacher="resnet10t", teacher_checkpoint=str(evil))
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the file really runs code when unpickled in full
    assert marker.exists()
