"""The four token mixers of SwiftFormer's Fig. 2, one interface, and their analytic costs.

Papers: SwiftFormer (Shaker et al., ICCV 2023, arXiv 2303.15446), MobileViTv2 (Mehta & Rastegari,
arXiv 2206.02680), XCiT (El-Nouby et al., 2021) / EdgeNeXt (Maaz et al., 2022).

Shape glossary (used across swiftlib)::

    B  batch            N  tokens (H * W for a feature map)     D  channels (embedding dim)
    h  heads            d' = D / h, channels per head
    B, N, D  token tensors            B, C, H, W  feature maps (C == D)

Every class here maps ``x: [B, N, D] -> [B, N, D]`` and is permutation-equivariant over tokens:

=====================  =======================================  ==========================
variant (``VARIANTS``)  class                                    cost in N
=====================  =======================================  ==========================
``"self"``             :class:`SelfAttention` (Fig. 2a)          O(N^2 D)
``"transposed"``       :class:`TransposedAttention` (Fig. 2b)    O(N D^2 / h)
``"separable"``        :class:`SeparableAttention` (Fig. 2c)     O(N D)
``"additive"``         :class:`EfficientAdditiveAttention` (2d)  O(N D)
=====================  =======================================  ==========================

``forward(x, return_attn=True)`` also returns what each mixer "looks at" (see each class); the
default path computes nothing extra. Every forward first checks ``x``: ``[B, N, D]`` tokens of the
module's dtype (a float64 or integer ``x`` into a float32 module is a ValueError naming both dtypes;
another floating dtype passes under ``torch.autocast`` only, as mixed-precision training needs). The
cost functions take positive integer sizes (a ValueError names the argument otherwise). Each ``forward`` reads as its paper's equations; the fast
inference form of the additive attention is a module of its own,
:class:`~swiftlib.attention_inference.EfficientAdditiveAttentionInference`
(``EfficientAdditiveAttention.reparameterize()`` returns one).

Counting convention (stated once, used everywhere in swiftlib): **1 MAC = one multiply-add**. The
analytic ``macs()`` counts the multiply-adds of matrix products only -- linear layers (weights, not
biases), ``Q K^T``-style products and weighted sums over tokens -- which is what fvcore reports and
what the paper's GMACs are. ``torch.utils.flop_counter`` reports FLOPs = 2 x MACs. Elementwise work
(normalisation, softmax, activations, residual adds) is not in ``macs()``;
:mod:`swiftlib.flops` counts it separately.

``activation_memory()`` counts the elements of every tensor the forward creates for one sample --
one term per line of its equations, including the per-token norms of the L2 normalisations and,
for self-attention, the explicit ``return_attn=True`` path's ``N x N`` maps (the default fused
kernel never materialises them) -- inputs and output excluded, times ``batch * bytes_per_element``:
the analytic side of the memory :func:`swiftlib.measure.peak_memory` measures. (With ``B > 1``,
``torch.matmul`` may also copy the per-head operands of the multi-head variants; those copies are
not part of the algorithm and not counted.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from swiftlib.attention_inference import EfficientAdditiveAttentionInference, check_sizes, check_tokens

__all__ = [
    "SelfAttention",
    "TransposedAttention",
    "SeparableAttention",
    "EfficientAdditiveAttention",
    "VARIANTS",
    "build_attention",
    "variant_heads",
    "attention_macs",
    "attention_memory",
    "l2_normalize",
]


def _check_tokens(m: nn.Module, x: torch.Tensor) -> None:
    """:func:`~swiftlib.attention_inference.check_tokens` for mixer ``m``: ``[B, N, m.dim]`` tokens of the
    dtype of its weights (another floating dtype passes under autocast only)."""
    check_tokens(x, m.dim, getattr(m, m.output_layer).weight.dtype, type(m).__name__)


def l2_normalize(x: torch.Tensor, dim, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||_2, eps)`` along ``dim`` (an int or a tuple): ``F.normalize`` with a broadcasting
    divide. (``F.normalize`` expands the norm to ``x``'s shape first, which Core ML turns into a ``tile``
    op that copies the whole tensor; the Neural Engine pays for it.)"""
    return x / x.norm(p=2, dim=dim, keepdim=True).clamp_min(eps)


