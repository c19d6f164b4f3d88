"""The MIL operations of swiftlib's Core ML exports, written with torch: one Python function per op type.

Shapes are MIL's: ``[B, C, H, W]`` maps (``[B, C, L]`` / ``[B, C, D, H, W]`` in 1-D / 3-D) for ``conv``
and the pools, any rank for elementwise ops and reductions.

Each function takes the op's inputs under their MIL names (``conv(x, weight, bias, strides, pad_type,
...)``, as in coremltools' op definitions, ``coremltools.converters.mil.mil.ops.defs``) and returns a
tensor (or a tuple of tensors for ops with several outputs). Tensor inputs arrive as torch tensors:
floats already in fp32 (the runner widens fp16 values before the call and rounds the results back to
the dtype the program declares), integer and bool parameters as int32 / bool tensors, strings as
``str``. Defaults are those of the MIL specification (iOS15-iOS17 opsets).

:data:`OPS` maps op type -> function; :mod:`swiftlib.export.mil` evaluates a program with it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ints(t) -> list[int]:
    """A const int32 parameter (``strides``, ``axes``, ``perm``, ...) as a Python list."""
    return [int(v) for v in torch.as_tensor(t).reshape(-1).tolist()]


def _bools(t, n: int) -> list[bool]:
    """An optional bool-mask parameter as ``n`` Python bools (all False when absent)."""
    return [False] * n if t is None else [bool(v) for v in torch.as_tensor(t).reshape(-1).tolist()]


def _axes(axes, x: torch.Tensor) -> list[int]:
    """Reduction axes (None: every axis), made non-negative."""
    return list(range(x.dim())) if axes is None else [a % x.dim() for a in _ints(axes)]


# ------------------------------------------------------------------------ elementwise
def _binary(fn):
    def op(x, y):
        return fn(x, y)
    return op


def _unary(fn):
    def op(x):
        return fn(x)
    return op


def _gelu(x, mode: str = "EXACT"):
    if mode == "EXACT":
        return F.gelu(x)
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    raise ValueError(f"gelu: unknown mode {mode!r}")


def _clip(x, alpha, beta):
    return torch.clamp(x, float(alpha), float(beta))


def _leaky_relu(x, alpha):
    return F.leaky_relu(x, float(alpha))


def _rsqrt(x, epsilon=1e-12):
    return torch.rsqrt(x + float(epsilon))


def _inverse(x, epsilon=1e-4):
    return 1.0 / (x + float(epsilon))


def _log(x, epsilon=1e-45):
    return torch.log(x + float(epsilon))


def _cast(x, dtype: str):
    """Nothing to compute: the runner converts every output to the dtype the program declares for it,
    which for a cast is ``dtype`` (float -> int truncates towards zero, as torch's ``.to`` does)."""
    return x


# ------------------------------------------------------------------------ linear algebra
def _linear(x, weight, bias=None):
    return F.linear(x, weight, bias)


def _matmul(x, y, transpose_x=False, transpose_y=False):
    if bool(transpose_x):
        x = x.transpose(-1, -2)
    if bool(transpose_y):
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


# ------------------------------------------------------------------------ convolution and pooling
def _spatial_pads(x, kernel, strides, dilations, pad_type: str, pad) -> list[int]:
    """Padding ``[begin_0, end_0, begin_1, end_1, ...]`` per spatial axis for a MIL ``pad_type``."""
    n = x.dim() - 2
    if pad_type == "valid":
        return [0] * (2 * n)
    if pad_type == "custom":
        return _ints(pad) if pad is not None else [0] * (2 * n)
    if pad_type not in ("same", "same_lower"):
        raise ValueError(f"unknown pad_type {pad_type!r}")
    pads = []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        pads += [small, big] if pad_type == "same" else [big, small]
    return pads


def _torch_pad(pads: list[int]) -> list[int]:
    """MIL lists pads first spatial axis first; F.pad wants the last axis first."""
    out = []
    for i in reversed(range(len(pads) // 2)):
        out += pads[2 * i:2 * i + 2]
    return out


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    n = x.dim() - 2
    strides = _ints(strides) if strides is not None else [1] * n
    dilations = _ints(dilations) if dilations is not None else [1] * n
    pads = _spatial_pads(x, weight.shape[2:], strides, dilations, pad_type, pad)
    x = F.pad(x, _torch_pad(pads))  # zero padding
    return _CONV[n](x, weight, bias, stride=strides, dilation=dilations, groups=int(groups))


def _pool(kind: str):
    def op(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
           exclude_padding_from_average=False):
        n = x.dim() - 2
        kernel = _ints(kernel_sizes)
        strides = _ints(strides) if strides is not None else [1] * n
        pads = _spatial_pads(x, kernel, strides, [1] * n, pad_type, pad)
        fill = float("-inf") if kind == "max" else 0.0
        padded = F.pad(x, _torch_pad(pads), value=fill)
        pool = {"max": (F.max_pool1d, F.max_pool2d, F.max_pool3d),
                "avg": (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)}[kind][n - 1]
        y = pool(padded, kernel, strides, ceil_mode=bool(ceil_mode))
        if kind == "avg" and bool(exclude_padding_from_average) and any(pads):
            ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads))  # 1 inside the image, 0 in the padding
            y = y / pool(ones, kernel, strides, ceil_mode=bool(ceil_mode))  # mean over real pixels only
        return y
    return op


# ------------------------------------------------------------------------ reductions and normalisation
def _reduce(fn):
    def op(x, axes=None, keep_dims=False):
        return fn(x, _axes(axes, x), bool(keep_dims))
    return op


def _amax(x, axes, keep):
    return torch.amax(x, dim=axes, keepdim=keep)


def _amin(x, axes, keep):
    return torch.amin(x, dim=axes, keepdim=keep)


def _softmax(x, axis=-1):
    return torch.softmax(x, dim=int(axis))


def _layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    axes = _axes(axes, x)
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(epsilon))
    return y * (gamma if gamma is not None else 1.0) + (beta if beta is not None else 0.0)


