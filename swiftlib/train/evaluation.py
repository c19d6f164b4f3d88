"""Scoring a model: :func:`evaluate` (loss, top-1, top-5 over a loader, summed over DDP ranks) and
:func:`evaluate_checkpoint` (a saved run's weights on its validation split).

Shapes: images ``[B, 3, S, S]`` -> logits ``[B, K]``; the top-5 indices are ``[B, min(5, K)]``.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from swiftlib.models import create_model, load_checkpoint
from swiftlib.train.checks import check_environment, flag
from swiftlib.train.config import TrainConfig, build_val_dataset, resolve_config
from swiftlib.train.sampling import all_reduce_sum
from swiftlib.train.setup import rank_device
from swiftlib.train.state import nonfinite_tensors, read_run_checkpoint, saved_config

__all__ = ["EVAL_SETTINGS", "evaluate", "evaluate_checkpoint"]

#: The settings that change what evaluating a checkpoint measures or how it runs; any other override
#: (say ``lr``) would have no effect and is refused.
EVAL_SETTINGS = ("data", "data_dir", "classes", "subset_classes", "archive_size", "download", "imagenet_labels",
                 "cache", "cache_size", "on_error", "val_split", "img_size", "crop_pct", "batch_size", "workers",
                 "threads", "device", "seed", "progress")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, *, amp_dtype=None, channels_last=False,
             return_predictions: bool = False) -> dict:
    """Loss, top-1 and top-5 (percent) of ``model`` over ``loader`` (summed over DDP ranks).

    ``return_predictions`` adds ``targets`` and ``predictions`` (this rank's, as lists) for a
    confusion matrix.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits, count
    targets, preds = [], []
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()                      # [B, K]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # [B, K] -> [B, 5]
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum"), (top[:, 0] == labels).sum(),
                             (top == labels[:, None]).any(dim=1).sum(), torch.tensor(labels.numel(), device=device)
                             ]).double()             # summed on the device: no host sync per batch
        if return_predictions:
            targets += labels.tolist()
            preds += top[:, 0].tolist()
    model.train(was_training)
    sums = all_reduce_sum(sums).cpu()
    n = max(sums[3].item(), 1)
    out = {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n, "top5": 100 * sums[2].item() / n,
           "count": int(sums[3].item())}
    if return_predictions:
        out["targets"], out["predictions"] = targets, preds
    return out


def _checkpoint_model(path: Path, payload: dict, cfg: TrainConfig, use_ema: bool) -> nn.Module:
    """The network a checkpoint describes (its arch, attention, class count and heads) with its weights."""
    weights = payload.get("ema") if use_ema else payload["model"]
    if weights is None:
        raise ValueError(f"--use-ema: {path} holds no EMA weights (trained with --ema-decay 0)")
    bad = nonfinite_tensors(weights.items())
    if bad:
        warnings.warn(f"{path}: {len(bad)} tensor(s) hold nan/inf (e.g. {', '.join(bad[:3])}); its scores mean "
                      f"nothing", UserWarning, stacklevel=3)
    num_classes = payload.get("num_classes") or weights["head.weight"].shape[0]
    model = create_model(payload.get("arch") or cfg.model, num_classes=num_classes,
                         attention=payload.get("attention") or cfg.attention,
                         distillation=any(k.startswith("head_dist.") for k in weights))
    load_checkpoint(model, weights)  # a ValueError naming what does not fit, never a raw state-dict dump
    return model


def evaluate_checkpoint(path: str | os.PathLike, config: TrainConfig | None = None, *, use_ema: bool = False,
                        return_predictions: bool = False, **overrides) -> dict:
    """Top-1 / top-5 of a checkpoint written by :func:`~swiftlib.train.fit` on its validation set (or that of
    ``overrides``: only :data:`EVAL_SETTINGS` can change, another is refused naming the flag).

    The file is read with ``weights_only=True`` (:func:`swiftlib.train.state.read_run_checkpoint`); only the
    validation split is built (:func:`build_val_dataset`), never the training split or its augmentation.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--evaluate {path}: no such checkpoint")
    idle = [flag(k) for k in overrides if k not in EVAL_SETTINGS]
    if idle:
        raise ValueError(f"{', '.join(idle)} {'has' if len(idle) == 1 else 'have'} no effect with --evaluate "
                         f"(it scores saved weights); the settings it takes: "
                         f"{', '.join(flag(k) for k in EVAL_SETTINGS)}")
    payload = read_run_checkpoint(path)
    base = config if config is not None else dataclasses.replace(  # what only training needed is left out
        saved_config(payload), resume=None, init_checkpoint=None, teacher="none", teacher_checkpoint=None)
    cfg = resolve_config(base, **overrides)
    device = rank_device(check_environment(cfg, writes_out=False))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    val = build_val_dataset(cfg)  # the training split is not needed, nor need it still be readable
    model = _checkpoint_model(path, payload, cfg, use_ema).to(device)
    loader = DataLoader(val, batch_size=cfg.batch_size, num_workers=cfg.workers)
    res = evaluate(model, loader, device, return_predictions=return_predictions)
    res["class_names"] = payload.get("class_names")
    return res