def _check_heads(dim: int, num_heads: int, name: str) -> None:
    check_sizes(name, dim=dim, num_heads=num_heads)
    if dim % num_heads:
        raise ValueError(
            f"{name}: dim={dim} is not divisible by num_heads={num_heads}; tokens of shape [B, N, D] "
            f"are split into heads of D / num_heads channels")


class _HeadsAttention(nn.Module):
    """What self- and transposed attention share: ``qkv`` (``D -> 3D``, split into ``h`` heads of
    ``d' = D / h`` channels) and the output projection ``proj`` (``D -> D``)."""

    multi_head = True  # splits D into num_heads heads (else num_heads must be 1)
    output_layer = "proj"  # its last linear layer (a layer scale after it folds into it)

    def __init__(self, dim: int, num_heads: int = 1, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, num_heads, type(self).__name__)
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)


class SelfAttention(_HeadsAttention):
    """Multi-head self-attention, SwiftFormer Fig. 2a (Vaswani et al.).

    ``Q, K, V = x W_qkv`` (per head ``d' = D / h`` channels),
    ``out = concat_h softmax(Q_h K_h^T / sqrt(d')) V_h  W_o``.

    Shapes: ``x [B, N, D] -> [B, N, D]``; attention map ``[B, h, N, N]``.
    ``forward(x, return_attn=True)`` returns ``(out, attn)`` with that map (rows sum to 1).
    Parameters are laid out like ``nn.MultiheadAttention``: ``qkv`` holds ``in_proj_weight``.
    """

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(self, x)
        B, N, D = x.shape
        h, dh = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, N, 3, h, dh).permute(2, 0, 3, 1, 4)  # [B, N, 3D] -> [3, B, h, N, d']
        q, k, v = qkv.unbind(0)                                             # each [B, h, N, d']
        if return_attn:
            attn = ((q * dh ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, N, N]
            out = attn @ v                                                  # [B, h, N, d']
        else:
            out = F.scaled_dot_product_attention(q, k, v)                   # [B, h, N, d']
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))               # [B, h, N, d'] -> [B, N, D]
        return (out, attn) if return_attn else out

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qkv 3nD^2 + QK^T n^2 D + AV n^2 D + proj nD^2 (independent of the head count)."""
        check_sizes("SelfAttention.macs", n=n, d=d, heads=heads)
        return 4 * n * d * d + 2 * n * n * d

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qkv (3nD) + scaled queries (nD) + scores and softmax (2 h n^2) + context (nD) + heads merged (nD)."""
        check_sizes("SelfAttention.activation_memory", n=n, d=d, heads=heads, batch=batch,
                    bytes_per_element=bytes_per_element)
        return batch * bytes_per_element * (6 * n * d + 2 * heads * n * n)


