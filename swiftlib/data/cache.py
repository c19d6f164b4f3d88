"""The uint8 cache: every image decoded once, stored pre-resized as a memory-mapped array.

:func:`cached_uint8` turns an :class:`~swiftlib.data.datasets.ImageListDataset` (JPEGs on disk) into an
:class:`~swiftlib.data.datasets.ArrayDataset` over a ``uint8 [N, S, S, 3]`` ``.npy`` file: short side
resized to ``S`` (bicubic), center-cropped square, so an epoch decodes no JPEG. The files go under
``root`` (default ``cache_root() / "u8"``); their name carries a hash of dataset / split / classes /
size / file list (paths, sizes, mtimes), so any change builds a new cache. The array is written to a
temporary name and renamed, and its JSON sidecar (labels, skipped files, the array's size in bytes
and a SHA-256 digest) is written last: a cache is never half-written.

Each time a cache is opened its file size is compared with the sidecar's and its digest recomputed:
over the whole file up to :data:`FULL_CHECK_BYTES` (2 GiB; SHA-256 from the page cache took 0.22 s
per 100 MB on a busy 2-core machine, so at most ~5 s), above that over :data:`SAMPLE_BLOCKS` evenly
spaced 64 KiB blocks (0.13 s for a 20 GB file: a 200 GB ImageNet cache opens in about a second;
in-place damage between the blocks goes unseen there, truncation never does).
A cache found truncated, empty, garbled, with a missing or garbled sidecar, is rebuilt; the rebuild
is said by a RuntimeWarning and a line in ``dataset.report.notes``, both naming the file.

:func:`cache_root` is the user-level default folder of downloads and caches: ``$SWIFTLIB_CACHE`` or
``~/.cache/swiftlib`` (never inside the repository's ``data/``, which holds committed facts only).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from swiftlib import DATA_DIR
from swiftlib.data.checks import check_folder_arg, check_int
from swiftlib.data.datasets import ArrayDataset, DataReport, ImageListDataset, check_readable
from swiftlib.data.download import hash_file
from swiftlib.data.images import UnreadableImage, open_rgb
from swiftlib.io import atomic_write_text

__all__ = ["cache_root", "cached_uint8", "FULL_CHECK_BYTES", "SAMPLE_BLOCKS"]

#: Caches up to this size get a SHA-256 over the whole file each time they are opened; larger ones a
#: SHA-256 over :data:`SAMPLE_BLOCKS` blocks of 64 KiB spread evenly from the first to the last byte.
FULL_CHECK_BYTES = 2 << 30
SAMPLE_BLOCKS = 1024
_BLOCK = 1 << 16


def cache_root() -> Path:
    """Where downloads, extracted archives and uint8 caches go: ``$SWIFTLIB_CACHE`` or ``~/.cache/swiftlib``."""
    root = Path(os.environ.get("SWIFTLIB_CACHE") or Path.home() / ".cache" / "swiftlib").expanduser()
    if DATA_DIR.resolve() in [root.resolve(), *root.resolve().parents]:
        raise ValueError(f"the cache directory must not be inside {DATA_DIR} (committed facts only); got {root}")
    return root


def _cache_key(name, split, classes, size, samples) -> str:
    files = []
    for path, label in samples:
        try:
            st = os.stat(path)
            files.append((str(path), label, st.st_size, st.st_mtime_ns))
        except OSError:  # gone since it was listed: the build finds it unreadable and says so
            files.append((str(path), label, -1, -1))
    blob = json.dumps({"v": 1, "name": name, "split": split, "classes": list(classes), "size": size,
                       "files": files})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _source_id(ds: ImageListDataset) -> str:
    """Which data a cache holds: the folder its files are in and its classes (8 hex digits). Caches of
    another folder, or of another class subset of the same folder, have their own names and are kept."""
    paths = [os.path.abspath(p) for p, _ in ds.samples]
    folder = os.path.commonpath(paths) if paths else ""
    return hashlib.sha1(json.dumps([folder, list(ds.classes)]).encode()).hexdigest()[:8]


def _resize_short_center(img: Image.Image, size: int) -> np.ndarray:
    """RGB image -> short side ``size`` (bicubic), center crop ``size`` x ``size``: uint8 ``[size, size, 3]``."""
    w, h = img.size  # torchvision's rule: the long side becomes int(size * long / short)
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _digest(path: Path, nbytes: int) -> str:
    """``"sha256:<hex>"`` of the whole file up to :data:`FULL_CHECK_BYTES`, else ``"sha256-sampled:<hex>"``
    of :data:`SAMPLE_BLOCKS` 64 KiB blocks at evenly spaced offsets (the first at 0, the last at the end)."""
    if nbytes <= FULL_CHECK_BYTES:
        return "sha256:" + hash_file(path, "sha256")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for k in range(SAMPLE_BLOCKS):
            f.seek(k * max(nbytes - _BLOCK, 0) // (SAMPLE_BLOCKS - 1))
            h.update(f.read(_BLOCK))
    return "sha256-sampled:" + h.hexdigest()


def _read_sidecar(meta_path: Path, key: str) -> tuple[dict | None, str | None]:
    """``(sidecar, None)`` if ``meta_path`` is a complete sidecar of ``key``, else ``(None, what is wrong)``."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        return None, f"its sidecar {meta_path} is not valid JSON ({type(err).__name__}: {err})"
    fields = {"key": str, "targets": list, "skipped": list, "bytes": int, "digest": str}
    bad = [k for k, t in fields.items() if not isinstance(meta, dict) or not isinstance(meta.get(k), t)]
    if bad:
        return None, f"its sidecar {meta_path} lacks or garbles {bad}"
    if meta["key"] != key:
        return None, f"its sidecar {meta_path} belongs to another file list (key {meta['key']!r})"
    return meta, None


