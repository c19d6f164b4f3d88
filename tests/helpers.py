"""Test-only helpers shared by several test files: a small JPEG tree, trained-looking BatchNorms and weights
(:func:`randomize_`), a function as a module (:class:`Fn`), and an attention's explicit-matmul path as a
module. (pytest puts ``tests/`` on ``sys.path``: ``from helpers import ...``.)"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def write_image_folder(root: str | os.PathLike, classes: Sequence[str], per_class: int, *, size=(48, 40),
                       splits=("train", "val"), corrupt: int = 0, seed: int = 0) -> Path:
    """Write a small ImageNet-format JPEG tree ``root/<split>/<class>/<class>_<i>.JPEG`` (tests, benchmarks).

    Each class has its own colour and a noisy stripe pattern, so the classes are learnable; image
    sizes vary around ``size`` (w, h). ``corrupt`` files per split (random bytes named ``.JPEG``) go
    into the first class. Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * c) % 256, (91 * c + 60) % 256, (53 * c + 120) % 256], dtype=np.float32)
            for i in range(per_class):
                w, h = size[0] + int(rng.integers(0, 9)), size[1] + int(rng.integers(0, 9))
                yy = np.arange(h)[:, None, None]
                stripes = 60 * np.sin(yy * (c + 1) * np.pi / h)
                img = np.clip(base + stripes + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{cls}_{i}.JPEG", quality=90)
        for k in range(corrupt):
            (root / split / classes[0] / f"corrupt_{k}.JPEG").write_bytes(rng.bytes(500))
    return root


@torch.no_grad()
def randomize_batchnorm_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm2d trained-looking statistics and affine weights, in place (seeded).

    A freshly built network has ``running_mean = 0, running_var = 1, weight = 1, bias = 0``: its
    BatchNorms are (almost) the identity and folding them would prove nothing. Demos and
    benchmarks of :func:`fuse_for_inference` call this first.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
    return model


class ExplicitPath(nn.Module):
    """An attention's ``return_attn=True`` path as a module returning the output alone: self-attention's
    explicit ``softmax(Q K^T) V`` products instead of fused SDPA, which fvcore has no handler for."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x, return_attn=True)[0]


class Fn(nn.Module):
    """A module computing ``fn(*inputs)`` (one-line test cases for tracers, converters and counters)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights that make every path matter: unit-scale convs/linears, non-trivial BatchNorm statistics and
    layer scales of 0.2-0.5 (the default 1e-5 would hide the attention), logits of order 1."""
    randomize_batchnorm_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.3 + 0.2)
            elif name.endswith("w_g"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()
