"""swiftlib.data with broken inputs: every fault is a clear error naming the file or argument, or is
skipped and reported; nothing is silent, nothing crashes. Expectations are independent (numpy
arithmetic on the pixel arrays written with PIL, a fresh cache build in another folder)."""
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import swiftlib.data as D
import swiftlib.data.cache as data_cache
from helpers import write_image_folder

WNIDS = ["n01440764", "n02102040", "n02979186"]


@pytest.fixture
def tree(tmp_path):
    """3 classes x 4 JPEGs per split (train, val), no corrupt file; a fresh copy per test."""
    return write_image_folder(tmp_path / "tree", WNIDS, 4, size=(24, 20))


def _cut_jpeg_data(path):
    """Keep a JPEG's headers and the first bytes of its entropy-coded data (after the SOS marker)."""
    data = open(path, "rb").read()
    open(path, "wb").write(data[: data.index(b"\xff\xda") + 24])


def _garble(path, at=None, n=64):
    """Overwrite ``n`` bytes of ``path`` in place (size unchanged) with their complement."""
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at:at + n] = bytes(255 - b for b in data[at:at + n])
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- 1. nothing readable
@pytest.mark.parametrize("layout", ["folder", "imagenet", "imagenette"])
def test_tree_without_a_readable_image_is_an_error_naming_folder_and_count(tmp_path, layout):
    root = write_image_folder(tmp_path / "t", WNIDS[:2], 0, corrupt=3)  # 3 random-byte ".JPEG"s, nothing else
    if layout == "imagenette":  # an extracted archive, as prepare_archive leaves it
        shutil.move(root, tmp_path / "t2")
        (tmp_path / "t" / "imagenette2-320").parent.mkdir()
        shutil.move(tmp_path / "t2", tmp_path / "t" / "imagenette2-320")
        (tmp_path / "t" / "imagenette2-320" / ".complete").write_text("imagenette2-320.tgz\n")
    for split in ("train", "val"):  # the second class of each split gets one file too, as bad
        (tmp_path.glob(f"t/**/{split}/{WNIDS[1]}").__next__() / "bad.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"no readable image under .*train.*all 4 files tried"):
        D.build_dataset(layout, tmp_path / "t", "train", 32)
    with pytest.raises(ValueError, match=r"no readable image .*all 4 files"):  # the cache finds it too
        D.build_dataset(layout, tmp_path / "t", "val", 32, cache=True, cache_dir=tmp_path / "u8")
    assert list((tmp_path / "u8").iterdir()) == []  # and leaves no empty cache behind


def test_class_whose_images_are_all_unreadable_is_named(tmp_path):
    root = write_image_folder(tmp_path / "t", WNIDS, 3, splits=("train",))
    for f in (root / "train" / WNIDS[2]).iterdir():
        f.write_bytes(b"garbage" * 20)
    for cache in (False, True):
        with pytest.raises(ValueError, match=rf"1 class\(es\) have no readable image: .*{WNIDS[2]} \(3 tried\)"):
            D.build_dataset("folder", root, "train", 32, cache=cache, cache_dir=tmp_path / "u8")


# --------------------------------------------------------------------------- 2. decode fails in training
def _break_after_build(ds):
    """Damage three files of a built dataset: JPEG data cut after the header, one deleted, one replaced."""
    paths = [p for p, _ in ds.samples]
    _cut_jpeg_data(paths[1])                              # header intact: PIL's verify() would pass it
    os.remove(paths[5])
    open(paths[9], "wb").write(b"not an image any more")
    return {paths[1]: 2, paths[5]: 6, paths[9]: 10}      # bad file -> index that serves its item


def test_truncated_jpeg_passes_the_build_check(tree):
    _cut_jpeg_data(next((tree / "train" / WNIDS[0]).iterdir()))
    ds = D.build_dataset("folder", tree, "train", 32, transform=None)
    assert len(ds) == 12 and ds.report.skipped == []   # why the load-time policy is needed


def test_decode_failure_while_training_is_skipped_reported_and_deterministic(tree):
    ds = D.build_dataset("folder", tree, "train", 16, transform=None)
    substitutes = _break_after_build(ds)
    with pytest.warns(RuntimeWarning) as caught:
        items = [ds[i] for i in range(len(ds))]
    for bad, sub in substitutes.items():
        assert any(bad in str(w.message) for w in caught)
        i = [p for p, _ in ds.samples].index(bad)
        img, label = items[i]   # served by the next readable index, with that image's label
        want = Image.open(ds.samples[sub][0]).convert("RGB")
        assert np.array_equal(np.asarray(img), np.asarray(want)) and label == ds.targets[sub]
    assert sorted(p for p, _ in ds.report.failed) == sorted(substitutes)
    assert "3 failed to decode while loading" in str(ds.report)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are not retried nor warned again
        again = [ds[i] for i in range(len(ds))]
    assert all(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and a[1] == b[1] for a, b in zip(items, again))
    strict = D.build_dataset("folder", tree, "train", 16, transform=None, on_error="raise", verify=False)
    with pytest.raises(ValueError, match=os.path.basename(next(iter(substitutes)))):
        strict[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_keeps_going_with_whole_batches_and_seeded_items(tree, workers):
    ds = D.build_dataset("folder", tree, "train", 16)
    resumed = D.SeededTransformDataset(D.build_dataset("folder", tree, "train", 16))  # another process's copy
    _break_after_build(ds)
    order = [(i, 1000 + i) for i in torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loader = DataLoader(D.SeededTransformDataset(ds), batch_size=4, sampler=order, num_workers=workers,
                            drop_last=True)
        batches = [(x, y) for x, y in loader]
        tail = [resumed[item] for item in order[6:]]  # resumed mid-epoch: the same items, whatever came before
    assert [x.shape for x, _ in batches] == [(4, 3, 16, 16)] * 3
    got, labels = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]).tolist()
    assert torch.equal(got[6:], torch.stack([x for x, _ in tail])) and labels[6:] == [y for _, y in tail]


def test_every_image_gone_after_the_build_is_a_clear_error(tree):
    ds = D.build_dataset("folder", tree, "val", 16, transform=None)
    for p, _ in ds.samples:
        os.remove(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="none of the 12 images decodes"):
            ds[3]
    assert len(ds.report.failed) == 12


# --------------------------------------------------------------------------- 3. PIL modes
def _expected_modes(rng):
    """``{file name: (PIL image to save, expected RGB uint8 [S, S, 3] by numpy)}``, S = 12."""
    S = 12
    g16 = (np.arange(S * S, dtype=np.float64).reshape(S, S) * 65535 / (S * S - 1)).astype(np.uint16)
    i32 = (np.arange(S * S, dtype=np.int32).reshape(S, S) - 40) * 300                 # below 0 and above 65535
    f32 = np.linspace(0, 1, S * S, dtype=np.float32).reshape(S, S)
    la = rng.integers(0, 256, (S, S, 2), dtype=np.uint8)
    rgba = rng.integers(0, 256, (S, S, 4), dtype=np.uint8)
    cmyk = rng.integers(0, 256, (S, S, 4), dtype=np.uint8)
    bits = rng.integers(0, 2, (S, S)).astype(bool)
    idx = rng.integers(0, 3, (S, S), dtype=np.uint8)
    palette = np.array([[200, 30, 10], [20, 180, 40], [5, 6, 250]], dtype=np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette(palette.flatten().tolist())
    pal.info["transparency"] = 1                                                        # index 1 is see-through
    over_white = lambda c, a: c * (a / 255) + 255 * (1 - a / 255)                      # noqa: E731
    grey = lambda a: np.repeat(np.rint(a)[..., None], 3, axis=-1)                       # noqa: E731
    return {
        "g16.png": (Image.fromarray(g16), grey(g16 / 65535 * 255)),
        "g16.tiff": (Image.fromarray(g16), grey(g16 / 65535 * 255)),
        "i32.tiff": (Image.fromarray(i32), grey((i32 - i32.min()) / (i32.max() - i32.min()) * 255)),
        "f32.tiff": (Image.fromarray(f32), grey(f32.astype(np.float64) * 255)),
        "la.png": (Image.fromarray(la, "LA"), grey(over_white(la[..., 0], la[..., 1]))),
        "rgba.png": (Image.fromarray(rgba, "RGBA"), over_white(rgba[..., :3], rgba[..., 3:])),
        "cmyk.tiff": (Image.fromarray(cmyk, "CMYK"),
                      (255 - cmyk[..., :3].astype(float)) * (255 - cmyk[..., 3:].astype(float)) / 255),
        "bits.png": (Image.fromarray(bits), grey(bits * 255.0)),
        "pal.png": (pal, np.where((idx == 1)[..., None], 255, palette[idx]).astype(float)),
    }


def test_pil_modes_become_rgb_that_looks_like_the_image(tmp_path):
    expected = _expected_modes(np.random.default_rng(0))
    folder = tmp_path / "modes" / "train" / "all"
    folder.mkdir(parents=True)
    for name, (img, _) in expected.items():
        img.save(folder / name)
    assert Image.open(folder / "g16.png").mode == "I;16" and Image.open(folder / "pal.png").mode == "P"
    plain = D.build_dataset("folder", tmp_path / "modes", "train", 12, transform=None)
    cached = D.build_dataset("folder", tmp_path / "modes", "train", 12, transform=None, cache=True,
                             cache_size=12, cache_dir=tmp_path / "u8")    # same size: the resize is exact
    assert plain.report.skipped == [] and len(cached) == len(expected)
    for i, (path, _) in enumerate(plain.samples):
        want = expected[os.path.basename(path)][1]
        for got in (np.asarray(plain[i][0]), cached.images[i]):
            assert got.shape == (12, 12, 3) and got.dtype == np.uint8
            assert np.abs(got.astype(float) - want).max() <= 1, path
    g16 = np.asarray(plain.load([os.path.basename(p) for p, _ in plain.samples].index("g16.png")))
    assert len(np.unique(g16)) > 100  # tones kept, not clipped to white


def test_to_rgb_of_a_mode_without_rgb_conversion_names_the_mode():
    class Unconvertible:  # what PIL does for a mode it cannot turn into RGB
        mode, info = "XYZ", {}

        def convert(self, mode):
            raise ValueError("conversion from XYZ to RGB not supported")

    with pytest.raises(ValueError, match="mode 'XYZ'"):
        D.to_rgb(Unconvertible())


# --------------------------------------------------------------------------- 4. Fashion-MNIST files
def _idx(arr, dims):
    return bytes([0, 0, 8, dims]) + np.array(arr.shape, ">i4").tobytes() + arr.tobytes()


def _write_fmnist(folder, images_bytes, labels_bytes, gz):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for kind, data in (("images-idx3", images_bytes), ("labels-idx1", labels_bytes)):
        (folder / f"t10k-{kind}-ubyte{ext}").write_bytes(gzip.compress(data) if gz else data)


def _damaged_idx_cases(images, labels):
    good_i, good_l = _idx(images, 3), _idx(labels, 1)
    return {
        "wrong magic": (b"\x1f\x8b" + good_i[2:], good_l, "images", "not an IDX file"),
        "short data": (good_i[:-50], good_l, "images", "truncated"),
        "header only": (good_i[:10], good_l, "images", "truncated IDX header"),
        "empty": (b"", good_l, "images", "empty"),
        "labels not 1-d": (good_i, _idx(labels.reshape(2, 3), 2), "labels", "1 dimension"),
        "count mismatch": (good_i, _idx(labels[:5], 1), "images", "6 images but .*labels-idx1.* 5 labels"),
        "label above 9": (good_i, _idx(np.array([0, 1, 2, 3, 4, 12], np.uint8), 1), "labels", "0..9"),
    }


@pytest.mark.parametrize("gz", [False, True])
def test_damaged_fashion_mnist_file_is_a_value_error_naming_it(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6, dtype=np.uint8)
    for case, (img_b, lbl_b, which, why) in _damaged_idx_cases(images, labels).items():
        folder = tmp_path / case.replace(" ", "_") / str(gz)
        _write_fmnist(folder, img_b, lbl_b, gz)
        with pytest.raises(ValueError, match=rf"t10k-{which}-idx.-ubyte.*{why}"):
            D.load_fashion_mnist(folder, "test")


def test_fashion_mnist_gzip_that_ends_early_or_is_not_gzip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    _write_fmnist(tmp_path, _idx(images, 3), _idx(np.arange(6, dtype=np.uint8), 1), gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    full = path.read_bytes()
    for damaged in (full[: len(full) // 2], b"plain bytes, no gzip header", full[:10]):
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: damaged gzip"):
            D.load_fashion_mnist(tmp_path, "val")
    path.write_bytes(full)
    assert np.array_equal(D.load_fashion_mnist(tmp_path, "val")[0], images)


# --------------------------------------------------------------------------- 5. the cache checks itself
def _cache_files(cache_dir):
    return next(cache_dir.glob("*.npy")), next(cache_dir.glob("*.json"))


DAMAGE = {
    "truncated": lambda npy, js: npy.write_bytes(npy.read_bytes()[:-1000]),
    "empty": lambda npy, js: npy.write_bytes(b""),
    "garbled": lambda npy, js: _garble(npy),
    "garbled header": lambda npy, js: _garble(npy, at=0, n=8),
    "deleted array": lambda npy, js: npy.unlink(),
    "garbled sidecar": lambda npy, js: js.write_text(js.read_text()[:-7] + "}{"),
    "empty sidecar": lambda npy, js: js.write_bytes(b""),
    "binary sidecar": lambda npy, js: js.write_bytes(bytes(range(256))),
    "sidecar without checksum": lambda npy, js: js.write_text('{"key": "x", "targets": [], "skipped": []}'),
    "deleted sidecar": lambda npy, js: js.unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_is_detected_rebuilt_and_said(tree, tmp_path, damage):
    kw = dict(transform=None, cache=True, cache_size=16)
    fresh = D.build_dataset("folder", tree, "train", 16, cache_dir=tmp_path / "fresh", **kw)
    cache_dir = tmp_path / "u8"
    D.build_dataset("folder", tree, "train", 16, cache_dir=cache_dir, **kw)
    npy, js = _cache_files(cache_dir)
    DAMAGE[damage](npy, js)
    with pytest.warns(RuntimeWarning, match=rf"rebuilt the uint8 cache .*{npy.name}"):
        rebuilt = D.build_dataset("folder", tree, "train", 16, cache_dir=cache_dir, **kw)
    assert any(npy.name in n for n in rebuilt.report.notes) and npy.name in str(rebuilt.report)
    assert np.array_equal(np.asarray(rebuilt.images), np.asarray(fresh.images))
    assert rebuilt.targets == fresh.targets
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is sound: opened again, silently
        assert D.build_dataset("folder", tree, "train", 16, cache_dir=cache_dir, **kw).report.notes == []


def test_large_caches_are_checked_on_sampled_blocks(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(data_cache, "FULL_CHECK_BYTES", 0)  # every cache counts as large here
    kw = dict(transform=None, cache=True, cache_size=16, cache_dir=tmp_path / "u8")
    D.build_dataset("folder", tree, "train", 16, **kw)
    npy, js = _cache_files(tmp_path / "u8")
    _garble(npy, at=200, n=4)  # inside the first sampled block
    with pytest.warns(RuntimeWarning, match="checksum"):
        D.build_dataset("folder", tree, "train", 16, **kw)
    npy.write_bytes(npy.read_bytes()[:-1])
    with pytest.warns(RuntimeWarning, match="bytes"):
        D.build_dataset("folder", tree, "train", 16, **kw)


# --------------------------------------------------------------------------- 6. bad arguments
@pytest.mark.parametrize("arg, value", [
    ("img_size", 0), ("img_size", -32), ("img_size", 2.5), ("cache_size", 0), ("cache_size", -4),
    ("images_per_class", 0), ("images_per_class", -1), ("num_classes", 0), ("num_classes", -2),
    ("num_classes", 1.5),
])
def test_bad_counts_are_value_errors_naming_the_argument(tree, tmp_path, arg, value):
    kw = {"img_size": 32, "transform": None, "cache": arg == "cache_size", "cache_dir": tmp_path / "u8", arg: value}
    with pytest.raises(ValueError, match=arg):
        D.build_dataset("folder", tree, "train", **kw)


def test_bad_split_root_transform_and_class_list_are_named(tree, tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        D.build_dataset("folder", tree, "holdout", 32)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for name in ("folder", "imagenet", "imagenette", "fashion-mnist"):
        with pytest.raises(ValueError, match=rf"root must be a folder.*{a_file}"):
            D.build_dataset(name, a_file, "train", 32)
    with pytest.raises(ValueError, match="transform must be"):
        D.build_dataset("folder", tree, "train", 32, transform="none")
    (tree / "train" / "n99999999").mkdir()  # folders exist, but the WNID is not ImageNet-1k's
    Image.new("RGB", (8, 8)).save(tree / "train" / "n99999999" / "x.png")
    listing = tmp_path / "classes.txt"
    listing.write_text(f"{WNIDS[0]}\nn99999999\n")
    with pytest.raises(ValueError, match=r"classes\.txt.*not ImageNet-1k WNIDs: \['n99999999'\]"):
        D.build_dataset("imagenet", tree, "train", 32, classes=listing, imagenet_labels=True)
    with pytest.raises(ValueError, match=r"class folders.*not ImageNet-1k WNIDs: \['n99999999'\]"):
        D.build_dataset("folder", tree, "train", 32, imagenet_labels=True)
    assert len(D.build_dataset("imagenet", tree, "train", 32, classes=listing)) == 5  # fine without labels
    listing.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="classes.txt"):
        D.build_dataset("imagenet", tree, "train", 32, classes=listing)


def test_cache_dir_that_is_a_file_or_not_writable_is_named(tree, tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for bad in (a_file, a_file / "u8"):
        with pytest.raises(ValueError, match=rf"cache_dir .*{a_file}"):
            D.build_dataset("folder", tree, "train", 16, cache=True, cache_dir=bad)
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the probe meet what a read-only folder gives
        real = tempfile.TemporaryFile

        def refuse(*a, dir=None, **k):
            if dir is not None and os.path.samefile(dir, locked):
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=rf"cache_dir {locked} is not writable"):
            D.build_dataset("folder", tree, "train", 16, cache=True, cache_dir=locked)
    finally:
        locked.chmod(0o755)


def test_damaged_archive_is_a_value_error_naming_it(tree, tmp_path, monkeypatch):
    archive = tmp_path / "srv" / "imagenette2-160.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as t:
        t.add(tree, arcname="imagenette2-160")
    archive.write_bytes(archive.read_bytes()[:-200])        # cut short, yet it matches its (wrong) checksum
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(D.ARCHIVES, ("imagenette", "160px"), (archive.as_uri(), f"md5:{md5}"))
    with pytest.raises(ValueError, match=r"imagenette2-160\.tgz: damaged archive"):
        D.build_dataset("imagenette", tmp_path / "root", "train", 32, size="160px", download=True)
