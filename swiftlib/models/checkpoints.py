"""SwiftFormer checkpoints: load any of the three layouts (official, timm, swiftlib), save swiftlib's, map keys.

Layouts of a SwiftFormer state dict (names of tensors; shapes are the model's own):

* official (github.com/Amshaker/SwiftFormer): ``{'model': sd}`` with a flat ``network.{0..6}`` list
  (even indices = stages, odd = downsamplings), ``patch_embed.*``, ``dist_head.*``,
  ``attn.to_query`` / ``attn.to_key`` / ``attn.Proj``, bare ``layer_scale*`` parameters ``[C, 1, 1]``;
* timm (``timm.models.swiftformer``): ``stem``, ``stages.i.blocks.j``, ``stages.i.downsample``,
  ``head_dist``, ``attn.to_query`` / ``attn.to_key`` / ``attn.proj``, ``....gamma``;
* swiftlib: timm's names with the fused ``attn.qk`` (``[to_query; to_key]``), as
  :func:`save_checkpoint` writes them: ``{"model": sd, "arch", "attention", "num_classes", **extra}``.

Every file is read by :func:`read_checkpoint` with ``torch.load(weights_only=True)``: tensors and plain
values only, nothing in a file runs. :func:`checkpoint_num_classes` reads the classifier size a
checkpoint holds.

The attention's own load hook (:class:`swiftlib.attention.EfficientAdditiveAttention`) maps
``to_query`` + ``to_key`` -> ``qk`` and ``Proj`` -> ``proj``; :func:`remap_official_keys` does the rest.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import safetensors
import safetensors.torch
import torch
from torch import nn

from swiftlib.io import atomic_torch_save

__all__ = ["read_checkpoint", "extract_state_dict", "load_checkpoint", "checkpoint_num_classes", "save_checkpoint",
           "remap_official_keys", "to_official_keys", "nonfinite_tensors", "LoadReport", "CheckpointMismatchError"]

_HEAD_KEYS = ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias")


def remap_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official layout -> swiftlib/timm layout (a no-op on state dicts already in that layout).

    ``patch_embed.`` -> ``stem.``; ``network.{2i}.j.`` -> ``stages.i.blocks.j.``;
    ``network.{2i+1}.`` -> ``stages.{i+1}.downsample.``; ``dist_head.`` -> ``head_dist.``;
    bare layer-scale parameters ``layer_scale``, ``layer_scale_1/2`` -> ``....gamma``.
    (``attn.Proj``/``to_query``/``to_key`` are mapped by the attention module's own load hook.)
    """
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^patch_embed\.", "stem.", k)
        k = re.sub(r"^dist_head\.", "head_dist.", k)
        k = re.sub(r"\.(layer_scale(?:_1|_2)?)$", r".\1.gamma", k)
        m = re.match(r"^network\.(\d+)\.(.*)$", k)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            k = f"stages.{idx // 2}.blocks.{rest}" if idx % 2 == 0 else f"stages.{idx // 2 + 1}.downsample.{rest}"
        out[k] = v
    return out


