"""Running a Core ML package with Core ML itself: ``predict`` vs torch, the compute plan, latency (macOS only).

:func:`check_coreml` feeds :func:`swiftlib.export.common.sample_images` photos (``uint8 [B, 3, S, S]``,
one ``predict`` per image) to an exported image classifier and compares its ``[B, K]`` probabilities
with the torch model's; :func:`compute_plan` asks Core ML (``MLComputePlan``) which device it prefers
for each op (the ground truth behind the Neural Engine lint of :mod:`swiftlib.export.inventory`);
:func:`time_coreml` times ``predict`` per compute unit. They need the Core ML runtime, which exists only
on macOS: elsewhere they return ``{"status": "skipped", "reason": ...}`` (:func:`coreml_runtime` says
why); they never raise for the platform. On any OS, :mod:`swiftlib.export.check` checks a package's
numbers with the reference interpreter :mod:`swiftlib.export.mil`.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from swiftlib.export.common import ALL_COMPUTE_UNITS, COMPUTE_UNITS, check_eval, resolve_model, sample_images
from swiftlib.export.coreml import quiet_coremltools
from swiftlib.export.inventory import op_inventory

__all__ = ["coreml_runtime", "check_coreml", "compute_plan", "time_coreml"]


def coreml_runtime() -> tuple[bool, str]:
    """``(available, message)``: whether ``MLModel.predict`` can run here, and why not (one line)."""
    if sys.platform != "darwin":
        return False, (f"Core ML prediction needs macOS: coremltools converts, saves and inspects .mlpackage files "
                       f"on any OS, but MLModel.predict, compilation and timing run only on macOS (this machine: "
                       f"{sys.platform}). Copy the .mlpackage to a Mac, or time it on an iPhone with Xcode's Core ML "
                       f"Performance Report (see the iPhone protocol).")
    try:
        with quiet_coremltools():
            import coremltools.libcoremlpython  # noqa: F401
    except ImportError as e:
        return False, f"coremltools has no native Core ML runtime on this Mac ({e}); reinstall coremltools from a wheel"
    return True, "Core ML runtime available"


def check_coreml(mlpackage, model, img_size: int = 224, compute_unit: str = "CPU_ONLY", checkpoint=None
                 ) -> dict[str, Any]:
    """``predict`` of an exported image classifier vs the torch model on :func:`sample_images`.

    ``model``: the torch module the package was exported from, or its name (rebuilt as :func:`to_coreml`
    builds it: ``checkpoint``, else the seed-0 random initialisation). Returns ``{"status": "ok",
    "max_abs_diff" (probabilities), "top1_agreement", "images"}``, or ``{"status": "skipped",
    "reason"}`` where Core ML cannot run (not macOS).
    """
    ok, why = coreml_runtime()
    if not ok:
        return {"status": "skipped", "reason": why}
    if isinstance(model, str):
        torch_model, _ = resolve_model(model, checkpoint=checkpoint)
    else:
        check_eval(model)
        torch_model = model
    pixels, normed = sample_images(img_size)
    with torch.no_grad():
        expected = torch_model(normed).softmax(-1)                       # [B, K]
    with quiet_coremltools() as ct:
        ml = ct.models.MLModel(str(mlpackage), compute_units=getattr(ct.ComputeUnit, compute_unit))
        labels = op_inventory(mlpackage).class_labels
        got = []
        for im in pixels:                                                # [3, S, S] -> [S, S, 3] image
            out = ml.predict({"image": Image.fromarray(im.permute(1, 2, 0).numpy())})
            got.append([out["classLabel_probs"][c] for c in labels])
    got = torch.tensor(got, dtype=torch.float32)                         # [B, K]
    return {"status": "ok", "compute_unit": compute_unit, "images": len(pixels),
            "max_abs_diff": float((got - expected).abs().max()),
            "top1_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean())}


def compute_plan(mlpackage, compute_unit: str = "ALL") -> dict[str, Any]:
    """The compute device Core ML prefers for each op of the package (``MLComputePlan``, coremltools >= 8).

    Returns ``{"status": "ok", "compute_unit", "devices": {device: ops}, "by_op": {op type: {device: ops}}}``
    (devices ``"NeuralEngine"``, ``"GPU"``, ``"CPU"``), or ``{"status": "skipped", "reason"}`` where Core ML
    cannot run or coremltools has no ``MLComputePlan``.
    """
    if compute_unit not in ALL_COMPUTE_UNITS:
        raise ValueError(f"unknown compute unit {compute_unit!r}; choose from {ALL_COMPUTE_UNITS}")
    ok, why = coreml_runtime()
    if not ok:
        return {"status": "skipped", "reason": why}
    with quiet_coremltools() as ct:
        try:
            from coremltools.models.compute_plan import MLComputePlan
        except ImportError:
            return {"status": "skipped", "reason": f"coremltools {ct.__version__} has no MLComputePlan (needs >= 8)"}
        unit = getattr(ct.ComputeUnit, compute_unit)
        compiled = ct.models.MLModel(str(mlpackage), compute_units=unit).get_compiled_model_path()
        plan = MLComputePlan.load_from_path(path=compiled, compute_units=unit)
        by_op: dict[str, Counter] = {}
        for op in plan.model_structure.program.functions["main"].block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            if usage is not None:  # consts have none
                device = type(usage.preferred_compute_device).__name__.removeprefix("ML").removesuffix("ComputeDevice")
                by_op.setdefault(op.operator_name, Counter())[device] += 1
    devices = sum(by_op.values(), Counter())
    return {"status": "ok", "compute_unit": compute_unit, "devices": dict(devices),
            "by_op": {k: dict(v) for k, v in sorted(by_op.items())}}


def _fixed_input(feature: dict[str, Any]) -> dict[str, Any]:
    """A fixed ``predict`` input for the package's first input: a black image or a seeded float array."""
    if feature["type"] == "imageType":
        return {feature["name"]: Image.fromarray(np.zeros((feature["height"], feature["width"], 3), np.uint8))}
    return {feature["name"]: np.random.default_rng(0).standard_normal(feature["shape"]).astype(np.float32)}


def _predict_latency(ml, x: dict[str, Any], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        ml.predict(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ml.predict(x)
        times.append((time.perf_counter() - t0) * 1e3)
    q = np.percentile(times, [10, 50, 90])
    return {"median_ms": float(q[1]), "p10_ms": float(q[0]), "p90_ms": float(q[2])}


def time_coreml(mlpackage, compute_units: Sequence[str] = COMPUTE_UNITS, runs: int = 50, warmup: int = 5
                ) -> dict[str, Any]:
    """Latency of ``predict`` per compute unit (median / p10 / p90 ms over ``runs`` calls, after ``warmup``),
    preprocessing excluded (a fixed input). ``{"status": "skipped", "reason"}`` where Core ML cannot run."""
    bad = [u for u in compute_units if u not in ALL_COMPUTE_UNITS]
    if bad:
        raise ValueError(f"unknown compute units {bad}; choose from {ALL_COMPUTE_UNITS}")
    ok, why = coreml_runtime()
    if not ok:
        return {"status": "skipped", "reason": why}
    with quiet_coremltools() as ct:
        x = _fixed_input(op_inventory(mlpackage).inputs[0])
        result: dict[str, Any] = {"status": "ok", "runs": runs}
        for unit in compute_units:
            ml = ct.models.MLModel(str(mlpackage), compute_units=getattr(ct.ComputeUnit, unit))
            result[unit] = _predict_latency(ml, x, runs, warmup)
    return result
