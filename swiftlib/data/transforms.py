"""Transforms: timm's per-image pipeline and a whole-batch random resized crop for uint8 images.

:func:`build_transform`: PIL image -> normalised float tensor ``[3, S, S]`` (timm's ``create_transform``:
random resized crop, flip, RandAugment, colour jitter, random erasing; eval: resize + center crop by
``crop_pct``). :class:`BatchRandomResizedCrop`: uint8 batch ``[B, H, W]``, ``[B, H, W, 3]`` or
``[B, C, H, W]`` (C = 3) -> float ``[B, 3, S, S]``, crop + flip + normalisation in one ``grid_sample``
on the images' device, for images already in memory (the uint8 cache, Fashion-MNIST).
Normalisation defaults to timm's ImageNet mean/std (``IMAGENET_DEFAULT_MEAN`` / ``_STD``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform

from swiftlib.data.checks import check_int

__all__ = ["RE_MODES", "build_transform", "BatchRandomResizedCrop"]

#: Random-erasing fills (timm's ``RandomErasing`` modes).
RE_MODES = ("const", "rand", "pixel")


def build_transform(img_size: int, is_training: bool, *, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
                    scale=(0.08, 1.0), hflip: float = 0.5, auto_augment: str | None = None,
                    color_jitter: float | None = 0.4, re_prob: float = 0.0, re_mode: str = "const",
                    re_count: int = 1, crop_pct: float = 0.875, interpolation: str = "bicubic"):
    """timm's ``create_transform``: PIL image -> normalised float tensor ``[3, img_size, img_size]``.

    Training: RandomResizedCrop(``scale``) + flip + RandAugment (``auto_augment``, e.g.
    ``"rand-m9-mstd0.5-inc1"``) or colour jitter + random erasing with probability ``re_prob`` of
    up to ``re_count`` boxes filled in ``re_mode`` (timm's names and defaults: ``"const"`` zeros,
    ``"rand"`` one random colour per box, ``"pixel"`` random noise per pixel, the official
    SwiftFormer / DeiT recipe). Eval: resize to ``img_size / crop_pct`` then center crop ``img_size``
    (the paper's 256 -> 224 is ``crop_pct=0.875``).
    """
    check_int("img_size", img_size, minimum=8)
    if is_training:
        if re_mode not in RE_MODES:
            raise ValueError(f"re_mode must be one of {RE_MODES}, got {re_mode!r}")
        check_int("re_count", re_count)
        return create_transform(img_size, is_training=True, scale=tuple(scale), hflip=hflip,
                                auto_augment=auto_augment, color_jitter=color_jitter or 0.0,
                                re_prob=re_prob, re_mode=re_mode, re_count=re_count,
                                interpolation=interpolation, mean=mean, std=std)
    return create_transform(img_size, is_training=False, crop_pct=crop_pct, interpolation=interpolation,
                            mean=mean, std=std)


class BatchRandomResizedCrop:
    """Random resized crop + horizontal flip + normalisation of a whole uint8 batch, in one ``grid_sample``.

    Input ``images``: uint8 ``[B, H, W]`` (grey, replicated to 3 channels), ``[B, H, W, 3]`` (as
    stored by :class:`ArrayDataset`) or ``[B, 3, H, W]``, on any device. Output: float
    ``[B, 3, size, size]``, ``(x / 255 - mean) / std``.

    Training: per image, a crop box with area fraction in ``scale`` and aspect ratio (log-uniform)
    in ``ratio``, by torchvision's ``RandomResizedCrop.get_params`` rule (ten tries, then the
    largest center crop within ``ratio``), flipped with probability ``hflip``; the box is resampled
    to ``size`` bilinearly (no antialiasing: a crop larger than ``size`` is point-sampled, as in
    GPU augmentation pipelines). ``train=False``: the center crop of ``crop_pct`` of the short
    side (timm's eval resize + center crop), no flip. Randomness comes from ``generator`` only, so
    a batch is a function of (generator seed, images).
    """

    def __init__(self, size: int, *, train: bool = True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 hflip: float = 0.5, crop_pct: float = 0.875, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
        check_int("size", size)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
        if not 0 <= hflip <= 1 or not 0 < crop_pct <= 1:
            raise ValueError(f"hflip must be in [0, 1] and crop_pct in (0, 1], got {hflip}, {crop_pct}")
        self.size, self.train, self.scale, self.ratio = int(size), train, tuple(scale), tuple(ratio)
        self.hflip, self.crop_pct = float(hflip), float(crop_pct)
        self.mean, self.std = tuple(mean), tuple(std)
        # (x / 255 - mean) / std = x * scale + shift, float32 [1, 3, 1, 1]; copies per device in _norm_cache
        std_t = torch.tensor(self.std, dtype=torch.float32)
        self._scale = (1 / (255 * std_t)).view(1, 3, 1, 1)
        self._shift = (-torch.tensor(self.mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1)
        self._norm_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_norm_cache": {}}  # device copies are rebuilt where it is unpickled

    def _norm(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)``, float32 ``[1, 3, 1, 1]`` on ``device``; moved there once, then reused."""
        if device not in self._norm_cache:
            self._norm_cache[device] = (self._scale.to(device), self._shift.to(device))
        return self._norm_cache[device]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, train={self.train}, scale={self.scale}, "
                f"ratio={tuple(round(r, 4) for r in self.ratio)}, hflip={self.hflip}, crop_pct={self.crop_pct})")

    def boxes(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Crop boxes ``[B, 4]`` as ``(top, left, h, w)`` in pixels (float64), drawn from ``generator``."""
        if not self.train:
            side = self.crop_pct * min(height, width)
            box = torch.tensor([(height - side) / 2, (width - side) / 2, side, side], dtype=torch.float64)
            return box.expand(batch, 4).clone()
        tries = 10
        area = height * width * torch.empty(batch, tries, dtype=torch.float64).uniform_(
            *self.scale, generator=generator)
        log_r = torch.empty(batch, tries, dtype=torch.float64).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=generator)
        w = torch.sqrt(area * torch.exp(log_r)).round()                 # [B, tries]
        h = torch.sqrt(area / torch.exp(log_r)).round()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1))
        pick = first.clamp_min(0).unsqueeze(1)
        w, h = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
        in_ratio = width / height                                       # fallback: largest center crop within ratio
        if in_ratio < self.ratio[0]:
            fw, fh = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw, fh = round(height * self.ratio[1]), height
        else:
            fw, fh = width, height
        fallback = first < 0
        w, h = torch.where(fallback, float(fw), w), torch.where(fallback, float(fh), h)
        u = torch.rand(batch, 2, dtype=torch.float64, generator=generator)
        top = torch.where(fallback, (height - h) // 2, torch.floor(u[:, 0] * (height - h + 1)))
        left = torch.where(fallback, (width - w) // 2, torch.floor(u[:, 1] * (width - w + 1)))
        return torch.stack([top, left, h, w], dim=1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() not in (3, 4):
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{type(self).__name__} expects uint8 images [B, H, W], [B, H, W, 3] or "
                             f"[B, 3, H, W]; got {got}")
        if images.dim() == 3:
            x = images.unsqueeze(1)                                     # [B, H, W] -> [B, 1, H, W]
        elif images.shape[-1] == 3 and images.shape[1] != 3:
            x = images.permute(0, 3, 1, 2)                              # [B, H, W, 3] -> [B, 3, H, W]
        elif images.shape[1] == 3:
            x = images
        else:
            raise ValueError(f"{type(self).__name__}: 4-d images need 3 channels first or last, "
                             f"got {tuple(images.shape)}")
        B, _, H, W = x.shape
        box = self.boxes(B, H, W, generator)                            # [B, 4]: top, left, h, w
        flip = (torch.rand(B, generator=generator, dtype=torch.float64) < self.hflip) if self.train \
            else torch.zeros(B, dtype=torch.bool)
        # box -> sampling grid in grid_sample's normalised input coords (align_corners=False: -1 and 1
        # are the outer edges of the image). The map is axis-aligned, so x depends on the output
        # column only and y on the row: two [B, S] vectors instead of affine_grid's [B, S*S, 3] product.
        # Only the [B, S] vectors are computed here (float64, CPU, where the draws are); they go to the
        # images' device as float32 and the [B, S, S, 2] grid is built there.
        S = self.size
        base = (torch.arange(S, dtype=torch.float64) * 2 + 1) / S - 1           # output pixel centres in [-1, 1]
        sign = torch.where(flip, -1.0, 1.0)
        gx = ((2 * box[:, 1] + box[:, 3]) / W - 1)[:, None] + (sign * box[:, 3] / W)[:, None] * base  # [B, S]
        gy = ((2 * box[:, 0] + box[:, 2]) / H - 1)[:, None] + (box[:, 2] / H)[:, None] * base        # [B, S]
        gx, gy = (g.to(device=x.device, dtype=torch.float32) for g in (gx, gy))
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [B, S, S, 2]: (x, y)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        scale, shift = self._norm(x.device)
        # (x / 255 - mean) / std in one pass; a grey batch is broadcast to 3 channels here
        return torch.addcmul(shift, out, scale).expand(B, 3, S, S).contiguous()
