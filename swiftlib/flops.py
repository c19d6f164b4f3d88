"""Counting the work of a forward: fvcore MACs with the elementwise work made visible, a
cross-check with ``torch.utils.flop_counter``, and a per-module table.

Convention (as in :mod:`swiftlib.attention`): **1 MAC = one multiply-add**. fvcore reports MACs
(it calls them "flops"); ``torch.utils.flop_counter.FlopCounterMode`` reports FLOPs = 2 x MACs.
The paper's GMACs are fvcore's numbers with its default handlers.

:func:`count_macs` returns two columns:

* ``matmul`` -- what fvcore counts with its default handlers: linear/matmul/bmm/conv/einsum MACs
  (weights only, no bias), plus fvcore's own counts for batch/layer/group norm, upsampling and
  adaptive pooling. This is the number comparable with the paper's GMACs. The one addition is
  ``scaled_dot_product_attention`` (fvcore does not count it), whose two products
  ``Q K^T`` and ``A V`` go here as ``B h N_q N_k (d_qk + d_v)`` MACs.
* ``elementwise`` -- operations fvcore counts as zero, in **elementwise operations** (not MACs),
  with the per-element costs of :data:`ELEMENTWISE_COST`: 1 per output element for unary/binary
  arithmetic and activations (add, mul, div, rsqrt, ReLU, GELU, ...) and for the bias add of
  linear/addmm; 1 per *input* element for sum/mean reductions; 2 per input element for an L2 norm
  (square and add; ``F.normalize`` = norm + clamp_min + div); 3 per input element for softmax
  (exp, sum, divide); and the scale + softmax of SDPA, 4 per attention score.

Shape glossary: ``B, N, D`` tokens; ``B, C, H, W`` maps; ``h`` heads.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from math import prod
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = [
    "ELEMENTWISE_COST",
    "count_macs",
    "torch_flops",
    "module_table",
    "format_table",
    "fvcore_analysis",
]

# ------------------------------------------------------------------ elementwise handlers
#: per-element cost and what it is counted on ("out": output elements, "in": first input's elements)
ELEMENTWISE_COST: dict[str, tuple[int, str]] = {
    **{op: (1, "out") for op in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "reciprocal", "reciprocal_",
        "rsqrt", "sqrt", "exp", "log", "pow", "square", "abs", "clamp", "clamp_", "clamp_min",
        "clamp_min_", "clamp_max", "maximum", "minimum", "where", "relu", "relu_", "gelu", "silu",
        "sigmoid", "tanh", "hardswish", "hardsigmoid", "erf")},
    "sum": (1, "in"),
    "mean": (1, "in"),
    "linalg_vector_norm": (2, "in"),
    "norm": (2, "in"),
    "frobenius_norm": (2, "in"),
    "softmax": (3, "in"),
    "_softmax": (3, "in"),
    "log_softmax": (3, "in"),
}
_SDPA_EW_PER_SCORE = 4  # scale + softmax (exp, sum, divide) per attention score


def _numel(value) -> int:
    shape = get_shape(value)
    return prod(shape) if shape else (1 if shape == [] else 0)


def _elementwise_handle(name: str, cost: int, on: str) -> Callable:
    def handle(inputs, outputs):
        if on == "out":
            n = _numel(outputs[0])
        else:  # the first tensor input
            n = next((_numel(v) for v in inputs if get_shape(v) is not None), 0)
        return Counter({f"ew.{name}": cost * n})
    return handle


def _is_tensor(value) -> bool:
    return isinstance(value.type(), torch._C.TensorType)


def _linear_handle(inputs, outputs):
    """fvcore's linear count (weights only) + the bias add, 1 per output element, as elementwise."""
    x, w = get_shape(inputs[0]), get_shape(inputs[1])
    out = _numel(outputs[0])
    macs = prod(x[:-1]) * w[0] * w[1] if len(w) == 2 else prod(x) * w[0]
    counts = Counter({"linear": macs})
    if len(inputs) > 2 and _is_tensor(inputs[2]):
        counts["ew.linear.bias"] = out
    return counts


def _addmm_handle(inputs, outputs):
    """``bias + x @ w``: the product's MACs as fvcore counts them, the bias add as elementwise."""
    a, b = get_shape(inputs[1]), get_shape(inputs[2])
    return Counter({"addmm": a[0] * a[1] * b[1], "ew.addmm.bias": _numel(outputs[0])})


