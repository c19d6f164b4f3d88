"""Is a Core ML package computing what its torch model computes? Checked on any OS, no Mac needed.

Shape glossary: images ``uint8 [B, 3, S, S]`` (what a camera gives Core ML), logits ``[B, K]``; a block
package takes ``x`` tokens ``[1, N, D]`` or a map ``[1, C, H, W]`` and gives ``y`` of the same shape.

:func:`check_mlpackage` runs the package's ML program with the reference interpreter
(:mod:`swiftlib.export.mil`) and compares it with the torch model rebuilt exactly as the export built it
(:func:`reference_model`: the package's metadata names the model, attention, class count and source
checkpoint; the seed-0 initialisation or ``checkpoint``'s weights):

* an image classifier (``python -m swiftlib.export coreml``) on the scikit-image photos of
  :func:`~swiftlib.export.common.sample_images` and on random images: largest logit difference, the
  largest logit, their ratio and top-1 agreement;
* a block (``python -m swiftlib.export block`` / ``sweep``) on its seed-0 example input and on random inputs.

It passes when the ratio stays within :func:`tolerance` (fp16: :data:`swiftlib.export.mil.FP16_RTOL`)
and no image whose top-1 is decisive changes class. :func:`format_check` gives the report as lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from swiftlib.export import mil
from swiftlib.export.common import build_model, check_img_size, sample_images
from swiftlib.export.coreml import block_module

__all__ = ["tolerance", "reference_model", "check_mlpackage", "format_check"]


def _precision(program: mil.MILProgram) -> str:
    """``"fp16"`` or ``"fp32"``: the metadata's, else the dtype the program's heaviest ops compute in."""
    meta = program.metadata.get("swiftlib.precision")
    if meta in ("fp16", "fp32"):
        return meta
    heavy = [op.outputs[0].dtype for op in program.ops if op.type in ("conv", "linear", "matmul")]
    return "fp16" if "FLOAT16" in heavy else "fp32"


def tolerance(program: mil.MILProgram) -> tuple[float, str]:
    """``(rtol, why)`` for the package's precision: the bound on max |package - torch| / max |torch|."""
    n = len(program.ops)
    if _precision(program) == "fp16":
        return mil.FP16_RTOL, (f"fp16 rounds each of the {n} ops to 11 significant bits (up to 4.9e-4 each) and the "
                               f"errors compound; healthy packages measure at most 3e-3, damaged weights that "
                               f"matter 1e-2 or more")
    return mil.FP32_RTOL, f"fp32: only the rounding of {n} ops and the order of sums differ from torch"


def _class_labels(program: mil.MILProgram) -> list:
    classify = next(op for op in program.ops if op.type == "classify")
    return program.consts[classify.inputs["classes"][0]]


def _image_side(program: mil.MILProgram, img_size: int | None) -> int:
    decl = program.inputs[0]
    side = program.image_inputs[decl.name]["width"] if decl.name in program.image_inputs else decl.shape[-1]
    if img_size is not None and check_img_size(img_size) != side:
        raise ValueError(f"--img-size {img_size} but the package takes {side} x {side} images")
    return side


def _classifier_model(program: mil.MILProgram, model: str | None, checkpoint, img_size: int | None
                      ) -> tuple[nn.Module, str, dict[str, torch.Tensor]]:
    meta = program.metadata
    name = model or meta.get("swiftlib.model")
    if not name or meta.get("swiftlib.library", "swiftlib") != "swiftlib":
        raise ValueError(f"{program.path} is not an export of a swiftlib model name (metadata: library "
                         f"{meta.get('swiftlib.library')!r}, model {meta.get('swiftlib.model')!r}); check rebuilds "
                         f"swiftlib's models: give --model NAME")
    source = meta.get("swiftlib.source_checkpoint", "")
    if checkpoint is None and source and not source.startswith("random initialisation"):
        raise ValueError(f"the package was exported with the weights of {source!r}: pass --checkpoint FILE")
    side, k = _image_side(program, img_size), len(_class_labels(program))
    torch_model, info = build_model(name, num_classes=None if checkpoint else k, checkpoint=checkpoint,
                                    attention=None if checkpoint else meta.get("swiftlib.attention"))
    if info["num_classes"] != k:
        raise ValueError(f"the package has {k} classes, the checkpoint's classifier {info['num_classes']}")
    pixels, normed = sample_images(side)
    rnd = torch.randint(0, 256, (4, 3, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    if program.image_inputs:
        inputs = {"photos": pixels, "random": rnd}
    else:  # a tensor-input classifier takes the normalised floats
        inputs = {"photos": normed, "random": torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(0))}
    what = f"{info['model']} image classifier, {side} px, {k} classes, weights: {info['source_checkpoint']}"
    return torch_model, what, inputs


def _block_model(program: mil.MILProgram) -> tuple[nn.Module, str, dict[str, torch.Tensor]]:
    meta, shape = program.metadata, program.inputs[0].shape
    kind, variant = meta.get("swiftlib.kind"), meta.get("swiftlib.attention")
    if kind == "attention" and len(shape) == 3:
        module, example = block_module(kind, variant, n=shape[1], d=shape[2])
    elif kind == "encoder" and len(shape) == 4:
        module, example = block_module(kind, variant, d=shape[1], hw=(shape[2], shape[3]))
    else:
        raise ValueError(f"{program.path} is neither a swiftlib classifier nor a swiftlib block export (metadata "
                         f"swiftlib.kind {kind!r}, input shape {shape})")
    rnd = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(1))
    return module, f"{variant} {kind} block, input {list(shape)}", {"seed-0 example": example, "random": rnd}


