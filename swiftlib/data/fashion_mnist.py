"""Fashion-MNIST: Zalando's 70k grey 28 x 28 clothes images, offline-ready.

:func:`load_fashion_mnist` returns ``(images uint8 [N, 28, 28], labels int64 [N])``: 60k ``train``,
10k ``test`` / ``val``. It reads the IDX files (gzipped or not) from a given folder, then from Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), then from the cache;
``download=True`` falls back to torchvision's download into the cache. The class names and the
per-channel statistics (grey, replicated to RGB) live here too.
"""
from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np
from torchvision.datasets import FashionMNIST

from swiftlib.data.cache import cache_root
from swiftlib.data.checks import check_folder_arg

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "FASHION_MNIST_DIRS",
           "load_fashion_mnist"]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
#: Per-channel statistics of the 60k Fashion-MNIST training images (grey, replicated to RGB).
FASHION_MNIST_MEAN = (0.2860, 0.2860, 0.2860)
FASHION_MNIST_STD = (0.3530, 0.3530, 0.3530)


def _read_bytes(path: Path) -> bytes:
    """The (gunzipped, for ``.gz``) bytes of ``path``; ValueError naming the file if it cannot be read."""
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:  # a gzip cut short, garbled or not gzip at all
        raise ValueError(f"{path}: damaged gzip file ({type(err).__name__}: {err}); delete it and fetch it "
                         f"again") from err
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err})") from err


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions (images 3, labels 1).

    IDX layout: bytes 0, 0, the type (0x08 = uint8), the number of dimensions, then each size as a
    big-endian int32, then the data. Any other content is a ValueError naming the file and the fault.
    """
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (it should start with bytes 00 00 08 {ndim:02x}, "
                         f"starts with {data[:4].hex(' ') or 'nothing: the file is empty'})")
    if data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"{path}: expected a uint8 IDX file of {ndim} dimension(s) (type 0x08), the header "
                         f"says type 0x{data[2]:02x} with {data[3]} dimension(s)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, the sizes need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    want, have = int(np.prod(shape)), len(data) - header
    if have != want:
        what = "truncated" if have < want else "has trailing bytes"
        raise ValueError(f"{path}: {what}: the header says shape {shape} ({want} bytes of data), the file "
                         f"holds {have}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_pair(img: Path, lbl: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, H, W], labels int64 [N])`` of an IDX pair, checked against each other."""
    images, labels = _read_idx(img, 3), _read_idx(lbl, 1).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{img} holds {len(images)} images but {lbl} holds {len(labels)} labels")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{lbl}: labels must be 0..{len(FASHION_MNIST_CLASSES) - 1}, found {labels.max()}")
    return images, labels


def load_fashion_mnist(root=None, split="train", download=False) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])``; split ``train`` (60k) or ``test``/``val`` (10k).

    Looks in ``root`` (a folder; files found elsewhere instead are warned about), then Debian's
    ``/usr/share/datasets/fashion-mnist``, then the cache; with ``download=True`` falls back to
    ``torchvision.datasets.FashionMNIST`` into the cache. A damaged file (wrong magic, truncated data,
    a gzip that ends early) is a ValueError naming the file and the fault.
    """
    prefix = {"train": "train", "test": "t10k", "val": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"fashion-mnist split must be 'train', 'test' or 'val', got {split!r}")
    dirs = [check_folder_arg("root", root)] if root else []
    dirs += [Path(d) for d in FASHION_MNIST_DIRS]
    dirs += [cache_root() / "fashion-mnist" / "FashionMNIST" / "raw"]
    for d in dirs:
        for ext in (".gz", ""):
            img, lbl = d / f"{prefix}-images-idx3-ubyte{ext}", d / f"{prefix}-labels-idx1-ubyte{ext}"
            if img.is_file() and lbl.is_file():
                if root and d != dirs[0]:
                    warnings.warn(f"fashion-mnist: no {prefix} IDX files in root={str(root)!r}; reading {d} instead",
                                  RuntimeWarning, stacklevel=2)
                return _read_pair(img, lbl)
    if download:
        ds = FashionMNIST(str(cache_root() / "fashion-mnist"), train=(prefix == "train"), download=True)
        return ds.data.numpy(), ds.targets.numpy()
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte.gz, {prefix}-labels-idx1-ubyte.gz) not found "
        f"in {[str(d) for d in dirs]}: install Debian's dataset-fashion-mnist package "
        f"(apt-get install dataset-fashion-mnist) or pass download=True")