def _l2_norm(x, epsilon=1e-6):
    """``x / sqrt(sum x**2 + epsilon)`` over the last three axes (the leading ones are batch)."""
    axes = list(range(x.dim() - 3, x.dim()))
    return x / torch.sqrt((x * x).sum(dim=axes, keepdim=True) + float(epsilon))


def _channel(v, x):
    """A per-channel vector ``[C]`` shaped to broadcast over ``[B, C, *spatial]``."""
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    y = (x - _channel(mean, x)) / torch.sqrt(_channel(variance, x) + float(epsilon))
    if gamma is not None:
        y = y * _channel(gamma, x)
    return y + _channel(beta, x) if beta is not None else y


def _instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    axes = list(range(2, x.dim()))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + float(epsilon))
    if gamma is not None:
        y = y * _channel(gamma, x)
    return y + _channel(beta, x) if beta is not None else y


# ------------------------------------------------------------------------ shapes and layout
def _reshape(x, shape):
    shape = _ints(shape)
    if len(shape) == x.dim():  # 0 copies the input's dimension
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _transpose(x, perm):
    return x.permute(_ints(perm))


def _squeeze(x, axes=None):
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in _ints(axes)), reverse=True):
        x = x.squeeze(a)
    return x


def _expand_dims(x, axes):
    rank = x.dim() + len(_ints(axes))
    for a in sorted(a % rank for a in _ints(axes)):
        x = x.unsqueeze(a)
    return x


def _concat(values, axis, interleave=False):
    axis = int(axis)
    if not bool(interleave):
        return torch.cat(list(values), dim=axis)
    stacked = torch.stack(list(values), dim=axis % values[0].dim() + 1)  # [..., C, n, ...]: one of each in turn
    return stacked.flatten(axis % values[0].dim(), axis % values[0].dim() + 1)


def _split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis)
    sizes = _ints(split_sizes) if split_sizes is not None else x.shape[axis] // int(num_splits)
    return tuple(torch.split(x, sizes, dim=axis))


