"""Datasets by name, their transforms and a pre-resized uint8 cache. Knows nothing of models.

One entry point, :func:`build_dataset`, returns a ``torch.utils.data.Dataset`` of
``(image [3, H, W] float tensor, label int)`` pairs for

=================  =============================================================================
``name``           what
=================  =============================================================================
``imagenette``     fast.ai's 10 easy ImageNet classes (``size`` full / 320px / 160px); download
``imagewoof``      fast.ai's 10 dog breeds, same layout and sizes; download
``imagenet``       an ILSVRC-2012 folder (``train/``, ``val/`` by WNID) or a subset of it: a class
                   list (``classes="imagenette" | "imagewoof" | "imagenet100"`` from ``data/subsets``,
                   a file, or WNIDs), ``num_classes=k`` (seeded) and ``images_per_class`` (seeded cap)
``tiny-imagenet``  200 classes at 64 px; download + MD5, the flat ``val/`` re-foldered by WNID
``folder``         any class-folder tree ``root/<split>/<class>/**/<image>`` (or ``root/<class>``)
``fashion-mnist``  Zalando's 70k 28 x 28 clothes: from Debian's ``dataset-fashion-mnist`` files
                   (``/usr/share/datasets/fashion-mnist``) or torchvision's download; offline-ready
=================  =============================================================================

Every dataset carries ``classes`` (WNIDs or folder names), ``class_names`` (human names),
``targets`` (one label per sample), ``mean``/``std`` (normalisation used by its transform) and a
``report`` (:class:`DataReport`: samples kept, unreadable files skipped).

Transforms come from timm's ``create_transform`` (random resized crop, flip, RandAugment, colour
jitter, random erasing; eval: resize + center crop with ``crop_pct``): :func:`build_transform`.
For images already in memory as uint8 (the cache, Fashion-MNIST), :class:`BatchRandomResizedCrop`
does random resized crop + flip + normalisation for a whole batch in one ``grid_sample`` (on the
training device), instead of one PIL pipeline per image; ``ArrayDataset(raw=True)`` (or a dataset's
``raw_view()``, which shares its array) serves the uint8 rows it needs.

Cache (``cache=True``): every image decoded once, resized to ``cache_size`` on the short side,
center-cropped to a square and stored as a memory-mapped ``uint8`` array ``[N, S, S, 3]`` under
:func:`cache_root` (``$SWIFTLIB_CACHE`` or ``~/.cache/swiftlib``), so an epoch decodes no JPEG. The
file name carries a hash of dataset / split / classes / size / file list (paths, sizes, mtimes): any
change builds a new cache; files are written to a temporary name and renamed, never half-written.

Unreadable images: ``on_error="skip"`` (default) drops them, counts them and lists them in
``dataset.report``; ``on_error="raise"`` fails naming the file.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from swiftlib import DATA_DIR
from swiftlib.io import atomic_write_text

__all__ = [
    "DATASETS", "ARCHIVES", "IMAGENET_MEAN", "IMAGENET_STD", "FASHION_MNIST_CLASSES",
    "DataReport", "ImageListDataset", "ArrayDataset", "SeededTransformDataset", "BatchRandomResizedCrop",
    "build_dataset", "build_transform", "cache_root", "read_class_list", "imagenet_class_index",
    "imagenet_class_name", "imagenet_class_labels", "select_classes", "cap_per_class", "download_archive", "verify_checksum",
    "extract_archive", "load_fashion_mnist", "cached_uint8", "write_image_folder", "dataset_or_fallback",
    "rng_state", "set_rng_state", "seed_everything", "seeded",
]

DATASETS = ("imagenette", "imagewoof", "imagenet", "tiny-imagenet", "folder", "fashion-mnist")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SUBSETS_DIR = DATA_DIR / "subsets"

#: (dataset, size) -> (url, checksum "md5:<hex>" | "sha256:<hex>" | None). Imagenette's MD5s are
#: torchvision's (``torchvision.datasets.Imagenette._ARCHIVES``); Imagewoof's SHA-256s are the ones
#: published with Julia's DLDatasets registry; no checksum is published for the full Imagewoof.
ARCHIVES = {
    ("imagenette", "full"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz",
                             "md5:fe2fc210e6bb7c5664d602c3cd71e612"),
    ("imagenette", "320px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
                              "md5:3df6f0d01a2c9592104656642f5e78a3"),
    ("imagenette", "160px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
                              "md5:e793b78cc4c9e9a4ccc0c1155377a412"),
    ("imagewoof", "full"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2.tgz", None),
    ("imagewoof", "320px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz",
                             "sha256:4e4905ed7643120daaf9bf3b2ef7f3a7e8396d9bdaf254a38c6f01f618b4973d"),
    ("imagewoof", "160px"): ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz",
                             "sha256:663c22f69c2802d85e2a67103c017e047096702ffddf9149a14011b7002539bf"),
    ("tiny-imagenet", "64px"): ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                "md5:90528d7ca1a48142e341f4ef8d21d0de"),
}

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
#: Per-channel statistics of the 60k Fashion-MNIST training images (grey, replicated to RGB).
FASHION_MNIST_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_MNIST_STD = (0.3530, 0.3530, 0.3530)


# =========================================================================== small helpers
def cache_root() -> Path:
    """Where downloads, extracted archives and uint8 caches go: ``$SWIFTLIB_CACHE`` or ``~/.cache/swiftlib``."""
    root = Path(os.environ.get("SWIFTLIB_CACHE") or Path.home() / ".cache" / "swiftlib").expanduser()
    if DATA_DIR.resolve() in [root.resolve(), *root.resolve().parents]:
        raise ValueError(f"the cache directory must not be inside {DATA_DIR} (committed facts only); got {root}")
    return root


def read_class_list(spec: str | os.PathLike | Sequence[str]) -> list[str]:
    """WNIDs from a subset name (``imagenette``, ``imagewoof``, ``imagenet100`` in ``data/subsets``),
    a text file (one WNID a line, ``#`` comments) or a sequence of WNIDs; order preserved."""
    if not isinstance(spec, (str, os.PathLike)):
        wnids = [str(w) for w in spec]
    else:
        path = SUBSETS_DIR / f"{spec}.txt" if (SUBSETS_DIR / f"{spec}.txt").is_file() else Path(spec)
        if not path.is_file():
            known = sorted(p.stem for p in SUBSETS_DIR.glob("*.txt"))
            raise FileNotFoundError(f"class list {spec!r}: expected one of {known} or a file of WNIDs, got no such file")
        wnids = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
        wnids = [w for w in wnids if w]
    if not wnids:
        raise ValueError(f"class list {spec!r} is empty")
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if dup:
        raise ValueError(f"class list {spec!r} repeats {dup}")
    return wnids


@functools.lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    return info, {w: i for i, w in enumerate(info.label_names())}


def imagenet_class_index(wnid: str) -> int:
    """Index of a WNID in the ImageNet-1k label order (timm's ``ImageNetInfo``)."""
    index = _imagenet_info()[1].get(wnid)
    if index is None:
        raise ValueError(f"{wnid!r} is not one of the 1000 ImageNet-1k WNIDs (expected e.g. 'n01440764')")
    return index


def imagenet_class_name(wnid: str) -> str:
    """Short human name of an ImageNet WNID (``'n01440764' -> 'tench'``); the WNID itself if unknown."""
    info, index = _imagenet_info()
    return info.label_name_to_description(wnid).split(",")[0] if wnid in index else wnid


def imagenet_class_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in label order, short form ("tench", "goldfish" ...), each unique.

    The two short names that repeat ("crane" the bird and the machine, "maillot" twice) get their WNID
    appended, e.g. ``"crane (n02012849)"`` (Core ML classifier labels must be unique).
    """
    info = _imagenet_info()[0]
    short = [info.index_to_description(i).split(",")[0].strip() for i in range(info.num_classes())]
    counts = {s: short.count(s) for s in set(short)}
    return [f"{s} ({info.index_to_label_name(i)})" if counts[s] > 1 else s for i, s in enumerate(short)]


def select_classes(available: Sequence[str], *, classes=None, num_classes: int | None = None,
                   seed: int = 0) -> list[str]:
    """The classes a subset keeps: ``classes`` (list/name/file, must all be present, order kept), else
    ``num_classes`` drawn with ``random.Random(seed)`` from the sorted available ones (returned
    sorted), else all of them sorted."""
    available = sorted(available)
    if classes is not None:
        wanted = read_class_list(classes)
        missing = [w for w in wanted if w not in set(available)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} requested class folder(s) missing: {missing[:5]}"
                                    f"{' ...' if len(missing) > 5 else ''} (found {len(available)} class folders)")
        chosen = wanted
    else:
        chosen = available
    if num_classes is not None:
        if not 1 <= num_classes <= len(chosen):
            raise ValueError(f"num_classes must be in [1, {len(chosen)}] (classes available), got {num_classes}")
        chosen = sorted(random.Random(seed).sample(sorted(chosen), num_classes))
    return list(chosen)


def cap_per_class(files: Sequence[str], images_per_class: int | None, seed: int, key: str) -> list[str]:
    """At most ``images_per_class`` of ``files``: a seeded sample (by ``seed`` and class ``key``) of the
    sorted list, returned sorted; all of them when the cap is None or not reached."""
    files = sorted(files)
    if images_per_class is None or len(files) <= images_per_class:
        return files
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
    return sorted(random.Random(f"{seed}:{key}").sample(files, images_per_class))


# =========================================================================== download + extract
def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike, checksum: str | None) -> None:
    """Raise ValueError (expected vs got) unless ``path`` matches ``"md5:<hex>"`` / ``"sha256:<hex>"``."""
    if checksum is None:
        return
    algo, _, want = checksum.partition(":")
    if algo not in ("md5", "sha256") or not want:
        raise ValueError(f"checksum must look like 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    got = _hash_file(Path(path), algo)
    if got != want.lower():
        raise ValueError(f"{algo} mismatch for {path}: expected {want}, got {got}")


def _fetch(url: str, part: Path, desc: str) -> None:
    """Download ``url`` into ``part``, continuing a partial file with an HTTP Range request."""
    from tqdm.auto import tqdm

    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        resumed = getattr(resp, "status", None) == 206
        if not resumed:
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total else None
        with open(part, "ab" if resumed else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc) as bar:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                f.write(chunk)
                bar.update(len(chunk))


def download_archive(url: str, dest: str | os.PathLike, checksum: str | None = None, *,
                     download: bool = True) -> Path:
    """``dest`` (an archive), verified: kept if present and valid, else fetched from ``url``.

    The download goes to ``dest + '.part'`` and resumes from there if interrupted; only a file whose
    checksum matches is renamed to ``dest``. A mismatch removes the bad file and raises ValueError.
    Offline (or ``download=False``) a FileNotFoundError says where to put the archive by hand.
    """
    dest = Path(dest)
    how = f" ({checksum})" if checksum else ""
    manual = (f"download {url} on a machine with internet access and put it at {dest}{how}; "
              f"it is verified and extracted on the next call")
    if dest.is_file():
        verify_checksum(dest, checksum)
        return dest
    if not download:
        raise FileNotFoundError(f"{dest.name} not found: {manual} (or pass download=True)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, desc=dest.name)
    except (urllib.error.URLError, OSError) as err:
        raise FileNotFoundError(f"could not download {url} ({err}); {manual}") from err
    try:
        verify_checksum(part, checksum)
    except ValueError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> list[Path]:
    """Extract a .tgz/.tar/.zip into ``dest_dir`` through a temporary folder: each top-level entry
    appears only once complete (``os.replace``). Returns the top-level paths."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        else:
            raise ValueError(f"{archive}: expected a .zip or .tar(.gz) archive")
        out = []
        for entry in sorted(tmp.iterdir()):
            target = dest_dir / entry.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(entry, target)
            out.append(target)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prepare_archive(name: str, root: Path, size: str, download: bool) -> Path:
    """Folder of an extracted fast.ai / Tiny-ImageNet archive under ``root``; fetched if needed."""
    if (name, size) not in ARCHIVES:
        sizes = [s for (n, s) in ARCHIVES if n == name]
        raise ValueError(f"{name}: size must be one of {sizes}, got {size!r}")
    url, checksum = ARCHIVES[(name, size)]
    archive_name = url.rsplit("/", 1)[1]
    folder = root / archive_name.split(".")[0]
    if (folder / ".complete").is_file():
        return folder
    archive = download_archive(url, root / archive_name, checksum, download=download)
    extract_archive(archive, root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{archive} did not contain the expected folder {folder.name}/")
    if name == "tiny-imagenet":
        _refolder_tiny_imagenet_val(folder)
    (folder / ".complete").write_text(archive_name + "\n")
    return folder


def _refolder_tiny_imagenet_val(folder: Path) -> None:
    """Tiny-ImageNet ships ``val/images/*.JPEG`` + ``val_annotations.txt``; move them to ``val/<wnid>/``."""
    val = folder / "val"
    ann = val / "val_annotations.txt"
    if not ann.is_file():
        return
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        src = val / "images" / parts[0]
        if src.is_file():
            (val / parts[1]).mkdir(exist_ok=True)
            os.replace(src, val / parts[1] / parts[0])
    shutil.rmtree(val / "images", ignore_errors=True)
    os.replace(ann, folder / "val_annotations.txt")


# =========================================================================== datasets
@dataclass
class DataReport:
    """What a dataset kept and what it skipped (``skipped``: ``(path, reason)`` pairs)."""
    name: str
    split: str
    num_samples: int = 0
    num_classes: int = 0
    skipped: list = field(default_factory=list)

    def __str__(self) -> str:
        head = (f"{self.name}/{self.split}: {self.num_samples} images in {self.num_classes} classes, "
                f"{len(self.skipped)} unreadable skipped")
        return "\n".join([head] + [f"  skipped {p}: {r}" for p, r in self.skipped])


class _Base(Dataset):
    """Shared attributes: ``classes``, ``class_names``, ``targets``, ``mean``, ``std``, ``report``."""
    classes: list
    class_names: list
    targets: list
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    transform: Callable | None = None
    report: DataReport

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def _finish(self, img: Image.Image, label: int):
        return (self.transform(img) if self.transform is not None else img), label


class ImageListDataset(_Base):
    """Images on disk: ``samples`` is a list of ``(path, label)``; decoded with PIL to RGB."""

    def __init__(self, samples, classes, class_names, *, transform=None, on_error="skip",
                 verify=True, name="folder", split="train"):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.classes, self.class_names, self.transform = list(classes), list(class_names), transform
        self.report = DataReport(name, split, num_classes=len(self.classes))
        kept = []
        if verify:
            from tqdm.auto import tqdm
            for path, label in tqdm(samples, desc=f"checking {name}/{split}", disable=len(samples) < 5000):
                try:
                    with Image.open(path) as im:
                        im.verify()
                except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
                    if on_error == "raise":
                        raise ValueError(f"unreadable image {path}: {err}") from err
                    self.report.skipped.append((str(path), f"{type(err).__name__}: {err}"))
                    continue
                kept.append((path, label))
        else:
            kept = list(samples)
        self.samples = kept
        self.targets = [lbl for _, lbl in kept]
        self.report.num_samples = len(kept)

    def load(self, index: int) -> Image.Image:
        path = self.samples[index][0]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"unreadable image {path}: {err}") from err

    def __getitem__(self, index: int):
        return self._finish(self.load(index), self.targets[index])


class ArrayDataset(_Base):
    """Images in a uint8 array ``[N, H, W]`` (grey, served as RGB) or ``[N, H, W, 3]`` (may be memory-mapped).

    ``raw=True``: items are ``(uint8 tensor [H, W] or [H, W, 3], label)``, the stored row as it is
    (for :class:`BatchRandomResizedCrop`); ``transform`` is then not applied. :meth:`raw_view` gives
    such a dataset over the same array without changing this one.
    """

    def __init__(self, images: np.ndarray, targets, classes, class_names, *, transform=None,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, report: DataReport | None = None, raw: bool = False):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(targets):
            raise ValueError(f"expected uint8 images [N, H, W(, 3)] and N targets, got {images.dtype} "
                             f"{tuple(images.shape)} and {len(targets)} targets")
        self.images, self.targets = images, list(map(int, targets))
        self.classes, self.class_names = list(classes), list(class_names)
        self.transform, self.mean, self.std, self.raw = transform, tuple(mean), tuple(std), raw
        self.report = report or DataReport("array", "-", len(self.targets), len(self.classes))

    def raw_view(self) -> ArrayDataset:
        """A shallow copy with ``raw=True`` and no ``transform``: items are the stored uint8 rows.

        Shares ``images`` (no copy, a memory map stays one), ``targets``, ``classes`` and every other
        attribute with this dataset, which keeps its own ``raw`` and ``transform``.
        """
        view = copy.copy(self)
        view.raw, view.transform = True, None
        return view

    def load(self, index: int) -> Image.Image:
        img = Image.fromarray(np.asarray(self.images[index]))
        return img.convert("RGB") if img.mode != "RGB" else img

    def __getitem__(self, index: int):
        if self.raw:
            return torch.from_numpy(np.array(self.images[index])), self.targets[index]
        return self._finish(self.load(index), self.targets[index])


class BatchRandomResizedCrop:
    """Random resized crop + horizontal flip + normalisation of a whole uint8 batch, in one ``grid_sample``.

    Input ``images``: uint8 ``[B, H, W]`` (grey, replicated to 3 channels), ``[B, H, W, 3]`` (as
    stored by :class:`ArrayDataset`) or ``[B, 3, H, W]``, on any device. Output: float
    ``[B, 3, size, size]``, ``(x / 255 - mean) / std``.

    Training: per image, a crop box with area fraction in ``scale`` and aspect ratio (log-uniform)
    in ``ratio``, by torchvision's ``RandomResizedCrop.get_params`` rule (ten tries, then the
    largest center crop within ``ratio``), flipped with probability ``hflip``; the box is resampled
    to ``size`` bilinearly (no antialiasing: a crop larger than ``size`` is point-sampled, as in
    GPU augmentation pipelines). ``train=False``: the center crop of ``crop_pct`` of the short
    side (timm's eval resize + center crop), no flip. Randomness comes from ``generator`` only, so
    a batch is a function of (generator seed, images).
    """

    def __init__(self, size: int, *, train: bool = True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 hflip: float = 0.5, crop_pct: float = 0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if size < 1:
            raise ValueError(f"size must be >= 1 pixel, got {size}")
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        if not 0 <= hflip <= 1 or not 0 < crop_pct <= 1:
            raise ValueError(f"hflip must be in [0, 1] and crop_pct in (0, 1], got {hflip}, {crop_pct}")
        self.size, self.train, self.scale, self.ratio = int(size), train, tuple(scale), tuple(ratio)
        self.hflip, self.crop_pct = float(hflip), float(crop_pct)
        self.mean, self.std = tuple(mean), tuple(std)
        # (x / 255 - mean) / std = x * scale + shift, float32 [1, 3, 1, 1]; copies per device in _norm_cache
        std_t = torch.tensor(self.std, dtype=torch.float32)
        self._scale = (1 / (255 * std_t)).view(1, 3, 1, 1)
        self._shift = (-torch.tensor(self.mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1)
        self._norm_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_norm_cache": {}}  # device copies are rebuilt where it is unpickled

    def _norm(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)``, float32 ``[1, 3, 1, 1]`` on ``device``; moved there once, then reused."""
        if device not in self._norm_cache:
            self._norm_cache[device] = (self._scale.to(device), self._shift.to(device))
        return self._norm_cache[device]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, train={self.train}, scale={self.scale}, "
                f"ratio={tuple(round(r, 4) for r in self.ratio)}, hflip={self.hflip}, crop_pct={self.crop_pct})")

    def boxes(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Crop boxes ``[B, 4]`` as ``(top, left, h, w)`` in pixels (float64), drawn from ``generator``."""
        if not self.train:
            side = self.crop_pct * min(height, width)
            box = torch.tensor([(height - side) / 2, (width - side) / 2, side, side], dtype=torch.float64)
            return box.expand(batch, 4).clone()
        tries = 10
        area = height * width * torch.empty(batch, tries, dtype=torch.float64).uniform_(*self.scale, generator=generator)
        log_r = torch.empty(batch, tries, dtype=torch.float64).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=generator)
        w = torch.sqrt(area * torch.exp(log_r)).round()                 # [B, tries]
        h = torch.sqrt(area / torch.exp(log_r)).round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1))
        pick = first.clamp_min(0).unsqueeze(1)
        w, h = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
        in_ratio = width / height                                       # fallback: largest center crop within ratio
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw, fh = round(height * self.ratio[1]), height
        else:
            fw, fh = width, height
        fallback = first < 0
        w, h = torch.where(fallback, float(fw), w), torch.where(fallback, float(fh), h)
        u = torch.rand(batch, 2, dtype=torch.float64, generator=generator)
        top = torch.where(fallback, (height - h) // 2, torch.floor(u[:, 0] * (height - h + 1)))
        left = torch.where(fallback, (width - w) // 2, torch.floor(u[:, 1] * (width - w + 1)))
        return torch.stack([top, left, h, w], dim=1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() not in (3, 4):
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{type(self).__name__} expects uint8 images [B, H, W], [B, H, W, 3] or [B, 3, H, W]; got {got}")
        if images.dim() == 3:
            x = images.unsqueeze(1)                                     # [B, H, W] -> [B, 1, H, W]
        elif images.shape[-1] == 3 and images.shape[1] != 3:
            x = images.permute(0, 3, 1, 2)                              # [B, H, W, 3] -> [B, 3, H, W]
        elif images.shape[1] == 3:
            x = images
        else:
            raise ValueError(f"{type(self).__name__}: 4-d images need 3 channels first or last, got {tuple(images.shape)}")
        B, _, H, W = x.shape
        box = self.boxes(B, H, W, generator)                            # [B, 4]: top, left, h, w
        flip = (torch.rand(B, generator=generator, dtype=torch.float64) < self.hflip) if self.train \
            else torch.zeros(B, dtype=torch.bool)
        # box -> sampling grid in grid_sample's normalised input coords (align_corners=False: -1 and 1
        # are the outer edges of the image). The map is axis-aligned, so x depends on the output
        # column only and y on the row: two [B, S] vectors instead of affine_grid's [B, S*S, 3] product.
        # Only the [B, S] vectors are computed here (float64, CPU, where the draws are); they go to the
        # images' device as float32 and the [B, S, S, 2] grid is built there.
        S = self.size
        base = (torch.arange(S, dtype=torch.float64) * 2 + 1) / S - 1           # output pixel centres in [-1, 1]
        sign = torch.where(flip, -1.0, 1.0)
        gx = ((2 * box[:, 1] + box[:, 3]) / W - 1)[:, None] + (sign * box[:, 3] / W)[:, None] * base  # [B, S]
        gy = ((2 * box[:, 0] + box[:, 2]) / H - 1)[:, None] + (box[:, 2] / H)[:, None] * base        # [B, S]
        gx, gy = (g.to(device=x.device, dtype=torch.float32) for g in (gx, gy))
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [B, S, S, 2]: (x, y)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        scale, shift = self._norm(x.device)
        # (x / 255 - mean) / std in one pass; a grey batch is broadcast to 3 channels here
        return torch.addcmul(shift, out, scale).expand(B, 3, S, S).contiguous()


# =========================================================================== random number generators
def rng_state(device: torch.device | None = None) -> dict:
    """The states of Python's, NumPy's and torch's CPU generators (and of ``device``'s, a CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore generator states saved by :func:`rng_state` (the CUDA one where ``device`` is CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device is not None and torch.device(device).type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch's on every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int):
    """Python's, NumPy's and torch's CPU generators seeded with ``seed`` for the block; the states they
    had before are restored after it, so the caller's random stream is untouched."""
    saved = rng_state()
    try:
        seed_everything(seed)
        yield
    finally:
        set_rng_state(saved)


class SeededTransformDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` runs its random transform under ``seed``.

    Augmentation then depends only on (seed, index), not on worker count, rank or where a run was
    resumed. The caller's RNG states (python, numpy, torch) are restored afterwards. Plain integer
    indices pass through unchanged.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed = item
        if getattr(self.dataset, "raw", False) or getattr(self.dataset, "transform", True) is None:
            return self.dataset[index]  # nothing random happens per item
        with seeded(seed):
            return self.dataset[index]


# =========================================================================== Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if data[2] != 0x08 or arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: not a uint8 IDX file of shape {shape}")
    return arr.reshape(shape)


def load_fashion_mnist(root=None, split="train", download=False) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])``; split ``train`` (60k) or ``test``/``val`` (10k).

    Looks in ``root``, then Debian's ``/usr/share/datasets/fashion-mnist``, then the cache; with
    ``download=True`` falls back to ``torchvision.datasets.FashionMNIST`` into the cache.
    """
    prefix = {"train": "train", "test": "t10k", "val": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"fashion-mnist split must be 'train', 'test' or 'val', got {split!r}")
    dirs = [Path(root)] if root else []
    dirs += [Path(d) for d in FASHION_MNIST_DIRS]
    dirs += [cache_root() / "fashion-mnist" / "FashionMNIST" / "raw"]
    for d in dirs:
        for ext in (".gz", ""):
            img, lbl = d / f"{prefix}-images-idx3-ubyte{ext}", d / f"{prefix}-labels-idx1-ubyte{ext}"
            if img.is_file() and lbl.is_file():
                return _read_idx(img), _read_idx(lbl).astype(np.int64)
    if download:
        from torchvision.datasets import FashionMNIST
        ds = FashionMNIST(str(cache_root() / "fashion-mnist"), train=(prefix == "train"), download=True)
        return ds.data.numpy(), ds.targets.numpy()
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte.gz, {prefix}-labels-idx1-ubyte.gz) not found "
        f"in {[str(d) for d in dirs]}: install Debian's dataset-fashion-mnist package "
        f"(apt-get install dataset-fashion-mnist) or pass download=True")


# =========================================================================== folders and subsets
def _list_images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def _folder_samples(split_dir: Path, *, classes=None, num_classes=None, images_per_class=None,
                    seed=0, imagenet_labels=False, what="folder"):
    """``(samples, class_ids)`` of a class-folder tree, with subset selection and label mapping."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{what}: expected a folder of class folders at {split_dir}, found none")
    available = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not available:
        raise FileNotFoundError(f"{what}: {split_dir} has no class folders (expected {split_dir}/<class>/<images>)")
    chosen = select_classes(available, classes=classes, num_classes=num_classes, seed=seed)
    samples, empty = [], []
    for i, cls in enumerate(chosen):
        label = imagenet_class_index(cls) if imagenet_labels else i
        files = _list_images(split_dir / cls)
        if not files:
            empty.append(cls)
        samples += [(f, label) for f in cap_per_class(files, images_per_class, seed, cls)]
    if empty:
        raise FileNotFoundError(f"{what}: {len(empty)} class folder(s) under {split_dir} hold no images "
                                f"(expected {', '.join(IMG_EXTENSIONS[:3])} ...): {empty[:5]}")
    return samples, chosen


# =========================================================================== uint8 cache
def _cache_key(name, split, classes, size, samples) -> str:
    files = []
    for path, label in samples:
        st = os.stat(path)
        files.append((str(path), label, st.st_size, st.st_mtime_ns))
    blob = json.dumps({"v": 1, "name": name, "split": split, "classes": list(classes), "size": size,
                       "files": files})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _resize_short_center(img: Image.Image, size: int) -> np.ndarray:
    """Short side -> ``size`` (bicubic; JPEG draft mode first when it can shrink), center crop ``size`` x ``size``."""
    if img.format == "JPEG":
        img.draft("RGB", (size, size))  # DCT-domain downscale, never below the requested size
    img = img.convert("RGB")
    w, h = img.size  # torchvision's rule: the long side becomes int(size * long / short)
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def cached_uint8(ds: ImageListDataset, size: int, *, name: str, split: str, on_error="skip",
                 root: Path | None = None) -> ArrayDataset:
    """A memory-mapped ``[N, size, size, 3]`` uint8 copy of ``ds`` (built once, reused while the key matches).

    Built into ``<name>.npy.tmp`` and renamed; the JSON sidecar (labels, skipped files) is written
    last, so a cache without its sidecar is incomplete and is rebuilt.
    """
    from tqdm.auto import tqdm

    if size < 8:
        raise ValueError(f"cache_size must be >= 8 pixels, got {size}")
    root = Path(root) if root else cache_root() / "u8"
    root.mkdir(parents=True, exist_ok=True)
    key = _cache_key(name, split, ds.classes, size, ds.samples)
    stem = f"{name}-{split}-{size}px-{key}"
    arr_path, meta_path = root / f"{stem}.npy", root / f"{stem}.json"
    report = DataReport(name, split, num_classes=len(ds.classes), skipped=list(ds.report.skipped))
    if meta_path.is_file() and arr_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            images = np.load(arr_path, mmap_mode="r")
            if images.shape == (len(meta["targets"]), size, size, 3):
                report.skipped, report.num_samples = [tuple(s) for s in meta["skipped"]], len(meta["targets"])
                return ArrayDataset(images, meta["targets"], ds.classes, ds.class_names, transform=ds.transform,
                                    mean=ds.mean, std=ds.std, report=report)
    for stale in root.glob(f"{name}-{split}-{size}px-*"):  # same dataset, other file list: replace it
        stale.unlink(missing_ok=True)
    tmp = root / f".{stem}.npy.tmp{os.getpid()}"
    tmp2 = root / f".{stem}.npy.tmp{os.getpid()}b"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(ds.samples), size, size, 3))
        targets, n = [], 0
        for (path, label) in tqdm(ds.samples, desc=f"caching {name}/{split} at {size}px"):
            try:
                with Image.open(path) as im:
                    out[n] = _resize_short_center(im, size)
            except Exception as err:  # noqa: BLE001
                if on_error == "raise":
                    raise ValueError(f"unreadable image {path}: {err}") from err
                report.skipped.append((str(path), f"{type(err).__name__}: {err}"))
                continue
            targets.append(label)
            n += 1
        out.flush()
        del out
        if n < len(ds.samples):  # drop the rows of skipped files: rewrite compactly
            full = np.load(tmp, mmap_mode="r")
            with open(tmp2, "wb") as f:
                np.save(f, np.ascontiguousarray(full[:n]))
            del full
            os.replace(tmp2, tmp)
        os.replace(tmp, arr_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp2.unlink(missing_ok=True)
    atomic_write_text(meta_path, json.dumps({"key": key, "targets": targets, "skipped": report.skipped}))
    report.num_samples = n
    return ArrayDataset(np.load(arr_path, mmap_mode="r"), targets, ds.classes, ds.class_names,
                        transform=ds.transform, mean=ds.mean, std=ds.std, report=report)


# =========================================================================== transforms
def build_transform(img_size: int, is_training: bool, *, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    scale=(0.08, 1.0), hflip: float = 0.5, auto_augment: str | None = None,
                    color_jitter: float | None = 0.4, re_prob: float = 0.0, crop_pct: float = 0.875,
                    interpolation: str = "bicubic"):
    """timm's ``create_transform``: PIL image -> normalised float tensor ``[3, img_size, img_size]``.

    Training: RandomResizedCrop(``scale``) + flip + RandAugment (``auto_augment``, e.g.
    ``"rand-m9-mstd0.5-inc1"``) or colour jitter + random erasing (``re_prob``). Eval: resize to
    ``img_size / crop_pct`` then center crop ``img_size`` (the paper's 256 -> 224 is ``crop_pct=0.875``).
    """
    from timm.data import create_transform

    if img_size < 8:
        raise ValueError(f"img_size must be >= 8 pixels, got {img_size}")
    if is_training:
        return create_transform(img_size, is_training=True, scale=tuple(scale), hflip=hflip,
                                auto_augment=auto_augment, color_jitter=color_jitter or 0.0,
                                re_prob=re_prob, interpolation=interpolation, mean=mean, std=std)
    return create_transform(img_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                            mean=mean, std=std)


# =========================================================================== entry point
def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", img_size: int = 224,
                  *, transform: Callable | None | str = "default", classes=None, num_classes: int | None = None,
                  images_per_class: int | None = None, seed: int = 0, imagenet_labels: bool = False,
                  size: str = "320px", download: bool = False, on_error: str = "skip", verify: bool = True,
                  cache: bool = False, cache_size: int | None = None) -> Dataset:
    """A dataset by name (see the module docstring); items are ``(transform(image), label)``.

    Args:
        name: one of :data:`DATASETS`.
        root: dataset folder (``imagenet``/``folder``: holds ``train/`` and ``val/``; downloads go
            here, default ``cache_root()/<name>``; ``fashion-mnist``: optional folder of IDX files).
        split: ``train`` or ``val`` (``test`` for fashion-mnist is the same as ``val``).
        img_size: output side; ``transform="default"`` builds :func:`build_transform` for the split,
            ``None`` returns PIL images, a callable is used as is.
        classes / num_classes / images_per_class / seed: subset selection (class-folder datasets);
            ``images_per_class`` also caps fashion-mnist (seeded per class).
        imagenet_labels: label = ImageNet-1k index of the WNID instead of 0..k-1.
        size: fast.ai archive size, ``full`` / ``320px`` / ``160px``.
        download: fetch missing archives (resumable, checksum-verified).
        on_error: ``skip`` or ``raise`` for unreadable images; ``verify``: check every file up front.
        cache / cache_size: serve images from a uint8 cache at ``cache_size`` (default ``img_size``) short side.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if name == "fashion-mnist" else (IMAGENET_MEAN, IMAGENET_STD)
    if transform == "default":
        transform = build_transform(img_size, split == "train", mean=mean, std=std)

    if name == "fashion-mnist":
        images, labels = load_fashion_mnist(root, split, download=download)
        keep = np.arange(len(labels))
        if images_per_class is not None:
            keep = np.array(sorted(i for c in range(10) for i in cap_per_class(
                np.flatnonzero(labels == c).tolist(), images_per_class, seed, str(c))), dtype=np.int64)
        if num_classes is not None or classes is not None:
            raise ValueError("fashion-mnist has fixed classes; classes/num_classes select ImageNet-style folders")
        report = DataReport(name, "val" if split == "test" else split, len(keep), 10)
        return ArrayDataset(images[keep], labels[keep], list(FASHION_MNIST_CLASSES), list(FASHION_MNIST_CLASSES),
                            transform=transform, mean=mean, std=std, report=report)

    split = "val" if split == "test" else split
    if name in ("imagenette", "imagewoof", "tiny-imagenet"):
        base = Path(root) if root else cache_root() / name
        folder = _prepare_archive(name, base, "64px" if name == "tiny-imagenet" else size, download)
        split_dir = folder / split
    elif name == "imagenet":
        if root is None:
            raise ValueError("imagenet needs root=<ILSVRC-2012 folder holding train/ and val/ by WNID>")
        split_dir = Path(root) / split
    else:  # folder
        if root is None:
            raise ValueError("folder needs root=<folder of class folders, or of train/ and val/>")
        split_dir = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
    samples, chosen = _folder_samples(split_dir, classes=classes, num_classes=num_classes,
                                      images_per_class=images_per_class, seed=seed,
                                      imagenet_labels=imagenet_labels, what=name)
    wnid_like = name != "folder" or all(c.startswith("n") and c[1:].isdigit() and len(c) == 9 for c in chosen)
    class_names = [imagenet_class_name(c) for c in chosen] if wnid_like else list(chosen)
    ds = ImageListDataset(samples, chosen, class_names, transform=transform, on_error=on_error,
                          verify=verify and not cache, name=name, split=split)
    ds.mean, ds.std = mean, std
    if imagenet_labels:
        ds.imagenet_indices = [imagenet_class_index(c) for c in chosen]
    if cache:
        cache_name = name if name != "folder" else f"folder-{hashlib.sha1(str(split_dir.resolve()).encode()).hexdigest()[:8]}"
        indices = getattr(ds, "imagenet_indices", None)
        ds = cached_uint8(ds, cache_size or img_size, name=cache_name, split=split, on_error=on_error)
        if indices is not None:
            ds.imagenet_indices = indices
    return ds


def dataset_or_fallback(name: str, root=None, *, download: bool = True, fallback: str = "fashion-mnist",
                        size: str = "320px") -> tuple[str, str]:
    """``(name, message)`` if ``name`` is on disk or downloadable, else ``(fallback, message saying why)``.

    Tries to prepare the dataset (for archives: download + verify + extract); a missing archive
    offline or an unreachable URL gives the fallback and the message with the manual steps.
    """
    if name == fallback:
        return name, f"using {name}"
    try:
        build_dataset(name, root, "val", 32, transform=None, download=download, size=size, verify=False)
        return name, f"using {name} from {root or cache_root() / name}"
    except (FileNotFoundError, ValueError) as err:
        return fallback, f"{name} is not available here ({err}); falling back to {fallback}"


def write_image_folder(root: str | os.PathLike, classes: Sequence[str], per_class: int, *, size=(48, 40),
                       splits=("train", "val"), corrupt: int = 0, seed: int = 0) -> Path:
    """Write a small ImageNet-format JPEG tree ``root/<split>/<class>/<class>_<i>.JPEG`` (tests, benchmarks).

    Each class has its own colour and a noisy stripe pattern, so the classes are learnable; image
    sizes vary around ``size`` (w, h). ``corrupt`` files per split (random bytes named ``.JPEG``) go
    into the first class. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * c) % 256, (91 * c + 60) % 256, (53 * c + 120) % 256], dtype=np.float32)
            for i in range(per_class):
                w, h = size[0] + int(rng.integers(0, 9)), size[1] + int(rng.integers(0, 9))
                yy = np.arange(h)[:, None, None]
                stripes = 60 * np.sin(yy * (c + 1) * np.pi / h)
                img = np.clip(base + stripes + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{cls}_{i}.JPEG", quality=90)
        for k in range(corrupt):
            (root / split / classes[0] / f"corrupt_{k}.JPEG").write_bytes(rng.bytes(500))
    return root
