"""Inference-time fusion for SwiftFormer: fold BatchNorms and layer scales into neighbouring layers,
and swap each additive attention for its inference module (``Proj`` merged into ``final``).

Shapes: the fused network maps ``[B, 3, H, W]`` images to ``[B, K]`` logits like the model it copies;
every fold below is per channel ``C`` of a ``[B, C, H, W]`` map (or ``D`` of ``[B, N, D]`` tokens).

In eval mode a BatchNorm is a per-channel affine map ``y = s * x + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - s * running_mean``, and a layer scale is a
per-channel ``y = g * x``. Both fold exactly into an adjacent linear map:

=====================================  =============================================================
pattern                                folded weights
=====================================  =============================================================
conv -> BN  (stem, downsample, DW3x3)  ``W' = s[o] * W``, ``b' = s * b + t``          (any conv)
BN -> 1x1 conv / linear (Mlp, head)    ``W' = W * s[i]``, ``b' = b + W t``   (no padding, so exact)
1x1 conv / linear -> layer scale       ``W' = g[o] * W``, ``b' = g * b``
head BN -> avg pool -> Linear          the pool is linear and per channel, so BN moves past it
head + head_dist, averaged             one Linear with ``(W + W_d) / 2``, ``(b + b_d) / 2``
additive attention Proj -> final       ``W_f`` and ``W_f W_p`` side by side, ``W_f b_p + b_f``  (``reparameterize()``)
=====================================  =============================================================

The depthwise conv's BN could not fold *backwards* into a 3x3 conv with zero padding (the padded
border would get the BN shift), which is why each fold here goes in the direction that is exact.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from swiftlib.attention import EfficientAdditiveAttention
from swiftlib.models.swiftformer import ConvEncoder, Downsample, Mlp, SwiftFormer, SwiftFormerEncoder

__all__ = ["fuse_for_inference", "bn_scale_shift"]


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = s * x + t``: returns ``(s, t)``, each ``[C]``."""
    if bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    t = (bn.bias if bn.affine else 0) - s * bn.running_mean
    return s, t


def _bias(layer: nn.Module) -> torch.Tensor:
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                              device=layer.weight.device))
    return layer.bias


def _fold_bn_after(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """``bn(conv(x))`` -> ``conv'(x)``."""
    s, t = bn_scale_shift(bn)
    conv.weight.mul_(s.view(-1, *([1] * (conv.weight.dim() - 1))))  # [O, I/g, k, k] * [O, 1, 1, 1]
    b = _bias(conv)
    b.mul_(s).add_(t)


def _fold_bn_before(layer: nn.Module, bn: nn.BatchNorm2d) -> None:
    """``layer(bn(x))`` -> ``layer'(x)`` for a 1x1 conv without padding or a Linear."""
    if isinstance(layer, nn.Conv2d) and (layer.kernel_size != (1, 1) or layer.groups != 1):
        raise ValueError(f"can fold a preceding BatchNorm only into a dense 1x1 conv, got {layer}")
    s, t = bn_scale_shift(bn)
    w2d = layer.weight.view(layer.weight.shape[0], -1)              # [O, I, 1, 1] -> [O, I]
    b = _bias(layer)
    b.add_(w2d @ t)
    w2d.mul_(s)                                                      # scale input columns


def _fold_scale_after(layer: nn.Module, gamma: torch.Tensor) -> None:
    """``gamma * layer(x)`` -> ``layer'(x)`` (gamma per output channel)."""
    g = gamma.reshape(-1)                                            # [C, 1, 1] -> [C]
    layer.weight.mul_(g.view(-1, *([1] * (layer.weight.dim() - 1))))
    _bias(layer).mul_(g)


@torch.no_grad()
def fuse_for_inference(model: SwiftFormer, inplace: bool = False, channels_last: bool = True) -> SwiftFormer:
    """Return an eval-mode SwiftFormer with every BatchNorm and layer scale folded away.

    Folded: the stem's and the downsamplings' BNs into their convs; each ConvEncoder's and local
    representation's BN into its depthwise conv and its layer scale into ``pwconv2``; the
    SwiftFormer Encoder's layer scale 1 into the attention's last linear layer and layer scale 2
    into ``fc2``; the Mlp's leading BN into ``fc1``; the head BN into the classifier; and the
    classifier and distillation heads into one averaged Linear (eval output is their mean anyway).
    Each additive attention is then replaced by its inference module (``encoder.attn =
    encoder.attn.reparameterize()``, :class:`~swiftlib.attention_inference.EfficientAdditiveAttentionInference`:
    ``Proj`` merged into ``final``); the other token mixers stay as they are.

    With ``channels_last`` (default) the weights and every input are put in NHWC memory layout:
    oneDNN's convolutions on CPU run without layout reorders and the ``[B, C, H, W] -> [B, N, D]``
    token view in front of the attention becomes free (a no-copy view of contiguous memory).

    The result computes the same function as ``model.eval()`` (up to float rounding) with fewer
    ops. By default ``model`` is left untouched and a fused deep copy is returned; ``inplace=True``
    fuses ``model`` itself. The fused model is for inference: it has no BatchNorm statistics to
    update and its single head cannot return the ``(head, head_dist)`` training pair.
    """
    if not isinstance(model, SwiftFormer):
        raise TypeError(f"fuse_for_inference expects a swiftlib SwiftFormer, got {type(model).__name__}")
    if getattr(model, "fused", False):
        return model if inplace else copy.deepcopy(model)
    m = model if inplace else copy.deepcopy(model)
    m.eval()

    # stem: conv, bn, relu, conv, bn, relu
    for i, layer in enumerate(m.stem):
        if isinstance(layer, nn.BatchNorm2d):
            _fold_bn_after(m.stem[i - 1], layer)
            m.stem[i] = nn.Identity()
    for module in m.modules():
        if isinstance(module, Downsample):
            _fold_bn_after(module.proj, module.norm)
            module.norm = nn.Identity()
        elif isinstance(module, ConvEncoder):  # also LocalRepresentation
            _fold_bn_after(module.dwconv, module.norm)
            module.norm = nn.Identity()
            _fold_scale_after(module.pwconv2, module.layer_scale.gamma)
            module.layer_scale = nn.Identity()
        elif isinstance(module, Mlp):
            _fold_bn_before(module.fc1, module.norm1)
            module.norm1 = nn.Identity()
        if isinstance(module, SwiftFormerEncoder):
            out_layer = getattr(module.attn, module.attn.output_layer)
            _fold_scale_after(out_layer, module.layer_scale_1.gamma)
            module.layer_scale_1 = nn.Identity()
            _fold_scale_after(module.linear.fc2, module.layer_scale_2.gamma)
            module.layer_scale_2 = nn.Identity()

    for module in list(m.modules()):  # after the layer-scale folds into attn.final: merge Proj into final
        if isinstance(module, SwiftFormerEncoder) and isinstance(module.attn, EfficientAdditiveAttention):
            module.attn = module.attn.reparameterize()

    # head: BN -> mean -> Linear == mean -> Linear' ; then average the two heads into one.
    _fold_bn_before(m.head, m.norm)
    if m.head_dist is not None:
        _fold_bn_before(m.head_dist, m.norm)
        m.head.weight.add_(m.head_dist.weight).mul_(0.5)
        m.head.bias.add_(m.head_dist.bias).mul_(0.5)
        m.head_dist = None
    m.norm = nn.Identity()
    m.fused = True
    for p in m.parameters():
        p.requires_grad_(False)
    if channels_last:
        m.to(memory_format=torch.channels_last)
        m.channels_last = True
    return m.eval()
