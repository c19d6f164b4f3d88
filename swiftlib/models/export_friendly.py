"""The export-friendly form of SwiftFormer: additive attention written on ``[B, C, H, W]`` maps.

Shape glossary (as in :mod:`swiftlib.attention`)::

    B batch   C channels   H, W map height/width   N = H * W tokens   D = C token width
    B, C, H, W  feature maps                        B, N, D  token tensors

:func:`export_friendly` swaps every SwiftFormer Encoder's additive attention for
:class:`MapAdditiveAttention`, the same math written on ``[B, C, H, W]`` maps with 1x1 convolutions:
no flatten / transpose back and forth, the global query ``G`` broadcast (never tiled), and each L2
normalisation one ``reduce_l2_norm`` + ``maximum`` + ``real_div``. The Neural Engine's native layout
is 4-D channels-first, so this is the graph it prefers; :mod:`swiftlib.export` converts it.
"""
from __future__ import annotations

from copy import deepcopy

import torch
from torch import nn

from swiftlib.attention import EfficientAdditiveAttention, l2_normalize
from swiftlib.attention_inference import EfficientAdditiveAttentionInference
from swiftlib.models.swiftformer import SwiftFormerEncoder

__all__ = ["MapAdditiveAttention", "MapSwiftFormerEncoder", "export_friendly"]


def _conv1x1(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A 1x1 conv computing the linear map ``weight`` ``[O, I]`` on every pixel of a ``[B, I, H, W]`` map."""
    out_ch, in_ch = weight.shape
    conv = nn.Conv2d(in_ch, out_ch, 1, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(out_ch, in_ch, 1, 1))        # [O, I] -> [O, I, 1, 1]
        if bias is not None:
            conv.bias.copy_(bias)
    return conv.requires_grad_(False)


class MapAdditiveAttention(nn.Module):
    """SwiftFormer's efficient additive attention on a ``[B, C, H, W]`` map, built from the weights of an
    :class:`swiftlib.attention.EfficientAdditiveAttention` or of its inference module
    :class:`swiftlib.attention_inference.EfficientAdditiveAttentionInference` (both work on ``[B, N, D]``
    tokens): their ``qk`` and ``w_g`` weights and ``output_weights()``.

    Same math, channels-first: ``Q = unit_C(W_q x)``, ``K = unit_C(W_k x)`` (unit L2 norm over the
    channels of each pixel), ``alpha = Q . (w_g / sqrt(D))`` (a 1x1 conv to one channel),
    ``a = unit_HW(alpha)`` (unit L2 norm over the pixels), ``G = sum_HW a * Q`` (``[B, C, 1, 1]``),
    ``out = final(Proj(G * K) + Q)``. ``G * K`` broadcasts ``G`` over the pixels; ``final`` and
    ``Proj`` are merged into one 1x1 conv on ``[G * K ; Q]`` (exact: both are linear).

    Shapes: ``x [B, C, H, W] -> [B, C, H, W]``; equals
    ``attn(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(B, C, H, W)``.
    """

    def __init__(self, attn: EfficientAdditiveAttention | EfficientAdditiveAttentionInference):
        super().__init__()
        if not isinstance(attn, (EfficientAdditiveAttention, EfficientAdditiveAttentionInference)):
            raise TypeError("MapAdditiveAttention copies an EfficientAdditiveAttention (or its inference module), "
                            f"got {type(attn).__name__}")
        D = attn.dim
        w, b = attn.qk.weight.detach(), attn.qk.bias.detach()        # [2D, D], [2D]
        self.to_query = _conv1x1(w[:D], b[:D])
        self.to_key = _conv1x1(w[D:], b[D:])
        self.to_alpha = _conv1x1((attn.w_g.detach() * D ** -0.5).T, None)  # [D, 1] -> [1, D], alpha = Q w_g / sqrt(D)
        # final(Proj(G*K) + Q) = [W_f W_p | W_f] [G*K ; Q] + (W_f b_p + b_f): one conv on 2C channels,
        # the same 2 C^2 multiply-adds per pixel as the two linear layers, one op instead of three.
        a, m, c = attn.output_weights()                                # W_f^T, W_p^T W_f^T, W_f b_p + b_f
        self.out = _conv1x1(torch.cat([m.T, a.T], dim=1), c)           # [C, 2C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = l2_normalize(self.to_query(x), dim=1)          # [B, C, H, W], unit over C
        k = l2_normalize(self.to_key(x), dim=1)
        a = l2_normalize(self.to_alpha(q), dim=(2, 3))     # [B, 1, H, W], unit over H, W
        g = (a * q).sum(dim=(2, 3), keepdim=True)          # [B, C, H, W] -> [B, C, 1, 1]
        return self.out(torch.cat([g * k, q], dim=1))      # G broadcast over H, W; [B, 2C, H, W] -> [B, C, H, W]


class MapSwiftFormerEncoder(nn.Module):
    """A SwiftFormer Encoder whose additive attention runs on the map (:class:`MapAdditiveAttention`).

    Reuses the encoder's local representation, Mlp and layer scales (identities once fused).
    Shapes: ``[B, C, H, W] -> [B, C, H, W]``, the same function as the encoder it copies.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.local_representation = encoder.local_representation
        self.attn = MapAdditiveAttention(encoder.attn)
        self.layer_scale_1 = encoder.layer_scale_1
        self.linear = encoder.linear
        self.layer_scale_2 = encoder.layer_scale_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        x = x + self.layer_scale_1(self.attn(x))
        return x + self.layer_scale_2(self.linear(x))


def export_friendly(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every additive-attention SwiftFormer Encoder on the map path.

    Works on a whole :class:`swiftlib.models.SwiftFormer` or a single encoder; other token mixers
    (self, transposed, separable) keep their token path. The result computes the same function.
    By default ``model`` is left untouched and the result is built on one deep copy of it;
    ``inplace=True`` swaps the encoders inside ``model`` itself (no copy: for a model the caller
    owns, e.g. a fresh fused copy). A single encoder is wrapped, not swapped: with ``inplace=True``
    the returned :class:`MapSwiftFormerEncoder` shares the encoder's layers.
    """
    training = model.training
    m = model if inplace else deepcopy(model)
    if isinstance(m, SwiftFormerEncoder):
        return MapSwiftFormerEncoder(m).eval() if m.attention == "additive" else m
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SwiftFormerEncoder) and child.attention == "additive":
                setattr(parent, name, MapSwiftFormerEncoder(child))
    return m if training else m.eval()