class TransposedAttention(_HeadsAttention):
    """Transposed ("cross-covariance") attention, SwiftFormer Fig. 2b: EdgeNeXt's STDA / XCiT's XCA.

    Per head, with ``Q_h, K_h, V_h`` of shape ``[N, d']`` and columns L2-normalised over tokens
    (``Qhat_h``, ``Khat_h``), in the order the code computes it (each softmax over a row)::

        A_h = softmax(tau_h * Qhat_h^T Khat_h)      # [d', d'] map across channels, rows sum to 1
        out_h = (A_h V_h^T)^T = V_h A_h^T           # [d', d'] @ [d', N] -> [d', N] -> [N, d']

    so the cost is linear in N. ``tau_h`` is a learnable temperature per head (initialised to 1),
    the replacement for ``1 / sqrt(d)``; ``out = concat_h out_h W_o``.

    Shapes: ``x [B, N, D] -> [B, N, D]``; channel map ``[B, h, d', d']``.
    ``forward(x, return_attn=True)`` returns ``(out, attn)`` with that map (rows sum to 1).
    Parameter names follow ``timm.models.xcit.XCA`` (``qkv``, ``temperature``, ``proj``);
    :meth:`no_weight_decay` names the temperature, which gets none.
    """

    def __init__(self, dim: int, num_heads: int = 1, qkv_bias: bool = True):
        super().__init__(dim, num_heads, qkv_bias)
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))  # tau_h, one per head

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(self, x)
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)                                  # [B, N, 3D] -> 3 x [B, h, d', N]
        q = l2_normalize(q, dim=-1)                               # unit norm over tokens
        k = l2_normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # [B, h, d', d']
        out = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, D)   # [B, h, d', N] -> [B, N, D]
        out = self.proj(out)                                     # [B, N, D]
        return (out, attn) if return_attn else out

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """``{"temperature"}``: no weight decay on ``tau_h`` (as XCiT, EdgeNeXt and timm): decay would pull the
        temperature towards 0 and flatten every softmax. timm's ``create_optimizer_v2`` reads this."""
        return {"temperature"}

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qkv 3nD^2 + Q^T K and AV each n D^2 / h + proj nD^2."""
        check_sizes("TransposedAttention.macs", n=n, d=d, heads=heads)
        return 4 * n * d * d + 2 * n * d * d // heads

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qkv (3nD) + normalised q, k (2nD) and their norms, clamped (4D) + map, scaled map and softmax
        (3 D^2 / h) + context (nD) + heads merged (nD)."""
        check_sizes("TransposedAttention.activation_memory", n=n, d=d, heads=heads, batch=batch,
                    bytes_per_element=bytes_per_element)
        return batch * bytes_per_element * (7 * n * d + 3 * d * d // heads + 4 * d)


class SeparableAttention(nn.Module):
    """Separable self-attention of MobileViTv2, SwiftFormer Fig. 2c.

    ``[I | K | V] = x W_qkv`` with ``I`` one column, ``c = softmax_N(I)`` (context scores, ``[N]``),
    ``c_v = sum_i c_i K_i`` (context vector, ``[D]``), ``out = (ReLU(V) * c_v) W_o``.

    Shapes: ``x [B, N, D] -> [B, N, D]``; context scores ``[B, N]``.
    ``forward(x, return_attn=True)`` returns ``(out, scores)`` (scores sum to 1 over tokens).
    Parameter names follow ``timm.models.mobilevit.LinearSelfAttention`` (``qkv_proj``,
    ``out_proj``), as linear layers instead of its 1x1 convolutions.
    """

    multi_head = False  # splits D into num_heads heads (else num_heads must be 1)
    output_layer = "out_proj"  # its last linear layer (a layer scale after it folds into it)

    def __init__(self, dim: int, num_heads: int = 1, bias: bool = True):
        super().__init__()
        if num_heads != 1:
            raise ValueError(f"SeparableAttention has a single context vector (num_heads=1), got num_heads={num_heads}")
        _check_heads(dim, 1, type(self).__name__)
        self.dim = dim
        self.qkv_proj = nn.Linear(dim, 1 + 2 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(self, x)
        D = self.dim
        query, key, value = self.qkv_proj(x).split([1, D, D], dim=-1)  # [B, N, 1 + 2D] -> [B, N, 1], 2 x [B, N, D]
        scores = query.softmax(dim=1)                                  # [B, N, 1], sums to 1 over N
        context = scores.transpose(1, 2) @ key                         # [B, 1, N] @ [B, N, D] -> [B, 1, D]
        out = self.out_proj(F.relu(value) * context)                   # broadcast over tokens
        return (out, scores.squeeze(-1)) if return_attn else out

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qkv_proj nD(1 + 2D) + context nD + out_proj nD^2."""
        check_sizes("SeparableAttention.macs", n=n, d=d, heads=heads)
        return n * d * (1 + 2 * d) + n * d + n * d * d

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qkv (n(1 + 2D)) + scores (n) + context (D) + ReLU(V) * c_v (2nD)."""
        check_sizes("SeparableAttention.activation_memory", n=n, d=d, heads=heads, batch=batch,
                    bytes_per_element=bytes_per_element)
        return batch * bytes_per_element * (n * (1 + 2 * d) + n + d + 2 * n * d)


class EfficientAdditiveAttention(nn.Module):
    """SwiftFormer's efficient additive attention, Fig. 2d / Eq. 4-6, as the released weights were trained.

    ``Q = l2norm(x W_q)``, ``K = l2norm(x W_k)`` (per token), ``alpha = Q w_g / sqrt(D)`` (``[N]``),
    ``a = alpha / ||alpha||_2`` (L2 over tokens -- the official code's fix of July 2023; the first
    release applied a softmax to an ``[N, 1]`` tensor, which is all ones), ``G = a^T Q = sum_i a_i Q_i``
    (global query, ``[D]``), ``out = final(Proj(G * K) + Q)``. ``final`` is an extra linear layer of
    the official code, absent from Eq. 6. ``G`` is broadcast over tokens, never materialised.

    Shapes: ``x [B, N, D] -> [B, N, D]``; token scores ``a`` ``[B, N]``.
    ``forward(x, return_attn=True)`` returns ``(out, a)`` (``a`` has unit L2 norm over tokens).

    The query and key projections are one fused ``qk`` linear layer. Official (``to_query``,
    ``to_key``, ``Proj``) and timm (``to_query``, ``to_key``, ``proj``) state dicts load directly:
    a load hook maps their keys.

    ``G`` is written as the matrix product ``a^T Q`` (``[B, 1, N] @ [B, N, D]``), so fvcore, torch's
    FLOP counter and :meth:`macs` agree (``4ND^2 + 2ND``). The official code (and timm) sums ``a * Q``
    elementwise over the tokens instead, which fvcore counts as zero: ND MACs less per attention.

    For inference, :meth:`reparameterize` returns an
    :class:`~swiftlib.attention_inference.EfficientAdditiveAttentionInference` with ``Proj`` merged
    into ``final`` and a faster forward (same function, same MACs);
    :func:`swiftlib.models.fuse_for_inference` swaps it in for a whole SwiftFormer.
    """

    multi_head = False  # splits D into num_heads heads (else num_heads must be 1)
    output_layer = "final"  # its last linear layer (a layer scale after it folds into it)

    def __init__(self, dim: int, num_heads: int = 1):
        super().__init__()
        if num_heads != 1:
            raise ValueError(f"EfficientAdditiveAttention is single-head (num_heads=1), got num_heads={num_heads}")
        _check_heads(dim, 1, type(self).__name__)
        self.dim = dim
        self.scale = dim ** -0.5
        self.qk = nn.Linear(dim, 2 * dim)                 # [to_query; to_key]
        self.w_g = nn.Parameter(torch.randn(dim, 1))
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)
        self._register_load_state_dict_pre_hook(self._map_reference_keys)

    @staticmethod
    def _map_reference_keys(state_dict, prefix, *args):
        """Key map for official/timm checkpoints: to_query + to_key -> qk, Proj -> proj."""
        for kind in ("weight", "bias"):
            q, k = f"{prefix}to_query.{kind}", f"{prefix}to_key.{kind}"
            if q in state_dict and k in state_dict:
                state_dict[f"{prefix}qk.{kind}"] = torch.cat([state_dict.pop(q), state_dict.pop(k)], dim=0)
            old = f"{prefix}Proj.{kind}"
            if old in state_dict:
                state_dict[f"{prefix}proj.{kind}"] = state_dict.pop(old)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(self, x)
        q, k = self.qk(x).chunk(2, dim=-1)                # [B, N, D] -> [B, N, 2D] -> 2 x [B, N, D]
        q = l2_normalize(q, dim=-1)                        # Qhat: unit L2 norm per token
        k = l2_normalize(k, dim=-1)                        # Khat
        alpha = q @ self.w_g * self.scale                 # [B, N, D] @ [D, 1] -> [B, N, 1]
        a = l2_normalize(alpha, dim=1)                     # unit L2 norm over the tokens
        g = a.transpose(1, 2) @ q                         # [B, 1, N] @ [B, N, D] -> [B, 1, D] = a^T Qhat
        out = self.final(self.proj(g * k) + q)            # G broadcast over the tokens; [B, N, D]
        return (out, a.squeeze(-1)) if return_attn else out

    def output_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A, M, c)`` with ``final(Proj(G * Khat) + Qhat) = Qhat A + (G * Khat) M + c``.

        ``A = W_f^T`` and ``M = W_p^T W_f^T`` (each ``[D, D]``, input x output), ``c = W_f b_p + b_f``
        (``[D]``); detached. What :meth:`reparameterize` merges, and what an export builds a merged
        output layer from.
        """
        w_f, b_f = self.final.weight.detach(), self.final.bias.detach()
        return w_f.t(), self.proj.weight.detach().t() @ w_f.t(), torch.addmv(b_f, w_f, self.proj.bias.detach())

    @torch.no_grad()
    def reparameterize(self) -> EfficientAdditiveAttentionInference:
        """A new inference module computing the same function; ``self`` is left unchanged.

        ``final(Proj(G * Khat) + Qhat) = [Qhat | Khat] @ [W_f | W_f W_p diag(G)]^T + (W_f b_p + b_f)``:
        the returned :class:`~swiftlib.attention_inference.EfficientAdditiveAttentionInference` holds
        ``merged_weight = [W_f | W_f W_p]`` (``[D, 2D]``), ``merged_bias = W_f b_p + b_f`` and copies of
        ``qk`` and ``w_g``; its docstring gives the algebra. Use it as ``fast = attn.eval().reparameterize()``.
        Checkpoints (official, timm, swiftlib) load into the reference, before.
        """
        a, m, c = self.output_weights()
        merged = torch.cat((a, m)).t().contiguous()       # [2D, D] -> [D, 2D] = [W_f | W_f W_p]
        return EfficientAdditiveAttentionInference(self.qk.weight, self.qk.bias, self.w_g, merged, c).eval()

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qk 2nD^2 + Q w_g nD + G = a^T Q nD + Proj nD^2 + final nD^2."""
        check_sizes("EfficientAdditiveAttention.macs", n=n, d=d, heads=heads)
        return 4 * n * d * d + 2 * n * d

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qk (2nD) + Qhat, Khat (2nD) and their norms, clamped (4n) + Q w_g, alpha (2n) + a (n) and its norm,
        clamped (2) + G (D) + G * K, Proj(G * K), Proj + Q (3nD)."""
        check_sizes("EfficientAdditiveAttention.activation_memory", n=n, d=d, heads=heads, batch=batch,
                    bytes_per_element=bytes_per_element)
        return batch * bytes_per_element * (7 * n * d + 7 * n + d + 2)


VARIANTS: dict[str, type[nn.Module]] = {
    "self": SelfAttention,
    "transposed": TransposedAttention,
    "separable": SeparableAttention,
    "additive": EfficientAdditiveAttention,
}


def _variant(name: str) -> type[nn.Module]:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown attention {name!r}; choose one of {sorted(VARIANTS)}") from None


def build_attention(name: str, dim: int, num_heads: int = 1, **kwargs) -> nn.Module:
    """``VARIANTS[name](dim, num_heads, ...)`` with a clear error for an unknown name."""
    return _variant(name)(dim, num_heads=num_heads, **kwargs)


def variant_heads(name: str, heads: int) -> int:
    """The head count variant ``name`` runs with when ``heads`` are asked for: ``heads`` for the
    multi-head variants (``multi_head``), 1 for the single-head ones."""
    return heads if _variant(name).multi_head else 1


def attention_macs(name: str, n: int, d: int, heads: int = 1) -> int:
    """Analytic multiply-accumulates of one forward of variant ``name`` on ``[1, n, d]`` tokens."""
    check_sizes("attention_macs", n=n, d=d, heads=heads)
    _check_heads(d, heads, name)
    return _variant(name).macs(n, d, heads)


def attention_memory(name: str, n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
    """Analytic bytes of intermediate activations of one forward of variant ``name``."""
    check_sizes("attention_memory", n=n, d=d, heads=heads, batch=batch, bytes_per_element=bytes_per_element)
    _check_heads(d, heads, name)
    return _variant(name).activation_memory(n, d, heads, batch=batch, bytes_per_element=bytes_per_element)