def _sdpa_handle(inputs, outputs):
    """``softmax(Q K^T * scale) V`` for q [.., N_q, d], k [.., N_k, d], v [.., N_k, d_v]."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    lead = prod(q[:-2])
    scores = lead * q[-2] * k[-2]
    return Counter({"scaled_dot_product_attention": scores * (q[-1] + v[-1]),
                    "ew.scaled_dot_product_attention.softmax": _SDPA_EW_PER_SCORE * scores})


def fvcore_analysis(module: nn.Module, *inputs: Any) -> FlopCountAnalysis:
    """``FlopCountAnalysis`` with swiftlib's handlers added (warnings off). Elementwise keys start with ``ew.``."""
    fca = FlopCountAnalysis(module, inputs)
    handles = {f"aten::{op}": _elementwise_handle(op, c, on) for op, (c, on) in ELEMENTWISE_COST.items()}
    handles.update({"aten::linear": _linear_handle, "aten::addmm": _addmm_handle,
                    "aten::scaled_dot_product_attention": _sdpa_handle})
    fca.set_op_handle(**handles)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return fca


def _split(counter: Counter) -> tuple[int, int]:
    ew = sum(v for k, v in counter.items() if k.startswith("ew."))
    return int(sum(counter.values()) - ew), int(ew)


def _check_module(module, inputs) -> None:
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module to count, got {type(module).__name__}")
    if not inputs:
        raise ValueError(f"{type(module).__name__}: give the example inputs to count with, e.g. count_macs(m, x)")


@contextmanager
def _eval_no_grad(module: nn.Module):
    """``module`` in eval mode with autograd off for the block; its train/eval mode given back after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def count_macs(module: nn.Module, *inputs: Any) -> dict[str, Any]:
    """MACs of ``module(*inputs)`` with fvcore, the elementwise work in its own column.

    Returns ``{"matmul": MACs comparable with the paper's GMACs, "elementwise": elementwise ops,
    "total": their sum, "by_op": {op: count}}`` (elementwise ops are keyed ``"ew.<op>"``).
    """
    _check_module(module, inputs)
    with _eval_no_grad(module):
        by_op = Counter(fvcore_analysis(module, *inputs).by_operator())
    matmul, ew = _split(by_op)
    return {"matmul": matmul, "elementwise": ew, "total": matmul + ew, "by_op": dict(by_op)}


# ------------------------------------------------------------------ torch.utils.flop_counter
def _cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    """torch's counter knows the CUDA SDPA kernels; the CPU one (flash_attention_for_cpu) is added here."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_flash_sdpa_flop} if op is not None else {}  # keyed by overload packet


def torch_flops(module: nn.Module, *inputs: Any) -> dict[str, Any]:
    """FLOPs (2 per multiply-add, matrix products only) of ``module(*inputs)`` with ``FlopCounterMode``.

    Returns ``{"flops": total, "macs": flops // 2, "by_module": {hierarchical name: flops}}``;
    module names are dotted paths below the root ("" for the whole module), as in :func:`module_table`.
    """
    _check_module(module, inputs)
    mode = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with _eval_no_grad(module), mode:
        module(*inputs)
    counts = mode.get_flop_counts()
    root = "Global"
    by_module: dict[str, int] = {}
    for name, ops in counts.items():
        if name == root:
            continue
        parts = name.split(".", 1)
        key = parts[1] if len(parts) > 1 else ""
        by_module[key] = by_module.get(key, 0) + int(sum(ops.values()))
    total = int(mode.get_total_flops())
    return {"flops": total, "macs": total // 2, "by_module": by_module}


# ------------------------------------------------------------------ per-module table
def module_table(module: nn.Module, *inputs: Any, max_depth: int = 3) -> list[dict[str, Any]]:
    """One row per submodule (hierarchical names, ``""`` = the whole module) up to ``max_depth``.

    Columns: ``module``, ``type``, ``params``, ``matmul`` (fvcore MACs), ``elementwise`` (ops),
    ``torch_macs`` (``FlopCounterMode`` FLOPs / 2), ``share`` (of the total matmul MACs).
    """
    _check_module(module, inputs)
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    with _eval_no_grad(module):
        per_mod = fvcore_analysis(module, *inputs).by_module_and_operator()
    torch_by = torch_flops(module, *inputs)["by_module"]
    total_mm = _split(Counter(per_mod.get("", {})))[0] or 1
    rows = []
    for name, sub in module.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if depth > max_depth:
            continue
        mm, ew = _split(Counter(per_mod.get(name, {})))
        rows.append({"module": name or "(total)", "type": type(sub).__name__,
                     "params": sum(p.numel() for p in sub.parameters()),
                     "matmul": mm, "elementwise": ew, "torch_macs": torch_by.get(name, 0) // 2,
                     "share": mm / total_mm})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`module_table` rows (indented names, MACs in thousands separators)."""
    head = f"{'module':<28} {'type':<28} {'params':>10} {'matmul MACs':>14} {'elementwise':>12} {'torch/2':>14} {'share':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r["module"]
        indent = "" if name == "(total)" else "  " * name.count(".")
        lines.append(f"{indent + name.split('.')[-1]:<28} {r['type']:<28} {r['params']:>10,} {r['matmul']:>14,} "
                     f"{r['elementwise']:>12,} {r['torch_macs']:>14,} {r['share']:>6.1%}")
    return "\n".join(lines)
