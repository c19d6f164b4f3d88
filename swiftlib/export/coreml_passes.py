"""An exact rewrite of a converted ML program, run by swiftlib's Core ML exports after coremltools' own passes.

Shape glossary: ``B, C, H, W`` maps (the rewrite works on any rank >= 3).

Every L2 normalisation of the export-friendly attention (:func:`swiftlib.attention.l2_normalize`,
``x / max(||x||, eps)``) converts to three MIL ops: ``reduce_l2_norm``, ``maximum`` (the ``eps`` guard)
and ``real_div``. SwiftFormer-XS has twelve of them (query, key and attention scores in each of its
four attention blocks), 36 of its ops.

:func:`fuse_l2_norm` -- ``x / max(reduce_l2_norm(x), eps)`` over every axis of the last three that is
not of size 1 is MIL's ``l2_norm`` op (``x / sqrt(sum x**2 + epsilon)``, which normalises the last three
axes): the attention scores ``[B, 1, H, W]``, normalised over ``H, W``, become one op instead of three.
``epsilon = eps**2``, raised to the smallest positive value of the program's float type (fp16 cannot
hold ``eps**2``): ``sqrt(s + epsilon)`` equals ``max(sqrt(s), eps)`` within the float's rounding wherever
the squared norm ``s`` is well above ``epsilon`` (any map with a signal), and an all-zero map still gives
zeros, not NaN. The query and key, normalised over
``C`` alone, do not match (their ``maximum`` stays: in fp16 it is a real guard, ``eps`` becomes 6e-8).

:data:`PASSES` names the rewrites :func:`register` adds to coremltools' pass registry (as
``swiftlib::<name>``); :mod:`swiftlib.export.coreml` appends them to the default pipeline, followed by
dead-code elimination, for swiftlib's exports. A peer model converted for comparison gets coremltools'
default pipeline only.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["PASSES", "fuse_l2_norm", "register"]

def _ops(block):
    """Every op of ``block`` and of its nested blocks (a list: the rewrite changes the block)."""
    out = []
    for op in list(block.operations):
        out.append(op)
        for sub in op.blocks:
            out.extend(_ops(sub))
    return out


def _const(var) -> np.ndarray | None:
    return None if var is None or var.val is None else np.asarray(var.val)


def _normalised_axes(norm_op) -> list[int] | None:
    """The axes a ``reduce_l2_norm`` (kept dims) reduces, made non-negative; None if not static."""
    axes, keep = _const(norm_op.axes), _const(norm_op.keep_dims)
    rank = norm_op.x.rank
    if axes is None or keep is None or not bool(keep) or rank < 3:
        return None
    return sorted(int(a) % rank for a in axes.reshape(-1))


def _guarded(op) -> tuple | None:
    """``(v, eps)`` if ``op`` is ``maximum(v, eps)`` (either order) with ``eps`` a constant scalar >= 0."""
    for v, c in ((op.x, op.y), (op.y, op.x)):
        bound = _const(c)
        if bound is not None and bound.size == 1 and float(bound) >= 0 and _const(v) is None:
            return v, float(bound)
    return None


def _l2_norm_pattern(div) -> tuple | None:
    """``(x, eps**2, ops to drop)`` if ``div`` is ``x / [maximum(] reduce_l2_norm(x) [, eps)]`` over the
    axes of the last three that are not of size 1, else None."""
    norm, guard, eps2 = div.y.op, None, 0.0
    if norm is not None and norm.op_type == "maximum" and _guarded(norm) is not None:
        guard, (v, eps) = norm, _guarded(norm)
        norm, eps2 = v.op, eps ** 2
    if norm is None or norm.op_type != "reduce_l2_norm" or norm.x is not div.x:
        return None
    axes, shape = _normalised_axes(norm), div.x.shape
    if axes is None or any(not isinstance(s, int) for s in shape):
        return None
    last3 = set(range(len(shape) - 3, len(shape)))
    if not set(axes) <= last3 or any(shape[a] != 1 for a in last3 - set(axes)):
        return None
    chain = [op for op in (guard, norm) if op is not None]
    if any(len(op.outputs[0].child_ops) != 1 for op in chain):  # the norm is used elsewhere too
        return None
    return div.x, eps2, chain


def fuse_l2_norm(prog) -> int:
    """Replace ``x / [maximum(] reduce_l2_norm(x) [, eps)]`` over the last three axes by ``l2_norm(x,
    epsilon=eps**2)``; returns how many were fused."""
    from coremltools.converters.mil import Builder as mb  # the MIL builder: only while converting
    from coremltools.converters.mil.mil.types import nptype_from_builtin

    fused = 0
    for f in prog.functions.values():
        for op in _ops(f):
            if op.op_type != "real_div" or op.enclosing_block is None:
                continue
            found = _l2_norm_pattern(op)
            if found is None or op.outputs[0] in op.enclosing_block.outputs:
                continue
            x, eps2, chain = found
            dtype = nptype_from_builtin(x.dtype)
            epsilon = np.array(max(eps2, float(np.finfo(dtype).smallest_subnormal)), dtype=dtype)
            block = op.enclosing_block
            with block:
                y = mb.l2_norm(x=x, epsilon=epsilon, name=op.outputs[0].name + "_l2_norm", before_op=op)
                block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=y)
                block.remove_ops([op, *chain])
            fused += 1
    return fused


#: name -> rewrite, in the order they run.
PASSES: dict[str, Callable] = {"fuse_l2_norm": fuse_l2_norm}


def register() -> list[str]:
    """Register :data:`PASSES` with coremltools (once) as ``swiftlib::<name>``; returns the registered names."""
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    names = []
    for name, rewrite in PASSES.items():
        full = f"swiftlib::{name}"
        if full not in PASS_REGISTRY:
            cls = type(name, (AbstractGraphPass,), {"apply": lambda self, prog, rewrite=rewrite: rewrite(prog),
                                                    "__doc__": rewrite.__doc__})
            register_pass(namespace="swiftlib")(cls)
        names.append(full)
    return names
