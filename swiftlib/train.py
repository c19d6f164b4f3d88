"""Training and evaluation of SwiftFormer on image-classification datasets: ``python -m swiftlib.train``.

Everything standard comes from timm / torch, not re-implemented here: AdamW (``create_optimizer_v2``,
torch's fused kernel, no weight decay on norms and biases), cosine schedule with warmup
(``CosineLRScheduler``, per step), label smoothing, mixup / cutmix (``Mixup``), EMA (``ModelEmaV3``),
adaptive gradient clipping (``dispatch_clip_grad(mode="agc")``), AMP (``torch.autocast``, bf16 on GPU),
channels_last, ``torch.compile``, DDP with a DistributedSampler.

Recipes (:data:`RECIPES`, every field also a command-line flag that overrides the recipe):

* ``paper``: the SwiftFormer recipe (facts §4): 300 epochs, AdamW lr 2e-3 at total batch 2048
  (scaled linearly), wd 0.025, 5 warmup epochs, cosine to 1e-5, RandAugment m9, colour jitter 0.4,
  mixup 0.8 / cutmix 1.0, label smoothing 0.1, random erasing 0.25, repeated augmentation x3, EMA
  0.99996, AGC 0.01, hard distillation from an optional teacher (timm name + local checkpoint).
  XS drops RandAugment, mixup and cutmix; S drops mixup and cutmix.
* ``subset``: 10-100 classes and a few epochs: lr 2e-3 at batch 256, wd 0.05, 1 warmup epoch,
  light augmentation, label smoothing 0.1, no mixup, no EMA.

Runs: ``out/last.pth`` (every epoch and on Ctrl-C, the full training state), ``out/best.pth`` (best
top-1), ``out/metrics.csv`` + ``out/metrics.json`` (one row per epoch), ``out/config.json``.
All written by rank 0, atomically (temporary file + rename). ``--resume`` restores model,
optimizer, scheduler, EMA, scaler, every rank's RNG states and the position inside the epoch: on
CPU a resumed run equals the uninterrupted one bit for bit (augmentation is seeded per sample by
(seed, epoch, position), see :class:`swiftlib.data.SeededTransformDataset`). A non-finite loss stops
the run with a FloatingPointError and leaves the last good checkpoint untouched.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=8 -m swiftlib.train ...`` (NCCL on GPU, gloo on
CPU); the same command runs as one CPU process without torchrun.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from swiftlib.io import atomic_torch_save, atomic_write_text
from swiftlib.data import (DATASETS, ArrayDataset, BatchRandomResizedCrop, SeededTransformDataset, build_dataset,
                           build_transform, rng_state, seed_everything, set_rng_state)

__all__ = ["TrainConfig", "RECIPES", "resolve_config", "fit", "evaluate", "evaluate_checkpoint",
           "ResumableSampler", "main"]


# =========================================================================== configuration
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
    lr: float | None = None               # at lr_batch total images per step, scaled linearly
    lr_batch: int | None = None
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
    re_prob: float | None = None
    crop_pct: float | None = None
    repeated_aug: int | None = None
    batch_augment: bool | None = None     # uint8 images in memory: crop/flip/normalise per batch (default: when possible)
    # hard distillation
    teacher: str | None = None            # timm model name
    teacher_checkpoint: str | None = None
    distill_alpha: float = 0.5
    # system
    device: str = "auto"
    amp: bool | None = None               # default: on for CUDA (bf16)
    amp_dtype: str = "bfloat16"
    channels_last: bool | None = None     # default: on (GPU, and CPU: oneDNN's convolutions are faster in NHWC)
    compile: bool = False
    sync_bn: bool = False                 # DDP: SyncBatchNorm; otherwise BN statistics are averaged every epoch
    workers: int = 0
    threads: int | None = None
    seed: int = 0
    out: str = "runs/train"
    resume: str | None = None             # a checkpoint path, or "auto" = out/last.pth if present
    eval_every: int = 1                   # epochs between validations (the last epoch always)
    save_every: int = 1                   # epochs between last.pth writes (the last epoch and Ctrl-C always)
    progress: bool = True


#: Recipe defaults; ``paper_xs`` / ``paper_s`` hold the XS / S differences applied on top of ``paper``.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(epochs=300, batch_size=128, lr=2e-3, lr_batch=2048, weight_decay=0.025, warmup_epochs=5,
                  warmup_lr=1e-6, min_lr=1e-5, smoothing=0.1, mixup=0.8, cutmix=1.0, ema_decay=0.99996,
                  clip_grad=0.01, clip_mode="agc", img_size=224, scale_min=0.08, hflip=0.5,
                  auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4, re_prob=0.25, crop_pct=0.875,
                  repeated_aug=3),
    "paper_xs": dict(auto_augment="none", mixup=0.0, cutmix=0.0),
    "paper_s": dict(mixup=0.0, cutmix=0.0),
    "subset": dict(epochs=10, batch_size=128, lr=2e-3, lr_batch=256, weight_decay=0.05, warmup_epochs=1,
                   warmup_lr=1e-5, min_lr=1e-5, smoothing=0.1, mixup=0.0, cutmix=0.0, ema_decay=0.0,
                   clip_grad=0.0, clip_mode="agc", img_size=160, scale_min=0.35, hflip=0.5,
                   auto_augment="none", color_jitter=0.2, re_prob=0.0, crop_pct=0.875, repeated_aug=1),
}


def resolve_config(config: TrainConfig | None = None, **overrides) -> TrainConfig:
    """A complete config: ``overrides`` on top of ``config``, recipe values where a field is ``None``."""
    cfg = dataclasses.replace(config or TrainConfig(), **overrides)
    if cfg.recipe not in ("paper", "subset"):
        raise ValueError(f"recipe must be 'paper' or 'subset', got {cfg.recipe!r}")
    if cfg.data not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.data!r}; expected one of {DATASETS}")
    recipe = dict(RECIPES[cfg.recipe])
    if cfg.recipe == "paper":
        variant = cfg.model.lower().replace("swiftformer_", "")
        recipe.update(RECIPES.get(f"paper_{variant}", {}))
    filled = {k: v for k, v in recipe.items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {cfg.epochs} and {cfg.batch_size}")
    if cfg.clip_mode not in ("agc", "norm", "value"):
        raise ValueError(f"clip_mode must be 'agc', 'norm' or 'value', got {cfg.clip_mode!r}")
    if cfg.amp_dtype not in ("bfloat16", "float16"):
        raise ValueError(f"amp_dtype must be 'bfloat16' or 'float16', got {cfg.amp_dtype!r}")
    if cfg.teacher_checkpoint and not cfg.teacher:
        raise ValueError("teacher_checkpoint given without teacher (a timm model name, e.g. regnety_160)")
    return cfg


# =========================================================================== distributed helpers
def _dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def _init_distributed(device_kind: str) -> bool:
    """Join the torchrun process group if launched by torchrun (WORLD_SIZE > 1). Returns True if joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return True


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


