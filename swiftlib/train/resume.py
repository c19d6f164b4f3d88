"""Resuming a run from its ``last.pth``: which file, whether it is this run's, what changed, what to repair.

The policy for settings given again on ``--resume``:

* settings that define what the checkpoint *is* cannot change (:data:`FIXED_ON_RESUME`: the model,
  its attention, distillation head, image size and class count, the dataset and its selection, the
  seed, the per-process batch size and repeated augmentation, which fix the order and augmentation of
  every sample; and the weights it started from, ``--init-checkpoint``): a different value is refused
  in one line naming each flag, with the way out (``--init-checkpoint last.pth`` starts a new run from
  those weights);
* every other setting is **applied** from the resume on and said in one line (``lr 0.002 -> 0.001``):
  the optimizer keeps the config's hyperparameters (only moments and step counts come from the file),
  the lr schedule is recomputed from the config at the resumed position, EMA, loss, clipping,
  augmentation, evaluation and saving follow the new values. ``config.json`` and both checkpoints
  record the values in use, so file and run agree.

``best.pth`` is written before ``last.pth`` at the end of an epoch, so ``last.pth`` never points past a
``best.pth`` that is not on disk; if ``best.pth`` went missing anyway and ``last.pth`` holds the best
epoch's weights, :func:`recover_best` writes it back from them.

Tensors: only the checkpoint's state dicts, passed through unchanged; the rest is plain values.
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

from swiftlib.train.checks import flag
from swiftlib.train.config import TrainConfig
from swiftlib.train.sampling import dist_info
from swiftlib.train.state import Checkpointer, TrainState, read_training_state

__all__ = ["FIXED_ON_RESUME", "NOT_COMPARED", "locate_resume", "load_resume", "refuse_other_run",
           "changed_settings", "report_changes", "recover_best"]

#: Settings a resume cannot change (see the module docstring); the class count is checked as well.
FIXED_ON_RESUME = ("model", "attention", "distillation", "img_size", "data", "classes", "subset_classes",
                   "images_per_class", "imagenet_labels", "seed", "batch_size", "repeated_aug")
#: Settings that say how to start, not what to run: never compared.
NOT_COMPARED = ("resume", "init_checkpoint", "progress")


def locate_resume(cfg: TrainConfig, out: Path) -> Path | None:
    """The ``last.pth`` that ``cfg.resume`` names (a file, a run folder holding one, or ``"auto"``:
    ``out/last.pth`` if present), or None."""
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        return path / "last.pth" if path.is_dir() else path
    last = out / "last.pth"
    if last.is_file():
        return last
    if dist_info()[0] == 0:
        print(f"--resume: no {last} yet, starting a new run", file=sys.stderr)
    return None


def load_resume(cfg: TrainConfig, out: Path, world: int) -> tuple[Path | None, dict | None]:
    """``(path, payload)`` of the training state to resume (``(None, None)`` for a new run), checked
    against ``cfg``'s fixed settings that are known before the data (ValueError naming them); a warning
    when a new run is about to overwrite another run's ``last.pth``."""
    path = locate_resume(cfg, out)
    if path is None:
        if (out / "last.pth").is_file() and dist_info()[0] == 0:
            warnings.warn(f"--out {out} holds the last.pth of an earlier run; this new run overwrites it at its "
                          f"first save (--resume continues it instead)", UserWarning, stacklevel=3)
        return None, None
    payload = read_training_state(path, world)
    refuse_other_run(path, payload, cfg)
    if cfg.epochs < payload["epoch"]:  # known before the data are prepared: refused before that work
        raise ValueError(f"--epochs {cfg.epochs}: {path} has already completed {payload['epoch']} epochs")
    return path, payload


def _fixed_differences(payload: dict, cfg: TrainConfig, num_classes: int | None) -> list[str]:
    saved = payload.get("config", {})
    known = {"model": payload.get("arch") or saved.get("model"),
             "attention": payload.get("attention") or saved.get("attention")}
    diffs = []
    for field in FIXED_ON_RESUME:
        if field == "batch_size" and num_classes is None:
            continue  # the batch is clamped to the data: compared once the data are known
        was = known.get(field, saved.get(field, getattr(cfg, field)))
        if was != getattr(cfg, field):
            diffs.append(f"{flag(field)} {getattr(cfg, field)} (the checkpoint has {was})")
    if num_classes is not None and payload.get("num_classes") not in (None, num_classes):
        diffs.append(f"{num_classes} classes in the data (the checkpoint has {payload['num_classes']})")
    first = saved.get("init_checkpoint")  # a resume continues last.pth's weights: no other start is loaded
    if cfg.init_checkpoint and (not first or Path(first).resolve() != Path(cfg.init_checkpoint).resolve()):
        diffs.append(f"--init-checkpoint {cfg.init_checkpoint} (the run started from {first or 'scratch'})")
    return diffs


def refuse_other_run(path: Path, payload: dict, cfg: TrainConfig, num_classes: int | None = None) -> None:
    """A ValueError naming every fixed setting in which ``cfg`` differs from the run that wrote ``payload``
    (``num_classes`` given: the class count and the batch size too, which need the data)."""
    diffs = _fixed_differences(payload, cfg, num_classes)
    if diffs:
        raise ValueError(f"cannot resume {path}: this run differs in what the checkpoint is: {'; '.join(diffs)}. "
                         f"Resume with the checkpoint's values, or start a new run from its weights with "
                         f"--init-checkpoint {path} (and another --out)")


def changed_settings(payload: dict, cfg: TrainConfig) -> list[tuple[str, object, object]]:
    """``(field, saved value, new value)`` for every compared setting that differs (fixed ones excluded)."""
    saved = payload.get("config", {})
    out = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_COMPARED or f.name in FIXED_ON_RESUME or f.name not in saved:
            continue
        if saved[f.name] != getattr(cfg, f.name):
            out.append((f.name, saved[f.name], getattr(cfg, f.name)))
    return out


def report_changes(path: Path, payload: dict, cfg: TrainConfig, state: TrainState) -> None:
    """Say in one line (stderr) which changed settings are applied from the resumed position on."""
    changes = changed_settings(payload, cfg)
    if changes and dist_info()[0] == 0:
        said = ", ".join(f"{flag(k)} {old} -> {new}" for k, old, new in changes)
        print(f"resuming {path} at {state.position()} with changed settings, applied from here on: {said}",
              file=sys.stderr)


def recover_best(payload: dict, state: TrainState, saver: Checkpointer) -> None:
    """Write ``best.pth`` back from the resumed weights if it is missing and they are the best epoch's
    (rank 0; the weights must already be loaded into the saver's model); otherwise warn if it is missing."""
    best = saver.out / "best.pth"
    if state.best_epoch == 0 or best.is_file():
        return
    if state.best_epoch == payload["epoch"] and state.step_in_epoch == 0:
        saver.save_best(state, state.best_top1)
        print(f"{best} was missing; written again from {saver.out / 'last.pth'}, which holds the same "
              f"epoch {state.best_epoch} weights", file=sys.stderr)
        return
    warnings.warn(f"{best} (epoch {state.best_epoch}, top-1 {state.best_top1}) is missing and its weights are not "
                  f"in last.pth; a new best.pth is written when an epoch beats top-1 {state.best_top1}",
                  UserWarning, stacklevel=2)
