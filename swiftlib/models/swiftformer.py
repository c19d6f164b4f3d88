"""SwiftFormer: the exact network of the paper and its official code, with a swappable token mixer.

Paper: *SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile Vision
Applications*, Shaker et al., ICCV 2023 (arXiv 2303.15446). Official code: github.com/Amshaker/SwiftFormer.
An independent implementation lives in ``timm.models.swiftformer``; parameter names here follow timm,
so timm state dicts load as they are and official ones after
:func:`~swiftlib.models.checkpoints.remap_official_keys` (:mod:`swiftlib.models.checkpoints`).

Shape glossary (as in :mod:`swiftlib.attention`)::

    B batch   C channels   H, W map height/width   N = H * W tokens   D = C token width
    B, C, H, W  feature maps          B, N, D  token tensors          K  classes

Network (paper Fig. 3 / Table 4)::

    image [B, 3, H, W]
      stem: Conv3x3 s2 + BN + ReLU, Conv3x3 s2 + BN + ReLU     -> [B, C1, H/4, W/4]
      stage i (i = 1..4): [downsample Conv3x3 s2 + BN, i > 1]   -> [B, Ci, H/2^(i+1), W/2^(i+1)]
                          (depth_i - 1) x ConvEncoder
                          1 x SwiftFormerEncoder (local representation, attention, Mlp)
      head: BN -> global average pool -> Linear (+ distillation Linear)  -> [B, K]

Every stage ends with a SwiftFormerEncoder whose token mixer is any key of
:data:`swiftlib.attention.VARIANTS` (``attention="additive"`` is the paper's network).

Layout of this file: blocks bottom-up -> model -> variant table -> factories. Checkpoints are in
:mod:`swiftlib.models.checkpoints`, inference-time fusion (BatchNorm and layer-scale folding, the
attention's inference module) in :mod:`swiftlib.models.fuse`.
"""
from __future__ import annotations

import torch
from torch import nn

from swiftlib.attention import VARIANTS, build_attention
from swiftlib.attention_inference import check_dtype, check_sizes
from swiftlib.models.checkpoints import load_checkpoint

__all__ = [
    "LayerScale2d",
    "ConvEncoder",
    "LocalRepresentation",
    "Mlp",
    "SwiftFormerEncoder",
    "Stage",
    "SwiftFormer",
    "SWIFTFORMER_VARIANTS",
    "MODEL_NAMES",
    "PAPER_NAMES",
    "resolve_name",
    "create_model",
    "MIN_INPUT_SIZE",
]

#: Total stride of the network (stem 4 x three downsamplings 8): the smallest side it accepts.
MIN_INPUT_SIZE = 32


# ============================================================================ blocks (bottom-up)
class LayerScale2d(nn.Module):
    """Learnable per-channel scale ``gamma`` (``[C, 1, 1]``) on a map: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ConvEncoder(nn.Module):
    """Conv. Encoder (paper Sec. 3.3): ``x + ls * pw2(GELU(pw1(BN(DW3x3(x)))))``, layer scale init 1.0.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``; the 1x1 expansion is ``C -> mlp_ratio * C -> C``.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, layer_scale_init: float = 1.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(hidden, dim, 1)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x))                      # [B, C, H, W]
        y = self.pwconv2(self.act(self.pwconv1(y)))        # [B, C, H, W] -> [B, 4C, H, W] -> [B, C, H, W]
        return x + self.layer_scale(y)


class LocalRepresentation(ConvEncoder):
    """Local representation of the SwiftFormer Encoder: a ConvEncoder without expansion (``C -> C -> C``).

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, dim: int, layer_scale_init: float = 1.0):
        super().__init__(dim, mlp_ratio=1.0, layer_scale_init=layer_scale_init)


class Mlp(nn.Module):
    """Channel MLP of the SwiftFormer Encoder with 1x1 convs: ``fc2(GELU(fc1(BN(x))))``.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]`` via ``[B, hidden, H, W]``.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm1(x))))  # [B, C, H, W] -> [B, hidden, H, W] -> [B, C, H, W]


class SwiftFormerEncoder(nn.Module):
    """SwiftFormer Encoder (paper Fig. 3): local representation, token mixer, Mlp, each residual.

    ``x = LocalRepresentation(x)``; ``x = x + ls1 * attn(tokens(x))``; ``x = x + ls2 * Mlp(x)``,
    with ``ls1``, ``ls2`` initialised to 1e-5 and ``attn`` any :data:`swiftlib.attention.VARIANTS`
    entry working on tokens.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]``; the mixer sees ``[B, N, D]`` with ``N = H * W``, ``D = C``.
    """

    def __init__(self, dim: int, attention: str = "additive", mlp_ratio: float = 4.0,
                 layer_scale_init: float = 1e-5):
        super().__init__()
        self.attention = attention
        self.local_representation = LocalRepresentation(dim)
        self.attn = build_attention(attention, dim, num_heads=1)
        self.linear = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = LayerScale2d(dim, layer_scale_init)
        self.layer_scale_2 = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)               # [B, C, H, W] -> [B, N, D]
        y = self.attn(tokens).transpose(1, 2).reshape(B, C, H, W)  # [B, N, D] -> [B, C, H, W]
        x = x + self.layer_scale_1(y)
        return x + self.layer_scale_2(self.linear(x))


