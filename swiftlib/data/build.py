"""Datasets by name: :func:`build_dataset`, the one entry point, and :func:`dataset_or_fallback`.

``build_dataset(name, root, split, img_size)`` returns a ``torch.utils.data.Dataset`` of
``(image [3, img_size, img_size] float tensor, label int)`` pairs (with the default transform) for

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

Unreadable images: ``on_error="skip"`` (default) drops them, counts them and lists them in
``dataset.report``; ``on_error="raise"`` fails naming the file. A tree with no readable image, or a
class with none, is a ValueError naming the folder. An image that passes the build but fails to
decode later is served by the next readable one and listed in ``report.failed``
(:class:`~swiftlib.data.datasets.ImageListDataset`). ``cache=True`` serves the images from the uint8
cache (:func:`~swiftlib.data.cache.cached_uint8`) in ``cache_dir``. Bad arguments (a count <= 0, an
unknown split, a ``root`` or ``cache_dir`` that is a file ...) are ValueErrors naming the argument.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

from swiftlib.data.cache import cache_root, cached_uint8
from swiftlib.data.checks import check_folder_arg, check_int
from swiftlib.data.datasets import ArrayDataset, DataReport, ImageListDataset, folder_samples
from swiftlib.data.download import prepare_archive
from swiftlib.data.fashion_mnist import (FASHION_MNIST_CLASSES, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                                         load_fashion_mnist)
from swiftlib.data.imagenet import cap_per_class, imagenet_class_index, imagenet_class_name
from swiftlib.data.transforms import build_transform

__all__ = ["DATASETS", "build_dataset", "dataset_or_fallback"]

DATASETS = ("imagenette", "imagewoof", "imagenet", "tiny-imagenet", "folder", "fashion-mnist")


def _check_args(name: str, root, split: str, on_error: str, transform, counts: dict) -> None:
    """ValueError naming the argument for a bad name, root, split, on_error, transform or count."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if isinstance(transform, str) and transform != "default":
        raise ValueError(f"transform must be 'default', None or a callable, got {transform!r}")
    if root is not None:
        check_folder_arg("root", root)
    for arg, (value, minimum) in counts.items():
        check_int(arg, value, minimum, allow_none=arg != "img_size")


def _fashion_mnist(root, split: str, *, images_per_class, seed: int, download: bool, transform) -> ArrayDataset:
    """Fashion-MNIST as an :class:`ArrayDataset` of uint8 ``[N, 28, 28]``, capped per class (seeded)."""
    images, labels = load_fashion_mnist(root, split, download=download)
    keep = np.arange(len(labels))
    if images_per_class is not None:
        keep = np.array(sorted(i for c in range(10) for i in cap_per_class(
            np.flatnonzero(labels == c).tolist(), images_per_class, seed, str(c))), dtype=np.int64)
    report = DataReport("fashion-mnist", "val" if split == "test" else split, len(keep), 10)
    return ArrayDataset(images[keep], labels[keep], list(FASHION_MNIST_CLASSES), list(FASHION_MNIST_CLASSES),
                        transform=transform, mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, report=report)


def _split_dir(name: str, root, split: str, size: str, download: bool) -> Path:
    """The class-folder tree of ``split``: in an extracted archive (fetched if allowed) or under ``root``."""
    if name in ("imagenette", "imagewoof", "tiny-imagenet"):
        base = Path(root) if root else cache_root() / name
        return prepare_archive(name, base, "64px" if name == "tiny-imagenet" else size, download) / split
    if name == "imagenet":
        if root is None:
            raise ValueError("imagenet needs root=<ILSVRC-2012 folder holding train/ and val/ by WNID>")
        return Path(root) / split
    if root is None:
        raise ValueError("folder needs root=<folder of class folders, or of train/ and val/>")
    return Path(root) / split if (Path(root) / split).is_dir() else Path(root)


def _is_wnid(name: str) -> bool:
    return name.startswith("n") and name[1:].isdigit() and len(name) == 9


def build_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", img_size: int = 224,
                  *, transform: Callable | None | str = "default", classes=None, num_classes: int | None = None,
                  images_per_class: int | None = None, seed: int = 0, imagenet_labels: bool = False,
                  size: str = "320px", download: bool = False, on_error: str = "skip", verify: bool = True,
                  cache: bool = False, cache_size: int | None = None,
                  cache_dir: str | os.PathLike | None = None) -> Dataset:
    """A dataset by name (see the module docstring); items are ``(transform(image), label)``.

    Args:
        name: one of :data:`DATASETS`.
        root: dataset folder (``imagenet``/``folder``: holds ``train/`` and ``val/``; downloads go
            here, default ``cache_root()/<name>``; ``fashion-mnist``: optional folder of IDX files).
        split: ``train`` or ``val`` (``test`` is the same as ``val``).
        img_size: output side; ``transform="default"`` builds :func:`build_transform` for the split,
            ``None`` returns PIL images, a callable is used as is.
        classes / num_classes / images_per_class / seed: subset selection (class-folder datasets);
            ``images_per_class`` also caps fashion-mnist (seeded per class).
        imagenet_labels: label = ImageNet-1k index of the WNID instead of 0..k-1.
        size: fast.ai archive size, ``full`` / ``320px`` / ``160px``.
        download: fetch missing archives (resumable, checksum-verified).
        on_error: ``skip`` or ``raise`` for unreadable images, at build time and when an item
            fails to decode later (``skip``: served by the next readable image, listed in
            ``report.failed``); ``verify``: check every file up front.
        cache / cache_size / cache_dir: serve images from a uint8 cache at ``cache_size`` (default
            ``img_size``) short side, kept in ``cache_dir`` (default ``cache_root() / "u8"``); a
            damaged cache is rebuilt and said (``report.notes``).

    Raises ValueError naming the argument for bad arguments (counts <= 0, unknown split, a ``root``
    or ``cache_dir`` that is a file ...), and naming the folder when no image in it is readable.
    """
    _check_args(name, root, split, on_error, transform, {
        "img_size": (img_size, 1), "cache_size": (cache_size, 8), "images_per_class": (images_per_class, 1),
        "num_classes": (num_classes, 1)})
    fmnist = name == "fashion-mnist"
    mean, std = (FASHION_MNIST_MEAN, FASHION_MNIST_STD) if fmnist else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    if transform == "default":
        transform = build_transform(img_size, split == "train", mean=mean, std=std)
    if fmnist:
        if num_classes is not None or classes is not None:
            raise ValueError("fashion-mnist has fixed classes; classes/num_classes select ImageNet-style folders")
        return _fashion_mnist(root, split, images_per_class=images_per_class, seed=seed, download=download,
                              transform=transform)
    split = "val" if split == "test" else split
    split_dir = _split_dir(name, root, split, size, download)
    samples, chosen = folder_samples(split_dir, classes=classes, num_classes=num_classes,
                                     images_per_class=images_per_class, seed=seed,
                                     imagenet_labels=imagenet_labels, what=name)
    wnid_like = name != "folder" or all(_is_wnid(c) for c in chosen)
    class_names = [imagenet_class_name(c) for c in chosen] if wnid_like else list(chosen)
    ds = ImageListDataset(samples, chosen, class_names, transform=transform, on_error=on_error,
                          verify=verify and not cache, name=name, split=split)
    if cache:
        ds = cached_uint8(ds, cache_size or img_size, name=name, split=split, on_error=on_error, root=cache_dir)
    if imagenet_labels:
        ds.imagenet_indices = [imagenet_class_index(c) for c in chosen]
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
