"""Analytic shapes and MACs of a SwiftFormer, stage by stage, without building the network.

Convention (as in :mod:`swiftlib.attention`): 1 MAC = one multiply-add, counting the products of
convolutions (``out_elements * in_channels / groups * k * k``), linear layers and the attention's
matrix products (:func:`swiftlib.attention.attention_macs`) -- what fvcore counts, minus its
BatchNorm entry (two per element), which is not a product and which fusion removes.

Shapes: an input ``[B, 3, H, W]`` becomes ``[B, C1, ceil(H/4), ceil(W/4)]`` after the stem and
each later stage halves the map (``ceil``); stage ``i`` has ``N_i = H_i * W_i`` tokens of ``D = C_i``.
"""
from __future__ import annotations

import math

from swiftlib.attention import attention_macs
from swiftlib.attention_inference import check_sizes
from swiftlib.models.swiftformer import MIN_INPUT_SIZE, SWIFTFORMER_VARIANTS, resolve_name

__all__ = ["stage_shapes", "swiftformer_macs"]


def _half(n: int) -> int:
    return math.floor((n + 2 - 3) / 2) + 1  # Conv3x3, stride 2, padding 1 == ceil(n / 2)


def _variant(name: str) -> dict:
    return SWIFTFORMER_VARIANTS[resolve_name(name)]


def stage_shapes(name: str, height: int, width: int | None = None) -> list[dict]:
    """Per stage: ``{"stage", "channels", "height", "width", "tokens"}`` for a ``height x width`` image."""
    width = height if width is None else width
    check_sizes("stage_shapes", height=height, width=width)
    if min(height, width) < MIN_INPUT_SIZE:
        raise ValueError(f"SwiftFormer needs H, W >= {MIN_INPUT_SIZE}; got H, W = {height}, {width}")
    cfg = _variant(name)
    h, w = _half(_half(height)), _half(_half(width))                 # stem: two stride-2 convs
    rows = []
    for i, c in enumerate(cfg["widths"]):
        if i > 0:
            h, w = _half(h), _half(w)                                  # downsampling conv
        rows.append({"stage": i + 1, "channels": c, "height": h, "width": w, "tokens": h * w})
    return rows


def swiftformer_macs(name: str, height: int = 224, width: int | None = None, attention: str = "additive",
                     num_classes: int = 1000, distillation: bool = True, mlp_ratio: float = 4.0) -> dict:
    """MACs of one image, split by stage and by kind.

    Returns ``{"stem", "head", "stages": [{"stage", "tokens", "channels", "conv", "attention",
    "total"}...], "attention", "total", "batchnorm_elements", "fvcore_total"}``; fvcore counts
    two "flops" per element through an affine BatchNorm (scale, shift), so
    ``fvcore_total = total + 2 * batchnorm_elements`` is its number for the unfused network (the
    fused one has no BatchNorm: ``total``). ``conv`` holds every convolution of a stage
    (downsampling, Conv. Encoders, local representation, Mlp), ``attention`` its token mixer.
    """
    width = height if width is None else width
    check_sizes("swiftformer_macs", height=height, width=width, num_classes=num_classes)
    cfg = _variant(name)
    shapes = stage_shapes(name, height, width)
    c1 = cfg["widths"][0]
    h2, w2 = _half(height), _half(width)
    stem = h2 * w2 * (c1 // 2) * 3 * 9 + shapes[0]["tokens"] * c1 * (c1 // 2) * 9
    bn = h2 * w2 * (c1 // 2) + shapes[0]["tokens"] * c1                  # elements through the stem's BNs
    stages, prev = [], c1
    for i, (row, depth) in enumerate(zip(shapes, cfg["depths"])):
        n, c = row["tokens"], row["channels"]
        hidden = int(mlp_ratio * c)
        conv = n * c * prev * 9 if i > 0 else 0                        # downsampling Conv3x3 s2
        conv += (depth - 1) * (n * c * 9 + 2 * n * c * hidden)        # Conv. Encoders: DW3x3, 1x1 up, 1x1 down
        conv += n * c * 9 + 2 * n * c * c                             # local representation: DW3x3, two 1x1
        conv += 2 * n * c * hidden                                    # Mlp: fc1, fc2
        attn = attention_macs(attention, n, c)
        bn += n * c * ((1 if i > 0 else 0) + (depth - 1) + 2)             # downsample, encoders, local rep + Mlp
        stages.append({"stage": i + 1, "tokens": n, "channels": c, "conv": conv, "attention": attn,
                       "total": conv + attn})
        prev = c
    head = cfg["widths"][-1] * num_classes * (2 if distillation else 1)
    bn += shapes[-1]["tokens"] * cfg["widths"][-1]                         # head BN
    total = stem + sum(s["total"] for s in stages) + head
    return {"stem": stem, "stages": stages, "head": head,
            "attention": sum(s["attention"] for s in stages), "total": total,
            "batchnorm_elements": bn, "fvcore_total": total + 2 * bn}