def to_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """swiftlib/timm layout -> official layout (the inverse of :func:`remap_official_keys`).

    swiftlib's fused ``attn.qk`` is split back into ``to_query`` / ``to_key`` and ``attn.proj``
    becomes ``attn.Proj``; the result is what the official repo's ``model.state_dict()`` holds.
    """
    split = {}
    for k, v in state_dict.items():
        m = re.match(r"^(.*\.attn\.)qk\.(weight|bias)$", k)
        if m:
            q, kk = v.chunk(2, dim=0)                        # [2D, ...] -> 2 x [D, ...]
            split[f"{m.group(1)}to_query.{m.group(2)}"] = q
            split[f"{m.group(1)}to_key.{m.group(2)}"] = kk
        else:
            split[k] = v
    out = {}
    for k, v in split.items():
        k = re.sub(r"\.attn\.proj\.", ".attn.Proj.", k)
        k = re.sub(r"^stem\.", "patch_embed.", k)
        k = re.sub(r"^head_dist\.", "dist_head.", k)
        k = re.sub(r"\.(layer_scale(?:_1|_2)?)\.gamma$", r".\1", k)
        m = re.match(r"^stages\.(\d+)\.(blocks|downsample)\.(.*)$", k)
        if m:
            i, part, rest = int(m.group(1)), m.group(2), m.group(3)
            k = f"network.{2 * i}.{rest}" if part == "blocks" else f"network.{2 * i - 1}.{rest}"
        out[k] = v
    return out


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did: the source layout and the keys it re-initialised or dropped."""

    layout: str
    reinitialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    message: str = ""


#: Why a file that needs more than tensors and plain values is refused, and what to do instead.
_TRUST_HINT = ("swiftlib never runs code from a checkpoint (every file is read with torch.load(weights_only=True)); "
               "re-save the tensors with torch.save(model.state_dict(), path) in a trusted environment")


def _only_weights(weights_only: bool) -> None:
    if weights_only is not True:
        raise ValueError(f"weights_only must be True, got {weights_only!r}: {_TRUST_HINT}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"could not read {path} ({path.stat().st_size} bytes): the file is truncated or is not "
                         f"a safetensors file ({type(e).__name__}: {e})") from e


def read_checkpoint(path) -> object:
    """The one file reader of swiftlib's checkpoints: ``torch.load(path, map_location="cpu", weights_only=True)``.

    Only tensors and plain Python values (dicts, lists, numbers, strings, the ``argparse.Namespace`` of
    arguments that the official code saves) load; nothing in the file is run. A ``.safetensors`` file
    (timm's hub format) is read with ``safetensors.torch.load_file``. A file that needs any other global (a class, a function: the way a pickle runs code) is
    refused with a ValueError naming it. A missing path, a directory, a truncated or non-PyTorch file
    each get their own one-line error (FileNotFoundError, IsADirectoryError, ValueError).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_checkpoint expects a file path (str or os.PathLike), got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a checkpoint file, got a directory: {path}")
    if path.suffix == ".safetensors":  # timm's hub format: tensors only by construction
        return _read_safetensors(path)
    try:
        # argparse.Namespace: the official main.py (and timm's train.py) save their arguments in the
        # checkpoint; a Namespace is plain data (its attributes), so it may load.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except pickle.UnpicklingError as e:
        blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
        if blocked:  # torch's message would suggest weights_only=False: not an option here
            raise ValueError(f"refused to load {path}: it needs the Python global {blocked.group(1)}, and "
                             f"loading that could run code from the file; {_TRUST_HINT}") from None
        raise ValueError(f"{path} is not a PyTorch checkpoint: it does not unpickle as a torch.save file "
                         f"of tensors and plain values") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
        size = path.stat().st_size
        raise ValueError(f"could not read checkpoint {path} ({size} bytes): the file is truncated or is not a "
                         f"PyTorch checkpoint ({type(e).__name__}: {e})") from e


def extract_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: ``{'model': sd}``, ``{'state_dict': sd}`` or ``sd``."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{where} does not hold a state dict (a non-empty mapping of parameter names to "
                         f"tensors, optionally under 'model' or 'state_dict'); got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where} is not a state dict: {len(bad)} entries are not name -> tensor, e.g. {bad[:3]}")
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DistributedDataParallel prefix


def _detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith(("network.", "patch_embed.")) for k in sd):
        return "official"
    if any(".attn.to_query." in k for k in sd):
        return "timm"
    return "swiftlib"


