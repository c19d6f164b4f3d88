"""SwiftFormer checkpoints: load any of the three layouts (official, timm, swiftlib), save swiftlib's, map keys.

Layouts of a SwiftFormer state dict (names of tensors; shapes are the model's own):

* official (github.com/Amshaker/SwiftFormer): ``{'model': sd}`` with a flat ``network.{0..6}`` list
  (even indices = stages, odd = downsamplings), ``patch_embed.*``, ``dist_head.*``,
  ``attn.to_query`` / ``attn.to_key`` / ``attn.Proj``, bare ``layer_scale*`` parameters ``[C, 1, 1]``;
* timm (``timm.models.swiftformer``): ``stem``, ``stages.i.blocks.j``, ``stages.i.downsample``,
  ``head_dist``, ``attn.to_query`` / ``attn.to_key`` / ``attn.proj``, ``....gamma``;
* swiftlib: timm's names with the fused ``attn.qk`` (``[to_query; to_key]``), as
  :func:`save_checkpoint` writes them: ``{"model": sd, "arch", "attention", "num_classes", **extra}``.

The attention's own load hook (:class:`swiftlib.attention.EfficientAdditiveAttention`) maps
``to_query`` + ``to_key`` -> ``qk`` and ``Proj`` -> ``proj``; :func:`remap_official_keys` does the rest.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from swiftlib.io import atomic_torch_save

__all__ = ["load_checkpoint", "save_checkpoint", "remap_official_keys", "to_official_keys", "LoadReport"]

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


def _read_checkpoint(path: Path, weights_only: bool) -> object:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected a checkpoint file, got a directory: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if weights_only and glob:
            raise ValueError(
                f"{path} holds Python objects besides tensors ({glob.group(1)}, e.g. training arguments); "
                f"if you trust the file, pass weights_only=False") from e
        raise ValueError(f"{path} is not a PyTorch checkpoint: it does not unpickle as a torch.save file") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
        size = path.stat().st_size
        raise ValueError(f"could not read checkpoint {path} ({size} bytes): the file is truncated or is not a "
                         f"PyTorch checkpoint ({type(e).__name__}: {e})") from e


def _extract_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
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


def load_checkpoint(model: nn.Module, path_or_state_dict, weights_only: bool = True,
                    strict: bool = True) -> LoadReport:
    """Load weights into a :class:`~swiftlib.models.SwiftFormer` from any of the three layouts, in place.

    ``path_or_state_dict``: a file path (``torch.save`` output) or an in-memory dict. Accepted
    layouts: the official repo's (``{'model': ...}`` with ``network.N``, ``patch_embed``,
    ``dist_head``, ``attn.Proj``, bare ``layer_scale*``), timm's ``swiftformer_*`` state dicts, and
    swiftlib's own (optionally wrapped by :func:`save_checkpoint`).

    A classifier of a different size (``num_classes`` changed for fine-tuning) is skipped: the
    model's head(s) keep their fresh initialisation and a warning says so. A distillation head in
    the checkpoint that the model lacks (``distillation=False``) is dropped, also with a warning.
    Any other mismatch raises a ValueError listing the missing and unexpected keys and the shape
    mismatches. Returns a :class:`LoadReport`.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        sd = _extract_state_dict(_read_checkpoint(path, weights_only), str(path))
    else:
        sd = _extract_state_dict(path_or_state_dict, "the given object")
    report = LoadReport(layout=_detect_layout(sd))
    own = model.state_dict()
    sd, notes = _fit_heads(remap_official_keys(sd), own, model, report)
    misfit = f"checkpoint ({report.layout} layout) does not fit this model ({_describe(model)})"
    # Shape check on the keys the model will see (the attention hook fuses to_query/to_key later).
    sizes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if sizes:
        raise ValueError(f"{misfit}: {len(sizes)} shape mismatches, e.g. " + "; ".join(sizes[:8]))
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shapes that only show after the attention's key map (to_query + to_key)
        raise ValueError(f"{misfit}: {e}") from e
    missing = [k for k in missing if k not in report.reinitialised]
    if strict and (missing or unexpected):
        raise ValueError(
            f"{misfit}: {len(missing)} missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    report.message = "; ".join(notes)
    if notes:
        warnings.warn(report.message, UserWarning, stacklevel=2)
    return report


def _describe(model: nn.Module) -> str:
    name = getattr(model, "variant_name", type(model).__name__)
    return (f"{name}, widths {getattr(model, 'widths', '?')}, depths {getattr(model, 'depths', '?')}, "
            f"attention {getattr(model, 'attention', '?')!r}")


def save_checkpoint(model: nn.Module, path, **extra) -> Path:
    """Atomically write ``{"model": state_dict, "arch", "attention", "num_classes", **extra}`` (temp file +
    rename) and return the path: the one payload layout of swiftlib's checkpoints (training's ``last.pth`` /
    ``best.pth`` pass their state as ``extra``)."""
    payload = {"model": model.state_dict(), "arch": getattr(model, "variant_name", None),
               "attention": getattr(model, "attention", None),
               "num_classes": getattr(model, "num_classes", None), **extra}
    return atomic_torch_save(payload, path)
