"""Everything a run builds before its first step: :func:`setup` turns a resolved config into a :class:`Run`.

Order (each check before the work it guards): flags and machine (:mod:`swiftlib.train.checks`), the
run folder (stale temporary files removed), the settings that depend on the device (AMP,
channels_last, the teacher), the checkpoint to resume (read and checked against the config before any
data are built), the data, the model, optimizer, lr schedule and EMA, then the resume itself.

Everything standard comes from timm / torch: AdamW (``create_optimizer_v2``, torch's fused kernel;
no weight decay on norms, biases and whatever a module's ``no_weight_decay()`` names), the cosine
schedule with warmup (``CosineLRScheduler``: once per epoch as the official code, or per step), label
smoothing, mixup / cutmix (``Mixup``), EMA (``ModelEmaV3``, updated without a step count: a constant
decay from the first step, started from the initial weights, i.e. timm's ``ModelEma`` of the official
code), AMP (``torch.autocast``), channels_last, ``torch.compile``, DDP with a DistributedSampler.

Shapes: the model maps images ``[B, 3, S, S]`` to logits ``[B, K]`` (two such heads while training with
distillation); the teacher maps the same images to ``[B, K]``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset

from swiftlib.data import SeededTransformDataset, seed_everything
from swiftlib.io import atomic_write_json
from swiftlib.models import create_model, extract_state_dict, read_checkpoint
from swiftlib.train.checks import check_batchnorm_batch, check_environment
from swiftlib.train.config import RunData, TrainConfig, prepare_data
from swiftlib.train.files import explain_disk_full, remove_stale_temp_files
from swiftlib.train.report import DECODE_LOG, EpochTable, FailureLog, write_data_report
from swiftlib.train.resume import load_resume, recover_best, refuse_other_run, report_changes
from swiftlib.train.sampling import ResumableSampler, ShardSampler, dist_info, init_distributed
from swiftlib.train.state import Checkpointer, TrainState, nonfinite_tensors, restore

__all__ = ["Run", "setup", "rank_device", "build_model", "no_weight_decay_names", "build_optimizer",
           "build_scheduler", "position_scheduler", "settle"]


# =========================================================================== pieces
def rank_device(device: torch.device) -> torch.device:
    """A CUDA ``device`` without an index becomes this process's ``LOCAL_RANK`` GPU."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def build_model(cfg: TrainConfig, num_classes: int, *, load_init: bool = True) -> nn.Module:
    """The SwiftFormer of ``cfg`` (``--init-checkpoint`` weights loaded when ``load_init``; they must be finite)."""
    checkpoint = cfg.init_checkpoint if load_init else None
    model = create_model(cfg.model, num_classes=num_classes, attention=cfg.attention,
                         distillation=cfg.distillation, checkpoint=checkpoint)
    bad = nonfinite_tensors(model.state_dict().items()) if checkpoint else []
    if bad:
        raise ValueError(f"--init-checkpoint {checkpoint}: {len(bad)} tensor(s) hold nan/inf (e.g. "
                         f"{', '.join(bad[:3])}); training cannot start from them")
    return model


