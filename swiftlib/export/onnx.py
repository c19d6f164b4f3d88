"""ONNX export and ONNX Runtime: the desktop proxy for the phone.

Shape glossary: ``B`` batch, ``S`` image side in pixels, ``K`` classes. An exported file takes
``image`` float ``[1, 3, S, S]`` (ImageNet-normalised) and gives ``logits`` ``[1, K]``.

* :func:`to_onnx` writes the file, for swiftlib's SwiftFormer (fused, on the export-friendly map
  path: :func:`swiftlib.export.common.resolve_model`), a model name, or any eval-mode module
  (e.g. timm's, exported by the same function for a like-for-like comparison).
* :func:`check_onnx` runs ``onnx.checker`` on the file and compares ONNX Runtime with torch.
* :func:`ort_session` is the one ONNX Runtime session builder of swiftlib (the model benchmark uses it).
* :func:`onnx_latency` times swiftlib's export against timm's export in alternating rounds.
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

import onnx
import onnxruntime as ort
import torch
from torch import nn

from swiftlib.export.common import check_eval, check_img_size, check_out_path, output_dir, resolve_model, results_path
from swiftlib.export.common import timm_model
from swiftlib.io import atomic_write_bytes, atomic_write_json
from swiftlib.measure import machine_info, time_interleaved
from swiftlib.models import resolve_name

__all__ = ["ort_session", "to_onnx", "check_onnx", "onnx_latency", "write_onnx_latency"]


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


def to_onnx(model_or_name, path, img_size: int = 224, opset: int = 18, checkpoint=None, num_classes: int = 1000,
            attention: str = "additive") -> Path:
    """Export to ONNX: input ``image`` float ``[1, 3, S, S]`` (ImageNet-normalised), output ``logits``
    ``[1, K]``.

    ``model_or_name``: a swiftlib model name (built with ``num_classes``, ``attention``, ``checkpoint``),
    a :class:`swiftlib.models.SwiftFormer` in eval mode (fused and on the export-friendly path, as for
    Core ML; the caller's model is not changed) or any other eval-mode module, exported as given
    (e.g. timm's model, for a comparison through the same exporter). Written atomically; returns ``path``.
    """
    img_size = check_img_size(img_size)
    path = check_out_path(path, ".onnx")
    model, _ = resolve_model(model_or_name, num_classes=num_classes, checkpoint=checkpoint, attention=attention)
    example = torch.zeros(1, 3, img_size, img_size)
    # the exporter's progress lines go to stderr: they are not results
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        staged = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (example,), str(staged), input_names=["image"], output_names=["logits"],
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)
        return atomic_write_bytes(path, staged.read_bytes())  # the shared writer: fsync, usual permissions


def check_onnx(path, model: nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
    """``onnx.checker.check_model`` on the file (a ValueError if it fails), then ONNX Runtime (CPU) vs
    torch on ``inputs`` ``[B, 3, S, S]`` (one call per image, batch 1 as exported).

    Returns ``{"max_abs_diff", "max_abs_logit", "max_rel_diff" (diff / largest torch logit),
    "top1_agreement", "images", "onnx_checker": "passed"}``.
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
    name = sess.get_inputs()[0].name
    got = torch.cat([torch.from_numpy(sess.run(None, {name: x[None].numpy()})[0]) for x in inputs])  # B x [1, K]
    with torch.no_grad():
        expected = model(inputs)                                                     # [B, K]
    scale = float(expected.abs().max())
    diff = float((got - expected).abs().max())
    return {"max_abs_diff": diff, "max_abs_logit": scale, "max_rel_diff": diff / scale if scale else float("inf"),
            "images": len(inputs), "top1_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean()),
            "onnx_checker": "passed"}


def _latency_row(name: str, out_dir: Path, x: torch.Tensor, threads: int, rounds: int,
                 min_run_time: float) -> dict[str, Any]:
    """Export swiftlib's and timm's ``name``, check both against torch, time both in alternating rounds."""
    img_size = x.shape[-1]
    ours, _ = resolve_model(name)
    theirs = timm_model(name)
    p_ours = to_onnx(ours, out_dir / f"{name}_swiftlib.onnx", img_size)
    p_theirs = to_onnx(theirs, out_dir / f"{name}_timm.onnx", img_size)
    check_ours, check_theirs = check_onnx(p_ours, ours, x), check_onnx(p_theirs, theirs, x)
    s_ours, s_theirs = ort_session(p_ours, threads), ort_session(p_theirs, threads)
    feed = {"image": x.numpy()}
    t = time_interleaved({"swiftlib": lambda: s_ours.run(None, feed), "timm": lambda: s_theirs.run(None, feed)},
                         rounds=rounds, min_run_time=min_run_time, threads=threads)
    return {"model": name, "swiftlib_ms": t["swiftlib"]["median_ms"], "timm_ms": t["timm"]["median_ms"],
            "ratio": t["swiftlib"]["median_ms"] / t["timm"]["median_ms"],
            "swiftlib_iqr_ms": t["swiftlib"]["iqr_ms"], "timm_iqr_ms": t["timm"]["iqr_ms"],
            "max_rel_diff_swiftlib": check_ours["max_rel_diff"], "max_rel_diff_timm": check_theirs["max_rel_diff"]}


def onnx_latency(models: Sequence[str] = ("swiftformer_xs",), img_size: int = 224, out_dir=None, threads: int = 1,
                 rounds: int = 5, min_run_time: float = 2.0, results_dir=None) -> dict[str, Any]:
    """ONNX Runtime CPU latency of swiftlib's export of each model, as a ratio against timm's export of
    the same model (the peer), timed in alternating rounds in the same run
    (:func:`swiftlib.measure.time_interleaved`).

    Both are checked against their torch models first (largest logit difference relative to the
    largest logit, on one random image ``[1, 3, S, S]``: the weights are a random initialisation).
    ``out_dir``: where the ``.onnx`` files go (a temporary folder, deleted afterwards, if None).
    ``results_dir``: if given, writes ``export_onnx_latency.json`` there (:func:`write_onnx_latency`).
    Returns ``{"rows": [{"model", "swiftlib_ms", "timm_ms", "ratio", "max_rel_diff_swiftlib", ...}], ...}``.
    """
    models = [resolve_name(m) for m in models]
    img_size = check_img_size(img_size)
    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    with output_dir(out_dir, "swiftlib-onnx-") as out_dir:
        rows = [_latency_row(name, out_dir, x, threads, rounds, min_run_time) for name in models]
    result = {"img_size": img_size, "threads": threads, "provider": "CPUExecutionProvider",
              "onnxruntime": ort.__version__, "peer": "timm export of the same model, same run", "rows": rows}
    if results_dir is not None:
        write_onnx_latency(result, results_dir)
    return result


def write_onnx_latency(result: dict[str, Any], results_dir) -> Path:
    """Write an :func:`onnx_latency` result with machine info as ``results_dir/export_onnx_latency.json``."""
    return atomic_write_json(results_path(results_dir, "export_onnx_latency.json"),
                             {**result, "machine": machine_info("cpu")})