def _open_cache(arr_path: Path, meta_path: Path, key: str, size: int):
    """``((images memmap [N, size, size, 3], targets, skipped), None)`` for a sound cache; ``(None, None)``
    when there is none; ``(None, what is wrong)`` for a damaged one."""
    if not arr_path.exists() and not meta_path.exists():
        return None, None
    if not meta_path.is_file():
        return None, f"it has no sidecar {meta_path.name} (its build was interrupted)"
    meta, problem = _read_sidecar(meta_path, key)
    if meta is None:
        return None, problem
    if not arr_path.is_file():
        return None, "the array file is missing"
    nbytes = arr_path.stat().st_size
    if nbytes != meta["bytes"]:
        return None, f"it holds {nbytes} bytes where its sidecar records {meta['bytes']} (truncated or replaced)"
    if _digest(arr_path, nbytes) != meta["digest"]:
        return None, "its checksum differs from the one its sidecar records (the file is garbled)"
    try:
        images = np.load(arr_path, mmap_mode="r")
    except (ValueError, OSError) as err:
        return None, f"it is not a readable .npy array ({err})"
    want = (len(meta["targets"]), size, size, 3)
    if images.shape != want or images.dtype != np.uint8:
        return None, f"it holds {images.dtype} {images.shape} where {want} uint8 was expected"
    return (images, meta["targets"], [tuple(s) for s in meta["skipped"]]), None


def _check_writable(root: Path, nbytes: int) -> None:
    """ValueError naming ``cache_dir`` unless a file can be created in ``root`` and ``nbytes`` fit there."""
    try:
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise ValueError(f"cache_dir {root} is not writable ({err}); pass a writable cache_dir") from err
    free = shutil.disk_usage(root).free
    if free < nbytes:
        raise ValueError(f"cache_dir {root}: the cache needs {nbytes / 2**20:.1f} MiB, only "
                         f"{free / 2**20:.1f} MiB are free there")


def _decode_into(out: np.ndarray, samples, size: int, on_error: str, desc: str) -> tuple[list, list]:
    """Decode + resize each ``(path, label)`` into the next row of ``out`` (uint8 ``[N, size, size, 3]``).
    Returns ``(targets, skipped)``: the labels of the rows written, ``(path, reason)`` of the others."""
    targets, skipped = [], []
    for path, label in tqdm(samples, desc=desc):
        try:
            out[len(targets)] = _resize_short_center(open_rgb(path, draft=size), size)
        except UnreadableImage as err:
            if on_error == "raise":
                raise
            skipped.append((err.path, err.reason))
            continue
        targets.append(label)
    return targets, skipped


