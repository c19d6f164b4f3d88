"""The one checkpoint layout of a training run, written for ``best.pth`` and ``last.pth``, and read back.

Both files are written by :func:`swiftlib.models.save_checkpoint` (atomic) and hold only tensors and
plain Python values, so they load with ``torch.load(path, weights_only=True)``:

* from ``save_checkpoint``: ``model`` (state dict), ``arch``, ``attention``, ``num_classes``;
* of the run (both files): ``ema`` (the EMA state dict or None), ``config`` (the
  :class:`~swiftlib.train.TrainConfig` as a dict, as used), ``classes``, ``class_names``, ``epoch``
  (epochs completed when these weights were saved), ``val_top1`` (their validation top-1, None if not
  measured);
* ``last.pth`` only: ``train_state``, everything a resume needs: ``step_in_epoch``, ``global_step``,
  ``best_top1``, ``best_epoch``, ``history`` (the metrics rows), ``accum`` (the running sums of the
  epoch in progress), ``optimizer`` and ``scaler`` (state dicts) and ``rng``: one entry per rank,
  Python's generator state (plain ints), NumPy's (its key array as an int64 tensor ``[624]``),
  torch's CPU (and CUDA) states (uint8 tensors). The lr schedule is not stored: it is a function of
  the config and the position (:func:`swiftlib.train.setup.build_scheduler`).

Nothing non-finite is ever written: every weight, buffer, EMA weight and optimizer moment is checked
first (:func:`nonfinite_tensors`), and a nan stops the run instead (FloatingPointError), so the file
on disk stays the last good one. A full disk is one OSError naming the file and the free space.

Reading goes through :func:`swiftlib.models.read_checkpoint`, the one checkpoint file reader: a file
that needs anything beyond tensors and plain values is refused with a ValueError naming the blocked
global.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from swiftlib.data import rng_state, set_rng_state
from swiftlib.models import nonfinite_tensors, read_checkpoint, save_checkpoint
from swiftlib.train.config import TrainConfig
from swiftlib.train.files import explain_disk_full
from swiftlib.train.sampling import all_gather, dist_info

__all__ = ["TrainState", "fresh_accum", "encode_rng", "decode_rng", "nonfinite_tensors", "training_tensors",
           "Checkpointer", "read_run_checkpoint", "read_training_state", "restore", "saved_config"]


def fresh_accum() -> dict[str, float]:
    """The running sums of an epoch before its first step."""
    return {"loss": 0.0, "hits": 0.0, "count": 0, "time": 0.0}


@dataclass
class TrainState:
    """Where a run stands: the loop's counters and what it has measured so far."""
    epoch: int = 0               # epochs completed = the 0-based epoch in progress
    step_in_epoch: int = 0       # optimizer steps done in that epoch
    global_step: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0          # the epoch (1-based) best.pth holds; 0: none yet
    history: list[dict] = field(default_factory=list)
    accum: dict[str, float] = field(default_factory=fresh_accum)

    def position(self) -> str:
        """``'epoch 3, step 17'`` (1-based epoch in progress; ``'end of epoch 2'`` at a boundary)."""
        return f"end of epoch {self.epoch}" if self.step_in_epoch == 0 else \
            f"epoch {self.epoch + 1}, step {self.step_in_epoch}"