# =========================================================================== sampling
def _sample_seed(seed: int, epoch: int, position: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 * 1_000_033 + position) % (2**62)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that yields ``(index, sample_seed)`` and can start mid-epoch.

    The epoch order is a permutation seeded by (seed, epoch), optionally with each index repeated
    ``repeats`` times (repeated augmentation, DeiT's RASampler: copies land on different ranks),
    trimmed to a multiple of the world size; rank r takes positions r, r + world, ... . ``start``
    skips that many of this rank's samples (set by resume). The sample seed depends on the global
    position, so augmentation is independent of workers, ranks and resumes.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, repeats: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.repeats, self.start = max(1, int(repeats)), 0
        self.num_samples = len(dataset) // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 10_007 + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        if self.repeats > 1:
            order = [i for i in order for _ in range(self.repeats)]
        positions = range(self.rank, self.total_size, self.num_replicas)
        for n, pos in enumerate(positions):
            if n >= self.start:
                yield order[pos], _sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return self.num_samples - self.start


class _ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + world, ... (no padding, so counts add up exactly)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# =========================================================================== checkpoints (atomic writes: swiftlib.io)
def _gather_rng(device: torch.device) -> list:
    state = rng_state(device)
    if dist.is_available() and dist.is_initialized():
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, state)
        return states
    return [state]


