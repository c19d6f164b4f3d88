"""ONNX export and ONNX Runtime: the desktop proxy for the phone.

Shape glossary: ``B`` batch, ``S`` image side in pixels, ``K`` classes. An exported file takes
``image`` float ``[B, 3, S, S]`` (ImageNet-normalised; ``B`` a dynamic axis unless a batch size is
fixed) and gives ``logits`` ``[B, K]``.

* :func:`to_onnx` writes the file ``python -m swiftlib.export onnx`` writes: swiftlib's SwiftFormer fused
  and on the export-friendly map path (:func:`swiftlib.export.common.resolve_model`), a model name, or any
  eval-mode module; ``onnx.checker`` checks every file before it is in place.
* :func:`to_onnx_peer` writes timm's model the way timm's users do (``timm.utils.onnx.onnx_export``:
  TorchScript exporter, opset 17, dynamic batch axis): the peer every latency ratio is taken against.
* :func:`check_onnx` runs ``onnx.checker`` on a file and compares ONNX Runtime with torch.
* :func:`ort_session` is the one ONNX Runtime session builder of swiftlib (the model benchmark uses it).
* :func:`onnx_latency` times swiftlib's file against timm's in alternating rounds, round-by-round ratios.

Which exporter. ``torch.onnx.export`` defaults to the dynamo exporter since PyTorch 2.9. At opset 18
it writes each GELU as ``Div -> Erf -> Add -> Mul(0.5) -> Mul``, an order ONNX Runtime's Gelu fusion
does not match: the XS file then runs 20 unfused GELUs (100 elementwise kernels over the largest maps),
and each one cuts ONNX Runtime's blocked-channel (NCHWc) convolution chain, so the optimised graph
needs 61 layout reorders instead of 21. The TorchScript exporter at opset 17 writes the pattern ONNX
Runtime fuses into one ``Gelu`` (the dynamo exporter at opset 20 writes ONNX's own ``Gelu``, as fast);
swiftlib uses it, like timm's users, so both files come from the same exporter and differ only in the
network's graph.
"""
from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from timm.utils.onnx import onnx_export as timm_onnx_export
from torch import nn

from swiftlib.export.common import check_eval, check_img_size, check_out_path, output_dir, resolve_model, results_path
from swiftlib.export.common import timm_model
from swiftlib.io import atomic_write_bytes, atomic_write_json
from swiftlib.measure import machine_info, paired_ratio, time_interleaved
from swiftlib.models import resolve_name

__all__ = ["ONNX_OPSET", "EXPORTERS", "ort_session", "to_onnx", "to_onnx_peer", "check_onnx", "onnx_latency",
           "write_onnx_latency"]

#: The opset of every file swiftlib writes (and of timm's peer file).
ONNX_OPSET = 17
#: ``torch.onnx.export`` back ends :func:`to_onnx` can use.
EXPORTERS = ("torchscript", "dynamo")
_NAMES = {"input_names": ["image"], "output_names": ["logits"]}


