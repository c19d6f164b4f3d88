"""The data-loading benchmark (notebook 04): img/s of a JPEG folder against its uint8 cache.

Shapes: every loader gives normalised batches ``[B, 3, S, S]`` (``S = img_size``) of the same
augmentation (random resized crop 0.08-1 + flip); the cache stores each image as a uint8 row
``[3, s, s']`` with short side ``s = cache_size``.

The JPEGs are synthetic (:func:`_write_jpegs`, written to a temporary folder with the cache beside
them, both removed afterwards). :func:`named_ratios` names the ratios for ``--expect``.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from swiftlib.data import BatchRandomResizedCrop, build_dataset, build_transform

__all__ = ["JPEG_CLASSES", "data_loading_throughput", "named_ratios"]

#: Class folders of the synthetic JPEG tree (image ``i`` goes to class ``i % JPEG_CLASSES``).
JPEG_CLASSES = 10


def _write_jpegs(root: Path, images: int, size_wh: tuple[int, int], classes: int = JPEG_CLASSES,
                 seed: int = 0) -> Path:
    """``images`` noisy JPEGs (quality 90) of about ``size_wh`` pixels in ``root/train/class<k>/``, image i
    in class ``i % classes`` (a colour of its own). Returns ``root``."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        k = i % classes
        folder = root / "train" / f"class{k}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (s + int(rng.integers(0, 9)) for s in size_wh)
        colour = np.array([25 * k, 128, 255 - 25 * k], dtype=np.float32)
        pixels = np.clip(colour + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)  # [H, W, 3]
        Image.fromarray(pixels).save(folder / f"img{i}.JPEG", quality=90)
    return root


def _pass_rate(loader, batch_tf=None) -> float:
    """img/s of one full pass over ``loader`` (``batch_tf`` augments each batch, seeded)."""
    gen = torch.Generator().manual_seed(0)
    t, n = time.perf_counter(), 0
    for x, _ in loader:
        if batch_tf is not None:
            x = batch_tf(x, gen)                                       # [B, 3, s, s'] uint8 -> [B, 3, S, S]
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def _load_rate(ds) -> float:
    """img/s of the image access alone: decode (JPEG) or read (cache), one process, no transform."""
    t = time.perf_counter()
    for i in range(len(ds)):
        ds.load(i)
    return len(ds) / (time.perf_counter() - t)


def _loader_rates(jpeg, cached, batch_tf, workers: int, batch: int, rounds: int) -> dict[str, list[float]]:
    """img/s of each loader in ``rounds`` alternating rounds, after one warm-up pass each (workers
    started, page cache filled)."""
    loaders = {k: torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=w,
                                              persistent_workers=w > 0)
               for k, ds, w in (("jpeg", jpeg, workers), ("cache", cached, workers), ("cache_batch", cached.raw_view(), 0))}
    tfs = {"jpeg": None, "cache": None, "cache_batch": batch_tf}
    for name, loader in loaders.items():
        _pass_rate(loader, tfs[name])
    passes: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(rounds):
        for name in (list(loaders) if r % 2 == 0 else list(reversed(loaders))):
            passes[name].append(_pass_rate(loaders[name], tfs[name]))
    return passes


def data_loading_throughput(img_size: int = 128, cache_size: int = 144, images: int = 300, jpeg_size=(500, 375),
                            workers: int = 2, batch: int = 32, rounds: int = 3) -> dict[str, Any]:
    """img/s of three loaders over one JPEG folder, all giving normalised ``[B, 3, img_size, img_size]`` batches
    of the same augmentation (random resized crop 0.08-1 + flip):

    * ``jpeg``: decode every JPEG, timm's transform per image (in ``workers`` processes);
    * ``cache``: the uint8 cache, the same per-image transform;
    * ``cache_batch``: the uint8 cache, rows collated as they are and augmented per batch by
      :class:`swiftlib.data.BatchRandomResizedCrop`, all in the main process with torch's threads
      (what ``swiftlib.train`` does with in-memory data; reading a row is ~50x cheaper than decoding,
      so worker processes would only add transfers).

    Also the image access alone (decode vs memmap row, one process, no transform).
    """
    tf = build_transform(img_size, True, color_jitter=0.0)
    with tempfile.TemporaryDirectory(prefix="swiftlib-bench-data-") as tmp:
        root = _write_jpegs(Path(tmp) / "jpeg", images, jpeg_size)
        jpeg = build_dataset("folder", root, "train", img_size, transform=tf)
        t0 = time.perf_counter()
        cached = build_dataset("folder", root, "train", img_size, transform=tf, cache=True, cache_size=cache_size,
                               cache_dir=Path(tmp) / "cache")
        build_s = time.perf_counter() - t0
        passes = _loader_rates(jpeg, cached, BatchRandomResizedCrop(img_size), workers, batch, rounds)
        access: dict[str, list[float]] = {"jpeg": [], "cache": []}
        for r in range(rounds):
            for name in (("jpeg", "cache") if r % 2 == 0 else ("cache", "jpeg")):
                access[name].append(_load_rate(jpeg if name == "jpeg" else cached))
        n_images = len(jpeg)
        del jpeg, cached  # the cache's memmap closes before its folder goes
    j, c, cb = (statistics.median(passes[k]) for k in ("jpeg", "cache", "cache_batch"))
    load_j, load_c = statistics.median(access["jpeg"]), statistics.median(access["cache"])
    print(f"data loading: JPEG {j:.0f} img/s, uint8 cache {c:.0f} img/s (ratio {c / j:.1f}), cache + batch "
          f"augmentation {cb:.0f} img/s (ratio {cb / j:.1f}); image access only: ratio {load_c / load_j:.1f}",
          file=sys.stderr)
    return {"images": n_images, "jpeg_size_wh": list(jpeg_size), "img_size": img_size, "cache_size": cache_size,
            "workers": workers, "batch": batch, "rounds": rounds,
            "augmentation": "random resized crop (0.08-1) + flip + normalise, in every loader",
            "jpeg_img_s": round(j, 1), "cache_img_s": round(c, 1), "cache_batch_img_s": round(cb, 1),
            "ratio": round(c / j, 2), "ratio_batch": round(cb / j, 2), "cache_build_seconds": round(build_s, 2),
            "rounds_img_s": {k: [round(v, 1) for v in vs] for k, vs in passes.items()},
            "load_only": {"jpeg_img_s": round(load_j, 1), "cache_img_s": round(load_c, 1),
                          "ratio": round(load_c / load_j, 1),
                          "what": "image access without the transform: JPEG decode + RGB vs uint8 memmap row"},
            "note": "synthetic noisy JPEGs (quality 90) decode slower than typical photos of the same size"}


def named_ratios(result: dict[str, Any]) -> dict[str, float]:
    """The data-loading ratios (img/s over the JPEG loader's, higher is faster) by the name ``--expect``
    reads: ``data_ratio`` (cache), ``data_ratio_batch`` (cache + batch augmentation),
    ``data_load_only_ratio`` (image access alone)."""
    return {"data_ratio": result["ratio"], "data_ratio_batch": result["ratio_batch"],
            "data_load_only_ratio": result["load_only"]["ratio"]}