# =========================================================================== RNG states as tensors
def encode_rng(state: dict) -> dict:
    """A :func:`swiftlib.data.rng_state` dict with NumPy's array as a tensor (``weights_only`` loads it)."""
    kind, keys, pos, has_gauss, cached = state["numpy"]
    out = dict(state)
    out["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return out


def decode_rng(state: dict) -> dict:
    """The inverse of :func:`encode_rng`: a dict :func:`swiftlib.data.set_rng_state` restores."""
    n = state["numpy"]
    out = dict(state)
    out["numpy"] = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    return out


# =========================================================================== finiteness
def training_tensors(model: nn.Module, ema: nn.Module | None, optimizer=None) -> Iterable[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every weight and buffer of ``model`` and ``ema`` and every optimizer moment."""
    yield from model.state_dict().items()
    if ema is not None:
        yield from ((f"EMA {n}", t) for n, t in ema.state_dict().items())
    if optimizer is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for p, slots in optimizer.state.items():
            yield from ((f"optimizer {k} of {names.get(id(p), '?')}", v) for k, v in slots.items())


# =========================================================================== writing
class Checkpointer:
    """Writes ``best.pth`` / ``last.pth`` of one run in the layout above (rank 0 writes, all ranks call).

    ``last_good`` names the last good training state on disk and its position (the file resumed from,
    then each ``last.pth`` this run writes), for the messages that stop a run on a nan or a full disk.
    """

    def __init__(self, model: nn.Module, ema: nn.Module | None, cfg: TrainConfig, classes: list,
                 class_names: list, out: Path, last_good: str | None = None):
        self.model, self.ema, self.out = model, ema, out
        self.run = {"config": dataclasses.asdict(cfg), "classes": list(classes), "class_names": list(class_names)}
        self.last_good = last_good

    def describe_last(self) -> str:
        """``'runs/x/last.pth (end of epoch 2)'``, or that none is written yet."""
        return self.last_good or f"none yet (no {self.out / 'last.pth'} written by this run)"

    def _check_finite(self, where: str, optimizer=None) -> None:
        bad = nonfinite_tensors(training_tensors(self.model, self.ema, optimizer))
        if bad:
            raise FloatingPointError(
                f"non-finite values (nan/inf) in {len(bad)} tensor(s) at {where}, e.g. {', '.join(bad[:3])}: "
                f"not saved, training stopped. The last good checkpoint is {self.describe_last()}; lower --lr "
                f"or enable --clip-grad, then --resume")

    def _save(self, path: Path, epoch: int, val_top1: float | None, **more) -> None:
        ema = self.ema.state_dict() if self.ema is not None else None
        previous = f"the last good training state is {self.last_good}" if path.name == "last.pth" and \
            self.last_good else ""
        with explain_disk_full(path, previous):
            save_checkpoint(self.model, path, ema=ema, **self.run, epoch=epoch, val_top1=val_top1, **more)

    def save_best(self, state: TrainState, val_top1: float) -> None:
        """The weights after ``state.epoch`` epochs as ``best.pth`` (call on rank 0, before ``save_last``)."""
        self._check_finite(f"the end of epoch {state.epoch} (best.pth)")
        self._save(self.out / "best.pth", state.epoch, val_top1)

    def save_last(self, state: TrainState, val_top1: float | None, optimizer, scaler, device: torch.device) -> None:
        """The full training state at ``state``'s position; every rank takes part (RNG states)."""
        self._check_finite(state.position(), optimizer)  # every rank: the same weights, the same verdict
        rngs = all_gather(encode_rng(rng_state(device)))
        if dist_info()[0] != 0:
            return
        train_state = {"step_in_epoch": state.step_in_epoch, "global_step": state.global_step,
                       "best_top1": state.best_top1, "best_epoch": state.best_epoch, "history": state.history,
                       "accum": state.accum, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                       "rng": rngs}
        self._save(self.out / "last.pth", state.epoch, val_top1, train_state=train_state)
        self.last_good = f"{self.out / 'last.pth'} ({state.position()})"


# =========================================================================== reading
def read_run_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by :class:`Checkpointer` (or :func:`swiftlib.models.save_checkpoint`), read by
    :func:`swiftlib.models.read_checkpoint` (``weights_only=True``); a ValueError for a file that is not
    such a payload."""
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path} is not a swiftlib checkpoint: expected a dict with a 'model' state dict, "
                         f"got {type(payload).__name__}")
    return payload


def read_training_state(path: str | Path, world: int) -> dict:
    """The payload of a ``last.pth`` that a run of ``world`` processes can resume from."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    payload = read_run_checkpoint(path)
    if "train_state" not in payload:
        raise ValueError(f"--resume {path}: it holds weights but no training state (a best.pth or an exported "
                         f"checkpoint); resume from the run's last.pth, or start from these weights with "
                         f"--init-checkpoint {path}")
    written_by = len(payload["train_state"]["rng"])
    if written_by != world:
        raise ValueError(f"--resume {path} was written by {written_by} process(es); resume it with the same number "
                         f"of processes (got {world}) or start fresh from its weights with --init-checkpoint")
    bad = nonfinite_tensors(list(payload["model"].items()) + list((payload.get("ema") or {}).items()))
    if bad:
        raise ValueError(f"--resume {path}: {len(bad)} tensor(s) hold nan/inf (e.g. {', '.join(bad[:3])}); a run "
                         f"resumed from it cannot learn. Resume from an earlier copy or start a new run")
    return payload


def restore(payload: dict, model: nn.Module, ema: nn.Module | None, optimizer, scaler,
            device: torch.device) -> TrainState:
    """Load a :func:`read_training_state` payload into the run's objects and this rank's generators.

    The optimizer gets the checkpoint's moments and step counts but keeps its own hyperparameters
    (the config's lr, weight decay, ...): a resume with changed settings applies them. The scaler's
    state is loaded where both the file's and this run's scaler are in use (float16 AMP).
    """
    ts = payload["train_state"]
    model.load_state_dict(payload["model"])
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(ts["optimizer"])
    for group, own in zip(optimizer.param_groups, settings):
        group.update(own)
    if ts["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(ts["scaler"])
    if ema is not None:  # an EMA switched on at resume starts from the resumed weights
        ema.load_state_dict(payload["ema"] if payload.get("ema") is not None else payload["model"])
    set_rng_state(decode_rng(ts["rng"][dist_info()[0]]), device)
    return TrainState(epoch=payload["epoch"], step_in_epoch=ts["step_in_epoch"], global_step=ts["global_step"],
                      best_top1=ts["best_top1"], best_epoch=ts.get("best_epoch", 0), history=ts["history"],
                      accum=ts["accum"])


def saved_config(payload: dict) -> TrainConfig:
    """The run's :class:`TrainConfig` recorded in a checkpoint (fields this version lacks are ignored)."""
    known = {k: v for k, v in payload.get("config", {}).items() if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**known)
