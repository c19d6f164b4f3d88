"""What a training config must satisfy before any work starts, each failure one ValueError naming the flag.

* :func:`check_names`: the names a run is built from (``--recipe``, ``--data``, ``--model``,
  ``--attention`` and the other choices);
* :func:`check_values`: every number of a filled config (integers in range, floats finite and in range);
* :func:`check_environment`: what the machine must provide (``--device``, ``--data-dir``, ``--out``
  writable, the files named by ``--init-checkpoint`` / ``--teacher-checkpoint``, a timm ``--teacher``);
* :func:`check_batchnorm_batch`: a per-process batch of one image whose last feature map is 1 x 1
  (``[1, C4, 1, 1]``) gives every BatchNorm of the head a single value per channel, which training
  mode cannot normalise (torch: "Expected more than 1 value per channel").

Every :class:`~swiftlib.train.TrainConfig` field ``x_y`` is the flag ``--x-y`` (:func:`flag`), so library
users read the same names. No tensors: plain values in, a ValueError (or FileNotFoundError) out.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch

from swiftlib.attention import VARIANTS
from swiftlib.data import DATASETS, RE_MODES
from swiftlib.measure import resolve_device
from swiftlib.models import MIN_INPUT_SIZE, resolve_name, stage_shapes
from swiftlib.train.files import check_writable_folder

if TYPE_CHECKING:  # annotations only: config imports this module
    from swiftlib.train.config import TrainConfig

__all__ = ["flag", "CHOICES", "INT_MINIMUMS", "FLOAT_RANGES", "BATCHNORM_ONE_VALUE", "check_names", "check_values",
           "check_environment", "check_batchnorm_batch", "batchnorm_advice"]

#: Fields with a fixed set of values.
CHOICES = {"clip_mode": ("agc", "norm", "value"), "amp_dtype": ("bfloat16", "float16"),
           "re_mode": RE_MODES, "sched_on": ("epoch", "step"), "on_error": ("skip", "raise")}
#: Integer fields and their smallest value (``img_size``: :data:`swiftlib.models.MIN_INPUT_SIZE`).
INT_MINIMUMS = {"epochs": 1, "batch_size": 1, "workers": 0, "eval_every": 1, "save_every": 1, "threads": 1,
                "repeated_aug": 1, "re_count": 1, "lr_batch": 0, "images_per_class": 1, "subset_classes": 1,
                "cache_size": 8, "seed": 0}
#: Integer fields that may stay None (not set by the recipes).
OPTIONAL_INTS = ("threads", "images_per_class", "subset_classes", "cache_size")
#: Float fields: ``(low, low included, high, high included)``; every float must also be finite.
FLOAT_RANGES = {"lr": (0, False, math.inf, False), "weight_decay": (0, True, math.inf, False),
                "warmup_epochs": (0, True, math.inf, False), "warmup_lr": (0, True, math.inf, False),
                "min_lr": (0, True, math.inf, False), "smoothing": (0, True, 1, False),
                "mixup": (0, True, math.inf, False), "cutmix": (0, True, math.inf, False),
                "ema_decay": (0, True, 1, False), "clip_grad": (0, True, math.inf, False),
                "scale_min": (0, False, 1, True), "hflip": (0, True, 1, True),
                "color_jitter": (0, True, math.inf, False), "re_prob": (0, True, 1, True),
                "crop_pct": (0, False, 1, True), "distill_alpha": (0, True, 1, True)}
#: Datasets that are read from ``--data-dir`` and have no default folder.
NEEDS_DATA_DIR = ("imagenet", "folder")


def flag(field: str) -> str:
    """The command-line flag of a config field: ``img_size`` -> ``--img-size``."""
    return "--" + field.replace("_", "-")


def check_names(cfg: TrainConfig, recipes: tuple[str, ...]) -> TrainConfig:
    """``cfg`` with its model name made canonical; a ValueError naming the flag of an unknown name."""
    if cfg.recipe not in recipes:
        raise ValueError(f"--recipe: recipe must be {' or '.join(repr(r) for r in recipes)}, got {cfg.recipe!r}")
    if cfg.data not in DATASETS:
        raise ValueError(f"--data: unknown dataset {cfg.data!r}; expected one of {DATASETS}")
    if cfg.attention not in VARIANTS:
        raise ValueError(f"--attention: unknown attention {cfg.attention!r}; expected one of {tuple(VARIANTS)}")
    try:
        model = resolve_name(cfg.model)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--model: {e}") from None
    return dataclasses.replace(cfg, model=model)


def _check_int(field: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{flag(field)} must be an integer >= {minimum}, got {value!r}")


def _check_float(field: str, value, low: float, low_in: bool, high: float, high_in: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{flag(field)} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{flag(field)} must be a finite number, got {value}")
    if value < low or (value == low and not low_in) or value > high or (value == high and not high_in):
        interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        raise ValueError(f"{flag(field)} must be in {interval}, got {value:g}")


def check_values(cfg: TrainConfig) -> None:
    """ValueErrors naming the flag for every value of a filled config that is out of range or cannot work."""
    if isinstance(cfg.img_size, bool) or not isinstance(cfg.img_size, numbers.Integral) or cfg.img_size < 1:
        raise ValueError(f"--img-size must be a positive integer, got {cfg.img_size!r}")
    if cfg.img_size < MIN_INPUT_SIZE:
        raise ValueError(f"--img-size {cfg.img_size} is below the smallest input SwiftFormer takes "
                         f"({MIN_INPUT_SIZE} px, the network's total stride)")
    for field, minimum in INT_MINIMUMS.items():
        if getattr(cfg, field) is not None or field not in OPTIONAL_INTS:
            _check_int(field, getattr(cfg, field), minimum)
    for field, bounds in FLOAT_RANGES.items():
        _check_float(field, getattr(cfg, field), *bounds)
    for field, choices in CHOICES.items():
        if getattr(cfg, field) not in choices:
            raise ValueError(f"{flag(field)} must be one of {choices}, got {getattr(cfg, field)!r}")
    if cfg.teacher_checkpoint and not cfg.teacher:
        raise ValueError("--teacher-checkpoint given without --teacher (a timm model name, e.g. regnety_160)")


def _check_device(cfg: TrainConfig) -> torch.device:
    try:
        return resolve_device(cfg.device)
    except ValueError as e:
        raise ValueError(f"--device {cfg.device}: {e}") from None


def _check_data_dir(cfg: TrainConfig) -> None:
    if cfg.data_dir is None:
        if cfg.data in NEEDS_DATA_DIR:
            what = "an ILSVRC-2012 folder holding train/ and val/" if cfg.data == "imagenet" else \
                "a folder of class folders, or of train/ and val/ class folders"
            raise ValueError(f"--data {cfg.data} needs --data-dir ({what})")
        return
    path = Path(cfg.data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--data-dir {path} is a file; give the dataset's folder")
    if not path.exists() and (cfg.data in NEEDS_DATA_DIR or not cfg.download):
        hint = "" if cfg.data in NEEDS_DATA_DIR else " (or add --download to fetch the dataset into it)"
        raise ValueError(f"--data-dir {path} does not exist{hint}")


def check_environment(cfg: TrainConfig, *, writes_out: bool = True, builds_data: bool = True) -> torch.device:
    """The device of a filled config, after checking what the machine must provide (ValueErrors naming
    the flag; FileNotFoundError for a named file that is missing). ``writes_out=False`` (evaluation)
    does not judge ``--out``, ``builds_data=False`` (datasets passed in) not ``--data-dir``."""
    device = _check_device(cfg)
    if builds_data:
        _check_data_dir(cfg)
    if writes_out:
        check_writable_folder("--out", cfg.out)
    for field in ("init_checkpoint", "teacher_checkpoint"):
        path = getattr(cfg, field)
        if path and not Path(path).is_file():
            kind = "a folder, not a file" if Path(path).is_dir() else "no such file"
            raise FileNotFoundError(f"{flag(field)} {path}: {kind}")
    if cfg.teacher not in (None, "none") and not timm.is_model(cfg.teacher):
        raise ValueError(f"--teacher {cfg.teacher!r} is not a timm model name (e.g. regnety_160, resnet50)")
    return device


#: The start of torch's error for a training-mode BatchNorm over a single value per channel.
BATCHNORM_ONE_VALUE = "Expected more than 1 value per channel"


def batchnorm_advice(batch_size: int) -> str:
    """What to do about a BatchNorm that sees one value per channel (the end of both messages)."""
    return (f"BatchNorm in training mode needs more than one value per channel, and a batch of {batch_size} "
            f"image(s) with a 1x1 last feature map gives it one; use --batch-size 2 or more (incomplete last "
            f"batches are dropped, so every step gets the full batch), more training images, or an --img-size "
            f"above {MIN_INPUT_SIZE} (a larger last map)")


def check_batchnorm_batch(cfg: TrainConfig, world: int, requested: int) -> None:
    """A ValueError, before any step, when every SwiftFormer step would hit a BatchNorm over one value per
    channel: a per-process batch of 1 (``requested`` before clamping to the data) at a 1x1 last map."""
    if cfg.batch_size > 1 or (world > 1 and cfg.sync_bn):
        return
    last = stage_shapes(cfg.model, cfg.img_size)[-1]          # the head's BatchNorm sees [B, C4, h, w]
    if last["tokens"] > 1:
        return
    clamped = "" if requested == cfg.batch_size else \
        f" (--batch-size {requested} clamped to the {cfg.batch_size} training image(s) each process gets)"
    raise ValueError(f"--batch-size {cfg.batch_size}{clamped} at --img-size {cfg.img_size}: "
                     f"{batchnorm_advice(cfg.batch_size)}")