class Downsample(nn.Module):
    """Patch embedding between stages: Conv3x3 stride 2 + BN. ``[B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]``."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Stage(nn.Module):
    """One stage: optional downsampling, ``depth - 1`` ConvEncoders, then one SwiftFormerEncoder.

    Shapes: ``[B, C_prev, H, W] -> [B, C, H/2, W/2]`` with downsampling, else ``[B, C, H, W]`` unchanged.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, attention: str = "additive",
                 mlp_ratio: float = 4.0, downsample: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a stage needs depth >= 1 (its last block is the SwiftFormer Encoder), got {depth}")
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        blocks = [ConvEncoder(dim, mlp_ratio) for _ in range(depth - 1)]
        blocks.append(SwiftFormerEncoder(dim, attention, mlp_ratio))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# ============================================================================ model
def _stem(in_chans: int, dim: int) -> nn.Sequential:
    """Two Conv3x3 stride-2 + BN + ReLU: ``[B, 3, H, W] -> [B, C1, H/4, W/4]`` (ceil at each step)."""
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.ReLU(),
        nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
    )


class SwiftFormer(nn.Module):
    """The SwiftFormer network (paper Table 4); see the module docstring for the layout.

    Shapes: ``x [B, in_chans, H, W]`` with ``H, W >= 32`` -> logits ``[B, num_classes]``; with
    ``distillation=True`` training mode returns ``(head, head_dist)`` logits, eval mode their average.
    :meth:`forward_features` returns the normalised last map ``[B, C4, ceil(H/32), ceil(W/32)]``.
    """

    def __init__(self, widths=(48, 56, 112, 220), depths=(3, 3, 6, 4), num_classes: int = 1000,
                 attention: str = "additive", distillation: bool = True, mlp_ratio: float = 4.0,
                 in_chans: int = 3):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths and depths must have the same length, got {len(widths)} and {len(depths)}")
        if attention not in VARIANTS:
            raise ValueError(f"unknown attention {attention!r}; choose one of {sorted(VARIANTS)}")
        check_sizes("SwiftFormer", num_classes=num_classes, in_chans=in_chans)
        self.widths, self.depths = tuple(widths), tuple(depths)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.attention, self.distillation = attention, distillation
        self.stem = _stem(in_chans, widths[0])
        self.stages = nn.Sequential(*[
            Stage(widths[max(i - 1, 0)], widths[i], depths[i], attention, mlp_ratio, downsample=i > 0)
            for i in range(len(widths))
        ])
        self.num_features = widths[-1]
        self.total_stride = 4 * 2 ** (len(widths) - 1)  # stem 4, then 2 per downsampling: 32 for four stages
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.head_dist = nn.Linear(self.num_features, num_classes) if distillation else None
        self.channels_last = False  # fuse_for_inference turns this on: inputs are converted to NHWC
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Truncated normal (std 0.02) weights and zero biases for convs and linears, as the official code."""
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error if ``x`` is not ``[B, in_chans, H, W]`` (H, W >= 32) of the model's dtype
        (another floating dtype passes under autocast), or if training BatchNorms would see one value per channel."""
        if torch.jit.is_tracing():  # fvcore / ONNX export: shapes are fixed constants there
            return
        expected = f"[B, {self.in_chans}, H, W] with H, W >= {MIN_INPUT_SIZE}"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SwiftFormer expects a torch.Tensor {expected}, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"SwiftFormer expects images {expected}; got rank {x.dim()} shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"SwiftFormer expects images {expected}; got {x.shape[1]} channels "
                             f"(shape {tuple(x.shape)})")
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"SwiftFormer expects images {expected} (the network's total stride); got "
                             f"H, W = {x.shape[2]}, {x.shape[3]}")
        check_dtype(x, self.stem[0].weight.dtype, "SwiftFormer", what="images")
        self._check_batchnorm_values(x)

    def _check_batchnorm_values(self, x: torch.Tensor) -> None:
        """In training, BatchNorm needs more than one value per channel; the last maps hold
        ``B * ceil(H / stride) * ceil(W / stride)`` of them (one for a single image of at most 32 px a side)."""
        if not (isinstance(self.norm, nn.BatchNorm2d) and self.norm.training):
            return
        h, w = (-(-side // self.total_stride) for side in x.shape[2:])  # ceil: each stride-2 conv rounds up
        if x.shape[0] * h * w == 1:
            raise ValueError(
                f"a training-mode SwiftFormer got a batch of 1 image of {x.shape[2]}x{x.shape[3]} px, whose last "
                f"maps are 1x1: BatchNorm needs more than one value per channel in training. Use a batch of at "
                f"least 2, eval mode (model.eval()), or images larger than {self.total_stride} px on a side")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, C4, H/32, W/32]`` (ceil), after the head's BatchNorm."""
        self.check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # same [B, 3, H, W], NHWC strides
        x = self.stem(x)                                     # [B, 3, H, W] -> [B, C1, H/4, W/4]
        x = self.stages(x)                                   # -> [B, C4, H/32, W/32]
        return self.norm(x)

    def forward_head(self, x: torch.Tensor):
        """``[B, C4, h, w] -> [B, K]`` (or the pair of head outputs while training with distillation)."""
        x = x.mean(dim=(2, 3))                               # [B, C4, h, w] -> [B, C4]
        if self.head_dist is None:
            return self.head(x)
        out, out_dist = self.head(x), self.head_dist(x)
        if self.training:
            return out, out_dist
        return (out + out_dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters that get no weight decay: every token mixer's own
        ``no_weight_decay()`` (the transposed attention's temperatures; none for the additive one).
        timm's ``create_optimizer_v2(model, ...)`` puts them in a group with ``weight_decay=0``."""
        return {f"{name}.{p}" for name, m in self.named_modules()
                if m is not self and hasattr(m, "no_weight_decay") for p in m.no_weight_decay()}

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised head(s) for ``num_classes`` classes (fine-tuning)."""
        check_sizes("reset_classifier", num_classes=num_classes)
        self.num_classes = num_classes
        ref = self.head.weight
        self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
        self._init_weights(self.head)
        if self.head_dist is not None:
            self.head_dist = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            self._init_weights(self.head_dist)


# ============================================================================ variant table
#: Paper Table 4 / official code: widths C1..C4 and depths per stage.
SWIFTFORMER_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "swiftformer_xs": {"widths": (48, 56, 112, 220), "depths": (3, 3, 6, 4)},
    "swiftformer_s": {"widths": (48, 64, 168, 224), "depths": (3, 3, 9, 6)},
    "swiftformer_l1": {"widths": (48, 96, 192, 384), "depths": (4, 3, 10, 5)},
    "swiftformer_l3": {"widths": (64, 128, 320, 512), "depths": (4, 4, 12, 6)},
}
MODEL_NAMES: list[str] = list(SWIFTFORMER_VARIANTS)
#: The names the paper and its tables use.
PAPER_NAMES: dict[str, str] = {
    "swiftformer_xs": "SwiftFormer-XS",
    "swiftformer_s": "SwiftFormer-S",
    "swiftformer_l1": "SwiftFormer-L1",
    "swiftformer_l3": "SwiftFormer-L3",
}
_PREFIX = "swiftformer_"


def resolve_name(name: str) -> str:
    """The canonical name (a key of :data:`SWIFTFORMER_VARIANTS`) of a SwiftFormer spelled ``name``.

    Case, ``-`` / ``_`` / spaces and the ``swiftformer`` prefix are free: ``"xs"``, ``"swiftformer_xs"``,
    ``"SwiftFormer-XS"`` all give ``"swiftformer_xs"``. Every name-taking function of swiftlib
    (:func:`create_model`, the analytic costs, export, the benchmarks) resolves names here.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())
    if not key.startswith(_PREFIX):
        key = _PREFIX + key
    if key not in SWIFTFORMER_VARIANTS:
        short = ", ".join(repr(n[len(_PREFIX):]) for n in MODEL_NAMES)
        raise ValueError(f"unknown model {name!r}; choose one of {MODEL_NAMES} (or short: {short}; "
                         f"case and '-' vs '_' do not matter)")
    return key


# ============================================================================ factories
def create_model(name: str, num_classes: int = 1000, attention: str = "additive", distillation: bool = True,
                 checkpoint=None, **kw) -> SwiftFormer:
    """Build ``swiftformer_{xs,s,l1,l3}`` (any spelling :func:`resolve_name` accepts); ``attention`` picks the token mixer of every stage's last block.

    ``checkpoint`` (a path or state dict in any layout :func:`load_checkpoint` accepts) is loaded
    after construction; a different ``num_classes`` re-initialises the head with a warning.
    Extra keyword arguments go to :class:`SwiftFormer` (``mlp_ratio``, ``in_chans``).
    """
    key = resolve_name(name)
    model = SwiftFormer(**SWIFTFORMER_VARIANTS[key], num_classes=num_classes, attention=attention,
                        distillation=distillation, **kw)
    model.variant_name = key
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
