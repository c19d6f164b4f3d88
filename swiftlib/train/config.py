"""The settings of a training run and what they resolve to: :class:`TrainConfig`, the two recipes
(:data:`RECIPES`), :func:`resolve_config` (fills what the user left open from the recipe), the
datasets a config names (:func:`build_train_dataset`, :func:`build_val_dataset`) and
:func:`prepare_data`, the config as used with its datasets (batch augmentation decided, the batch
clamped to a tiny dataset).

Items: the training and validation datasets yield ``(image [3, S, S] float, label)`` with
S = ``img_size``; with batch augmentation the loader reads raw uint8 rows ``[H, W(, 3)]`` and
:class:`swiftlib.data.BatchRandomResizedCrop` maps a batch ``[B, H, W(, 3)]`` to ``[B, 3, S, S]``.

Recipes (every field is also a command-line flag of ``python -m swiftlib.train`` that overrides the recipe):

* ``paper``: the official SwiftFormer recipe (``main.py`` / ``dist_train.sh``; facts §4; every value and
  its source in ``data/paper_recipe.csv``): 300 epochs, AdamW lr 2e-3 at any batch (no linear
  scaling: ``lr_batch=0``), wd 0.025, cosine from 5 warmup epochs (1e-6) to 1e-5 stepped once per
  epoch, RandAugment m9, colour jitter 0.4, mixup 0.8 / cutmix 1.0, label smoothing 0.1, random
  erasing 0.25 in ``pixel`` mode (count 1), repeated augmentation x3, EMA 0.99996 (timm's ModelEma:
  from the initial weights), AGC 0.01, fp32 (``amp=False``), evaluation every 20 epochs, hard
  distillation from ``regnety_160`` (alpha 0.5; it needs ``--teacher-checkpoint``: without one the run
  warns that it is not the paper's and trains both heads on the labels).
  XS drops RandAugment, mixup and cutmix; S drops mixup and cutmix (``paper_xs`` / ``paper_s``).
* ``subset``: 10-100 classes and a few epochs: lr 2e-3 at 256 images per step, scaled linearly to the
  real total batch (``lr_batch=256``: subset runs range from batch 16 on a laptop CPU to 1024 on GPUs,
  and the scaled lr keeps one recipe usable across them), wd 0.05, 1 warmup epoch with the schedule
  stepped every optimizer step (a few epochs are too few for per-epoch steps), light augmentation,
  label smoothing 0.1, no mixup, no EMA, no teacher, evaluation every epoch, AMP on CUDA.

Model names are read with :func:`swiftlib.models.resolve_name`: ``"SwiftFormer-XS"``, ``"xs"`` and
``"swiftformer_xs"`` are the same model and get the same recipe; the resolved config holds the
canonical name.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from swiftlib.data import ArrayDataset, BatchRandomResizedCrop, build_dataset, build_transform
from swiftlib.train.checks import check_names, check_values

__all__ = ["TrainConfig", "RECIPES", "RECIPE_NAMES", "resolve_config", "build_train_dataset", "build_val_dataset",
           "build_datasets", "use_batch_augment", "RunData", "prepare_data"]


@dataclass
class TrainConfig:
    """Every setting of a run; ``None`` fields are filled from the recipe (see :func:`resolve_config`)."""
    # data
    data: str = "fashion-mnist"
    data_dir: str | None = None
    classes: str | None = None            # subset name / file of WNIDs (imagenet, folder)
    subset_classes: int | None = None     # num_classes=k drawn with the seed
    images_per_class: int | None = None
    archive_size: str = "320px"           # imagenette / imagewoof: full, 320px, 160px
    download: bool = False
    imagenet_labels: bool = False
    cache: bool = False
    cache_size: int | None = None
    on_error: str = "skip"
    val_split: str = "val"
    # model
    model: str = "swiftformer_xs"
    attention: str = "additive"
    distillation: bool = True
    init_checkpoint: str | None = None    # weights to start from (fine-tuning)
    # recipe-controlled optimisation and augmentation
    recipe: str = "subset"
    epochs: int | None = None
    batch_size: int | None = None         # per process
    lr: float | None = None               # the AdamW learning rate (at lr_batch total images per step)
    lr_batch: int | None = None           # linear lr scaling: lr * total batch / lr_batch; 0 = no scaling
    sched_on: str | None = None           # cosine schedule stepped per "epoch" (official) or per "step"
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    warmup_lr: float | None = None
    min_lr: float | None = None
    smoothing: float | None = None
    mixup: float | None = None
    cutmix: float | None = None
    ema_decay: float | None = None        # 0 disables EMA
    clip_grad: float | None = None        # 0 disables clipping
    clip_mode: str | None = None          # agc, norm, value
    img_size: int | None = None
    scale_min: float | None = None        # RandomResizedCrop scale lower bound
    hflip: float | None = None
    auto_augment: str | None = None       # e.g. rand-m9-mstd0.5-inc1; "none" disables
    color_jitter: float | None = None
    re_prob: float | None = None          # random erasing probability
    re_mode: str | None = None            # random erasing fill: const, rand, pixel (timm's names)
    re_count: int | None = None           # random erasing: at most this many boxes
    crop_pct: float | None = None
    repeated_aug: int | None = None
    batch_augment: bool | None = None     # uint8 images in memory: crop/flip/normalise per batch (default: if possible)
    # hard distillation
    teacher: str | None = None            # timm model name ("none": no teacher)
    teacher_checkpoint: str | None = None
    distill_alpha: float = 0.5
    # system
    device: str = "auto"
    amp: bool | None = None               # None: on for CUDA (bf16), off on the CPU; recorded as used
    amp_dtype: str = "bfloat16"
    channels_last: bool | None = None     # default: on (GPU, and CPU: oneDNN's convolutions are faster in NHWC)
    compile: bool = False
    sync_bn: bool = False                 # DDP: SyncBatchNorm; otherwise BN statistics are averaged every epoch
    workers: int = 0
    threads: int | None = None
    seed: int = 0
    out: str = "runs/train"
    resume: str | None = None             # a checkpoint path, or "auto" = out/last.pth if present
    eval_every: int | None = None         # epochs between validations (the last epoch always)
    save_every: int = 1                   # epochs between last.pth writes (the last epoch and Ctrl-C always)
    progress: bool = True


#: Recipe defaults; ``paper_xs`` / ``paper_s`` hold the XS / S differences applied on top of ``paper``.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(epochs=300, batch_size=128, lr=2e-3, lr_batch=0, sched_on="epoch", weight_decay=0.025,
                  warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5, smoothing=0.1, mixup=0.8, cutmix=1.0,
                  ema_decay=0.99996, clip_grad=0.01, clip_mode="agc", img_size=224, scale_min=0.08, hflip=0.5,
                  auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, re_prob=0.25, re_mode="pixel",
                  re_count=1, crop_pct=0.875, repeated_aug=3, amp=False, eval_every=20, teacher="regnety_160"),
    "paper_xs": dict(auto_augment="none", mixup=0.0, cutmix=0.0),
    "paper_s": dict(mixup=0.0, cutmix=0.0),
    "subset": dict(epochs=10, batch_size=128, lr=2e-3, lr_batch=256, sched_on="step", weight_decay=0.05,
                   warmup_epochs=1, warmup_lr=1e-5, min_lr=1e-5, smoothing=0.1, mixup=0.0, cutmix=0.0,
                   ema_decay=0.0, clip_grad=0.0, clip_mode="agc", img_size=160, scale_min=0.35, hflip=0.5,
                   auto_augment="none", color_jitter=0.2, re_prob=0.0, re_mode="pixel", re_count=1,
                   crop_pct=0.875, repeated_aug=1, eval_every=1),
}
#: The recipes a run can name (``--recipe``); the others in :data:`RECIPES` are per-model differences.
RECIPE_NAMES = ("paper", "subset")


def _recipe_values(recipe: str, model: str) -> dict[str, Any]:
    """The recipe's values for the canonical model name ``model`` (``paper``: with its XS / S differences)."""
    values = dict(RECIPES[recipe])
    if recipe == "paper":
        variant = model.removeprefix("swiftformer_")  # swiftformer_xs -> xs
        values.update(RECIPES.get(f"paper_{variant}", {}))
    return values


