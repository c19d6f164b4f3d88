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
default path computes nothing extra.

Counting convention (stated once, used everywhere in swiftlib): **1 MAC = one multiply-add**. The
analytic ``macs()`` counts the multiply-adds of matrix products only -- linear layers (weights, not
biases), ``Q K^T``-style products and weighted sums over tokens -- which is what fvcore reports and
what the paper's GMACs are. ``torch.utils.flop_counter`` reports FLOPs = 2 x MACs. Elementwise work
(normalisation, softmax, activations, residual adds) is not in ``macs()``;
:mod:`swiftlib.flops` counts it separately.

``activation_memory()`` counts the elements of the intermediate tensors one forward materialises
(inputs and outputs excluded), times ``bytes_per_element``: the analytic side of the measured peak
memory in :mod:`swiftlib.bench`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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
]


def _check_tokens(x: torch.Tensor, dim: int, name: str) -> None:
    """Raise a ValueError naming the expected ``[B, N, D]`` shape if ``x`` does not have it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor of shape [B, N, {dim}], got {type(x).__name__}")
    if x.dim() != 3:
        hint = " (a [B, C, H, W] map? flatten it: x.flatten(2).transpose(1, 2))" if x.dim() == 4 else ""
        raise ValueError(
            f"{name} expects tokens of shape [B, N, D] with D={dim}; got rank {x.dim()} "
            f"shape {tuple(x.shape)}{hint}")
    if x.shape[-1] != dim:
        raise ValueError(
            f"{name} expects tokens of shape [B, N, D] with D={dim}; got last dimension "
            f"{x.shape[-1]} (shape {tuple(x.shape)})")


def _check_heads(dim: int, num_heads: int, name: str) -> None:
    if dim <= 0 or num_heads <= 0:
        raise ValueError(f"{name}: dim and num_heads must be positive, got dim={dim}, num_heads={num_heads}")
    if dim % num_heads:
        raise ValueError(
            f"{name}: dim={dim} is not divisible by num_heads={num_heads}; tokens of shape [B, N, D] "
            f"are split into heads of D / num_heads channels")


_EPS = 1e-12  # F.normalize's default eps: x / max(||x||, eps)


def _l2_normalize(x: torch.Tensor, dim: int, eps: float = _EPS) -> torch.Tensor:
    """``F.normalize(x, dim=dim, eps=eps)`` in three kernels: x * rsqrt(max(sum x^2, eps^2))."""
    return x * x.square().sum(dim, keepdim=True).clamp_min(eps * eps).rsqrt()


class SelfAttention(nn.Module):
    """Multi-head self-attention, SwiftFormer Fig. 2a (Vaswani et al.).

    ``Q, K, V = x W_qkv`` (per head ``d' = D / h`` channels),
    ``out = concat_h softmax(Q_h K_h^T / sqrt(d')) V_h  W_o``.

    Shapes: ``x [B, N, D] -> [B, N, D]``; attention map ``[B, h, N, N]``.
    ``forward(x, return_attn=True)`` returns ``(out, attn)`` with that map (rows sum to 1).
    Parameters are laid out like ``nn.MultiheadAttention``: ``qkv`` holds ``in_proj_weight``.
    """

    multi_head = True  # splits D into num_heads heads (else num_heads must be 1)
    output_layer = "proj"  # its last linear layer (a layer scale after it folds into it)

    def __init__(self, dim: int, num_heads: int = 1, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, num_heads, type(self).__name__)
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(x, self.dim, type(self).__name__)
        B, N, D = x.shape
        h, dh = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(B, N, 3, h, dh).permute(2, 0, 3, 1, 4)  # [B, N, 3D] -> [3, B, h, N, d']
        q, k, v = qkv.unbind(0)                                             # each [B, h, N, d']
        if return_attn:
            attn = (q @ k.transpose(-2, -1) * dh ** -0.5).softmax(dim=-1)   # [B, h, N, N]
            out = attn @ v                                                  # [B, h, N, d']
        else:
            out = F.scaled_dot_product_attention(q, k, v)                   # [B, h, N, d']
        out = self.proj(out.transpose(1, 2).reshape(B, N, D))               # [B, h, N, d'] -> [B, N, D]
        return (out, attn) if return_attn else out

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qkv 3nD^2 + QK^T n^2 D + AV n^2 D + proj nD^2 (independent of the head count)."""
        return 4 * n * d * d + 2 * n * n * d

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qkv (3nD) + scores and softmax (2 h n^2) + context (nD)."""
        return batch * bytes_per_element * (3 * n * d + 2 * heads * n * n + n * d)


class TransposedAttention(nn.Module):
    """Transposed ("cross-covariance") attention, SwiftFormer Fig. 2b: EdgeNeXt's STDA / XCiT's XCA.

    Per head, with ``Q_h, K_h, V_h`` of shape ``[N, d']`` and columns L2-normalised over tokens:
    ``out_h = V_h softmax(tau_h * Khat_h^T Qhat_h)`` -- a ``d' x d'`` map across channels, so the cost
    is linear in N. ``tau_h`` is a learnable temperature per head (initialised to 1), the
    replacement for ``1 / sqrt(d)``.

    Shapes: ``x [B, N, D] -> [B, N, D]``; channel map ``[B, h, d', d']``.
    ``forward(x, return_attn=True)`` returns ``(out, attn)`` with that map (rows sum to 1).
    Parameter names follow ``timm.models.xcit.XCA`` (``qkv``, ``temperature``, ``proj``).
    """

    multi_head = True  # splits D into num_heads heads (else num_heads must be 1)
    output_layer = "proj"  # its last linear layer (a layer scale after it folds into it)

    def __init__(self, dim: int, num_heads: int = 1, qkv_bias: bool = True):
        super().__init__()
        _check_heads(dim, num_heads, type(self).__name__)
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(x, self.dim, type(self).__name__)
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)                                  # [B, N, 3D] -> 3 x [B, h, d', N]
        q = _l2_normalize(q, dim=-1)                             # unit norm over tokens
        k = _l2_normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # [B, h, d', d']
        out = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, D)   # [B, h, d', N] -> [B, N, D]
        out = self.proj(out)
        return (out, attn) if return_attn else out

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qkv 3nD^2 + Q^T K and AV each n D^2 / h + proj nD^2."""
        return 4 * n * d * d + 2 * n * d * d // heads

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qkv (3nD) + normalised q, k (2nD) + scores and softmax (2 D^2 / h) + context (nD)."""
        return batch * bytes_per_element * (6 * n * d + 2 * d * d // heads)


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
        _check_tokens(x, self.dim, type(self).__name__)
        D = self.dim
        query, key, value = self.qkv_proj(x).split([1, D, D], dim=-1)  # [B, N, 1 + 2D] -> [B, N, 1], 2 x [B, N, D]
        scores = query.softmax(dim=1)                                  # [B, N, 1], sums to 1 over N
        context = scores.transpose(1, 2) @ key                         # [B, 1, N] @ [B, N, D] -> [B, 1, D]
        out = self.out_proj(F.relu(value) * context)                   # broadcast over tokens
        return (out, scores.squeeze(-1)) if return_attn else out

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qkv_proj nD(1 + 2D) + context nD + out_proj nD^2."""
        return n * d * (1 + 2 * d) + n * d + n * d * d

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qkv (n(1 + 2D)) + scores (n) + context (D) + ReLU(V) * c_v (2nD)."""
        return batch * bytes_per_element * (n * (1 + 2 * d) + n + d + 2 * n * d)


class EfficientAdditiveAttention(nn.Module):
    """SwiftFormer's efficient additive attention, Fig. 2d / Eq. 4-6, as the released weights were trained.

    ``Q = l2norm(x W_q)``, ``K = l2norm(x W_k)`` (per token), ``alpha = Q w_g / sqrt(D)`` (``[N]``),
    ``a = alpha / ||alpha||_2`` (L2 over tokens -- the official code's fix of July 2023; the first
    release applied a softmax to an ``[N, 1]`` tensor, which is all ones), ``G = sum_i a_i Q_i``
    (global query, ``[D]``), ``out = final(Proj(G * K) + Q)``. ``final`` is an extra linear layer of
    the official code, absent from Eq. 6. ``G`` is broadcast over tokens, never materialised.

    Shapes: ``x [B, N, D] -> [B, N, D]``; token scores ``a`` ``[B, N]``.
    ``forward(x, return_attn=True)`` returns ``(out, a)`` (``a`` has unit L2 norm over tokens).

    The query and key projections are one fused ``qk`` linear layer. Official (``to_query``,
    ``to_key``, ``Proj``) and timm (``to_query``, ``to_key``, ``proj``) state dicts load directly:
    a load hook maps their keys.

    How the forward computes it (same function, same matrix products, fewer passes and ops):
    ``[Q | K]`` comes from one ``[N, D] @ [D, 2D]`` product and is scaled in place by ``1 / ||.||``
    per token and half (a copy when autograd needs the original). Where a sample has at least as
    many tokens as channels (``N >= D``), ``G`` acts on the ``D x D`` weight, not on the ``N x D``
    keys: ``Proj(G * K) = K (diag(G) W_p^T) + b_p``; on smaller maps (the last stage at 224 px,
    every stage at 32 px) it scales the keys, the smaller of the two. The ``Proj`` product
    accumulates onto ``Q`` (in inference in place, in ``Q``'s columns of ``[Q | K]``). The ``1 / sqrt(D)``
    of ``alpha`` cancels in ``a = alpha / ||alpha||`` and is not applied (``scale`` stays as an
    attribute for readers of the equations). Matrix products: ``qk`` 2ND^2, ``Q w_g`` ND,
    ``a^T Q`` ND, ``Proj`` ND^2, ``final`` ND^2 -- exactly :meth:`macs`.

    For inference, :meth:`reparameterize` merges ``Proj`` into ``final`` (one ``[N, 2D] @ [2D, D]``
    product, the same MACs, fewer ops); :func:`swiftlib.models.fuse_for_inference` does it for a
    whole SwiftFormer. :meth:`activation_memory` counts the official algorithm's intermediates
    (7ND + 2N + D elements); in inference this forward creates 2ND + 3N + D^2 + D + 1
    (reparameterized: 2ND + 3N + 3D^2 + D + 1) for ``N >= D``, and 2ND + 3N + D + 1
    (reparameterized: 2ND + 3N + 4D + 1) for ``N < D``, output excluded.
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
        self.register_parameter("merged_weight", None)    # [W_f | W_f W_p], [D, 2D], once reparameterized
        self.register_parameter("merged_bias", None)      # W_f b_p + b_f, [D]
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

    @property
    def reparameterized(self) -> bool:
        """Whether :meth:`reparameterize` has merged ``Proj`` into ``final``."""
        return self.merged_bias is not None

    def output_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A, M, c)`` with ``final(Proj(G * Khat) + Qhat) = Qhat A + (G * Khat) M + c``, in either form.

        ``A = W_f^T`` and ``M = W_p^T W_f^T`` (each ``[D, D]``, input x output), ``c = W_f b_p + b_f``
        (``[D]``); detached. The weights :meth:`reparameterize` stores, and what an export builds a
        merged output layer from.
        """
        if self.reparameterized:
            w = self.merged_weight.detach()
            return w[:, :self.dim].t(), w[:, self.dim:].t(), self.merged_bias.detach()
        wf_t = self.final.weight.detach().t()                         # [D, D] = W_f^T
        m = self.proj.weight.detach().t() @ wf_t                      # [D, D] = W_p^T W_f^T
        return wf_t, m, torch.addmv(self.final.bias.detach(), self.final.weight.detach(), self.proj.bias.detach())

    @torch.no_grad()
    def reparameterize(self) -> "EfficientAdditiveAttention":
        """Merge ``Proj`` into ``final`` for inference, in place; returns ``self``.

        ``final(Proj(G * Khat) + Qhat) = [Qhat | Khat] @ [W_f^T ; diag(G) W_p^T W_f^T] + (W_f b_p + b_f)``,
        so ``merged_weight`` (``[W_f | W_f W_p]``, ``[D, 2D]``, out x in like a Linear's) and
        ``merged_bias`` replace both layers, and each forward runs one ``[N, 2D] @ [2D, D]`` product
        instead of two ``[N, D] @ [D, D]`` ones with elementwise passes between them: the same MACs
        (:meth:`macs`), fewer ops and passes. ``G`` only rescales the input columns of ``W_f W_p`` per
        sample (or the keys, for maps with fewer tokens than channels). Exact up to rounding, like the
        BatchNorm folds of :func:`swiftlib.models.fuse_for_inference` (which calls this). Official and
        timm checkpoints load into the module before, not after. Idempotent.
        """
        if self.reparameterized:
            return self
        a, m, c = self.output_weights()
        self.merged_weight = nn.Parameter(torch.cat((a, m)).t().contiguous())  # [D, 2D] = [W_f | W_f W_p]
        self.merged_bias = nn.Parameter(c)                            # [D]
        del self.proj, self.final
        return self

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        _check_tokens(x, self.dim, type(self).__name__)
        B, N, D = x.shape
        qk = F.linear(x, self.qk.weight, self.qk.bias)              # [B, N, D] -> [B, N, 2D] = [Q | K]
        # Where autograd records (training), the tensors a backward needs stay untouched; in
        # inference the steps below work in place wherever they can.
        grad = qk.requires_grad
        qk2 = qk.view(B * N, 2, D)                                   # [B*N, 2, D]: q, k of a token (a view)
        norm = torch.linalg.vector_norm(qk2, dim=-1, keepdim=True)   # [B*N, 2, 1]
        # Scaled by 1/||.|| (a division is several times slower): [B*N, 2, D] = [Qhat | Khat].
        qk2 = qk2 * norm.clamp_min(_EPS).reciprocal() if grad else qk2.mul_(norm.clamp_min_(_EPS).reciprocal_())
        q = qk2[:, 0]                                                # [B*N, D] = Qhat (a view)
        alpha = torch.mm(q, self.w_g).view(B, N)                     # [B*N, D] @ [D, 1] -> [B, N] = Qhat w_g
        s = torch.linalg.vector_norm(alpha, dim=1, keepdim=True)     # [B, 1]
        a = alpha / s.clamp_min(_EPS) if grad else alpha.div_(s.clamp_min_(_EPS))  # unit L2 norm over tokens
        if B == 1:                                                   # 2-D products: fewer dispatches for one sample
            g = torch.mm(a, q)                                       # [1, N] @ [N, D] -> [1, D] = a^T Qhat
        else:
            g = torch.bmm(a.view(B, 1, N), q.view(B, N, D))          # [B, 1, N] @ [B, N, D] -> [B, 1, D]
        # G scales whichever is smaller per sample: the D x D weight (N >= D: the large maps, e.g. stages
        # 1-2 at 224 px) or the N x D keys (N < D: small maps, where [B, D, D] weights would outweigh the tokens).
        on_weight = N >= D
        if self.reparameterized:                                     # one product, K = 2D
            w, b = self.merged_weight, self.merged_bias              # [D, 2D] = [W_f | W_f W_p], [D]
            if on_weight:                                            # G_j scales input column D + j of the weight
                if B == 1:
                    w2 = torch.cat((w[:, :D], w[:, D:] * g), dim=1)  # [D, 2D] = [W_f | W_f W_p diag(G)]
                    out = F.linear(qk2.view(B, N, 2 * D), w2, b)     # [1, N, 2D] -> [1, N, D]
                else:
                    w2 = torch.cat((w[:, :D].expand(B, D, D), w[:, D:] * g), dim=2)  # [B, D, 2D]
                    out = torch.bmm(qk2.view(B, N, 2 * D), w2.transpose(1, 2)).add_(b)  # [B, N, 2D] -> [B, N, D]
            else:                                                    # [Qhat | G * Khat]: in place in inference
                scale = torch.cat((g.new_ones(B, 1, D), g.view(B, 1, D)), dim=2)  # [B, 1, 2D] = [1 | G]
                qk3 = qk2.view(B, N, 2 * D)
                qk3 = qk3 * scale if grad else qk3.mul_(scale)       # one whole-tensor op (exports without slicing)
                out = F.linear(qk3, w, b)                            # [B, N, 2D] -> [B, N, D]
        else:
            # In eager inference the steps below write into [Q | K] (Qhat is not needed once G is known);
            # where autograd records, or a tracer (fvcore, the exporters) or torch.compile follows, they
            # are out of place (compiled, the batched out= product into a view of [Q | K] goes wrong).
            inplace = not (grad or torch.jit.is_tracing() or torch.compiler.is_compiling())
            k = qk2[:, 1]                                            # [B*N, D] = Khat (a view)
            w_p = self.proj.weight.t()                               # [D, D] = W_p^T (input x output)
            if on_weight:                                            # diag(G) W_p^T: G scales the input rows
                w_p = (g.view(D, 1) if B == 1 else g.view(B, D, 1)) * w_p  # [D, D] (B = 1) or [B, D, D]
            elif B == 1:                                             # G * Khat, [N, D] * [1, D]
                k = k.mul_(g) if inplace else k * g
            else:                                                    # G * Khat, [B, N, D] * [B, 1, D]
                kb, gb = k.view(B, N, D), g.view(B, 1, D)
                k = (kb.mul_(gb) if inplace else kb * gb).view(B * N, D)
            # y = Proj(G * Khat) + Qhat + b_p: the product accumulates onto Qhat (beta = 1), in place in
            # Qhat's columns through out= (which torch's FLOP counter knows, unlike addmm_).
            if not inplace:
                y = torch.addmm(q, k, w_p) if w_p.dim() == 2 else \
                    torch.bmm(k.view(B, N, D), w_p).view(B * N, D).add_(q)  # [B, N, D] @ [B, D, D] + Qhat
                y = y.add_(self.proj.bias)                           # + b_p, [B*N, D]
            else:
                y = q.add_(self.proj.bias)                           # Qhat + b_p, [B*N, D] (a view)
                if w_p.dim() == 2:                                   # += Khat diag(G) W_p^T (or (G * Khat) W_p^T)
                    torch.addmm(y, k, w_p, out=y)
                else:
                    y3 = y.view(B, N, D)
                    torch.baddbmm(y3, k.view(B, N, D), w_p, out=y3)  # [B, N, D] @ [B, D, D]
            out = F.linear(y, self.final.weight, self.final.bias).view(B, N, D)  # final(y), [B*N, D] -> [B, N, D]
        return (out, a) if return_attn else out

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qk 2nD^2 + Q w_g nD + G = a^T Q nD + Proj nD^2 + final nD^2."""
        return 4 * n * d * d + 2 * n * d

    @staticmethod
    def activation_memory(n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
        """qk and its normalised copy (4nD) + alpha, a (2n) + G (D) + G * K, Proj (2nD) + Proj + Q (nD)."""
        return batch * bytes_per_element * (7 * n * d + 2 * n + d)


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
    _check_heads(d, heads, name)
    return _variant(name).macs(n, d, heads)


def attention_memory(name: str, n: int, d: int, heads: int = 1, batch: int = 1, bytes_per_element: int = 4) -> int:
    """Analytic bytes of intermediate activations of one forward of variant ``name``."""
    _check_heads(d, heads, name)
    return _variant(name).activation_memory(n, d, heads, batch=batch, bytes_per_element=bytes_per_element)