def _fit_heads(sd: dict, own: Mapping, model: nn.Module, report: LoadReport) -> tuple[dict, list[str]]:
    """Drop a distillation head the model lacks and skip a classifier of another size (noted in ``report``)."""
    notes = []
    if getattr(model, "head_dist", None) is None and any(k.startswith("head_dist.") for k in sd):
        report.dropped += [k for k in sd if k.startswith("head_dist.")]
        sd = {k: v for k, v in sd.items() if not k.startswith("head_dist.")}
        notes.append("the checkpoint's distillation head was dropped (model built with distillation=False)")
    ck_w = sd.get("head.weight")
    if ck_w is not None and "head.weight" in own and ck_w.shape != own["head.weight"].shape:
        report.reinitialised = [k for k in _HEAD_KEYS if k in own]
        sd = {k: v for k, v in sd.items() if k not in _HEAD_KEYS}
        notes.append(f"classifier re-initialised: the checkpoint has {ck_w.shape[0]} classes, the model "
                     f"{own['head.weight'].shape[0]} ({', '.join(report.reinitialised)} keep their fresh "
                     f"initialisation; fine-tune them)")
    return sd, notes


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model. The message is one line naming what differs (widths,
    depths, attention, classes); the detail stays here: ``differences`` (those phrases), ``missing``,
    ``unexpected`` (key names) and ``shapes`` (``"key: checkpoint (..) vs model (..)"``)."""

    def __init__(self, message: str, differences=(), missing=(), unexpected=(), shapes=()):
        super().__init__(message)
        self.differences, self.missing = list(differences), list(missing)
        self.unexpected, self.shapes = list(unexpected), list(shapes)


#: A parameter name under ``attn.`` -> the token mixer that has it (first match wins).
_MIXER_KEYS = (("temperature", "transposed"), ("qkv_proj", "separable"), ("qkv", "self"),
               ("qk", "additive"), ("to_query", "additive"))


def _architecture(sd: Mapping[str, torch.Tensor]) -> dict:
    """What a swiftlib/timm-layout state dict holds: ``widths`` and ``depths`` per stage, ``attention``, ``classes``."""
    blocks: dict[int, set] = {}
    widths: dict[int, int] = {}
    mixer_params = set()
    for k, v in sd.items():
        m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$", k)
        if not m:
            continue
        stage, rest = int(m.group(1)), m.group(3)
        blocks.setdefault(stage, set()).add(int(m.group(2)))
        if rest.endswith("dwconv.weight"):
            widths[stage] = v.shape[0]                      # depthwise conv [C, 1, 3, 3]
        if rest.startswith("attn."):
            mixer_params.add(rest.split(".")[1])
    head = sd.get("head.weight")
    return {"widths": tuple(widths.get(i) for i in sorted(blocks)),
            "depths": tuple(len(blocks[i]) for i in sorted(blocks)),
            "attention": next((name for key, name in _MIXER_KEYS if key in mixer_params), None),
            "classes": int(head.shape[0]) if head is not None and head.dim() == 2 else None}


def _show(value) -> str:
    return "none" if value is None else repr(value)


def _differences(ck: dict, own: dict) -> list[str]:
    """``"widths: checkpoint (..), model (..)"`` for every field of :func:`_architecture` that differs."""
    if not ck["depths"]:
        return ["the checkpoint holds no SwiftFormer stages ('stages.i.blocks.j.*' after the key map)"]
    return [f"{field}: checkpoint {_show(ck[field])}, model {_show(own[field])}"
            for field in ck if ck[field] != own[field]]


def _mismatch(model: nn.Module, layout: str, diffs, missing=(), unexpected=(), shapes=()) -> CheckpointMismatchError:
    """One-line error: what differs, then how many keys, with at most three examples of each kind."""
    parts = list(diffs)
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if keys:
            parts.append(f"{len(keys)} {what}, e.g. {list(keys)[:3]}")
    return CheckpointMismatchError(
        f"checkpoint ({layout} layout) does not fit this model ({_describe(model)}): " + "; ".join(parts),
        diffs, missing, unexpected, shapes)


def _state_dict_of(path_or_state_dict) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a path (read with :func:`read_checkpoint`) or of an in-memory object, and where it came from."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        where = str(path_or_state_dict)
        return extract_state_dict(read_checkpoint(path_or_state_dict), where), where
    return extract_state_dict(path_or_state_dict, "the given object"), "the given object"


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the floating-point tensors in ``named`` holding a nan or an inf (one sync in all)."""
    floats = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(t).all() for _, t in floats]).cpu()
    return [] if bool(finite.all()) else [n for (n, _), ok in zip(floats, finite.tolist()) if not ok]


