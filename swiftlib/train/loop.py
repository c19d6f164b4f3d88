"""The training loop: :func:`fit` = :func:`~swiftlib.train.setup.setup`, then one :func:`_train_epoch`
after another, each followed by :func:`~swiftlib.train.evaluation.evaluate` and the checkpoints.

Shapes: a training batch is ``images [B, 3, S, S]`` (S = ``img_size``) and ``labels [B]`` (or soft
``[B, K]`` after mixup / cutmix, K classes); the model gives logits ``[B, K]`` (with a distillation
head: two ``[B, K]`` heads, averaged for accuracy). With batch augmentation the loader yields uint8
``[B, H, W(, 3)]`` rows that :class:`swiftlib.data.BatchRandomResizedCrop` turns into ``[B, 3, S, S]``.

Runs: ``out/last.pth`` (the full training state; every ``save_every`` epochs, the last one, on Ctrl-C),
``out/best.pth`` (best top-1; written before ``last.pth``, so that ``last.pth`` never points past a
best that is not on disk), ``out/metrics.csv`` / ``.json``, ``out/config.json`` (the settings as used),
``out/data_report.json`` (images skipped at build time and, rewritten after every epoch, those that
failed to decode while loading, from every DataLoader worker: :mod:`swiftlib.train.report`); written
by rank 0, atomically (layout: :mod:`swiftlib.train.state`). With ``progress``: a tqdm bar per epoch on
stderr (``tqdm.auto``: a widget in notebooks, removed when the epoch ends) and one row of the epoch
table on stdout (:class:`~swiftlib.train.report.EpochTable`).
``resume`` restores model, optimizer, EMA, scaler, every rank's RNG states and the position in the
epoch, and recomputes the lr schedule there: on CPU a resumed run equals the uninterrupted one bit
for bit, also after ``kill -9`` (augmentation is seeded by (seed, epoch, position):
:func:`~swiftlib.train.sampling.sample_seed`). A non-finite loss stops the run (FloatingPointError
naming the epoch, the step and the last good checkpoint), and nothing non-finite is ever saved.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import dispatch_clip_grad, distribute_bn
from torch import nn
from torch.utils.data import Dataset

from swiftlib.io import atomic_write_json, write_csv
from swiftlib.train.checks import BATCHNORM_ONE_VALUE, batchnorm_advice
from swiftlib.train.config import TrainConfig, resolve_config
from swiftlib.train.evaluation import evaluate
from swiftlib.train.files import explain_disk_full
from swiftlib.train.report import progress_bar, write_data_report
from swiftlib.train.sampling import all_reduce_sum, sample_seed
from swiftlib.train.setup import Run, setup
from swiftlib.train.state import fresh_accum

__all__ = ["fit"]


# =========================================================================== one step, one epoch
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


def _forward(run: Run, images: torch.Tensor):
    """The training-mode model on a batch; torch's BatchNorm error on one value per channel explained."""
    try:
        return run.train_model(images)
    except (RuntimeError, ValueError) as e:
        if BATCHNORM_ONE_VALUE not in str(e):
            raise
        raise ValueError(f"a training batch of shape {tuple(images.shape)} failed: "
                         f"{batchnorm_advice(images.shape[0])}") from e