def ort_session(path: str | os.PathLike, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU ``InferenceSession`` of the ``.onnx`` file ``path``, set up for timing.

    ``threads``: intra-op threads (one inter-op thread); None keeps ONNX Runtime's default.
    Idle threads do not spin (they spin by default and would steal the CPU from whatever is timed
    next); graph optimisations all on (ONNX Runtime's default, stated); warnings off. The one
    session builder of swiftlib (the model benchmark of :mod:`swiftlib.bench` uses it too).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _checked_bytes(staged: Path, what: str) -> bytes:
    """The bytes of a freshly exported file, once ``onnx.checker.check_model`` passes on them."""
    try:
        onnx.checker.check_model(str(staged))
    except onnx.checker.ValidationError as e:
        raise ValueError(f"the exported {what} is not a valid ONNX model (onnx.checker): {e}") from None
    return staged.read_bytes()


def _export(model: nn.Module, staged: Path, example: torch.Tensor, opset: int, exporter: str,
            dynamic_batch: bool) -> None:
    """``torch.onnx.export`` of ``model`` to ``staged`` with input ``image`` and output ``logits``."""
    kw: dict[str, Any] = dict(opset_version=opset, verbose=False, **_NAMES)
    if exporter == "torchscript":
        kw["dynamo"] = False
        if dynamic_batch:
            kw["dynamic_axes"] = {"image": {0: "batch"}, "logits": {0: "batch"}}
    else:
        kw.update(dynamo=True, external_data=False)
        if dynamic_batch:  # torch.export specialises a batch of 1: trace with 2 to keep the axis
            example, kw["dynamic_shapes"] = torch.cat([example, example]), ({0: "batch"},)
    # the exporters' progress lines and deprecation notes are not results
    with warnings.catch_warnings(), redirect_stdout(sys.stderr), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(staged), **kw)


def to_onnx(model_or_name, path, img_size: int = 224, opset: int = ONNX_OPSET, checkpoint=None,
            num_classes: int | None = None, attention: str | None = None, batch_size: int | None = None,
            exporter: str = "torchscript") -> Path:
    """Export to ONNX: input ``image`` float ``[B, 3, S, S]`` (ImageNet-normalised), output ``logits`` ``[B, K]``.

    ``model_or_name``: a swiftlib model name (built with ``checkpoint``'s weights and class count, or
    seed 0 with ``num_classes``), a :class:`swiftlib.models.SwiftFormer` in eval mode (fused and on
    the export-friendly path, as for Core ML; the caller's model is not changed) or any other eval-mode
    module, exported as given. ``batch_size``: None (default) makes ``B`` a dynamic axis (one file
    for every batch size); an int fixes it. ``exporter``: ``"torchscript"`` (default, see the module
    docstring for why) or ``"dynamo"``. The file passes ``onnx.checker.check_model`` before it is
    written (atomically); returns ``path``.
    """
    img_size = check_img_size(img_size)
    path = check_out_path(path, ".onnx")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be a positive int or None (a dynamic batch axis), got {batch_size!r}")
    model, _ = resolve_model(model_or_name, num_classes=num_classes, checkpoint=checkpoint, attention=attention)
    example = torch.zeros(batch_size or 1, 3, img_size, img_size)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        _export(model, staged, example, opset, exporter, dynamic_batch=batch_size is None)
        return atomic_write_bytes(path, _checked_bytes(staged, path.name))  # fsync, usual permissions


def to_onnx_peer(model_or_name, path, img_size: int = 224) -> Path:
    """timm's model exported the way timm's users export it: ``timm.utils.onnx.onnx_export`` (TorchScript
    exporter, opset :data:`ONNX_OPSET`, dynamic batch axis, ``onnx.checker`` on), input ``image``, output
    ``logits``, as :func:`to_onnx` names them.

    ``model_or_name``: a timm model name (random initialisation, :func:`~swiftlib.export.common.timm_model`)
    or an eval-mode module. Written atomically; returns ``path``.
    """
    img_size = check_img_size(img_size)
    path = check_out_path(path, ".onnx")
    model = timm_model(resolve_name(model_or_name)) if isinstance(model_or_name, str) else model_or_name
    check_eval(model)
    example = torch.zeros(1, 3, img_size, img_size)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        staged = Path(tmp) / "peer.onnx"
        # check=False: timm would run onnx.checker here, and _checked_bytes runs it on the bytes written
        timm_onnx_export(model, str(staged), example_input=example, opset=ONNX_OPSET, check=False, **_NAMES)
        return atomic_write_bytes(path, _checked_bytes(staged, path.name))


def _onnx_batch(sess: ort.InferenceSession) -> int | None:
    """The fixed batch size of a session's input, None for a dynamic batch axis."""
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def check_onnx(path, model: nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
    """``onnx.checker.check_model`` on the file (a ValueError if it fails), then ONNX Runtime (CPU) vs
    torch on ``inputs`` ``[B, 3, S, S]``: all at once for a dynamic batch axis, else in chunks of the
    file's batch size.

    Returns ``{"max_abs_diff", "max_abs_logit", "max_rel_diff" (diff / largest torch logit),
    "top1_agreement", "images", "batch" (per call), "onnx_checker": "passed"}``.
    """
    check_eval(model)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ValueError(f"{path.name} is not a valid ONNX model: {e}") from None
    sess = ort_session(path)
    name, chunk = sess.get_inputs()[0].name, _onnx_batch(sess) or len(inputs)
    if len(inputs) % chunk:
        raise ValueError(f"{path.name} takes batches of {chunk}; got {len(inputs)} inputs")
    got = torch.cat([torch.from_numpy(sess.run(None, {name: x.numpy()})[0]) for x in inputs.split(chunk)])
    with torch.no_grad():
        expected = model(inputs)                                                     # [B, K]
    scale = float(expected.abs().max())
    diff = float((got - expected).abs().max())
    return {"max_abs_diff": diff, "max_abs_logit": scale, "max_rel_diff": diff / scale if scale else float("inf"),
            "images": len(inputs), "batch": chunk,
            "top1_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean()), "onnx_checker": "passed"}


#: What the two files of :func:`onnx_latency` are (recorded with the results).
FILES = {"swiftlib": "swiftlib.export.to_onnx: the file `python -m swiftlib.export onnx` writes (fused, map-form "
                     f"attention, TorchScript exporter, opset {ONNX_OPSET}, dynamic batch axis)",
         "timm": "swiftlib.export.to_onnx_peer: timm.utils.onnx.onnx_export of timm's model (TorchScript exporter, "
                 f"opset {ONNX_OPSET}, dynamic batch axis), as timm's users export it"}


def _time_pair(s_ours, s_theirs, x: np.ndarray, threads: int, rounds: int, min_run_time: float) -> dict[str, Any]:
    """Both sessions on ``x`` in alternating rounds: medians, IQRs and the round-by-round ratio."""
    feed = {"image": x}
    t = time_interleaved({"swiftlib": lambda: s_ours.run(None, feed), "timm": lambda: s_theirs.run(None, feed)},
                         rounds=rounds, min_run_time=min_run_time, threads=threads)
    ours, theirs = t["swiftlib"]["round_medians_ms"], t["timm"]["round_medians_ms"]
    per_round = [a / b for a, b in zip(ours, theirs)]
    return {"swiftlib_ms": t["swiftlib"]["median_ms"], "timm_ms": t["timm"]["median_ms"],
            "ratio": paired_ratio(ours, theirs), "ratio_of_medians": t["swiftlib"]["median_ms"] / t["timm"]["median_ms"],
            "round_ratios": [round(r, 4) for r in per_round],
            "swiftlib_iqr_ms": t["swiftlib"]["iqr_ms"], "timm_iqr_ms": t["timm"]["iqr_ms"]}


def _latency_rows(name: str, out_dir: Path, img_size: int, batch_sizes: Sequence[int], threads: int, rounds: int,
                  min_run_time: float) -> list[dict[str, Any]]:
    """Export swiftlib's and timm's ``name`` once (dynamic batch), check both against torch, time each batch."""
    ours, _ = resolve_model(name)
    theirs = timm_model(name)
    p_ours = to_onnx(ours, out_dir / f"{name}_swiftlib.onnx", img_size)
    p_theirs = to_onnx_peer(theirs, out_dir / f"{name}_timm.onnx", img_size)
    x = torch.randn(2, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    check_ours, check_theirs = check_onnx(p_ours, ours, x), check_onnx(p_theirs, theirs, x)
    s_ours, s_theirs = ort_session(p_ours, threads), ort_session(p_theirs, threads)
    rows = []
    for b in batch_sizes:
        xb = torch.randn(b, 3, img_size, img_size, generator=torch.Generator().manual_seed(b)).numpy()
        rows.append({"model": name, "batch": b, **_time_pair(s_ours, s_theirs, xb, threads, rounds, min_run_time),
                     "max_rel_diff_swiftlib": check_ours["max_rel_diff"],
                     "max_rel_diff_timm": check_theirs["max_rel_diff"]})
    return rows


def onnx_latency(models: Sequence[str] = ("swiftformer_xs",), img_size: int = 224, out_dir=None, threads: int = 1,
                 rounds: int = 5, min_run_time: float = 2.0, batch_sizes: Sequence[int] = (1,)
                 ) -> dict[str, Any]:
    """ONNX Runtime CPU latency of swiftlib's file of each model (:func:`to_onnx`) against timm's file of
    the same model (:func:`to_onnx_peer`), timed in alternating rounds in the same run
    (:func:`swiftlib.measure.time_interleaved`) at each of ``batch_sizes``.

    Both files are checked against their torch models first (largest logit difference relative to the
    largest logit, on two random images: the weights are a random initialisation). ``ratio`` is the
    median over rounds of swiftlib's time / timm's in that round (:func:`swiftlib.measure.paired_ratio`);
    ``round_ratios`` are the rounds' own ratios (the spread), ``ratio_of_medians`` the pooled ratio.
    ``out_dir``: where the ``.onnx`` files go (a temporary folder, deleted afterwards, if None).
    :func:`write_onnx_latency` records the result.
    Returns ``{"rows": [{"model", "batch", "swiftlib_ms", "timm_ms", "ratio", ...}], "files", ...}``.
    """
    models = [resolve_name(m) for m in models]
    img_size = check_img_size(img_size)
    bad = [b for b in batch_sizes if isinstance(b, bool) or int(b) < 1]
    if bad or not batch_sizes:
        raise ValueError(f"batch sizes must be positive ints, got {list(batch_sizes)}")
    with output_dir(out_dir, "swiftlib-onnx-") as out_dir:
        rows = [r for name in models
                for r in _latency_rows(name, out_dir, img_size, [int(b) for b in batch_sizes], threads, rounds,
                                       min_run_time)]
    result = {"img_size": img_size, "threads": threads, "rounds": rounds, "provider": "CPUExecutionProvider",
              "onnxruntime": ort.__version__, "files": FILES, "peer": "timm's export of the same model, same run",
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows}
    return result


def write_onnx_latency(result: dict[str, Any], results_dir) -> Path:
    """Write an :func:`onnx_latency` result with machine info as ``results_dir/export_onnx_latency.json``."""
    return atomic_write_json(results_path(results_dir, "export_onnx_latency.json"),
                             {**result, "machine": machine_info("cpu")})
