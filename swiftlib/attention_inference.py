"""SwiftFormer's efficient additive attention for inference: merged weights and a fast eager forward.

Shapes (glossary of :mod:`swiftlib.attention`): ``x [B, N, D] -> [B, N, D]``; ``B`` batch, ``N``
tokens, ``D`` channels.

:class:`EfficientAdditiveAttentionInference` is what
``swiftlib.attention.EfficientAdditiveAttention.reparameterize()`` returns (the RepVGG / MobileOne
pattern: ``fast = attn.eval().reparameterize()``, ``attn`` itself unchanged). It computes the same
function as the reference with the same matrix products (the same MACs) and fewer ops, passes and
tensors, in place where it can; it runs without autograd and is for inference only. This module
imports nothing from swiftlib, which makes it the home of the input checks every token mixer and the
SwiftFormer share (:mod:`swiftlib.attention` imports them from here):

* :func:`check_tokens` -- ``x`` is a ``[B, N, D]`` tensor of the module's dtype;
* :func:`check_dtype` -- ``x`` has the module's floating dtype. Under autocast (mixed-precision
  training feeds bf16 / fp16 activations into fp32 modules on purpose) another floating dtype is
  allowed; integer tensors never are. The check is plain Python on ``x.dtype``, so ``torch.jit.trace``,
  fvcore and ``torch.compile(fullgraph=True)`` see no extra op;
* :func:`check_sizes` -- the sizes a cost formula takes (``n``, ``d``, ``heads``, ...) are positive integers.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientAdditiveAttentionInference", "check_tokens", "check_dtype", "check_sizes"]

_EPS = 1e-12  # F.normalize's default eps: x / max(||x||, eps)


def check_dtype(x: torch.Tensor, dtype: torch.dtype, name: str, what: str = "tokens") -> None:
    """Raise a ValueError naming both dtypes if ``x`` is not of the module's ``dtype``.

    A floating ``x`` of another dtype passes under autocast on ``x``'s device (AMP computes in
    bf16 / fp16 while the weights stay fp32); a non-floating ``x`` (integer, bool) never passes.
    """
    if x.dtype == dtype:
        return
    if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
        return
    fix = (f"convert one to the other (x.to({dtype}) or module.to({x.dtype})), or run under torch.autocast"
           if x.is_floating_point() else f"convert the input to floating point: x.to({dtype})")
    raise ValueError(f"{name} has {dtype} weights but got {what} of dtype {x.dtype}; {fix}")


def check_tokens(x: torch.Tensor, dim: int, dtype: torch.dtype, name: str) -> None:
    """Raise a clear error if ``x`` is not a ``[B, N, dim]`` tensor of ``dtype`` (see :func:`check_dtype`)."""
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
    check_dtype(x, dtype, name)


def check_sizes(where: str, **sizes) -> None:
    """Raise a ValueError naming the argument unless every value of ``sizes`` is a positive integer
    (Python or NumPy int, not bool): ``check_sizes("attention_macs", n=n, d=d, heads=heads)``."""
    for arg, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{where}: {arg} must be a positive integer, got {value!r}")


def _frozen(t: torch.Tensor) -> nn.Parameter:
    """A copy of ``t`` as a parameter without gradient (the caller's tensor stays its own)."""
    return nn.Parameter(t.detach().clone(), requires_grad=False)


class EfficientAdditiveAttentionInference(nn.Module):
    """Efficient additive attention with ``Proj`` merged into ``final``, for inference.

    The reference computes, per sample, with ``Qhat``, ``Khat`` the L2-normalised query and key rows
    (``[N, D]``), ``a = unit_N(Qhat w_g / sqrt(D))`` and ``G = a^T Qhat`` (``[1, D]``)::

        out = final(Proj(G * Khat) + Qhat)
            = (Qhat + (G * Khat) W_p^T + b_p) W_f^T + b_f
            = Qhat W_f^T + Khat diag(G) W_p^T W_f^T + (W_f b_p + b_f)
            = [Qhat | Khat] @ [W_f | W_f W_p diag(G)]^T + merged_bias

    so one ``[N, 2D] @ [2D, D]`` product with ``merged_weight = [W_f | W_f W_p]`` (``[D, 2D]``, out x
    in like a Linear's) and ``merged_bias = W_f b_p + b_f`` replaces ``Proj``, the residual add and
    ``final``: the same ``4ND^2 + 2ND`` MACs (:meth:`macs`). ``G`` acts through ``[1 | G]``
    (``[2D]``): it scales the input columns of ``merged_weight`` (``D^2`` multiplies per sample) or,
    where a sample has fewer tokens than channels (``N < D``), the columns of ``[Qhat | Khat]``
    (``[Qhat | Khat] diag([1 | G]) = [Qhat | G * Khat]``, ``ND`` multiplies), whichever is smaller.
    The ``1 / sqrt(D)`` of ``alpha`` cancels in ``a = alpha / ||alpha||`` and is not applied. Exact
    up to float rounding (and the ``eps`` guarding zero norms).

    How the forward runs: ``[Q | K]`` comes from one ``[N, D] @ [D, 2D]`` product and is scaled in
    place by ``1 / max(||.||, eps)`` per token and half; the scores are normalised in place; one
    sample (``B == 1``) runs as 2-D products. A ``torch.jit.trace`` keeps the path of the shape it
    was traced with. Parameters (no gradient): ``qk`` (a copy of the reference's fused
    ``[to_query; to_key]`` Linear), ``w_g`` ``[D, 1]``, ``merged_weight``, ``merged_bias``.
    ``forward(x, return_attn=True)`` returns ``(out, a)`` with the token scores ``a`` ``[B, N]``.
    """

    def __init__(self, qk_weight: torch.Tensor, qk_bias: torch.Tensor, w_g: torch.Tensor,
                 merged_weight: torch.Tensor, merged_bias: torch.Tensor):
        super().__init__()
        D = self.dim = w_g.shape[0]
        self.qk = nn.Linear(D, 2 * D, device="meta")                  # [to_query; to_key], weights set below
        self.qk.weight, self.qk.bias = _frozen(qk_weight), _frozen(qk_bias)  # [2D, D], [2D]
        self.w_g = _frozen(w_g)                                       # [D, 1]
        self.merged_weight = _frozen(merged_weight)                   # [D, 2D] = [W_f | W_f W_p]
        self.merged_bias = _frozen(merged_bias)                       # [D] = W_f b_p + b_f

    def output_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A, M, c)`` with ``final(Proj(G * Khat) + Qhat) = Qhat A + (G * Khat) M + c``: ``A = W_f^T``,
        ``M = W_p^T W_f^T`` (``[D, D]``, input x output), ``c = W_f b_p + b_f`` (``[D]``); detached."""
        w, D = self.merged_weight.detach(), self.dim
        return w[:, :D].t(), w[:, D:].t(), self.merged_bias.detach()

    @staticmethod
    def macs(n: int, d: int, heads: int = 1) -> int:
        """qk 2nD^2 + Q w_g nD + a^T Q nD + the merged output product 2nD^2 (the reference's count)."""
        check_sizes("EfficientAdditiveAttentionInference.macs", n=n, d=d, heads=heads)
        return 4 * n * d * d + 2 * n * d

    @torch.no_grad()
    def forward(self, x: torch.Tensor, return_attn: bool = False):
        check_tokens(x, self.dim, self.w_g.dtype, type(self).__name__)
        B, N, D = x.shape
        qk = F.linear(x, self.qk.weight, self.qk.bias).view(B * N, 2, D)  # [B, N, 2D] -> [B*N, 2, D] = [Q | K]
        norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True)          # [B*N, 2, 1]
        qk.mul_(norm.clamp_min_(_EPS).reciprocal_())                       # [Qhat | Khat], in place
        q = qk[:, 0]                                                       # [B*N, D] = Qhat (a view)
        alpha = torch.mm(q, self.w_g).view(B, N)                           # [B*N, D] @ [D, 1] -> [B, N]
        a = alpha.div_(torch.linalg.vector_norm(alpha, dim=1, keepdim=True).clamp_min_(_EPS))  # unit over N
        if B == 1:                                                         # 2-D product for one sample
            g = torch.mm(a, q)                                             # [1, N] @ [N, D] -> [1, D] = a^T Qhat
        else:
            g = torch.bmm(a.view(B, 1, N), q.view(B, N, D)).view(B, D)     # [B, 1, N] @ [B, N, D] -> [B, D]
        scale = torch.cat((torch.ones_like(g), g), dim=1).view(B, 1, 2 * D)  # [B, 1, 2D] = [1 | G]
        qk = qk.view(B, N, 2 * D)                                          # [B, N, 2D] = [Qhat | Khat]
        w, b = self.merged_weight, self.merged_bias                        # [D, 2D], [D]
        if N < D:                                                          # [Qhat | G * Khat], in place
            out = F.linear(qk.mul_(scale), w, b)                           # [B, N, 2D] -> [B, N, D]
        elif B == 1:                                                       # [W_f | W_f W_p diag(G)], [D, 2D]
            out = F.linear(qk, w * scale[0], b)                            # [1, N, 2D] -> [1, N, D]
        else:                                                              # per sample, [B, D, 2D]
            out = torch.bmm(qk, (w * scale).transpose(1, 2)).add_(b)       # [B, N, 2D] @ [B, 2D, D] -> [B, N, D]
        return (out, a) if return_attn else out
