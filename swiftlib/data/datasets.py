"""Datasets of ``(image, label)`` pairs: images listed on disk, or held in a uint8 array.

:class:`ImageListDataset`: ``(path, label)`` samples decoded with PIL (RGB); :class:`ArrayDataset`: a
uint8 array ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (may be memory-mapped). With a transform an
item is ``(transform(image), label)``, e.g. a float tensor ``[3, H, W]``; without, a PIL image;
``ArrayDataset(raw=True)`` serves the stored uint8 row as a tensor ``[H, W]`` / ``[H, W, 3]``.
Every dataset carries ``classes``, ``class_names``, ``targets``, ``mean`` / ``std`` and a
``report`` (:class:`DataReport`). :func:`folder_samples` lists a class-folder tree
``<split_dir>/<class>/**/<image>`` as samples, with subset selection.
:class:`SeededTransformDataset` makes item ``(index, seed)`` a function of the seed only.
"""
from __future__ import annotations

import copy
import operator
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from swiftlib.data.images import UnreadableImage, open_rgb, to_rgb
from swiftlib.data.imagenet import (cap_per_class, imagenet_class_index, read_class_list, require_imagenet_wnids,
                                    select_classes)
from swiftlib.data.seeding import seeded

__all__ = ["IMG_EXTENSIONS", "DataReport", "check_readable", "ImageListDataset", "ArrayDataset",
           "SeededTransformDataset", "folder_samples"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class DataReport:
    """What a dataset kept and what it lost.

    ``skipped``: ``(path, reason)`` of the files found unreadable while the dataset was built (not in
    it); ``failed``: ``(path, reason)`` of files that passed the build but failed to decode when an
    item was read (their items are served by another image, see :class:`ImageListDataset`);
    ``notes``: other events worth a line (e.g. a uint8 cache found damaged and rebuilt).
    """
    name: str
    split: str
    num_samples: int = 0
    num_classes: int = 0
    skipped: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def __str__(self) -> str:
        head = (f"{self.name}/{self.split}: {self.num_samples} images in {self.num_classes} classes, "
                f"{len(self.skipped)} unreadable skipped")
        if self.failed:
            head += f", {len(self.failed)} failed to decode while loading (served by another image)"
        lines = [f"  skipped {p}: {r}" for p, r in self.skipped]
        lines += [f"  failed {p}: {r}" for p, r in self.failed]
        return "\n".join([head] + lines + [f"  note: {n}" for n in self.notes])


def check_readable(tried, kept_labels, skipped, what: str) -> None:
    """Raise ValueError when no file of ``tried`` (``(path, label)`` pairs) could be read, or when a label
    lost every one of its files; ``kept_labels``: labels of the readable files, ``skipped``: ``(path,
    reason)`` of the others. ``what`` names the dataset in the message."""
    if not tried:
        return
    if not kept_labels:
        folder = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in tried])
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise ValueError(f"{what}: no readable image under {folder}: all {len(tried)} files tried are "
                         f"unreadable{first}")
    kept, lost = set(kept_labels), {}
    for path, label in tried:
        if label not in kept:
            lost.setdefault(label, []).append(path)
    if lost:
        where = "; ".join(f"{Path(files[0]).parent} ({len(files)} tried)" for files in list(lost.values())[:5])
        raise ValueError(f"{what}: {len(lost)} class(es) have no readable image: {where}"
                         f"{' ...' if len(lost) > 5 else ''} (fix or remove those folders)")


class _Base(Dataset):
    """Shared attributes: ``classes``, ``class_names``, ``targets``, ``mean``, ``std``, ``report``."""
    classes: list
    class_names: list
    targets: list
    mean: tuple = IMAGENET_DEFAULT_MEAN
    std: tuple = IMAGENET_DEFAULT_STD
    transform: Callable | None = None
    report: DataReport

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.targets)

    def _finish(self, img: Image.Image, label: int):
        return (self.transform(img) if self.transform is not None else img), label


def _verify(samples, on_error: str, report: DataReport) -> list:
    """The ``(path, label)`` samples whose file passes PIL's ``verify()`` (header, and the data for PNG);
    the others are added to ``report.skipped`` (``on_error="skip"``) or raise naming the file."""
    kept = []
    desc = f"checking {report.name}/{report.split}"
    for path, label in tqdm(samples, desc=desc, disable=len(samples) < 5000):
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
            if on_error == "raise":
                raise UnreadableImage(path, f"{type(err).__name__}: {err}") from err
            report.skipped.append((str(path), f"{type(err).__name__}: {err}"))
            continue
        kept.append((path, label))
    return kept


