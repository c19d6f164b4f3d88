"""The attention sweep (notebook 02): latency, peak memory and scaling of the attentions as tokens grow.

Shapes (glossary of :mod:`swiftlib.attention`): every contender maps tokens ``x [B, N, D] -> [B, N, D]``
except timm's module, which takes the same values as a map ``[B, D, H, W]`` with ``H * W = N``
(:func:`map_size`).

Contenders at every token count ``N`` (timed interleaved, :func:`swiftlib.measure.time_interleaved`):

* ``"self"``, ``"transposed"``, ``"separable"``, ``"additive"``: the reference modules of
  :data:`swiftlib.attention.VARIANTS`;
* ``"additive_inference"``: the inference module ``attn.reparameterize()`` returns
  (:class:`~swiftlib.attention_inference.EfficientAdditiveAttentionInference`);
* ``"additive_matmuls"``: :class:`AdditiveMatmuls`, the inference form's matrix products alone (a floor);
* ``"timm_additive"``: timm's ``EfficientAdditiveAttention`` on the same weights (the peer).

:func:`summarize_sweep` fits latency exponents and takes ratios against the peers three ways (pooled
medians, fastest runs, round by round); :func:`sweep_crossovers` finds where two variants' curves
cross. :func:`named_ratios` names each computed figure for ``--expect`` (see its docstring).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.swiftformer import EfficientAdditiveAttention as TimmAdditive
from torch import nn
from tqdm.auto import tqdm

from swiftlib.attention import VARIANTS, attention_macs, attention_memory, build_attention, variant_heads
from swiftlib.bench.common import known_names, positive_sorted
from swiftlib.io import atomic_write_json
from swiftlib.measure import fit_exponent, paired_ratio, peak_memory, resolve_device, time_interleaved

__all__ = [
    "map_size",
    "OWN_ADDITIVE_FORMS",
    "ADDITIVE_CONTENDERS",
    "TimmAdditiveOnTokens",
    "AdditiveMatmuls",
    "attention_sweep",
    "SWEEP_RATIOS",
    "summarize_sweep",
    "find_crossovers",
    "sweep_series",
    "sweep_crossovers",
    "named_ratios",
]


def map_size(n: int) -> tuple[int, int]:
    """``(H, W)`` with ``H * W = n`` and ``H <= W`` as close to square as possible (56 x 56 for 3136)."""
    if n < 1:
        raise ValueError(f"token count n must be >= 1, got {n}")
    h = math.isqrt(n)
    while n % h:
        h -= 1
    return h, n // h


#: contenders of the sweep that time a form of swiftlib's own additive attention, not a variant of their own
OWN_ADDITIVE_FORMS = ("additive_inference", "additive_matmuls")
#: contenders of the sweep that compute swiftlib's additive attention (its analytic costs apply)
ADDITIVE_CONTENDERS = ("timm_additive", *OWN_ADDITIVE_FORMS)


# =================================================================== contenders
class TimmAdditiveOnTokens(TimmAdditive):
    """timm's ``EfficientAdditiveAttention`` itself as the peer: ``forward(x_map)`` with ``x_map [B, C, H, W]``.

    Built with ``in_dims = token_dim = D`` (as in SwiftFormer) and loaded with the weights of a
    swiftlib :class:`~swiftlib.attention.EfficientAdditiveAttention`, so both compute the same function;
    timm's own forward is timed, with no wrapper call around it.
    """

    def __init__(self, ours: nn.Module):
        d = ours.dim
        super().__init__(in_dims=d, token_dim=d)
        qk_w, qk_b = ours.qk.weight.detach(), ours.qk.bias.detach()  # [2D, D], [2D] = [to_query; to_key]
        self.load_state_dict({
            "to_query.weight": qk_w[:d], "to_query.bias": qk_b[:d],
            "to_key.weight": qk_w[d:], "to_key.bias": qk_b[d:],
            "w_g": ours.w_g.detach(), "proj.weight": ours.proj.weight.detach(),
            "proj.bias": ours.proj.bias.detach(), "final.weight": ours.final.weight.detach(),
            "final.bias": ours.final.bias.detach()})


class AdditiveMatmuls(nn.Module):
    """The matrix products of the additive attention's inference module alone.

    Built from an :class:`~swiftlib.attention_inference.EfficientAdditiveAttentionInference`
    (``attn.reparameterize()``): its ``qk`` weights, ``w_g``, ``merged_weight`` and ``merged_bias``.
    Same shapes, layouts and BLAS calls as that module's forward on maps with at least as many
    tokens as channels (``N >= D``, every point of the sweep): ``qk`` ``[B*N, D] @ [D, 2D]`` with its
    bias, ``Qhat w_g``, ``a^T Qhat`` and ``[Qhat | Khat] @ [W_f | W_f W_p diag(G)]^T`` with its bias,
    on fixed operands (scores ``a`` and ``G`` drawn once), with no elementwise work in between. Its
    latency is a floor for any eager implementation of the same products: ``additive_inference /
    additive_matmuls`` is the share the elementwise work and op dispatch add, and
    ``additive_matmuls / timm_additive`` the best ratio against timm these products allow.
    ``forward(x [B, N, D])`` returns every product (``[B, N, D]`` first; not the attention's value),
    so that a tracer such as fvcore sees them all.
    """

    def __init__(self, fast: nn.Module, batch: int, n: int):
        super().__init__()
        d = fast.dim
        gen = torch.Generator().manual_seed(0)
        w = fast.merged_weight.detach()                                # [D, 2D] = [W_f | W_f W_p]
        g = torch.rand(batch, 1, d, generator=gen).to(w)               # G, [B, 1, D]
        self.qk, self.w_g = fast.qk, fast.w_g                          # [2D, D] Linear, [D, 1]
        self.register_buffer("scores", torch.rand(batch, n, generator=gen).to(w))          # a, [B, N]
        self.register_buffer("w2", torch.cat((w[:, :d].expand(batch, d, d), w[:, d:] * g), dim=2))  # [B, D, 2D]
        self.register_buffer("bias", fast.merged_bias.detach().clone())                    # W_f b_p + b_f, [D]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, N, D = x.shape
        qk = F.linear(x, self.qk.weight, self.qk.bias)                 # [B, N, D] -> [B, N, 2D]
        q = qk.view(B * N, 2, D)[:, 0]                                 # [B*N, D]
        alpha = torch.mm(q, self.w_g)                                  # [B*N, 1]
        if B == 1:
            g = torch.mm(self.scores, q)                               # [1, N] @ [N, D] -> [1, D]
            out = F.linear(qk, self.w2[0], self.bias)                  # [1, N, 2D] -> [1, N, D]
        else:
            g = torch.bmm(self.scores.view(B, 1, N), q.view(B, N, D))  # [B, 1, D]
            out = torch.bmm(qk, self.w2.transpose(1, 2)).add_(self.bias)  # [B, N, 2D] @ [B, 2D, D] -> [B, N, D]
        return out, qk, alpha, g


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _contenders(n: int, d: int, heads: int, batch: int, dev: torch.device, variants: Sequence[str],
                peer: bool, seed: int) -> tuple[dict[str, Callable], dict[str, torch.Tensor], dict[str, float]]:
    """The callables timed at token count ``n``, the input each takes, and their checks against the
    reference additive module (``{"peer_max_abs_diff", "additive_inference_max_abs_diff"}``, with ``peer``)."""
    torch.manual_seed(seed)
    fns: dict[str, Callable] = {v: build_attention(v, d, num_heads=variant_heads(v, heads)).to(dev).eval()
                                for v in variants}
    x = torch.randn(batch, n, d, generator=torch.Generator().manual_seed(seed)).to(dev)  # [B, N, D]
    inputs = {v: x for v in variants}
    if not peer:
        return fns, inputs, {}
    ours = fns.get("additive") or build_attention("additive", d).to(dev).eval()
    timm_m = TimmAdditiveOnTokens(ours).to(dev).eval()
    fast = ours.reparameterize()                                       # the inference module; ours unchanged
    h, w = map_size(n)
    x_map = x.transpose(1, 2).reshape(batch, d, h, w).contiguous()     # [B, N, D] -> [B, D, H, W]
    fns.update(timm_additive=timm_m, additive_inference=fast,
               additive_matmuls=AdditiveMatmuls(fast, batch, n).to(dev).eval())
    inputs.update(timm_additive=x_map, additive_inference=x, additive_matmuls=x)
    with torch.no_grad():
        ref = ours(x)
        timm_tokens = timm_m(x_map).flatten(2).transpose(1, 2)         # [B, D, H, W] -> [B, N, D]
        checks = {"peer_max_abs_diff": _max_abs_diff(timm_tokens, ref),
                  "additive_inference_max_abs_diff": _max_abs_diff(fast(x), ref)}
    return fns, inputs, checks


def _point(k: str, n: int, d: int, heads: int, batch: int, timing: dict[str, Any]) -> dict[str, Any]:
    """One (contender, n) result: its timing and the analytic costs of the attention it computes."""
    v = "additive" if k in ADDITIVE_CONTENDERS else k
    hk = variant_heads(v, heads)
    return {"variant": k, "n": n, "d": d, "heads": hk, "batch": batch, **timing,
            "analytic_macs": batch * attention_macs(v, n, d, hk),
            "analytic_activation_bytes": attention_memory(v, n, d, hk, batch=batch)}


# =================================================================== the sweep
_CHECKS = ("peer_max_abs_diff", "additive_inference_max_abs_diff")


def _resume(checkpoint: str | os.PathLike | None, config: dict[str, Any], ns: Sequence[int]) -> dict[str, Any]:
    """The points and checks a checkpoint of the same settings holds for token counts in ``ns``
    (nothing if there is none, or it was written with other settings)."""
    state: dict[str, Any] = {"points": [], **{c: {} for c in _CHECKS}}
    if checkpoint is None or not Path(checkpoint).exists():
        return state
    saved = json.loads(Path(checkpoint).read_text())
    if {k: v for k, v in saved.get("config", {}).items() if k != "n"} != {k: v for k, v in config.items() if k != "n"}:
        return state
    state["points"] = [p for p in saved["points"] if p["n"] in ns]
    for c in _CHECKS:
        state[c] = {k: v for k, v in saved.get(c, {}).items() if int(k) in ns}
    return state


def attention_sweep(ns: Sequence[int], d: int = 48, heads: int = 1, batch: int = 1, device: str = "cpu",
                    variants: Sequence[str] | None = None, min_run_time: float = 0.5, rounds: int = 5,
                    max_seconds_per_point: float | None = 20.0, threads: int | None = None,
                    memory: bool = True, peer: bool = True, seed: int = 0, progress: bool = True,
                    clock: str = "wall", checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """Latency (and peak memory) of each attention variant at each token count in ``ns``.

    At every ``n`` the variants (and, when ``peer``, ``"timm_additive"``, ``"additive_inference"``
    and ``"additive_matmuls"``, see the module docstring) are timed interleaved on
    ``x [batch, n, d]`` (timm: the same values as a ``[batch, d, H, W]`` map). ``heads`` applies to
    self and transposed attention. Returns ``{"config", "points", "peer_max_abs_diff",
    "additive_inference_max_abs_diff", "crossovers", **summarize_sweep(points)}``; ``points`` is one
    dict per (variant, n) with latency, ``peak_bytes`` and the analytic MACs / activation bytes.

    ``checkpoint``: a JSON file rewritten (atomically) after every ``n``; a sweep started again
    with the same settings reuses the token counts it already holds (resume after an interruption).
    """
    dev = resolve_device(device)
    variants = known_names(variants, VARIANTS, "attention variant")
    ns = positive_sorted(ns, "token counts")
    if d < 1 or batch < 1 or heads < 1:
        raise ValueError(f"d, batch and heads must be >= 1, got d={d}, batch={batch}, heads={heads}")
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    config = {"n": ns, "d": d, "heads": heads, "batch": batch, "device": str(dev), "variants": variants,
              "peer": "timm.models.swiftformer.EfficientAdditiveAttention" if peer else None,
              "min_run_time": min_run_time, "rounds": rounds, "max_seconds_per_point": max_seconds_per_point,
              "seed": seed, "clock": clock, "threads": torch.get_num_threads() if threads is None else threads,
              "memory": memory}
    state = _resume(checkpoint, config, ns)
    done = {p["n"] for p in state["points"]}
    bar = tqdm(ns, desc="attention sweep", disable=not progress)
    for n in bar:
        if n in done:
            continue
        fns, inputs, checks = _contenders(n, d, heads, batch, dev, variants, peer, seed)
        for c, value in checks.items():
            state[c][str(n)] = value
        # one call signature for all: each callable picks its own tensor
        wrapped = {k: (lambda f=f, x=inputs[k]: f(x)) for k, f in fns.items()}
        bar.set_postfix(n=n)
        timing = time_interleaved(wrapped, device=dev, rounds=rounds, min_run_time=min_run_time,
                                  threads=threads, max_seconds=max_seconds_per_point, clock=clock)
        for k in fns:
            point = _point(k, n, d, heads, batch, timing[k])
            if memory:
                mem = peak_memory(fns[k], inputs[k], device=dev)
                point.update({"peak_bytes": mem["peak_bytes"], "output_bytes": mem["output_bytes"],
                              "memory_method": mem["method"]})
            state["points"].append(point)
        if checkpoint is not None:
            atomic_write_json(checkpoint, {"config": config, **state})
    points = sorted(state["points"], key=lambda p: p["n"])
    return {"config": config, **state, "points": points,
            "crossovers": sweep_crossovers(points) + sweep_crossovers(points, "peak_bytes"),
            **summarize_sweep(points)}


# =================================================================== summaries
#: (a, b) pairs whose latency ratio a / b the summaries report as ``"<a>_over_<b>"``
SWEEP_RATIOS = (("additive", "timm_additive"), ("additive_inference", "timm_additive"), ("additive", "self"),
                ("additive_matmuls", "timm_additive"), ("additive_matmuls", "additive_inference"))


def _by_variant(points: Sequence[dict[str, Any]], key: str) -> dict[str, dict[int, Any]]:
    """``{variant: {n: point[key]}}`` over the points that have ``key``."""
    by: dict[str, dict[int, Any]] = {}
    for p in points:
        if key in p:
            by.setdefault(p["variant"], {})[p["n"]] = p[key]
    return by


def _ratios(by: dict[str, dict[int, Any]], ratio: Callable[[Any, Any], float]) -> dict[str, dict[str, float]]:
    return {f"{a}_over_{b}": {str(n): round(ratio(by[a][n], by[b][n]), 4) for n in sorted(by[a]) if n in by[b]}
            for a, b in SWEEP_RATIOS if a in by and b in by}


def _exponents_and_ratios(points: Sequence[dict[str, Any]], key: str, fit_from: int) -> tuple[dict, dict]:
    by = _by_variant(points, key)
    exponents = {}
    for v, series in by.items():
        ns = [n for n in sorted(series) if n >= fit_from]
        exponents[v] = round(fit_exponent(ns, [series[n] for n in ns]), 3) if len(ns) >= 2 else None
    return exponents, _ratios(by, lambda a, b: a / b)


def summarize_sweep(points: Sequence[dict[str, Any]], fit_from: int = 196) -> dict[str, Any]:
    """Fitted latency exponents (log-log slope over ``n >= fit_from``) and the ratios of :data:`SWEEP_RATIOS`
    (``{"<a>_over_<b>": {"<n>": a / b}}``) from the medians; the same from the fastest run of each
    point (``*_min``), which on a shared machine is the least disturbed estimate of a kernel's cost;
    and the ratios taken round by round (``ratios_paired``, :func:`swiftlib.measure.paired_ratio`)."""
    exponents, ratios = _exponents_and_ratios(points, "median_ms", fit_from)
    out: dict[str, Any] = {"exponents": exponents, "exponent_fit_from_n": fit_from, "ratios": ratios}
    if all("min_ms" in p for p in points):
        out["exponents_min"], out["ratios_min"] = _exponents_and_ratios(points, "min_ms", fit_from)
    if all(p.get("round_medians_ms") for p in points):
        out["ratios_paired"] = _ratios(_by_variant(points, "round_medians_ms"), paired_ratio)
    return out


def named_ratios(result: dict[str, Any]) -> dict[str, float]:
    """Every figure of a sweep's result by the name ``--expect`` reads:

    * ``<a>_over_<b>@<n>``: latency ratio of pooled medians at token count ``n`` (``result["ratios"]``),
      e.g. ``additive_inference_over_timm_additive@3136``;
    * ``<a>_over_<b>@<n>:min`` and ``<a>_over_<b>@<n>:paired``: the same from the fastest runs
      (``ratios_min``) and round by round (``ratios_paired``);
    * ``exponent_<variant>`` (and ``exponent_<variant>:min``): fitted latency exponent, e.g. ``exponent_additive``.
    """
    named: dict[str, float] = {}
    for source, suffix in (("ratios", ""), ("ratios_min", ":min"), ("ratios_paired", ":paired")):
        for key, by_n in result.get(source, {}).items():
            named.update({f"{key}@{n}{suffix}": r for n, r in by_n.items()})
    for source, suffix in (("exponents", ""), ("exponents_min", ":min")):
        named.update({f"exponent_{v}{suffix}": e for v, e in result.get(source, {}).items() if e is not None})
    return named


# =================================================================== crossovers
def find_crossovers(ns: Sequence[float], a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Token counts where series ``a`` and ``b`` (measured at sizes ``ns``) cross.

    Between two neighbouring sizes where ``a - b`` changes sign, the crossing is found by linear
    interpolation of ``log(a / b)`` against ``log(n)`` (both curves are close to power laws).
    A size where they are exactly equal counts once. Returns the crossings in increasing order.
    """
    if not (len(ns) == len(a) == len(b)):
        raise ValueError(f"find_crossovers needs equal lengths, got {len(ns)} sizes, {len(a)} and {len(b)} values")
    if min(list(a) + list(b), default=1) <= 0 or min(ns, default=1) <= 0:
        raise ValueError("find_crossovers needs positive sizes and values (log scale)")
    order = sorted(range(len(ns)), key=lambda i: ns[i])
    xs = [math.log(ns[i]) for i in order]
    rs = [math.log(a[i] / b[i]) for i in order]
    out: list[float] = []
    for i in range(len(xs)):
        if rs[i] == 0 and (not out or out[-1] != math.exp(xs[i])):
            out.append(math.exp(xs[i]))
        if i + 1 < len(xs) and rs[i] * rs[i + 1] < 0:
            t = rs[i] / (rs[i] - rs[i + 1])
            out.append(math.exp(xs[i] + t * (xs[i + 1] - xs[i])))
    return out


def sweep_series(points: Sequence[dict[str, Any]], key: str = "median_ms") -> dict[str, tuple[list[int], list[float]]]:
    """``{variant: (ns, values)}`` from a sweep's points, ``ns`` increasing."""
    return {v: (sorted(s), [s[n] for n in sorted(s)]) for v, s in _by_variant(points, key).items()}


def sweep_crossovers(points: Sequence[dict[str, Any]], key: str = "median_ms",
                     skip: Sequence[str] = OWN_ADDITIVE_FORMS) -> list[dict[str, Any]]:
    """Every crossing of every pair of variants in a sweep (``{"a", "b", "n", "key"}``), by n.

    ``skip``: series that are not attentions of their own (by default the inference module of the
    additive attention and the matrix-product floor of :class:`AdditiveMatmuls`)."""
    series = sweep_series(points, key)
    names = [v for v in series if v not in skip]
    found = []
    for i, va in enumerate(names):
        for vb in names[i + 1:]:
            common = sorted(set(series[va][0]) & set(series[vb][0]))
            if len(common) < 2:
                continue
            ya = [series[va][1][series[va][0].index(n)] for n in common]
            yb = [series[vb][1][series[vb][0].index(n)] for n in common]
            found += [{"a": va, "b": vb, "n": round(n, 1), "key": key} for n in find_crossovers(common, ya, yb)]
    return sorted(found, key=lambda c: c["n"])
