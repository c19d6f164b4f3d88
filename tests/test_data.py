"""swiftlib.data against independent references: torchvision's ImageFolder and IDX reader, timm's
ImageNet-1k label order, hashlib checksums, torchvision's resize / center crop, the Fashion-MNIST
and subset facts (class counts, WNID lists in the facts file)."""
import gzip
import hashlib
import io
import random
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo
from torchvision.datasets import ImageFolder
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms import functional as TF

import swiftlib.data as D
import swiftlib.data.cache as data_cache
import swiftlib.data.fashion_mnist as data_fmnist
from swiftlib import DATA_DIR
from helpers import write_image_folder

IMAGENETTE = ["n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042",
              "n03425413", "n03445777", "n03888257"]  # facts file §6
IMAGEWOOF = ["n02086240", "n02087394", "n02088364", "n02089973", "n02093754", "n02096294", "n02099601",
             "n02105641", "n02111889", "n02115641"]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes x 6 JPEGs per split plus one corrupt file per split in the first class."""
    return write_image_folder(tmp_path_factory.mktemp("tree"), IMAGENETTE[:3], 6, corrupt=1)


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory):
    """The ten Imagenette WNIDs plus two Imagewoof ones, 4 JPEGs each, no corrupt files."""
    return write_image_folder(tmp_path_factory.mktemp("clean"), IMAGENETTE + IMAGEWOOF[:2], 4, size=(24, 20))


# --------------------------------------------------------------------------- class lists
def test_subset_files_match_facts_and_imagenet1k():
    assert D.read_class_list("imagenette") == IMAGENETTE
    assert D.read_class_list("imagewoof") == IMAGEWOOF
    in100 = D.read_class_list("imagenet100")
    names = set(ImageNetInfo().label_names())
    assert len(in100) == len(set(in100)) == 100 and set(in100) <= names
    assert in100[:3] == ["n02869837", "n01749939", "n02488291"]  # CMC's imagenet100.txt opens with these
    with pytest.raises(FileNotFoundError, match="imagenet100"):
        D.read_class_list("imagenet1000")


def test_imagenet_index_and_names_follow_timm():
    info = ImageNetInfo()
    for wnid in IMAGENETTE:
        i = D.imagenet_class_index(wnid)
        assert info.index_to_label_name(i) == wnid
    assert D.imagenet_class_name("n01440764") == "tench"
    with pytest.raises(ValueError, match="n99999999"):
        D.imagenet_class_index("n99999999")


def test_imagenet_class_labels_are_timms_short_names_made_unique():
    info = ImageNetInfo()
    labels = D.imagenet_class_labels()
    assert len(labels) == len(set(labels)) == 1000 and labels[0] == "tench"
    renamed = [i for i, lab in enumerate(labels) if lab != info.index_to_description(i).split(",")[0]]
    assert [labels[i] for i in renamed] == [f"{info.index_to_description(i).split(',')[0]} "
                                            f"({info.index_to_label_name(i)})" for i in renamed]
    assert {labels[i].split(" (")[0] for i in renamed} == {"crane", "maillot"} and len(renamed) == 4


# --------------------------------------------------------------------------- folders
def test_folder_matches_torchvision_imagefolder(clean_tree):
    ours = D.build_dataset("folder", clean_tree, "train", 32, transform=None)
    ref = ImageFolder(str(clean_tree / "train"))
    assert ours.classes == ref.classes
    assert [(Path(p), t) for p, t in ours.samples] == [(Path(p), t) for p, t in ref.samples]
    img, label = ours[5]
    ref_img, ref_label = ref[5]
    assert label == ref_label and np.array_equal(np.asarray(img), np.asarray(ref_img))


def test_corrupt_image_skipped_and_reported_or_raised(tree):
    ds = D.build_dataset("folder", tree, "train", 32)
    assert len(ds) == 18 and ds.report.num_samples == 18
    assert len(ds.report.skipped) == 1 and ds.report.skipped[0][0].endswith("corrupt_0.JPEG")
    assert "1 unreadable skipped" in str(ds.report) and "corrupt_0.JPEG" in str(ds.report)
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    with pytest.raises(ValueError, match="corrupt_0.JPEG"):
        D.build_dataset("folder", tree, "train", 32, on_error="raise")


def test_empty_or_missing_class_folders_are_clear_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(FileNotFoundError, match=r"hold no images.*\['b'\]"):
        D.build_dataset("folder", tmp_path, "train", 32)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        D.build_dataset("folder", tmp_path / "train" / "a", "train", 32)
    with pytest.raises(FileNotFoundError, match="class folder"):
        D.build_dataset("imagenet", tmp_path, "val", 32)
    with pytest.raises(FileNotFoundError, match="n01440764"):
        D.build_dataset("imagenet", tmp_path, "train", 32, classes=["a", "n01440764"])
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        D.build_dataset("cifar", tmp_path)


# --------------------------------------------------------------------------- subsets
def test_subset_by_class_list_with_imagenet_labels(clean_tree):
    ds = D.build_dataset("imagenet", clean_tree, "val", 32, classes="imagenette", imagenet_labels=True)
    assert ds.classes == IMAGENETTE and len(ds) == 40
    want = [ImageNetInfo().label_names().index(w) for w in IMAGENETTE]
    assert sorted(set(ds.targets)) == sorted(want) and ds.imagenet_indices == want
    assert ds.class_names[0] == "tench"
    local = D.build_dataset("imagenet", clean_tree, "val", 32, classes="imagenette")
    assert sorted(set(local.targets)) == list(range(10))


def test_subset_by_num_classes_and_cap_is_seeded_and_deterministic(clean_tree):
    kw = dict(num_classes=4, images_per_class=2, transform=None)
    a = D.build_dataset("imagenet", clean_tree, "train", 32, seed=1, **kw)
    b = D.build_dataset("imagenet", clean_tree, "train", 32, seed=1, **kw)
    assert a.classes == b.classes and a.samples == b.samples
    available = sorted(IMAGENETTE + IMAGEWOOF[:2])
    assert a.classes == sorted(random.Random(1).sample(available, 4))  # the documented rule
    assert len(a) == 8 and all(a.targets.count(i) == 2 for i in range(4))
    for path, label in a.samples:
        assert Path(path).parent.name == a.classes[label]
    others = {tuple(D.build_dataset("imagenet", clean_tree, "train", 32, seed=s, **kw).classes) for s in range(2, 8)}
    assert len(others | {tuple(a.classes)}) > 1  # the seed matters
    with pytest.raises(ValueError, match=r"num_classes must be in \[1, 12\]"):
        D.build_dataset("imagenet", clean_tree, "train", 32, num_classes=13)


# --------------------------------------------------------------------------- downloads
def _tgz(src: Path, dest: Path, arcname: str) -> str:
    with tarfile.open(dest, "w:gz") as t:
        t.add(src, arcname=arcname)
    return hashlib.md5(dest.read_bytes()).hexdigest()


def test_download_verifies_checksum_and_extracts(clean_tree, tmp_path, monkeypatch):
    archive = tmp_path / "srv" / "imagenette2-160.tgz"
    archive.parent.mkdir()
    md5 = _tgz(clean_tree, archive, "imagenette2-160")
    monkeypatch.setitem(D.ARCHIVES, ("imagenette", "160px"), (archive.as_uri(), f"md5:{md5}"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "imagenette2-160.tgz.part").write_bytes(b"stale half download")  # an interrupted earlier attempt
    ds = D.build_dataset("imagenette", root, "train", 32, size="160px", download=True)
    assert len(ds) == 48 and ds.classes == sorted(IMAGENETTE + IMAGEWOOF[:2])
    assert hashlib.md5((root / "imagenette2-160.tgz").read_bytes()).hexdigest() == md5
    assert not (root / "imagenette2-160.tgz.part").exists()
    assert not list(root.glob(".extract-*"))
    # second call: extracted folder reused, no download needed
    assert len(D.build_dataset("imagenette", root, "val", 32, size="160px", download=False)) == 48


def test_download_checksum_failure_and_offline_message(clean_tree, tmp_path, monkeypatch):
    archive = tmp_path / "imagewoof2-160.tgz"
    _tgz(clean_tree, archive, "imagewoof2-160")
    monkeypatch.setitem(D.ARCHIVES, ("imagewoof", "160px"), (archive.as_uri(), "md5:" + "0" * 32))
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="md5 mismatch.*expected 0{32}, got [0-9a-f]{32}"):
        D.build_dataset("imagewoof", root, "train", 32, size="160px", download=True)
    assert not (root / "imagewoof2-160.tgz").exists() and not (root / "imagewoof2-160.tgz.part").exists()
    with pytest.raises(FileNotFoundError, match=r"put it at .*imagewoof2-160.tgz"):
        D.build_dataset("imagewoof", root, "train", 32, size="160px", download=False)
    monkeypatch.setitem(D.ARCHIVES, ("imagewoof", "160px"), ((tmp_path / "absent.tgz").as_uri(), None))
    with pytest.raises(FileNotFoundError, match="could not download.*put it at"):
        D.build_dataset("imagewoof", root, "train", 32, size="160px", download=True)
    with pytest.raises(ValueError, match="size must be one of"):
        D.build_dataset("imagewoof", root, "train", 32, size="64px")


def test_tiny_imagenet_val_is_refoldered(tmp_path, monkeypatch):
    wnids = ["n01443537", "n01629819"]
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "JPEG")
    zpath = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        ann = []
        for c, w in enumerate(wnids):
            for i in range(3):
                z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", buf.getvalue())
                z.writestr(f"tiny-imagenet-200/val/images/val_{c}{i}.JPEG", buf.getvalue())
                ann.append(f"val_{c}{i}.JPEG\t{w}\t0\t0\t63\t63")
            z.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", "")
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(ann))
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids))
    md5 = hashlib.md5(zpath.read_bytes()).hexdigest()
    monkeypatch.setitem(D.ARCHIVES, ("tiny-imagenet", "64px"), (zpath.as_uri(), f"md5:{md5}"))
    val = D.build_dataset("tiny-imagenet", tmp_path / "root", "val", 64, download=True, transform=None)
    assert val.classes == wnids and len(val) == 6
    for path, label in val.samples:  # the label comes from val_annotations.txt
        assert Path(path).name.startswith(f"val_{label}")
    train = D.build_dataset("tiny-imagenet", tmp_path / "root", "train", 64, transform=None)
    assert len(train) == 6 and train[0][0].size == (64, 64)


# --------------------------------------------------------------------------- uint8 cache
def test_cache_matches_resize_center_crop_and_is_reused(clean_tree, monkeypatch, tmp_path):
    kw = dict(transform=None, cache=True, cache_dir=tmp_path / "u8")
    direct = D.build_dataset("imagenet", clean_tree, "val", 16, transform=None, cache=False)
    cached = D.build_dataset("imagenet", clean_tree, "val", 16, **kw)
    assert cached.targets == direct.targets and cached.images.shape == (48, 16, 16, 3)
    for i in (0, 17, 47):
        ref = TF.center_crop(TF.resize(direct[i][0], 16, InterpolationMode.BICUBIC), 16)
        diff = np.abs(np.asarray(cached[i][0], dtype=int) - np.asarray(ref, dtype=int))
        assert diff.mean() < 2.0, diff.mean()
    files = sorted((tmp_path / "u8").iterdir())
    assert [f.suffix for f in files] == [".json", ".npy"]
    monkeypatch.setattr(data_cache, "_resize_short_center", lambda *a: pytest.fail("cache rebuilt although unchanged"))
    again = D.build_dataset("imagenet", clean_tree, "val", 16, **kw)
    assert isinstance(again.images, np.memmap) and again.targets == cached.targets


def test_class_subsets_of_one_folder_keep_their_own_caches(clean_tree, tmp_path, monkeypatch):
    builds = []
    real = data_cache._build
    monkeypatch.setattr(data_cache, "_build", lambda ds, *a, **k: builds.append(list(ds.classes)) or real(ds, *a, **k))
    kw = dict(transform=None, cache=True, cache_dir=tmp_path / "u8")
    for subset in (IMAGENETTE[:2], IMAGENETTE[2:4], IMAGENETTE[:2]):
        ds = D.build_dataset("imagenet", clean_tree, "val", 16, classes=subset, **kw)
        assert ds.classes == subset
    assert builds == [IMAGENETTE[:2], IMAGENETTE[2:4]]  # the first subset's cache survived the second's build
    assert len(list((tmp_path / "u8").glob("imagenet-val-16px-*.npy"))) == 2


def test_cache_rebuilt_on_change_and_never_half_written(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "t", IMAGENETTE[:2], 3, corrupt=1, splits=("train",))
    cache_dir = tmp_path / "u8"
    a = D.build_dataset("folder", root, "train", 16, cache=True, cache_dir=cache_dir)
    assert len(a) == 6 and len(a.report.skipped) == 1  # the corrupt file is found by the cache build
    Image.new("RGB", (30, 30)).save(root / "train" / IMAGENETTE[1] / "new.JPEG")
    calls = {"n": 0}
    real = data_cache._resize_short_center

    def flaky(img, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the build dies half-way
        return real(img, size)

    monkeypatch.setattr(data_cache, "_resize_short_center", flaky)
    with pytest.raises(KeyboardInterrupt):
        D.build_dataset("folder", root, "train", 16, cache=True, cache_dir=cache_dir)
    leftovers = sorted(p.name for p in cache_dir.iterdir())
    assert not [n for n in leftovers if ".tmp" in n]
    monkeypatch.setattr(data_cache, "_resize_short_center", real)
    b = D.build_dataset("folder", root, "train", 16, cache=True, cache_dir=cache_dir)
    assert len(b) == 7 and len(list(cache_dir.glob("*.npy"))) == 1


def test_default_cache_dir_follows_env_and_not_data(monkeypatch, tmp_path, clean_tree):
    monkeypatch.setenv("SWIFTLIB_CACHE", str(tmp_path / "elsewhere"))
    assert D.cache_root() == tmp_path / "elsewhere"
    ds = D.build_dataset("imagenet", clean_tree, "val", 16, transform=None, classes=IMAGENETTE[:2], cache=True)
    assert len(ds) == 8 and len(list((tmp_path / "elsewhere" / "u8").glob("imagenet-val-16px-*.npy"))) == 1
    monkeypatch.setenv("SWIFTLIB_CACHE", str(DATA_DIR / "cache"))
    with pytest.raises(ValueError, match="must not be inside"):
        D.cache_root()


# --------------------------------------------------------------------------- Fashion-MNIST
@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_matches_torchvision_reader(tmp_path):
    for split, prefix, n in (("train", "train", 60000), ("test", "t10k", 10000)):
        images, labels = D.load_fashion_mnist(split=split)
        raw = {}
        for kind in ("images-idx3", "labels-idx1"):
            out = tmp_path / f"{prefix}-{kind}-ubyte"
            out.write_bytes(gzip.decompress((FMNIST / f"{prefix}-{kind}-ubyte.gz").read_bytes()))
            raw[kind] = out
        assert np.array_equal(images, read_image_file(str(raw["images-idx3"])).numpy())
        assert np.array_equal(labels, read_label_file(str(raw["labels-idx1"])).numpy())
        assert images.shape == (n, 28, 28) and np.bincount(labels).tolist() == [n // 10] * 10
    ds = D.build_dataset("fashion-mnist", None, "train", 32, images_per_class=5, seed=3)
    assert len(ds) == 50 and sorted(set(ds.targets)) == list(range(10))
    assert ds.class_names[9] == "Ankle boot" and ds[0][0].shape == (3, 32, 32)


def test_fashion_mnist_root_is_read_first(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)
    # IDX: two zero bytes, dtype 0x08 (uint8), ndim, then each size as a big-endian int32
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + np.array(
        [4, 28, 28], ">i4").tobytes() + images.tobytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + np.array([4], ">i4").tobytes()
                                                      + labels.tobytes())
    got_images, got_labels = D.load_fashion_mnist(tmp_path, "val")
    assert np.array_equal(got_images, images) and got_labels.tolist() == [3, 1, 4, 1]
    assert np.array_equal(got_images, read_image_file(str(tmp_path / "t10k-images-idx3-ubyte")).numpy())
    ds = D.build_dataset("fashion-mnist", tmp_path, "test", 16, images_per_class=1)
    assert sorted(ds.targets) == [1, 3, 4] and ds.report.split == "val" and ds[0][0].shape == (3, 16, 16)


def test_fashion_mnist_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data_fmnist, "FASHION_MNIST_DIRS", ())
    monkeypatch.setenv("SWIFTLIB_CACHE", str(tmp_path / "cache"))  # nor a copy downloaded earlier
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        D.load_fashion_mnist(tmp_path / "none", "train")
    with pytest.raises(ValueError, match="split must be"):
        D.load_fashion_mnist(None, "holdout")


# --------------------------------------------------------------------------- transforms
def test_eval_transform_is_resize_center_crop_normalise(clean_tree):
    img = Image.open(next((clean_tree / "val" / IMAGENETTE[0]).iterdir())).convert("RGB")
    ours = D.build_transform(32, False, crop_pct=0.875)(img)
    ref = TF.normalize(TF.to_tensor(TF.center_crop(TF.resize(img, 36, InterpolationMode.BICUBIC), 32)),
                       IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    torch.testing.assert_close(ours, ref)
    train = D.build_transform(32, True, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    names = " ".join(type(t).__name__ for t in train.transforms)
    assert "RandomResizedCrop" in names and "RandAugment" in names and "RandomErasing" in names
    with pytest.raises(ValueError, match="img_size must be >= 8"):
        D.build_transform(4, True)


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_random_erasing_takes_timms_mode_and_count(mode):
    """re_mode / re_count reach timm's RandomErasing; what each mode paints, on a flat grey image erased
    with probability 1: const zeros, rand one colour per channel (N(0, 1) draws), pixel noise per pixel."""
    train = D.build_transform(32, True, scale=(1.0, 1.0), hflip=0.0, color_jitter=0.0, re_prob=1.0, re_mode=mode,
                              re_count=3)
    (erasing,) = [t for t in train.transforms if type(t).__name__ == "RandomErasing"]
    assert (erasing.mode, erasing.max_count, erasing.probability) == (mode, 3, 1.0)
    torch.manual_seed(0)
    out = train(Image.new("RGB", (40, 40), (128, 128, 128)))          # [3, 32, 32]
    grey = torch.tensor([(128 / 255 - m) / s for m, s in zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    changed = ~torch.isclose(out, grey.view(3, 1, 1), atol=1e-4)        # [3, 32, 32]: erased values
    assert changed.any()
    painted = out[changed]
    if mode == "const":
        assert torch.all(painted == 0)
    elif mode == "rand":  # a box is one colour: per channel far fewer distinct values than pixels
        assert all(out[c][changed[c]].unique().numel() <= 3 for c in range(3))
    else:
        assert painted.unique().numel() > 0.9 * painted.numel()
    with pytest.raises(ValueError, match="re_mode"):
        D.build_transform(32, True, re_prob=0.5, re_mode="noise")
    with pytest.raises(ValueError, match="re_count"):
        D.build_transform(32, True, re_prob=0.5, re_count=0)


def test_seeded_transform_is_reproducible_and_leaves_rng_alone(tree):
    ds = D.SeededTransformDataset(D.build_dataset("folder", tree, "train", 32))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = ds[(3, 99)], ds[(3, 99)], ds[(3, 100)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0]) and a[1] == c[1]


def test_seeded_block_draws_the_seeds_stream_and_restores_all_three_generators():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    outer = D.rng_state()
    with D.seeded(7):
        draws = (random.random(), np.random.rand(), torch.rand(1).item())
    after = D.rng_state()
    assert after["python"] == outer["python"] and torch.equal(after["torch"], outer["torch"])
    assert all(np.array_equal(a, b) for a, b in zip(after["numpy"][1:3], outer["numpy"][1:3]))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # the same stream as a plain seed
    assert draws == (random.random(), np.random.rand(), torch.rand(1).item())


def test_dataset_or_fallback_explains_why(tmp_path, clean_tree):
    name, msg = D.dataset_or_fallback("imagenette", tmp_path / "empty", download=False)
    assert name == "fashion-mnist" and "imagenette2-320.tgz" in msg and "falling back to fashion-mnist" in msg
    extracted = tmp_path / "have" / "imagenette2-320"
    shutil.copytree(clean_tree, extracted)
    (extracted / ".complete").write_text("imagenette2-320.tgz\n")
    assert D.dataset_or_fallback("imagenette", tmp_path / "have", download=False)[0] == "imagenette"


def test_interrupted_download_resumes_with_a_range_request(tmp_path, monkeypatch):
    payload = np.random.default_rng(0).bytes(3000)
    md5 = hashlib.md5(payload).hexdigest()
    asked = []

    class Response(io.BytesIO):
        def __init__(self, data, status):
            super().__init__(data)
            self.status, self.headers = status, {"Content-Length": str(len(data))}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(req, timeout):  # an HTTP server that honours Range
        rng = req.get_header("Range")
        asked.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        return Response(payload[start:], 206 if rng else 200)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "archive.tgz"
    (tmp_path / "archive.tgz.part").write_bytes(payload[:1000])  # what an interrupted download left
    D.download_archive("https://example.invalid/archive.tgz", dest, f"md5:{md5}")
    assert asked == ["bytes=1000-"] and dest.read_bytes() == payload


# --------------------------------------------------------------------------- batch augmentation
def _plain(size, **kw):
    return D.BatchRandomResizedCrop(size, mean=(0, 0, 0), std=(1, 1, 1), **kw)


def test_batch_crop_of_the_whole_image_is_torch_bilinear_resize():
    grey = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = _plain(32, scale=(1, 1), ratio=(1, 1), hflip=0.0)(grey, torch.Generator().manual_seed(1))
    ref = torch.nn.functional.interpolate(grey.float().unsqueeze(1), size=(32, 32), mode="bilinear",
                                          align_corners=False) / 255
    assert out.shape == (5, 3, 32, 32)
    torch.testing.assert_close(out, ref.expand(5, 3, 32, 32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_batch_crop_equals_torchvision_resized_crop_of_its_boxes(layout, hflip):
    rgb = torch.randint(0, 256, (4, 40, 50, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images = rgb if layout == "nhwc" else rgb.permute(0, 3, 1, 2).contiguous()
    t = _plain(16, scale=(0.2, 0.7), hflip=hflip)
    out = t(images, torch.Generator().manual_seed(3))
    boxes = t.boxes(4, 40, 50, torch.Generator().manual_seed(3))  # the same draws come first
    for b in range(4):
        top, left, h, w = (int(v) for v in boxes[b])
        ref = TF.resized_crop(rgb[b].permute(2, 0, 1).float(), top, left, h, w, [16, 16],
                              interpolation=InterpolationMode.BILINEAR, antialias=False) / 255
        torch.testing.assert_close(out[b], ref.flip(-1) if hflip else ref, rtol=0, atol=1e-5)


def test_batch_crop_boxes_follow_torchvision_random_resized_crop():
    """Area fraction and aspect ratio of 20000 boxes vs torchvision's own get_params draws."""
    H, W, n = 100, 120, 20000
    ours = _plain(32, scale=(0.08, 1.0)).boxes(n, H, W, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    img = torch.zeros(1, H, W)
    theirs = torch.tensor([RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)],
                          dtype=torch.float64)
    for boxes in (ours, theirs):
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= H).all() and (boxes[:, 1] + boxes[:, 3] <= W).all()
    area = lambda b: b[:, 2] * b[:, 3] / (H * W)  # noqa: E731
    aspect = lambda b: (b[:, 3] / b[:, 2]).log()  # noqa: E731
    assert area(ours).mean().item() == pytest.approx(area(theirs).mean().item(), abs=0.01)
    assert aspect(ours).std().item() == pytest.approx(aspect(theirs).std().item(), abs=0.01)
    centre = lambda b: ((b[:, 1] + b[:, 3] / 2) / W).mean().item()  # noqa: E731
    assert centre(ours) == pytest.approx(centre(theirs), abs=0.01)