class ImageListDataset(_Base):
    """Images on disk: ``samples`` is a list of ``(path, label)``, decoded to RGB by
    :func:`~swiftlib.data.images.open_rgb` (16-bit, palette, alpha, CMYK ... converted faithfully).

    Build (``verify=True``): each file is checked with PIL's ``verify()``; unreadable ones are left out
    and listed in ``report.skipped`` (``on_error="skip"``) or raise naming the file. No readable file
    at all, or a class left without any, is a ValueError naming the folder (never an empty dataset).

    Reading item ``i``: a file can still fail to decode (JPEG data truncated after a valid header, a
    file deleted or replaced since the build). ``on_error="raise"``: a ValueError naming the file.
    ``on_error="skip"``: the item is served by the next index ``i + 1, i + 2, ... (mod N)`` that
    decodes, with that image's label (files are sorted by class, so usually the same class); the
    file goes to ``report.failed``, a RuntimeWarning names it once, and it is not tried again.
    The length, batch shapes and the sampler's seeded order stay as they were, and the substitute is
    a function of ``i`` alone, so a resumed run reads the same items. With DataLoader workers each
    worker records in its own copy of the dataset; the warning (on stderr) reaches the user.
    """

    def __init__(self, samples, classes, class_names, *, transform=None, on_error="skip",
                 verify=True, name="folder", split="train"):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        samples = list(samples)
        if not samples:
            raise ValueError(f"{name}/{split}: no image files given (samples is empty)")
        self.classes, self.class_names, self.transform = list(classes), list(class_names), transform
        self.on_error = on_error
        self.report = DataReport(name, split, num_classes=len(self.classes))
        kept = _verify(samples, on_error, self.report) if verify else samples
        check_readable(samples, [lbl for _, lbl in kept], self.report.skipped, f"{name}/{split}")
        self.samples = kept
        self.targets = [lbl for _, lbl in kept]
        self.report.num_samples = len(kept)
        self._failed: set[int] = set()  # indices that failed to decode in this process

    def load(self, index: int) -> Image.Image:
        """The RGB image of sample ``index``; :class:`UnreadableImage` (a ValueError) naming the file if it fails."""
        return open_rgb(self.samples[index][0])

    def _record_failure(self, index: int, err: UnreadableImage) -> None:
        self._failed.add(index)
        self.report.failed.append((err.path, err.reason))
        warnings.warn(f"{err}; skipped: its items are served by the next readable image "
                      f"(listed in dataset.report.failed)", RuntimeWarning, stacklevel=3)

    def __getitem__(self, index: int):
        n, index = len(self.samples), operator.index(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        if self.on_error == "raise":
            return self._finish(self.load(index), self.targets[index])
        for step in range(n):
            j = (index + step) % n
            if j in self._failed:
                continue
            try:
                img = self.load(j)
            except UnreadableImage as err:
                self._record_failure(j, err)
                continue
            return self._finish(img, self.targets[j])
        raise ValueError(f"{self.report.name}/{self.report.split}: none of the {n} images decodes any more "
                         f"(deleted or damaged since the dataset was built); see dataset.report.failed")


class ArrayDataset(_Base):
    """Images in a uint8 array ``[N, H, W]`` (grey, served as RGB) or ``[N, H, W, 3]`` (may be memory-mapped).

    ``raw=True``: items are ``(uint8 tensor [H, W] or [H, W, 3], label)``, the stored row as it is
    (for :class:`BatchRandomResizedCrop`); ``transform`` is then not applied. :meth:`raw_view` gives
    such a dataset over the same array without changing this one.
    """

    def __init__(self, images: np.ndarray, targets, classes, class_names, *, transform=None,
                 mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, report: DataReport | None = None,
                 raw: bool = False):
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
        return to_rgb(Image.fromarray(np.asarray(self.images[index])))  # grey [H, W] -> RGB

    def __getitem__(self, index: int):
        if self.raw:
            return torch.from_numpy(np.array(self.images[index])), self.targets[index]
        return self._finish(self.load(index), self.targets[index])


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


def _list_images(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def folder_samples(split_dir: Path, *, classes=None, num_classes=None, images_per_class=None,
                   seed=0, imagenet_labels=False, what="folder"):
    """``(samples, class_ids)`` of a class-folder tree, with subset selection and label mapping."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{what}: expected a folder of class folders at {split_dir}, found none")
    available = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not available:
        raise FileNotFoundError(f"{what}: {split_dir} has no class folders (expected {split_dir}/<class>/<images>)")
    if imagenet_labels and classes is not None:  # before the folder check: say the list is wrong, not the tree
        require_imagenet_wnids(read_class_list(classes), f"imagenet_labels=True: the class list {classes!r}")
    chosen = select_classes(available, classes=classes, num_classes=num_classes, seed=seed)
    if imagenet_labels:
        require_imagenet_wnids(chosen, f"imagenet_labels=True: the class folders of {split_dir}")
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