def resolve_config(config: TrainConfig | None = None, **overrides) -> TrainConfig:
    """A complete config: ``overrides`` on top of ``config``, recipe values where a field is ``None``.

    The model name is resolved (:func:`swiftlib.models.resolve_name`: any spelling
    :func:`swiftlib.models.create_model` accepts) before the recipe's per-model values are looked up.
    Names and values are checked (:mod:`swiftlib.train.checks`): a ValueError names the flag.
    """
    cfg = check_names(dataclasses.replace(config or TrainConfig(), **overrides), RECIPE_NAMES)
    filled = {k: v for k, v in _recipe_values(cfg.recipe, cfg.model).items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    check_values(cfg)
    return cfg


# =========================================================================== the datasets a config names
def _dataset_kwargs(cfg: TrainConfig) -> dict:
    """The :func:`swiftlib.data.build_dataset` arguments shared by both splits of a resolved config."""
    if cfg.data == "fashion-mnist":
        return dict(images_per_class=cfg.images_per_class, seed=cfg.seed, download=cfg.download)
    return dict(classes=cfg.classes, num_classes=cfg.subset_classes, images_per_class=cfg.images_per_class,
                seed=cfg.seed, imagenet_labels=cfg.imagenet_labels, size=cfg.archive_size,
                download=cfg.download, on_error=cfg.on_error, cache=cfg.cache, cache_size=cfg.cache_size)


def build_train_dataset(cfg: TrainConfig) -> Dataset:
    """The training split of a resolved config with the recipe's per-image augmentation (items: float
    ``[3, img_size, img_size]``, label). Whether :func:`~swiftlib.train.fit` augments per batch instead is
    :func:`use_batch_augment`'s decision."""
    train = build_dataset(cfg.data, cfg.data_dir, "train", cfg.img_size, transform=None, **_dataset_kwargs(cfg))
    aa = None if cfg.auto_augment in (None, "none", "") else cfg.auto_augment
    train.transform = build_transform(cfg.img_size, True, mean=train.mean, std=train.std,
                                      scale=(cfg.scale_min, 1.0), hflip=cfg.hflip, auto_augment=aa,
                                      color_jitter=cfg.color_jitter, re_prob=cfg.re_prob, re_mode=cfg.re_mode,
                                      re_count=cfg.re_count)
    return train


def build_val_dataset(cfg: TrainConfig) -> Dataset:
    """The ``val_split`` of a resolved config, every image (no ``images_per_class`` cap), with the eval
    transform (resize + center crop ``crop_pct``; items: float ``[3, img_size, img_size]``, label)."""
    val = build_dataset(cfg.data, cfg.data_dir, cfg.val_split, cfg.img_size, transform=None,
                        **{**_dataset_kwargs(cfg), "images_per_class": None})
    val.transform = build_transform(cfg.img_size, False, mean=val.mean, std=val.std, crop_pct=cfg.crop_pct)
    return val


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Train (with the recipe's per-image augmentation) and validation datasets of a resolved config."""
    return build_train_dataset(cfg), build_val_dataset(cfg)


# =========================================================================== the config as used with its data
def use_batch_augment(cfg: TrainConfig, train: Dataset) -> bool:
    """Whether the training images are augmented per batch (:class:`swiftlib.data.BatchRandomResizedCrop`).

    It needs uint8 images in memory (an :class:`~swiftlib.data.ArrayDataset`: Fashion-MNIST or
    ``--cache``, or one passed to :func:`~swiftlib.train.fit`) and a recipe of crop + flip only;
    ``batch_augment=None`` uses it whenever both hold, ``True`` raises a ValueError naming what is missing.
    """
    only_crop_flip = cfg.auto_augment in (None, "none", "") and not cfg.color_jitter and not cfg.re_prob
    in_memory = isinstance(train, ArrayDataset)
    if cfg.batch_augment is None:
        return in_memory and only_crop_flip
    if cfg.batch_augment and not in_memory:
        raise ValueError(f"--batch-augment needs uint8 images in memory: --data fashion-mnist, or --cache "
                         f"(an ArrayDataset; the training set is a {type(train).__name__})")
    if cfg.batch_augment and not only_crop_flip:
        raise ValueError(f"--batch-augment does random resized crop, flip and normalisation only; got "
                         f"auto_augment={cfg.auto_augment!r}, color_jitter={cfg.color_jitter}, re_prob={cfg.re_prob} "
                         f"(set them to none / 0, or use --no-batch-augment)")
    return bool(cfg.batch_augment)


def _batch_augmentation(cfg: TrainConfig, train: Dataset) -> tuple[Dataset, BatchRandomResizedCrop | None]:
    """``(dataset the loader reads, per-batch transform or None)`` for the training set ``train``.

    With batch augmentation (:func:`use_batch_augment`): a raw view of ``train`` (uint8 rows
    ``[H, W(, 3)]``, same array, ``train`` itself unchanged) and a :class:`BatchRandomResizedCrop`
    built from the config (``img_size``, ``scale_min``, ``hflip``) with the dataset's mean / std,
    mapping a uint8 batch to float ``[B, 3, img_size, img_size]``. Otherwise ``(train, None)``:
    its own per-image transform is used.
    """
    if not use_batch_augment(cfg, train):
        if getattr(train, "raw", False):
            raise ValueError(f"the training set serves raw uint8 rows (raw=True) but batch augmentation is off "
                             f"(batch_augment={cfg.batch_augment}; automatic only for a crop + flip recipe): give "
                             f"it raw=False and a transform")
        return train, None
    transform = BatchRandomResizedCrop(cfg.img_size, scale=(cfg.scale_min, 1.0), hflip=cfg.hflip,
                                       mean=train.mean, std=train.std)
    return train.raw_view(), transform


@dataclass
class RunData:
    """The datasets of a run and what follows from them (the config with the batch size actually used)."""
    cfg: TrainConfig
    train: Dataset
    val: Dataset
    batch_transform: BatchRandomResizedCrop | None
    classes: list
    num_classes: int
    steps_per_epoch: int


def prepare_data(cfg: TrainConfig, train: Dataset | None, val: Dataset | None, world: int) -> RunData:
    """Build (or take) the datasets, decide batch augmentation, clamp the batch to a tiny dataset."""
    train = build_train_dataset(cfg) if train is None else train
    train, batch_transform = _batch_augmentation(cfg, train)  # a bad setting fails before val is built
    val = build_val_dataset(cfg) if val is None else val
    cfg = dataclasses.replace(cfg, batch_augment=batch_transform is not None)  # recorded as used
    classes = list(getattr(train, "classes", []))
    num_classes = 1000 if cfg.imagenet_labels else (len(classes) or int(max(train.targets)) + 1)
    per_rank = len(train) // world  # repeated augmentation keeps the epoch length (DeiT's RASampler)
    if per_rank < 1:
        raise ValueError(f"{len(train)} training images cannot feed {world} process(es)")
    if per_rank < cfg.batch_size:  # tiny datasets (smoke tests): one full-dataset batch a step
        warnings.warn(f"batch_size {cfg.batch_size} per process is larger than the {per_rank} training images "
                      f"each of the {world} process(es) gets; using batch_size {per_rank}", UserWarning, stacklevel=4)
        cfg = dataclasses.replace(cfg, batch_size=per_rank)
    return RunData(cfg, train, val, batch_transform, classes, num_classes, per_rank // cfg.batch_size)