def _build_teacher(cfg: TrainConfig, num_classes: int, device) -> nn.Module | None:
    """The frozen timm teacher of hard distillation, its weights read with ``weights_only=True`` (a file that
    would run code, or is not a checkpoint, is a one-line ValueError)."""
    if cfg.teacher in (None, "none"):
        return None
    teacher = timm.create_model(cfg.teacher, num_classes=num_classes, pretrained=False)
    where = f"--teacher-checkpoint {cfg.teacher_checkpoint}"
    state_dict = extract_state_dict(read_checkpoint(cfg.teacher_checkpoint), where)  # DeiT's {"model": sd}; timm's sd
    try:
        teacher.load_state_dict(state_dict)
    except RuntimeError as e:  # torch's key / shape report: its first line is the summary
        raise ValueError(f"--teacher-checkpoint {cfg.teacher_checkpoint} does not fit timm's {cfg.teacher} with "
                         f"{num_classes} classes: {str(e).splitlines()[0]}") from e
    return teacher.to(device).eval().requires_grad_(False)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names (fnmatch patterns) excluded from weight decay: the model's ``no_weight_decay()``
    (what timm's ``create_optimizer_v2`` reads) and every submodule's, prefixed with its path (XCiT /
    EdgeNeXt declare an attention's ``temperature`` there)."""
    names = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    for prefix, module in model.named_modules():
        if prefix and callable(getattr(module, "no_weight_decay", None)):
            names |= {f"{prefix}.{n}" for n in module.no_weight_decay()}
    return names


def build_optimizer(cfg: TrainConfig, model: nn.Module, world: int, device: torch.device):
    """AdamW at ``lr`` (times total batch / ``lr_batch`` when ``lr_batch`` > 0): one group without weight
    decay (norms, biases, :func:`no_weight_decay_names`), one with ``weight_decay``."""
    lr = cfg.lr * cfg.batch_size * world / cfg.lr_batch if cfg.lr_batch else cfg.lr
    # timm's split into [no decay, decay]; asked with a non-zero decay so that the two groups exist
    # whatever weight_decay is (a resume may change it), then given the config's value
    groups = param_groups_weight_decay(model, weight_decay=1.0, no_weight_decay_list=no_weight_decay_names(model))
    for group in groups:
        group["weight_decay"] = cfg.weight_decay if group["weight_decay"] else 0.0
    # torch's fused AdamW kernel (CPU and CUDA): one op for all tensors; on 2 CPU cores an XS step's
    # update takes 2.6 ms against 9.6 ms for the multi-tensor (foreach) one
    fast = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    return create_optimizer_v2(groups, "adamw", lr=lr, weight_decay=cfg.weight_decay, **fast)


def build_scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int) -> CosineLRScheduler:
    """Cosine with warmup, in epochs (``sched_on="epoch"``: ``step(epoch)`` after each epoch, as the
    official ``main.py``) or in optimizer steps (``"step"``: ``step_update(global_step)`` after each step)."""
    if cfg.sched_on == "epoch":
        return CosineLRScheduler(optimizer, t_initial=cfg.epochs, lr_min=cfg.min_lr, warmup_t=cfg.warmup_epochs,
                                 warmup_lr_init=cfg.warmup_lr, t_in_epochs=True)
    return CosineLRScheduler(optimizer, t_initial=cfg.epochs * steps_per_epoch, lr_min=cfg.min_lr,
                             warmup_t=round(cfg.warmup_epochs * steps_per_epoch), warmup_lr_init=cfg.warmup_lr,
                             t_in_epochs=False)


def position_scheduler(scheduler: CosineLRScheduler, cfg: TrainConfig, state: TrainState) -> None:
    """Set the optimizer's lr to the schedule's value at ``state``'s position (what the loop set there)."""
    if cfg.sched_on == "epoch" and state.epoch > 0:
        scheduler.step(state.epoch - 1)
    elif cfg.sched_on == "step" and state.global_step > 0:
        scheduler.step_update(state.global_step)


def _loss(cfg: TrainConfig, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """``(mixup or None, criterion)``: soft targets with mixup / cutmix, else label smoothing."""
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(cfg.smoothing)
    return None, nn.CrossEntropyLoss()


def _wrap(cfg: TrainConfig, model: nn.Module, world: int, device) -> tuple[nn.Module, nn.Module]:
    """``(model, train_model)``: SyncBatchNorm where asked, DDP over several processes, torch.compile."""
    if world > 1 and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return model, train_model


def _loaders(cfg: TrainConfig, data: RunData, rank: int, world: int, device, out: Path):
    """``(sampler, train loader, val loader)``: resumable seeded sampling for training, shards for eval;
    both read through :class:`~swiftlib.train.report.FailureLog` (decode failures of every worker
    reach ``out/decode_failures.jsonl``)."""
    sampler = ResumableSampler(data.train, world, rank, cfg.seed, cfg.repeated_aug)
    kw = dict(num_workers=cfg.workers, pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0)
    log = out / DECODE_LOG
    train_loader = DataLoader(FailureLog(SeededTransformDataset(data.train), log, "train"), batch_size=cfg.batch_size,
                              sampler=sampler, drop_last=True, **kw)
    val_loader = DataLoader(FailureLog(data.val, log, "val"), batch_size=cfg.batch_size,
                            sampler=ShardSampler(len(data.val), rank, world), **kw)
    return sampler, train_loader, val_loader


def _prepare_out(out: Path) -> None:
    """Create the run folder; remove the temporary files a killed write left there (and say so)."""
    out.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temp_files(out)
    if removed:
        print(f"removed {len(removed)} stale temporary file(s) left in {out} by an interrupted write: "
              f"{', '.join(removed)}", file=sys.stderr)


def _write_run_files(cfg: TrainConfig, out: Path, data: RunData, resuming: bool) -> None:
    """``config.json`` (the settings as used) and ``data_report.json`` (images skipped; with a resume, the
    decode failures recorded so far; a fresh run starts a new failure log); rank 0."""
    with explain_disk_full(out / "config.json"):
        atomic_write_json(out / "config.json", dataclasses.asdict(cfg))
    if not resuming:
        (out / DECODE_LOG).unlink(missing_ok=True)  # an earlier run's, in the same folder
    write_data_report(out, data.train, data.val)
    for r in (getattr(d, "report", None) for d in (data.train, data.val)):
        if r is not None and r.skipped and cfg.progress:
            print(str(r), file=sys.stderr)


def settle(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """The settings that depend on the machine, as used: ``amp`` (None: on for CUDA), ``channels_last``
    (None: on) and the teacher (none without its weights: a warning says so, naming the paper recipe)."""
    amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
    # NHWC by default everywhere: on 2 CPU cores an XS training step measured 1.0-1.2x faster at 32-64 px and
    # 1.2-1.35x at 160 px (oneDNN's depthwise and 1x1 convolutions without layout reorders)
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    teacher = cfg.teacher
    if teacher not in (None, "none") and not cfg.teacher_checkpoint:
        paper = (" The paper recipe distils from regnety_160 (hard, alpha 0.5): this run is not the paper's."
                 if cfg.recipe == "paper" else "")
        if dist_info()[0] == 0:
            warnings.warn(f"--teacher {teacher} without --teacher-checkpoint: nothing is downloaded, so there are no "
                          f"teacher weights; training without a teacher (both heads learn the labels).{paper}",
                          UserWarning, stacklevel=3)
        teacher = "none"
    if teacher not in (None, "none") and not cfg.distillation:
        raise ValueError(f"--teacher {teacher} needs the distillation head: drop --no-distillation")
    return dataclasses.replace(cfg, amp=amp, channels_last=channels_last, teacher=teacher)


# =========================================================================== the run
@dataclass
class Run:
    """Everything :func:`setup` prepares; the epoch and step functions read it and advance ``state``."""
    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    out: Path
    amp_dtype: torch.dtype | None
    data: RunData
    model: nn.Module           # the weights that are saved and evaluated
    train_model: nn.Module     # what a step calls: ``model`` wrapped by DDP and/or torch.compile
    teacher: nn.Module | None
    optimizer: Any
    scheduler: CosineLRScheduler
    scaler: Any
    ema: Any
    mixup: Mixup | None
    criterion: nn.Module
    sampler: ResumableSampler
    train_loader: DataLoader
    val_loader: DataLoader
    state: TrainState
    saver: Checkpointer
    callback: Callable[[str, dict], None] | None
    table: EpochTable          # the per-epoch summary rows printed on stdout


def _training_objects(cfg: TrainConfig, data: RunData, net: nn.Module | None, device, world: int,
                      resuming: bool) -> dict:
    """Model (seeded: identical on every rank), teacher, optimizer, schedule, scaler, EMA, loss."""
    torch.manual_seed(cfg.seed)
    model = net if net is not None else build_model(cfg, data.num_classes, load_init=not resuming)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model, world, device)
    mixup, criterion = _loss(cfg, data.num_classes)
    return dict(model=model, teacher=_build_teacher(cfg, data.num_classes, device), optimizer=optimizer,
                scheduler=build_scheduler(cfg, optimizer, data.steps_per_epoch),
                scaler=torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "float16"),
                ema=ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay else None,
                mixup=mixup, criterion=criterion)


def _start_state(cfg: TrainConfig, objs: dict, path: Path | None, payload: dict | None, device) -> TrainState:
    """The resumed state loaded into ``objs`` (changed settings said), or a fresh one with this rank's
    generators seeded; the optimizer's lr set to the schedule at that position."""
    if payload is None:
        seed_everything(cfg.seed + dist_info()[0])
        return TrainState()
    ema_module = objs["ema"].module if objs["ema"] is not None else None
    state = restore(payload, objs["model"], ema_module, objs["optimizer"], objs["scaler"], device)
    report_changes(path, payload, cfg, state)
    position_scheduler(objs["scheduler"], cfg, state)
    return state


def setup(cfg: TrainConfig, train: Dataset | None, val: Dataset | None, net: nn.Module | None,
          callback) -> tuple[Run, bool]:
    """Checks, device, process group, run folder, resume file, data, model and optimisation of a resolved
    config, then the resume itself; ``(run, joined a process group)``."""
    device = rank_device(check_environment(cfg, builds_data=train is None or val is None))
    joined = init_distributed(device.type)
    rank, world, _ = dist_info()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if rank == 0:
        _prepare_out(out)
    cfg = settle(cfg, device)
    path, payload = load_resume(cfg, out, world)
    if payload is not None:  # the weights descend from the first run's --init-checkpoint, not this one's
        cfg = dataclasses.replace(cfg, init_checkpoint=payload.get("config", {}).get("init_checkpoint"))
    data = prepare_data(cfg, train, val, world)
    requested, cfg = cfg.batch_size, data.cfg
    if payload is not None:
        refuse_other_run(path, payload, cfg, data.num_classes)
    if net is None:
        check_batchnorm_batch(cfg, world, requested)
    objs = _training_objects(cfg, data, net, device, world, payload is not None)
    state = _start_state(cfg, objs, path, payload, device)
    ema_module = objs["ema"].module if objs["ema"] is not None else None
    model, train_model = _wrap(cfg, objs.pop("model"), world, device)
    sampler, train_loader, val_loader = _loaders(cfg, data, rank, world, device, out)
    saver = Checkpointer(model, ema_module, cfg, data.classes, getattr(data.train, "class_names", data.classes),
                         out, last_good=f"{path} ({state.position()})" if payload is not None else None)
    if rank == 0:
        _write_run_files(cfg, out, data, payload is not None)
        if payload is not None:
            recover_best(payload, state, saver)
    run = Run(cfg=cfg, device=device, rank=rank, world=world, out=out, data=data, model=model,
              train_model=train_model, amp_dtype=getattr(torch, cfg.amp_dtype) if cfg.amp else None,
              sampler=sampler, train_loader=train_loader, val_loader=val_loader, state=state, saver=saver,
              callback=callback, table=EpochTable(cfg.epochs, ema=objs["ema"] is not None), **objs)
    return run, joined