def reference_model(mlpackage, model: str | None = None, checkpoint=None, img_size: int | None = None
                    ) -> tuple[mil.MILProgram, nn.Module, str, dict[str, torch.Tensor]]:
    """``(program, torch model, description, {name: inputs})``: the package and what it was exported from.

    A classifier is rebuilt by :func:`~swiftlib.export.common.build_model` (``model`` or the metadata's
    name, the package's class count and attention; seed 0 or ``checkpoint``), a block by
    :func:`~swiftlib.export.coreml.block_module` from its metadata and input shape."""
    program = mil.load_program(mlpackage)
    missing = sorted(set(program.op_types()) - set(mil.OPS))
    if missing:  # before anything is built: name the ops, not the first one that fails
        raise ValueError(f"{program.path}: MIL op(s) {', '.join(map(repr, missing))} not implemented by swiftlib's "
                         f"reference interpreter (implemented: {', '.join(sorted(mil.OPS))})")
    if any(op.type == "classify" for op in program.ops):
        return (program, *_classifier_model(program, model, checkpoint, img_size))
    return (program, *_block_model(program))


def check_mlpackage(mlpackage, model: str | None = None, checkpoint=None, img_size: int | None = None
                    ) -> dict[str, Any]:
    """Run the package with the reference interpreter and compare it with its torch model (:func:`reference_model`).

    Returns ``{"package", "what", "precision", "ops", "rtol", "why", "sets": {name: check_package result},
    "passed"}``; ``passed`` needs every set to pass.
    """
    program, torch_model, what, inputs = reference_model(mlpackage, model, checkpoint, img_size)
    rtol, why = tolerance(program)
    sets = {name: mil.check_package(program, torch_model, x, rtol=rtol) for name, x in inputs.items()}
    return {"package": str(Path(mlpackage)), "what": what, "precision": _precision(program), "ops": len(program.ops),
            "rtol": rtol, "why": why, "sets": sets, "passed": all(r["passed"] for r in sets.values())}


def _set_line(name: str, r: dict[str, Any]) -> str:
    if "max_abs_diff_logits" in r:
        return (f"  {name} ({r['images']}): max abs diff of the logits {r['max_abs_diff_logits']:.3g} (largest logit "
                f"{r['max_abs_logit']:.3g}, ratio {r['rel_diff']:.3g}), top-1 agreement {r['top1_agreement']:.0%}")
    n = r.get("inputs", r.get("images"))
    return (f"  {name} ({n}): max abs diff {r['max_abs_diff']:.3g} (largest output {r['max_abs_ref']:.3g}, "
            f"ratio {r['rel_diff']:.3g})")


def format_check(result: dict[str, Any]) -> list[str]:
    """The report of :func:`check_mlpackage` as printed lines (the verdict last)."""
    lines = [f"{result['package']}: {result['what']}, {result['precision']}, {result['ops']} MIL ops, run by "
             f"swiftlib's reference MIL interpreter against torch"]
    lines += [_set_line(name, r) for name, r in result["sets"].items()]
    lines.append(f"tolerance: ratio <= {result['rtol']:g} ({result['why']})")
    worst = max((r["rel_diff"] for r in result["sets"].values()), key=lambda v: float("inf") if v != v else v)
    lines.append("PASSED: the package computes what the torch model computes, within the tolerance"
                 if result["passed"] else
                 f"FAILED: the package disagrees with the torch model (worst ratio {worst:.3g} vs {result['rtol']:g}"
                 f"{' or a decisive top-1 changed' if worst == worst and worst <= result['rtol'] else ''})")
    return lines
