"""What every exporter shares: argument checks, the module to export (:func:`resolve_model`), sample photos.

Shape glossary (as in :mod:`swiftlib.attention`)::

    B batch   C channels   H, W map height/width   S image side (pixels)   K classes
    B, C, H, W  feature maps                        B, 3, S, S  images

:func:`resolve_model` turns a model name or an eval-mode module into the module an exporter traces:
a SwiftFormer is fused (:func:`swiftlib.models.fuse_for_inference`) and put on the export-friendly
map path (:func:`swiftlib.models.export_friendly`); any other module (e.g. timm's) is used as given.
:func:`sample_images` gives real photos ``uint8 [B, 3, S, S]`` and their ImageNet-normalised floats.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
import timm
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

import swiftlib
from swiftlib.data import seeded
from swiftlib.models import (MIN_INPUT_SIZE, SwiftFormer, checkpoint_num_classes, create_model, export_friendly,
                             fuse_for_inference, read_checkpoint, resolve_name)

#: Core ML compute precisions an export can use.
PRECISIONS = ("fp16", "fp32")
#: Core ML compute units timed by default (``coremltools.ComputeUnit`` names), and all of them.
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_ONLY")
ALL_COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
#: Where the command line records results by default.
RESULTS_DIR = swiftlib.DATA_DIR / "results"


# ============================================================================ argument checks
def check_img_size(img_size) -> int:
    """``img_size`` as an int, a multiple of the network's total stride (32); else TypeError / ValueError."""
    if isinstance(img_size, bool) or not isinstance(img_size, (int, np.integer)):
        raise TypeError(f"img_size must be an int (pixels per side), got {type(img_size).__name__}")
    img_size = int(img_size)
    if img_size < MIN_INPUT_SIZE or img_size % MIN_INPUT_SIZE:
        raise ValueError(f"img_size must be a multiple of {MIN_INPUT_SIZE} (the network's total stride) and at least "
                         f"{MIN_INPUT_SIZE}, e.g. 224 or 256; got {img_size}")
    return img_size


def check_out_path(path, suffix: str) -> Path:
    """``path`` as a Path ending in ``suffix`` whose folder exists (and is a folder); an existing ``path``
    of the wrong kind (a folder where a file goes, a file where a package folder goes) is refused too."""
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"output path must end with {suffix!r}, got {str(path)!r}")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"output folder {str(parent)!r} is a file, not a folder; needed for {path.name}")
    if not parent.is_dir():
        raise FileNotFoundError(f"output directory {str(parent)!r} does not exist (create it first); "
                                f"needed for {path.name}")
    package = suffix == ".mlpackage"  # a Core ML package is a folder, every other output a file
    if path.exists() and path.is_dir() != package:
        raise (FileExistsError if package else IsADirectoryError)(
            f"{str(path)!r} exists and is a {'folder' if path.is_dir() else 'file'}; the output is a "
            f"{'package folder' if package else 'file'}: remove it or choose another name")
    return path


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def check_eval(model: nn.Module) -> None:
    """A TypeError for a non-module, a ValueError for a module in training mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model name or an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode (BatchNorm would use batch statistics and a "
                         f"distilled SwiftFormer returns two outputs): call model.eval() before exporting")


def results_path(results_dir, name: str) -> Path:
    """``results_dir / name``, once ``results_dir`` is known to exist."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {str(results_dir)!r} does not exist")
    return results_dir / name


@contextmanager
def output_dir(out_dir, prefix: str) -> Iterator[Path]:
    """Yield ``out_dir`` as a Path (it must exist), or a temporary folder deleted afterwards if None."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {str(out_dir)!r} does not exist (create it first)")
    yield out_dir


# ============================================================================ the module to export
def _read_payload(checkpoint) -> tuple[Any, str]:
    """``(payload, where)`` of a checkpoint path (read by :func:`swiftlib.models.read_checkpoint`: tensors
    and plain values only, nothing in the file runs) or of an in-memory state dict / payload."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return read_checkpoint(checkpoint), str(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"checkpoint must be a file path or a state dict, got {type(checkpoint).__name__}")
    return checkpoint, "in-memory state dict"


def _class_count(payload, num_classes: int | None, where: str) -> int:
    """The classifier size to build: the checkpoint's, which an explicit ``num_classes`` must equal."""
    if payload is None:
        return 1000 if num_classes is None else int(num_classes)
    k = checkpoint_num_classes(payload)
    if num_classes is not None and int(num_classes) != k:
        raise ValueError(f"num_classes={num_classes} but the classifier in {where} has {k} classes; leave "
                         f"num_classes out (it is read from the checkpoint) or pass {k}")
    return k


def _payload_field(payload, key: str):
    return payload.get(key) if isinstance(payload, Mapping) else None