def _slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    n = x.dim()
    begin, end = _ints(begin), _ints(end)
    stride = _ints(stride) if stride is not None else [1] * n
    begin_mask, end_mask, squeeze_mask = _bools(begin_mask, n), _bools(end_mask, n), _bools(squeeze_mask, n)
    index = []
    for i in range(n):
        if squeeze_mask[i]:
            index.append(begin[i])  # pure indexing: the axis goes away
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        if stride[i] < 0:
            raise NotImplementedError("slice_by_index with a negative stride")
        index.append(slice(b, e, stride[i]))
    return x[tuple(index)]


def _slice_by_size(x, begin, size):
    index = []
    for b, s, dim in zip(_ints(begin), _ints(size), x.shape):
        b = b % dim if b < 0 else b
        index.append(slice(b, dim if s == -1 else b + s))
    return x[tuple(index)]


def _tile(x, reps):
    return x.repeat(_ints(reps))


def _pad(x, pad, mode="constant", constant_val=0.0):
    pads = _ints(pad)  # [begin, end] per axis, for the last len(pad) / 2 axes
    while len(pads) > 2 and pads[0] == pads[1] == 0:  # torch's reflect / replicate pad only trailing axes
        pads = pads[2:]
    torch_mode = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}[mode]
    if torch_mode == "constant":
        return F.pad(x, _torch_pad(pads), value=float(constant_val))
    return F.pad(x, _torch_pad(pads), mode=torch_mode)


# ------------------------------------------------------------------------ classifier
def _classify(probabilities, classes):
    """``probabilities`` ``[1, K]`` or ``[K]`` and the class labels -> (top label, {label: probability})."""
    p = probabilities.reshape(-1).double()
    if len(classes) != p.numel():
        raise ValueError(f"classify: {len(classes)} classes for {p.numel()} probabilities")
    return classes[int(p.argmax())], dict(zip(classes, p.tolist()))


OPS = {
    # elementwise, two inputs (numpy-style broadcasting)
    "add": _binary(torch.add), "sub": _binary(torch.sub), "mul": _binary(torch.mul),
    "real_div": _binary(torch.true_divide), "floor_div": _binary(torch.floor_divide),
    "maximum": _binary(torch.maximum), "minimum": _binary(torch.minimum), "pow": _binary(torch.pow),
    # elementwise, one input
    "relu": _unary(torch.relu), "sigmoid": _unary(torch.sigmoid), "tanh": _unary(torch.tanh),
    "silu": _unary(F.silu), "exp": _unary(torch.exp), "sqrt": _unary(torch.sqrt), "abs": _unary(torch.abs),
    "erf": _unary(torch.erf), "floor": _unary(torch.floor),
    "gelu": _gelu, "clip": _clip, "leaky_relu": _leaky_relu, "rsqrt": _rsqrt, "inverse": _inverse, "log": _log,
    "cast": _cast,
    # linear algebra, convolution, pooling
    "linear": _linear, "matmul": _matmul, "conv": _conv, "avg_pool": _pool("avg"), "max_pool": _pool("max"),
    # reductions and normalisation
    "reduce_mean": _reduce(lambda x, a, k: x.mean(dim=a, keepdim=k)),
    "reduce_sum": _reduce(lambda x, a, k: x.sum(dim=a, keepdim=k)),
    "reduce_max": _reduce(_amax), "reduce_min": _reduce(_amin),
    "reduce_l2_norm": _reduce(lambda x, a, k: torch.sqrt((x * x).sum(dim=a, keepdim=k))),
    "reduce_log_sum_exp": _reduce(lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k)),
    "softmax": _softmax, "layer_norm": _layer_norm, "batch_norm": _batch_norm, "instance_norm": _instance_norm,
    "l2_norm": _l2_norm,
    # shapes and layout
    "reshape": _reshape, "transpose": _transpose, "squeeze": _squeeze, "expand_dims": _expand_dims,
    "concat": _concat, "split": _split, "slice_by_index": _slice_by_index, "slice_by_size": _slice_by_size,
    "tile": _tile, "pad": _pad,
    # classifier
    "classify": _classify,
}