def _loss_and_logits(run: Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training loss of a batch and the logits ``[B, K]`` its accuracy is counted on."""
    output = _forward(run, images)
    if not isinstance(output, (tuple, list)):
        return run.criterion(output, labels), output
    head, head_dist = output                                   # two [B, K] heads
    if run.teacher is not None:  # hard distillation: the distillation head learns the teacher's argmax
        with torch.no_grad():
            teacher_labels = run.teacher(images).argmax(dim=1)  # [B, K] -> [B]
        alpha = run.cfg.distill_alpha
        loss = (1 - alpha) * run.criterion(head, labels) + alpha * F.cross_entropy(head_dist, teacher_labels)
    else:  # no teacher: both heads learn the labels, so their eval average is trained
        loss = 0.5 * (run.criterion(head, labels) + run.criterion(head_dist, labels))
    return loss, (head + head_dist) / 2


def _optimizer_step(run: Run, loss: torch.Tensor) -> None:
    """Backward, optional gradient clipping, AdamW, schedule and EMA for one batch."""
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.clip_grad:
        run.scaler.unscale_(run.optimizer)
        dispatch_clip_grad(run.model.parameters(), run.cfg.clip_grad, mode=run.cfg.clip_mode)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.state.global_step += 1
    if run.cfg.sched_on == "step":
        run.scheduler.step_update(run.state.global_step)
    if run.ema is not None:  # no step count: a constant decay from the start (timm's ModelEma, as main.py)
        run.ema.update(run.model)


def _train_step(run: Run, images: torch.Tensor, labels: torch.Tensor, epoch: int,
                interrupt: _Interrupt) -> tuple[float, bool]:
    """One optimizer step on a batch; ``(loss averaged over ranks, whether any rank had a stop request)``."""
    cfg, st, device = run.cfg, run.state, run.device
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    if run.data.batch_transform is not None:  # randomness from (seed, epoch, step, rank) only: resumable
        gen = torch.Generator().manual_seed(sample_seed(cfg.seed, epoch, st.step_in_epoch * run.world + run.rank))
        images = run.data.batch_transform(images, generator=gen)  # uint8 [B, H, W(, 3)] -> [B, 3, S, S]
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    hard_labels = labels
    if run.mixup is not None:
        images, labels = run.mixup(images, labels)  # labels [B] -> soft [B, K]
    with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        loss, logits = _loss_and_logits(run, images, labels)
    flags = torch.stack([loss.detach().float(), torch.tensor(float(interrupt.requested), device=device)])
    hits = (logits.detach().argmax(1) == hard_labels).float().sum().view(1)   # this rank's, summed in _train_row
    loss_sum, interrupted, hits = torch.cat([all_reduce_sum(flags), hits]).tolist()  # one host sync a step
    loss_value = loss_sum / run.world
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"loss is {loss_value} at epoch {epoch + 1}, step {st.step_in_epoch + 1}: training stopped. The last "
            f"good checkpoint is {run.saver.describe_last()}; lower --lr or enable --clip-grad, then --resume")
    _optimizer_step(run, loss)
    st.step_in_epoch += 1
    st.accum["loss"] += loss_value * images.shape[0]
    st.accum["hits"] += hits
    st.accum["count"] += images.shape[0]
    return loss_value, interrupted > 0


def _train_epoch(run: Run, epoch: int, interrupt: _Interrupt) -> bool:
    """The rest of ``epoch`` from ``run.state.step_in_epoch``; True if interrupted (state saved to last.pth)."""
    cfg, st = run.cfg, run.state
    run.sampler.set_epoch(epoch)
    run.sampler.start = st.step_in_epoch * cfg.batch_size
    if st.step_in_epoch == 0:
        st.accum = fresh_accum()
    bar = progress_bar(total=run.data.steps_per_epoch, initial=st.step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=run.rank != 0 or not cfg.progress, leave=False)
    t0 = time.perf_counter()
    try:
        for images, labels in run.train_loader:
            loss_value, any_rank_stops = _train_step(run, images, labels, epoch, interrupt)
            lr = run.optimizer.param_groups[0]["lr"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if run.callback is not None:
                run.callback("step", {"epoch": epoch, "step": st.step_in_epoch, "global_step": st.global_step,
                                      "loss": loss_value, "lr": lr})
            # one process: stop at once (also on a request made during the callback); several: when any
            # rank had the flag at this step's all-reduce, so that all of them stop at the same step
            if interrupt.requested if run.world == 1 else any_rank_stops:
                st.accum["time"] += time.perf_counter() - t0
                _save_last(run, None)
                return True
    finally:
        bar.close()
    st.accum["time"] += time.perf_counter() - t0
    return False


# =========================================================================== end of an epoch
def _save_last(run: Run, val_top1: float | None) -> None:
    run.saver.save_last(run.state, val_top1, run.optimizer, run.scaler, run.device)


def _train_row(run: Run, epoch: int) -> dict:
    """The metrics row of a finished epoch, training side (validation columns None until measured)."""
    acc = run.state.accum
    hits, seen = all_reduce_sum(torch.tensor([acc["hits"], acc["count"]], dtype=torch.float64,
                                             device=run.device)).tolist()
    row = {"epoch": epoch + 1, "train_loss": round(acc["loss"] / max(acc["count"], 1), 6),
           "train_top1": round(100 * hits / max(seen, 1), 4), "val_loss": None, "val_top1": None,
           "val_top5": None, "lr": run.optimizer.param_groups[0]["lr"],
           "img_per_s": round(acc["count"] * run.world / max(acc["time"], 1e-9), 3),
           "epoch_seconds": round(acc["time"], 2)}
    if run.ema is not None:
        row["ema_val_top1"] = None  # every row has the same columns (metrics.csv)
    return row


def _validate(run: Run, row: dict) -> bool:
    """Fill ``row``'s validation columns (model and EMA); True if top-1 beat the best so far."""
    kw = dict(amp_dtype=run.amp_dtype, channels_last=run.cfg.channels_last)
    ev = evaluate(run.model, run.val_loader, run.device, **kw)
    row.update(val_loss=round(ev["loss"], 6), val_top1=round(ev["top1"], 4), val_top5=round(ev["top5"], 4))
    if run.ema is not None:
        row["ema_val_top1"] = round(evaluate(run.ema.module, run.val_loader, run.device, **kw)["top1"], 4)
    improved = row["val_top1"] > run.state.best_top1
    if improved:
        run.state.best_top1, run.state.best_epoch = row["val_top1"], row["epoch"]
    return improved


def _write_metrics(run: Run) -> None:
    for name, write in (("metrics.json", atomic_write_json), ("metrics.csv", write_csv)):
        with explain_disk_full(run.out / name):
            write(run.out / name, run.state.history)


def _write_data_report(run: Run, when: str) -> None:
    """``data_report.json`` again, with the decode failures of every process so far (said when new)."""
    added = write_data_report(run.out, run.data.train, run.data.val)
    if added and run.cfg.progress:
        print(f"{when}: {added} image(s) failed to decode and were served by a neighbouring image; "
              f"listed in {run.out / 'data_report.json'}", file=sys.stderr)


def _finish_epoch(run: Run, epoch: int) -> None:
    """BN statistics, metrics row, validation, lr schedule, checkpoints (best.pth before last.pth), report."""
    cfg, st = run.cfg, run.state
    if run.world > 1 and not cfg.sync_bn:  # ranks saw different batches: average BN running stats
        distribute_bn(run.model, run.world, reduce=True)
    last_epoch = epoch + 1 == cfg.epochs
    row = _train_row(run, epoch)
    improved = _validate(run, row) if last_epoch or (epoch + 1) % cfg.eval_every == 0 else False
    st.history.append(row)
    st.epoch, st.step_in_epoch = epoch + 1, 0
    if cfg.sched_on == "epoch":
        run.scheduler.step(epoch)  # the lr of the next epoch (main.py: lr_scheduler.step(epoch))
    if improved and run.rank == 0:
        run.saver.save_best(st, row["val_top1"])
    if last_epoch or (epoch + 1) % cfg.save_every == 0:
        _save_last(run, row["val_top1"])
    if run.rank == 0:
        _write_metrics(run)
        _write_data_report(run, f"epoch {epoch + 1}")
        if cfg.progress:
            run.table.print_row(row)  # stdout; the progress bar (stderr) is closed by now
    if run.callback is not None:
        run.callback("epoch", dict(row))


# =========================================================================== fit
def fit(config: TrainConfig | None = None, *, callback: Callable[[str, dict], None] | None = None,
        train_dataset: Dataset | None = None, val_dataset: Dataset | None = None,
        net: nn.Module | None = None, **overrides) -> dict:
    """Train according to ``config`` (+ ``overrides``); returns ``{"history", "best_top1", "out", "status", ...}``.

    ``callback(event, info)`` is called with ``("step", {...})`` after every optimizer step and
    ``("epoch", row)`` after every epoch (the notebook draws its live plot from it). Datasets and
    the network (``net``) may be passed in (tests, notebooks); otherwise they are built from the config.
    Batch augmentation is decided for either kind of training set
    (:func:`~swiftlib.train.config.use_batch_augment`): a passed-in :class:`~swiftlib.data.ArrayDataset`
    is then read through a raw view and augmented per batch from the config instead of by its own
    transform (``batch_augment=False`` keeps that); the dataset itself is not changed.
    ``result["config"].batch_augment`` records what was used. ``status`` is ``"done"`` or ``"interrupted"``
    (Ctrl-C: state saved to ``out/last.pth``).
    """
    run, joined = setup(resolve_config(config, **overrides), train_dataset, val_dataset, net, callback)
    status = "done"
    run.model.train()
    with _Interrupt() as interrupt:
        for epoch in range(run.state.epoch, run.cfg.epochs):
            if _train_epoch(run, epoch, interrupt):
                status = "interrupted"
                if run.rank == 0:
                    _write_data_report(run, f"interrupted in epoch {epoch + 1}")
                break
            _finish_epoch(run, epoch)
    if joined:
        dist.barrier()
        dist.destroy_process_group()
    st = run.state
    return {"status": status, "history": st.history, "best_top1": st.best_top1, "out": str(run.out),
            "model": run.model, "ema": run.ema.module if run.ema is not None else None, "config": run.cfg,
            "val_dataset": run.data.val, "train_dataset": run.data.train}