def build_model(name: str, num_classes: int | None = None, checkpoint=None, attention: str | None = None
                ) -> tuple[nn.Module, dict[str, Any]]:
    """The eval-mode SwiftFormer an export of ``name`` starts from (not fused), and a description.

    Seed 0 (a random-initialisation export is reproducible and checkable against torch later), or the
    weights of ``checkpoint`` (a path or a state dict in any layout :func:`swiftlib.models.load_checkpoint`
    reads). The class count comes from the checkpoint's classifier (:func:`swiftlib.models.checkpoint_num_classes`;
    an explicit ``num_classes`` must agree), else ``num_classes`` (default 1000). ``attention``: the
    checkpoint's ``"attention"`` entry when it has one, else ``"additive"``. The description holds
    ``class_names`` (a swiftlib training checkpoint's class names, or None).
    """
    key = resolve_name(name)
    payload, where = _read_payload(checkpoint) if checkpoint is not None else (None, None)
    k = _class_count(payload, num_classes, where)
    attention = attention or _payload_field(payload, "attention") or "additive"
    with seeded(0):
        model = create_model(key, num_classes=k, attention=attention, checkpoint=payload).eval()
    names = _payload_field(payload, "class_names")
    info = {"model": key, "attention": attention, "num_classes": k, "library": "swiftlib",
            "source_checkpoint": "random initialisation (seed 0)" if payload is None else where,
            "class_names": [str(c) for c in names] if names else None}
    return model, info


def _describe_given(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return {"model": getattr(model, "variant_name", None) or cfg.get("architecture") or type(model).__name__,
            "attention": getattr(model, "attention", "unknown"), "num_classes": getattr(model, "num_classes", None),
            "source_checkpoint": getattr(model, "checkpoint_source", "given module"), "class_names": None,
            "library": "swiftlib" if isinstance(model, SwiftFormer) else type(model).__module__.split(".")[0]}


def resolve_model(model_or_name, num_classes: int | None = None, checkpoint=None, attention: str | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """The module to export and a description of it.

    A name (``"swiftformer_xs"``, ``"xs"``, ... as :func:`swiftlib.models.resolve_name` reads it)
    is built by :func:`build_model` (seed 0 or ``checkpoint``'s weights and class count). A
    :class:`swiftlib.models.SwiftFormer` must be in eval mode. Either way a SwiftFormer is fused
    (:func:`swiftlib.models.fuse_for_inference`) and put on the export-friendly path: a built model
    is changed in place, a given one is copied once (the caller's model is never changed). Any
    other module (e.g. a timm model) is returned as given (not copied), after the same eval-mode check.
    """
    owned = isinstance(model_or_name, str)  # built here: fuse and convert in place
    if owned:
        model, info = build_model(model_or_name, num_classes, checkpoint, attention)
    else:
        model = model_or_name
        check_eval(model)
        info = _describe_given(model)
    if isinstance(model, SwiftFormer):
        model = export_friendly(fuse_for_inference(model, inplace=owned), inplace=True)  # at most one copy
        info["fused"] = True
    return model.eval(), info


def timm_model(name: str, num_classes: int = 1000) -> nn.Module:
    """timm's model ``name`` (random initialisation, eval mode): the peer swiftlib's export is compared with."""
    m = timm.create_model(name, pretrained=False, num_classes=num_classes)
    m.checkpoint_source = "random initialisation (timm)"
    return m.eval()


# ============================================================================ sample inputs
def sample_images(img_size: int = 224, names: Sequence[str] = ("chelsea", "coffee", "astronaut", "rocket")
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's bundled photos, resized (short side ``img_size / 0.875``, bicubic) and center-cropped.

    Returns ``(pixels, normalised)``: ``uint8 [B, 3, S, S]`` (what a camera gives Core ML) and
    ``float [B, 3, S, S]`` with timm's ImageNet mean/std applied (what the torch model takes).
    """
    img_size = check_img_size(img_size)
    resize = int(math.floor(img_size / 0.875))
    out = []
    for name in names:
        fn = getattr(skimage.data, name, None)
        if fn is None:
            raise ValueError(f"skimage.data has no image {name!r}")
        im = torch.from_numpy(np.ascontiguousarray(fn())).permute(2, 0, 1)[None].float()  # [H, W, 3] -> [1, 3, H, W]
        h, w = im.shape[-2:]
        s = resize / min(h, w)
        im = F.interpolate(im, size=(max(resize, round(h * s)), max(resize, round(w * s))), mode="bicubic",
                           antialias=True, align_corners=False)
        top, left = (im.shape[-2] - img_size) // 2, (im.shape[-1] - img_size) // 2
        out.append(im[..., top:top + img_size, left:left + img_size].clamp(0, 255).round())
    pixels = torch.cat(out).to(torch.uint8)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    return pixels, (pixels.float() / 255 - mean) / std