def _write_array(samples, size: int, arr_path: Path, on_error: str, desc: str) -> tuple[list, list]:
    """Decode + resize every ``(path, label)`` into ``arr_path`` (uint8 ``[N, size, size, 3]``), through
    temporary files renamed at the end. Returns ``(targets, skipped)`` of the rows kept."""
    tmp = arr_path.with_name(f".{arr_path.name}.tmp{os.getpid()}")
    tmp2 = arr_path.with_name(f".{arr_path.name}.tmp{os.getpid()}b")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(samples), size, size, 3))
        targets, skipped = _decode_into(out, samples, size, on_error, desc)
        out.flush()
        del out
        if skipped:  # drop the rows of skipped files: rewrite compactly
            full = np.load(tmp, mmap_mode="r")
            with open(tmp2, "wb") as f:
                np.save(f, np.ascontiguousarray(full[:len(targets)]))  # [N, S, S, 3] -> [kept, S, S, 3]
            del full
            os.replace(tmp2, tmp)
        os.replace(tmp, arr_path)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(arr_path.parent).free
        raise ValueError(f"disk full while writing the cache {arr_path} ({free / 2**20:.1f} MiB free): "
                         f"free some space or pass another cache_dir") from err
    finally:
        tmp.unlink(missing_ok=True)
        tmp2.unlink(missing_ok=True)
    return targets, skipped


def _build(ds: ImageListDataset, size: int, arr_path: Path, meta_path: Path, key: str, on_error: str):
    """Write the cache of ``ds`` (array, then sidecar); ``(images memmap, targets, skipped)``."""
    _check_writable(arr_path.parent, len(ds.samples) * size * size * 3)
    prefix = arr_path.stem.rsplit("-", 1)[0]  # <name>-<split>-<size>px-<source>
    for stale in arr_path.parent.glob(f"{prefix}-*"):  # same data, other file list or damaged: replace it
        stale.unlink(missing_ok=True)
    targets, skipped = _write_array(ds.samples, size, arr_path, on_error, f"caching {prefix}")
    try:
        check_readable(ds.samples, targets, skipped, f"{ds.report.name}/{ds.report.split}")
    except ValueError:
        arr_path.unlink(missing_ok=True)
        raise
    skipped = list(ds.report.skipped) + skipped
    nbytes = arr_path.stat().st_size
    atomic_write_text(meta_path, json.dumps({"key": key, "targets": targets, "skipped": skipped,
                                             "bytes": nbytes, "digest": _digest(arr_path, nbytes)}))
    return np.load(arr_path, mmap_mode="r"), targets, skipped


def cached_uint8(ds: ImageListDataset, size: int, *, name: str, split: str, on_error: str = "skip",
                 root: str | os.PathLike | None = None) -> ArrayDataset:
    """A memory-mapped ``[N, size, size, 3]`` uint8 copy of ``ds`` (built once, reused while the key matches).

    ``root``: the cache folder (default ``cache_root() / "u8"``; ValueError naming ``cache_dir`` if it
    is a file or, when a build is needed, not writable or too full). Built into a temporary file and
    renamed; the JSON sidecar (labels, skipped files, size and digest of the array) is written last.
    A cache that fails its size / digest check, or whose sidecar is missing or garbled, is rebuilt
    with a RuntimeWarning and a line in ``report.notes``. Images are converted to RGB as
    :func:`~swiftlib.data.images.to_rgb` does (16-bit tones kept, alpha composited on white). A cache
    of the same data (``name`` / ``split`` / ``size``, the same folder and classes) whose files changed is
    replaced; other folders and other class subsets of one folder keep caches of their own.
    """
    size = check_int("cache_size", size, minimum=8)
    root = check_folder_arg("cache_dir", root) if root is not None else cache_root() / "u8"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cache_dir {root} cannot be created ({err})") from err
    key = _cache_key(name, split, ds.classes, size, ds.samples)
    stem = f"{name}-{split}-{size}px-{_source_id(ds)}-{key}"
    arr_path, meta_path = root / f"{stem}.npy", root / f"{stem}.json"
    cached, problem = _open_cache(arr_path, meta_path, key, size)
    notes = []
    if problem is not None:
        notes.append(f"rebuilt the uint8 cache {arr_path}: {problem}")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
    if cached is None:
        cached = _build(ds, size, arr_path, meta_path, key, on_error)
    images, targets, skipped = cached
    report = DataReport(name, split, num_samples=len(targets), num_classes=len(ds.classes), skipped=skipped,
                        notes=notes)
    return ArrayDataset(images, targets, ds.classes, ds.class_names, transform=ds.transform,
                        mean=ds.mean, std=ds.std, report=report)