def test_batch_crop_eval_is_the_center_crop_pct_and_normalises():
    rgb = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = D.BatchRandomResizedCrop(32, train=False, crop_pct=0.875, mean=mean, std=std)(rgb)
    ref = TF.resized_crop(rgb.float() / 255, 4, 12, 56, 56, [32, 32], interpolation=InterpolationMode.BILINEAR,
                          antialias=False)
    torch.testing.assert_close(out, TF.normalize(ref, mean, std), rtol=0, atol=5e-5)


def test_batch_crop_is_a_function_of_the_generator_seed_and_checks_input():
    grey = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    t = D.BatchRandomResizedCrop(32, scale=(0.3, 1.0))
    a, b = t(grey, torch.Generator().manual_seed(5)), t(grey, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, t(grey, torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="uint8"):
        t(grey.float())
    with pytest.raises(ValueError, match="3 channels"):
        t(torch.zeros(2, 2, 9, 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scale"):
        D.BatchRandomResizedCrop(32, scale=(0.5, 0.2))


def test_array_dataset_raw_items_are_the_stored_rows():
    images = np.random.default_rng(0).integers(0, 256, (6, 9, 7), dtype=np.uint8)
    ds = D.ArrayDataset(images, list(range(6)), list(range(6)), list(range(6)), raw=True)
    x, y = ds[4]
    assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(images[4])) and y == 4
    assert D.SeededTransformDataset(ds)[(4, 123)][1] == 4


def test_array_dataset_raw_view_shares_the_array_and_leaves_the_dataset_alone():
    images = np.random.default_rng(0).integers(0, 256, (6, 9, 7, 3), dtype=np.uint8)
    ds = D.ArrayDataset(images, list(range(6)), list(range(6)), list(range(6)), transform=TF.pil_to_tensor)
    view = ds.raw_view()
    assert view.raw and view.transform is None and view.images is ds.images and view.targets is ds.targets
    assert torch.equal(view[2][0], torch.from_numpy(images[2]))
    assert not ds.raw and ds.transform is TF.pil_to_tensor and ds[2][0].shape == (3, 9, 7)


def test_batch_crop_normalisation_constants_are_made_once_per_device():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    t = D.BatchRandomResizedCrop(8, mean=mean, std=std)
    grey = torch.randint(0, 256, (2, 12, 12), dtype=torch.uint8)
    t(grey, torch.Generator().manual_seed(0))
    scale, shift = t._norm(torch.device("cpu"))
    t(grey, torch.Generator().manual_seed(1))
    assert t._norm(torch.device("cpu"))[0] is scale and list(t._norm_cache) == [torch.device("cpu")]
    assert scale.shape == shift.shape == (1, 3, 1, 1) and scale.dtype == torch.float32
    torch.testing.assert_close(shift.flatten() + 255 * scale.flatten(), (1 - torch.tensor(mean)) / torch.tensor(std))