# =========================================================================== evaluation
@torch.no_grad()
def evaluate(model: nn.Module, loader, device, *, amp_dtype=None, channels_last=False,
             return_predictions: bool = False) -> dict:
    """Loss, top-1 and top-5 (percent) of ``model`` over ``loader`` (summed over DDP ranks).

    ``return_predictions`` adds ``targets`` and ``predictions`` (this rank's, as lists) for a
    confusion matrix.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss sum, top-1 hits, top-5 hits, count
    targets, preds = [], []
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").item()
        sums[1] += (top[:, 0] == labels).sum().item()
        sums[2] += (top == labels[:, None]).any(dim=1).sum().item()
        sums[3] += labels.numel()
        if return_predictions:
            targets += labels.tolist()
            preds += top[:, 0].tolist()
    model.train(was_training)
    sums = _all_reduce_sum(sums.to(device)).cpu()
    n = max(sums[3].item(), 1)
    out = {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n, "top5": 100 * sums[2].item() / n,
           "count": int(sums[3].item())}
    if return_predictions:
        out["targets"], out["predictions"] = targets, preds
    return out


# =========================================================================== the run
class _Interrupt:
    """SIGINT sets a flag; the loop saves at the next step boundary and exits cleanly."""

    def __init__(self):
        self.requested, self._old = False, None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook runners): Ctrl-C then raises
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(cfg.device).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} requested but CUDA is not available")
    if kind == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(kind)


def _use_batch_augment(cfg: TrainConfig, train: Dataset) -> bool:
    """Whether the training images are augmented per batch (:class:`swiftlib.data.BatchRandomResizedCrop`).

    It needs uint8 images in memory (an :class:`~swiftlib.data.ArrayDataset`: Fashion-MNIST or
    ``--cache``, or one passed to :func:`fit`) and a recipe of crop + flip only;
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

    With batch augmentation (:func:`_use_batch_augment`): a raw view of ``train`` (uint8 rows
    ``[H, W(, 3)]``, same array, ``train`` itself unchanged) and a :class:`BatchRandomResizedCrop`
    built from the config (``img_size``, ``scale_min``, ``hflip``) with the dataset's mean / std,
    mapping a uint8 batch to float ``[B, 3, img_size, img_size]``. Otherwise ``(train, None)``:
    its own per-image transform is used.
    """
    if not _use_batch_augment(cfg, train):
        if getattr(train, "raw", False):
            raise ValueError(f"the training set serves raw uint8 rows (raw=True) but batch augmentation is off "
                             f"(batch_augment={cfg.batch_augment}; automatic only for a crop + flip recipe): give "
                             f"it raw=False and a transform")
        return train, None
    transform = BatchRandomResizedCrop(cfg.img_size, scale=(cfg.scale_min, 1.0), hflip=cfg.hflip,
                                       mean=train.mean, std=train.std)
    return train.raw_view(), transform


def _dataset_kwargs(cfg: TrainConfig) -> dict:
    """The :func:`swiftlib.data.build_dataset` arguments shared by both splits of a resolved config."""
    if cfg.data == "fashion-mnist":
        return dict(images_per_class=cfg.images_per_class, seed=cfg.seed, download=cfg.download)
    return dict(classes=cfg.classes, num_classes=cfg.subset_classes, images_per_class=cfg.images_per_class,
                seed=cfg.seed, imagenet_labels=cfg.imagenet_labels, size=cfg.archive_size,
                download=cfg.download, on_error=cfg.on_error, cache=cfg.cache, cache_size=cfg.cache_size)


def build_train_dataset(cfg: TrainConfig) -> Dataset:
    """The training split of a resolved config with the recipe's per-image augmentation (items: float
    ``[3, img_size, img_size]``, label). Whether :func:`fit` augments per batch instead is its decision."""
    train = build_dataset(cfg.data, cfg.data_dir, "train", cfg.img_size, transform=None, **_dataset_kwargs(cfg))
    aa = None if cfg.auto_augment in (None, "none", "") else cfg.auto_augment
    train.transform = build_transform(cfg.img_size, True, mean=train.mean, std=train.std,
                                      scale=(cfg.scale_min, 1.0), hflip=cfg.hflip, auto_augment=aa,
                                      color_jitter=cfg.color_jitter, re_prob=cfg.re_prob)
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


def _build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    from swiftlib.models import create_model
    return create_model(cfg.model, num_classes=num_classes, attention=cfg.attention,
                        distillation=cfg.distillation, checkpoint=cfg.init_checkpoint)


def _build_teacher(cfg: TrainConfig, num_classes: int, device) -> nn.Module | None:
    if not cfg.teacher:
        return None
    import timm
    if cfg.teacher_checkpoint and not Path(cfg.teacher_checkpoint).is_file():
        raise FileNotFoundError(f"teacher checkpoint {cfg.teacher_checkpoint} not found")
    teacher = timm.create_model(cfg.teacher, num_classes=num_classes, pretrained=False,
                                checkpoint_path=cfg.teacher_checkpoint or "")
    return teacher.to(device).eval().requires_grad_(False)


def _write_metrics(out: Path, history: list[dict]) -> None:
    atomic_write_text(out / "metrics.json", json.dumps(history, indent=1) + "\n")
    if history:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
        atomic_write_text(out / "metrics.csv", buf.getvalue())


def fit(config: TrainConfig | None = None, *, callback: Callable[[str, dict], None] | None = None,
        train_dataset: Dataset | None = None, val_dataset: Dataset | None = None,
        net: nn.Module | None = None, **overrides) -> dict:
    """Train according to ``config`` (+ ``overrides``); returns ``{"history", "best_top1", "out", "status", ...}``.

    ``callback(event, info)`` is called with ``("step", {...})`` after every optimizer step and
    ``("epoch", row)`` after every epoch (the notebook draws its live plot from it). Datasets and
    the network (``net``) may be passed in (tests, notebooks); otherwise they are built from the config.
    Batch augmentation is decided here for either kind of training set (:func:`_use_batch_augment`):
    a passed-in :class:`~swiftlib.data.ArrayDataset` is then read through a raw view and augmented
    per batch from the config instead of by its own transform (``batch_augment=False`` keeps that);
    the dataset itself is not changed. ``result["config"].batch_augment`` records what was used.
    ``status`` is ``"done"`` or ``"interrupted"`` (Ctrl-C: state saved to ``out/last.pth``).
    """
    cfg = resolve_config(config, **overrides)
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3, dispatch_clip_grad, distribute_bn

    device = _device(cfg)
    joined = _init_distributed(device.type)
    rank, world, _ = _dist_info()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    amp_on = cfg.amp if cfg.amp is not None else device.type == "cuda"
    amp_dtype = getattr(torch, cfg.amp_dtype) if amp_on else None
    # NHWC by default everywhere: on 2 CPU cores an XS training step measured 1.0-1.2x faster at 32-64 px and
    # 1.2-1.35x at 160 px (oneDNN's depthwise and 1x1 convolutions without layout reorders)
    channels_last = cfg.channels_last if cfg.channels_last is not None else True

    train_dataset = build_train_dataset(cfg) if train_dataset is None else train_dataset
    train_dataset, batch_transform = _batch_augmentation(cfg, train_dataset)  # a bad setting fails before val is built
    val_dataset = build_val_dataset(cfg) if val_dataset is None else val_dataset
    cfg = dataclasses.replace(cfg, batch_augment=batch_transform is not None)  # recorded as used
    classes = list(getattr(train_dataset, "classes", []))
    num_classes = 1000 if cfg.imagenet_labels else (len(classes) or int(max(train_dataset.targets)) + 1)
    per_rank = len(train_dataset) // world  # repeated augmentation keeps the epoch length (DeiT's RASampler)
    if per_rank < 1:
        raise ValueError(f"{len(train_dataset)} training images cannot feed {world} process(es)")
    if per_rank < cfg.batch_size:  # tiny datasets (smoke tests): one full-dataset batch a step
        warnings.warn(f"batch_size {cfg.batch_size} per process is larger than the {per_rank} training images "
                      f"each of the {world} process(es) gets; using batch_size {per_rank}", UserWarning, stacklevel=2)
        cfg = dataclasses.replace(cfg, batch_size=per_rank)
    steps_per_epoch = per_rank // cfg.batch_size

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = net if net is not None else _build_model(cfg, num_classes)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    teacher = _build_teacher(cfg, num_classes, device)
    total_batch = cfg.batch_size * world
    lr = cfg.lr * total_batch / cfg.lr_batch
    # torch's fused AdamW kernel (CPU and CUDA): one op for all tensors; on 2 CPU cores an XS step's
    # update takes 2.6 ms against 9.6 ms for the multi-tensor (foreach) one
    optimizer = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=cfg.weight_decay,
                                    **({"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}))
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * steps_per_epoch, lr_min=cfg.min_lr,
                                  warmup_t=round(cfg.warmup_epochs * steps_per_epoch), warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_on and cfg.amp_dtype == "float16")
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay else None
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        criterion = SoftTargetCrossEntropy()
    elif cfg.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(cfg.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    # ---- resume
    start_epoch, start_step, global_step, best_top1, history = 0, 0, 0, -1.0, []
    accum = {"loss": 0.0, "hits": 0.0, "count": 0, "time": 0.0}
    resume = cfg.resume
    if resume == "auto":
        resume = str(out / "last.pth") if (out / "last.pth").is_file() else None
    if resume:
        if not Path(resume).is_file():
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
        state = torch.load(resume, map_location="cpu", weights_only=False)
        if len(state.get("rng", [])) != world:
            raise ValueError(f"{resume} was written by {len(state.get('rng', []))} process(es); resume it with "
                             f"the same number of processes (got {world}) or start fresh from its weights with "
                             f"--init-checkpoint")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # a resumed run may ask for more epochs: the schedule follows this run's settings
        scheduler.t_initial = cfg.epochs * steps_per_epoch
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch, start_step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        best_top1, history, accum = state["best_top1"], state["history"], state["accum"]
        set_rng_state(state["rng"][rank], device)
    else:
        seed_everything(cfg.seed + rank)

    train_model = model
    if world > 1 and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)

    sampler = ResumableSampler(train_dataset, world, rank, cfg.seed, cfg.repeated_aug)
    seeded = SeededTransformDataset(train_dataset)
    loader_kw = dict(num_workers=cfg.workers, pin_memory=device.type == "cuda",
                     persistent_workers=cfg.workers > 0)
    train_loader = DataLoader(seeded, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **loader_kw)
    val_loader = DataLoader(val_dataset, batch_size=cfg.batch_size, sampler=_ShardSampler(len(val_dataset), rank, world),
                            **loader_kw)

    def checkpoint(epoch: int, step_in_epoch: int, path: Path) -> None:
        rngs = _gather_rng(device)  # every rank takes part
        if rank != 0:
            return
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                      "ema": ema.module.state_dict() if ema is not None else None,
                      "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                      "best_top1": best_top1, "history": history, "accum": accum, "rng": rngs,
                      "config": asdict(cfg), "classes": classes,
                      "class_names": list(getattr(train_dataset, "class_names", classes)),
                      "arch": cfg.model, "num_classes": num_classes}, path)

    if rank == 0:
        atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=1) + "\n")
        reports = [getattr(d, "report", None) for d in (train_dataset, val_dataset)]
        reports = [r for r in reports if r is not None]
        atomic_write_text(out / "data_report.json", json.dumps([dataclasses.asdict(r) for r in reports], indent=1) + "\n")
        for r in reports:
            if r.skipped and cfg.progress:
                print(str(r), file=sys.stderr)
    from tqdm.auto import tqdm

    status = "done"
    model.train()
    with _Interrupt() as interrupt:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            sampler.start = start_step * cfg.batch_size if epoch == start_epoch else 0
            step = start_step if epoch == start_epoch else 0
            if step == 0:
                accum = {"loss": 0.0, "hits": 0.0, "count": 0, "time": 0.0}
            bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=rank != 0 or not cfg.progress, leave=False)
            t0 = time.perf_counter()
            for images, labels in train_loader:
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                if batch_transform is not None:  # randomness from (seed, epoch, step, rank) only: resumable
                    gen = torch.Generator().manual_seed(_sample_seed(cfg.seed, epoch, step * world + rank))
                    images = batch_transform(images, generator=gen)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                hard_labels = labels
                if mixup is not None:
                    images, labels = mixup(images, labels)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_on):
                    output = train_model(images)
                    if isinstance(output, (tuple, list)):
                        head, head_dist = output
                        if teacher is not None:
                            with torch.no_grad():
                                teacher_labels = teacher(images).argmax(dim=1)
                            loss = ((1 - cfg.distill_alpha) * criterion(head, labels)
                                    + cfg.distill_alpha * F.cross_entropy(head_dist, teacher_labels))
                        else:  # no teacher: both heads learn the labels, so their eval average is trained
                            loss = 0.5 * (criterion(head, labels) + criterion(head_dist, labels))
                        logits = (head + head_dist) / 2
                    else:
                        loss = criterion(output, labels)
                        logits = output
                stats = _all_reduce_sum(torch.stack([loss.detach().float(),
                                                     torch.tensor(float(interrupt.requested), device=device)]))
                loss_value = stats[0].item() / world
                if not math.isfinite(loss_value):
                    bar.close()
                    raise FloatingPointError(
                        f"loss is {loss_value} at epoch {epoch + 1}, step {step + 1}: training stopped. The last good "
                        f"checkpoint is {out / 'last.pth'}"
                        f"{'' if (out / 'last.pth').is_file() else ' (none written yet)'}; lower --lr or enable "
                        f"--clip-grad, then --resume {out / 'last.pth'}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip_grad:
                    scaler.unscale_(optimizer)
                    dispatch_clip_grad(model.parameters(), cfg.clip_grad, mode=cfg.clip_mode)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                scheduler.step_update(global_step)
                if ema is not None:
                    ema.update(model, step=global_step)
                step += 1
                accum["loss"] += loss_value * images.shape[0]
                accum["hits"] += (logits.detach().argmax(1) == hard_labels).float().sum().item()
                accum["count"] += images.shape[0]
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                if callback is not None:
                    callback("step", {"epoch": epoch, "step": step, "global_step": global_step,
                                      "loss": loss_value, "lr": optimizer.param_groups[0]["lr"]})
                # one process: stop at once; several: when any rank had the flag at this step's all-reduce
                if (interrupt.requested if world == 1 else stats[1].item() > 0):
                    accum["time"] += time.perf_counter() - t0
                    checkpoint(epoch, step, out / "last.pth")
                    bar.close()
                    status = "interrupted"
                    break
            if status == "interrupted":
                break
            bar.close()
            accum["time"] += time.perf_counter() - t0
            if world > 1 and not cfg.sync_bn:  # ranks saw different batches: average BN running stats
                distribute_bn(model, world, reduce=True)
            last_epoch = epoch + 1 == cfg.epochs
            n = max(accum["count"], 1)
            hits, seen = _all_reduce_sum(torch.tensor([accum["hits"], accum["count"]], dtype=torch.float64,
                                                      device=device)).tolist()
            row = {"epoch": epoch + 1, "train_loss": round(accum["loss"] / n, 6),
                   "train_top1": round(100 * hits / max(seen, 1), 4), "val_loss": None, "val_top1": None,
                   "val_top5": None, "lr": optimizer.param_groups[0]["lr"],
                   "img_per_s": round(accum["count"] * world / max(accum["time"], 1e-9), 3),
                   "epoch_seconds": round(accum["time"], 2)}
            improved = False
            if last_epoch or (epoch + 1) % cfg.eval_every == 0:
                ev = evaluate(model, val_loader, device, amp_dtype=amp_dtype, channels_last=channels_last)
                row.update(val_loss=round(ev["loss"], 6), val_top1=round(ev["top1"], 4), val_top5=round(ev["top5"], 4))
                if ema is not None:
                    ev_ema = evaluate(ema.module, val_loader, device, amp_dtype=amp_dtype,
                                      channels_last=channels_last)
                    row["ema_val_top1"] = round(ev_ema["top1"], 4)
                improved = row["val_top1"] > best_top1
                best_top1 = max(best_top1, row["val_top1"])
            history.append(row)
            if last_epoch or (epoch + 1) % cfg.save_every == 0:
                checkpoint(epoch + 1, 0, out / "last.pth")
            if rank == 0:
                if improved:
                    atomic_torch_save({"model": model.state_dict(),
                                  "ema": ema.module.state_dict() if ema is not None else None,
                                  "epoch": epoch + 1, "val_top1": row["val_top1"], "config": asdict(cfg),
                                  "classes": classes, "class_names": list(getattr(train_dataset, "class_names", classes)),
                                  "arch": cfg.model, "num_classes": num_classes}, out / "best.pth")
                _write_metrics(out, history)
                if cfg.progress:
                    print(f"epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                                          if k != "epoch" and v is not None),
                          file=sys.stderr)
            if callback is not None:
                callback("epoch", dict(row))
            start_step = 0
    if joined:
        dist.barrier()
        dist.destroy_process_group()
    return {"status": status, "history": history, "best_top1": best_top1, "out": str(out),
            "model": model, "ema": ema.module if ema is not None else None, "config": cfg,
            "val_dataset": val_dataset, "train_dataset": train_dataset}


# =========================================================================== evaluation of a checkpoint
def evaluate_checkpoint(path: str | os.PathLike, config: TrainConfig | None = None, *, use_ema: bool = False,
                        return_predictions: bool = False, **overrides) -> dict:
    """Top-1 / top-5 of a checkpoint written by :func:`fit` on its validation set (or ``overrides``').

    Builds the validation split only (:func:`build_val_dataset`); the run's batch augmentation
    and its training split play no part.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = {k: v for k, v in state.get("config", {}).items() if k in TrainConfig.__dataclass_fields__}
    cfg = resolve_config(dataclasses.replace(TrainConfig(**saved), resume=None, init_checkpoint=None)
                         if config is None else config, **overrides)
    device = _device(cfg)
    val = build_val_dataset(cfg)  # the training split is not needed, nor need it still be readable
    model = _build_model(dataclasses.replace(cfg, init_checkpoint=None), state["num_classes"])
    weights = state["ema"] if use_ema else state["model"]
    if weights is None:
        raise ValueError(f"{path} holds no EMA weights (trained with --ema-decay 0)")
    model.load_state_dict(weights)
    model.to(device)
    loader = DataLoader(val, batch_size=cfg.batch_size, num_workers=cfg.workers)
    res = evaluate(model, loader, device, return_predictions=return_predictions)
    res["class_names"] = state.get("class_names")
    return res


# =========================================================================== command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swiftlib.train", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--evaluate", metavar="CHECKPOINT", default=None,
                   help="only evaluate this checkpoint on the validation split and print JSON")
    p.add_argument("--use-ema", action="store_true", help="with --evaluate: the EMA weights")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = str(f.type)
        if "bool" in kind:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {f.default})")
            continue
        conv = int if "int" in kind and "str" not in kind else float if "float" in kind else str
        choices = DATASETS if f.name == "data" else ("paper", "subset") if f.name == "recipe" else None
        p.add_argument(flag, type=conv, default=None, choices=choices,
                       help=f"(default: {'from the recipe' if f.default is None else f.default})")
    return p


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.evaluate:
        res = evaluate_checkpoint(args.evaluate, use_ema=args.use_ema, **given)
        print(json.dumps({k: v for k, v in res.items() if k != "class_names"}))
        return res
    res = fit(TrainConfig(**given))
    if _dist_info()[0] == 0:
        summary = {"status": res["status"], "best_top1": res["best_top1"], "out": res["out"],
                   "last": res["history"][-1] if res["history"] else None}
        print(json.dumps(summary))
    return res


if __name__ == "__main__":
    main()