def _warn_non_finite(sd: Mapping[str, torch.Tensor], where: str) -> None:
    bad = nonfinite_tensors(sd.items())
    if bad:
        warnings.warn(f"{where} holds non-finite values (nan or inf) in {len(bad)} of {len(sd)} tensors, e.g. "
                      f"{bad[:3]}; the model will compute nan/inf from them (a diverged run?)", UserWarning,
                      stacklevel=3)


def checkpoint_num_classes(path_or_state) -> int:
    """The class count of the classifier a checkpoint holds (``head.weight`` ``[K, C]``): a path or an in-memory
    object, in the official, timm or swiftlib layout, also a training state with its weights under ``"model"``."""
    sd, where = _state_dict_of(path_or_state)
    head = remap_official_keys(sd).get("head.weight")
    if head is None or head.dim() != 2:
        raise ValueError(f"{where} holds no classifier ('head.weight' of shape [classes, channels])")
    return int(head.shape[0])


def load_checkpoint(model: nn.Module, path_or_state_dict, weights_only: bool = True,
                    strict: bool = True) -> LoadReport:
    """Load weights into a :class:`~swiftlib.models.SwiftFormer` from any of the three layouts, in place.

    ``path_or_state_dict``: a file path (read with :func:`read_checkpoint`: tensors and plain values
    only, nothing in the file runs) or an in-memory dict. Accepted layouts: the official repo's
    (``{'model': ...}`` with ``network.N``, ``patch_embed``, ``dist_head``, ``attn.Proj``, bare
    ``layer_scale*``), timm's ``swiftformer_*`` state dicts, and swiftlib's own (optionally wrapped by
    :func:`save_checkpoint`, training states included). ``weights_only`` is always True (another
    value is refused); the argument stays for callers that pass it.

    A classifier of a different size (``num_classes`` changed for fine-tuning) is skipped: the
    model's head(s) keep their fresh initialisation and a warning says so. A distillation head in
    the checkpoint that the model lacks (``distillation=False``) is dropped, also with a warning; so
    are non-finite weights (nan / inf: loaded, with a warning naming them). A checkpoint of another
    architecture raises a :class:`CheckpointMismatchError` (a ValueError) naming what differs
    (widths, depths, attention, classes) before anything is loaded; other missing, unexpected or
    misshapen keys raise it too. Returns a :class:`LoadReport`.
    """
    _only_weights(weights_only)
    sd, where = _state_dict_of(path_or_state_dict)
    _warn_non_finite(sd, where)
    report = LoadReport(layout=_detect_layout(sd))
    own = model.state_dict()
    sd = remap_official_keys(sd)
    diffs = _differences(_architecture(sd), _architecture(own))
    if any(not d.startswith("classes:") for d in diffs):  # another network: say so before touching the model
        raise _mismatch(model, report.layout, diffs)
    sd, notes = _fit_heads(sd, own, model, report)
    # Shape check on the keys the model will see (the attention hook fuses to_query/to_key later).
    sizes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if sizes:
        raise _mismatch(model, report.layout, diffs, shapes=sizes)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shapes that only show after the attention's key map (to_query + to_key)
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        raise _mismatch(model, report.layout, diffs, shapes=lines or [str(e)]) from e
    missing = [k for k in missing if k not in report.reinitialised]
    if strict and (missing or unexpected):
        raise _mismatch(model, report.layout, diffs, missing, unexpected)
    report.message = "; ".join(notes)
    if notes:
        warnings.warn(report.message, UserWarning, stacklevel=2)
    return report


def _describe(model: nn.Module) -> str:
    return getattr(model, "variant_name", None) or type(model).__name__


def save_checkpoint(model: nn.Module, path, **extra) -> Path:
    """Atomically write ``{"model": state_dict, "arch", "attention", "num_classes", **extra}`` (temp file +
    rename) and return the path: the one payload layout of swiftlib's checkpoints (training's ``last.pth`` /
    ``best.pth`` pass their state as ``extra``)."""
    payload = {"model": model.state_dict(), "arch": getattr(model, "variant_name", None),
               "attention": getattr(model, "attention", None),
               "num_classes": getattr(model, "num_classes", None), **extra}
    return atomic_torch_save(payload, path)
