"""Core ML export: a whole image classifier, one attention block / Encoder, or any one-input module.

Shape glossary (as in :mod:`swiftlib.attention`)::

    B batch   C channels   H, W map height/width   N = H * W tokens   D = C token width   K classes
    B, C, H, W  feature maps / images             B, N, D  token tensors

* :func:`to_coreml`: image ``[1, 3, S, S]`` -> ``classLabel`` + ``classLabel_probs`` (K classes), with
  the ImageNet normalisation folded into Core ML's input bias and the stem convolution.
* :func:`to_coreml_block`: one attention ``[1, N, D] -> [1, N, D]`` or one SwiftFormer Encoder
  ``[1, C, H, W] -> [1, C, H, W]`` (:func:`block_module` builds it), for per-block timing.
* :func:`to_coreml_module`: any eval-mode module with one tensor input ``x`` and one output ``y``.

Target: ML program, iOS 16, fp16 by default. swiftlib's exports (``optimize=True``, the default) run an
exact rewrite after coremltools' own passes (:mod:`swiftlib.export.coreml_passes`: an L2 normalisation
over a whole map, three ops, becomes one ``l2_norm``) and take the image in pixel units (no ``mul`` by
1/255: the scale is in the stem convolution). ``optimize=False`` is coremltools' default conversion,
for a peer compared with swiftlib's. Every package
is written atomically. coremltools is imported on first use (:func:`quiet_coremltools`), without its
start-up noise.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

import swiftlib
from swiftlib.attention import VARIANTS, attention_macs, build_attention
from swiftlib.data import imagenet_class_labels, seeded
from swiftlib.export import coreml_passes
from swiftlib.export.common import check_eval, check_img_size, check_out_path, check_precision, resolve_model
from swiftlib.models import SwiftFormer, export_friendly, fuse_for_inference

__all__ = ["ImageClassifier", "to_coreml", "block_module", "to_coreml_block", "to_coreml_module",
           "quiet_coremltools"]


# ============================================================================ coremltools, quietly
@contextmanager
def quiet_coremltools() -> Iterator[Any]:
    """Import coremltools without its Linux start-up noise (no native runtime) or the untested-torch warning;
    yields the module, with the converter fixes (:func:`_register_converter_fixes`) and swiftlib's graph passes
    (:func:`swiftlib.export.coreml_passes.register`) registered."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*has not been tested with coremltools.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*torch.jit.trace.*is deprecated.*")
            warnings.filterwarnings("ignore", message=".*has been renamed to.*")
            import coremltools as ct
            _register_converter_fixes()
            coreml_passes.register()
            yield ct
    finally:
        logger.setLevel(level)


_FIXES_REGISTERED = False


def _register_converter_fixes() -> None:
    """Two converter gaps of coremltools 9.0 for the graphs swiftlib traces.

    ``aten::addcmul`` has no converter: one is registered (``input + value * t1 * t2``).
    coremltools 9.0's converter for ``aten::Int`` calls ``int()`` on a one-element array, which NumPy 2
    refuses ("only 0-dimensional arrays can be converted to Python scalars"): traced ``B, N, D = x.shape``
    followed by ``view(B, N, ...)`` then fails. The replacement takes ``.item()`` of a constant and defers
    to coremltools' own converter otherwise (registered once, through its public ``register_torch_op``)."""
    global _FIXES_REGISTERED
    if _FIXES_REGISTERED:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops as torch_ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    def _int(context, node):
        x = torch_ops._get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and np.size(x.val) == 1:
            context.add(mb.const(val=int(np.asarray(x.val).reshape(()).item()), name=node.name), node.name)
        else:
            torch_ops._cast(context, node, int, "int32")

    register_torch_op(_int, torch_alias=["int"], override=True)

    if _TORCH_OPS_REGISTRY.get_func("addcmul") is None:
        def addcmul(context, node):
            """``addcmul(input, t1, t2, value=1) = input + value * t1 * t2``."""
            inputs = torch_ops._get_inputs(context, node, min_expected=3)
            x, t1, t2 = inputs[:3]
            prod = mb.mul(x=t1, y=t2, name=node.name + "_prod")
            value = inputs[3].val if len(inputs) > 3 and inputs[3] is not None else 1
            if value is not None and float(value) != 1.0:
                prod = mb.mul(x=prod, y=float(value), name=node.name + "_scaled")
            context.add(mb.add(x=x, y=prod, name=node.name), node.name)

        register_torch_op(addcmul)
    _FIXES_REGISTERED = True


# ============================================================================ the classifier interface
class ImageClassifier(nn.Module):
    """What the Core ML image classifier computes: ``[B, 3, H, W]`` image -> probabilities ``[B, K]``.

    Core ML gives the model ``u = pixel_scale * p + bias`` (one ``scale`` for all channels, one ``bias``
    per channel: :meth:`coreml_bias`). With ``pixel_scale = 1 / 255`` that is ``p / 255 - mean`` and
    the per-channel ``1 / std`` is folded into the first convolution's input channels; with
    ``pixel_scale = 1`` it is ``p - 255 mean`` and ``1 / (255 std)`` is folded (Core ML then needs no
    ``mul`` op). Either fold is exact: zero padding stays zero, and ``u`` times the folded factor is
    ``(p / 255 - mean) / std``. Modules without a foldable first conv get an explicit per-channel
    multiply instead (``folded`` is False then).

    Folding changes the first convolution, so ``model`` is deep-copied first; ``copy=False`` wraps
    (and folds into) ``model`` itself, for a module the caller owns (e.g. from :func:`resolve_model`).
    ``std=None``: the input is already normalised (nothing to fold, ``pixel_scale`` ignored).
    """

    def __init__(self, model: nn.Module, std=IMAGENET_DEFAULT_STD, softmax: bool = True, copy: bool = True,
                 pixel_scale: float = 1 / 255):
        super().__init__()
        self.model = (deepcopy(model) if copy else model).eval()
        self.softmax = softmax
        self.pixel_scale = 1.0 if std is None else float(pixel_scale)
        factor = 1.0 if std is None else 1.0 / (255.0 * self.pixel_scale)  # u * factor = p / 255 - mean
        inv_std = factor / torch.tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32)
        self.register_buffer("inv_std", inv_std.view(1, 3, 1, 1), persistent=False)
        self.folded = True if std is None else self._fold(inv_std)

    def coreml_bias(self, mean=IMAGENET_DEFAULT_MEAN) -> list[float]:
        """Core ML's per-channel input bias for this wrapper: ``-255 * pixel_scale * mean``."""
        return [-255.0 * self.pixel_scale * m for m in mean]

    @torch.no_grad()
    def _fold(self, inv_std: torch.Tensor) -> bool:
        first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None or first.in_channels != 3 or first.groups != 1:
            return False
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        expected = self.model(x * self.inv_std)
        saved = first.weight.detach().clone()
        first.weight.mul_(inv_std.view(1, 3, 1, 1))                 # [O, 3, k, k] * [1, 3, 1, 1]
        scale = float(expected.abs().max()) or 1.0
        if not torch.allclose(self.model(x), expected, rtol=1e-4, atol=1e-5 * scale):  # the conv was not first
            first.weight.copy_(saved)
            return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.folded:
            x = x * self.inv_std
        y = self.model(x)                                          # [B, K] logits
        return y.softmax(dim=-1) if self.softmax else y


# ============================================================================ tracing, converting, saving
def _trace(module: nn.Module, example: torch.Tensor):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, example, check_trace=False)


def _discard_temp_package(mlmodel) -> None:
    """Delete the temporary package coremltools keeps for an ML program (in the system temp folder).

    coremltools removes it only at interpreter exit, which a Jupyter kernel that is shut down never
    reaches: without this every export in a notebook would leave a copy of its weights in ``/tmp``.
    """
    if getattr(mlmodel, "is_temp_package", False) and getattr(mlmodel, "package_path", None):
        shutil.rmtree(mlmodel.package_path, ignore_errors=True)


def _save_mlpackage(mlmodel, path: Path) -> Path:
    """Atomic save of a ``.mlpackage`` (a folder): write a temporary sibling, then rename it into place.

    The model's own temporary package is deleted afterwards: the saved file is what callers use."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=".mlpackage"))
    shutil.rmtree(tmp)
    old = None
    try:
        mlmodel.save(str(tmp))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _discard_temp_package(mlmodel)
    return path


def _pipeline(ct, optimize: bool):
    """coremltools' default pass pipeline, followed by swiftlib's rewrites when ``optimize``."""
    pipeline = ct.PassPipeline.DEFAULT
    if optimize:
        for name in coreml_passes.register():
            pipeline.append_pass(name)
        pipeline.append_pass("common::dead_code_elimination")
    return pipeline


def _convert(ct, traced, inputs, outputs=None, precision: str = "fp16", classifier_config=None,
             optimize: bool = True):
    kw = dict(inputs=inputs, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
              compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
              pass_pipeline=_pipeline(ct, optimize))
    if outputs is not None:
        kw["outputs"] = outputs
    if classifier_config is not None:
        kw["classifier_config"] = classifier_config
    # coremltools draws four progress bars per conversion (a few seconds each); they are dropped here
    # and long work (sweeps) shows one bar of its own. Errors still raise.
    with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return ct.convert(traced, **kw)


def _describe_mlmodel(mlmodel, short: str, metadata: dict[str, Any]) -> None:
    mlmodel.author = "swiftlib"
    mlmodel.version = swiftlib.__version__
    mlmodel.short_description = short
    for k, v in metadata.items():
        mlmodel.user_defined_metadata[k] = str(v)


# ============================================================================ whole model
def _checked_labels(class_labels: Sequence[str] | None, k: int) -> list[str]:
    """``k`` unique class names: ``class_labels``, or ImageNet's for a 1000-class model."""
    if class_labels is None:
        if k != 1000:
            raise ValueError(f"the model has {k} classes; pass class_labels (--labels FILE, one name per line) or a "
                             f"checkpoint that holds class_names; ImageNet's 1000 names apply only to 1000-class models")
        class_labels = imagenet_class_labels()
    class_labels = [str(c) for c in class_labels]
    if len(class_labels) != k or len(set(class_labels)) != k:
        raise ValueError(f"class_labels must be {k} unique names (one per model output), got {len(class_labels)} "
                         f"names of which {len(set(class_labels))} unique")
    return class_labels


def _convert_classifier(ct, wrapped: ImageClassifier, example: torch.Tensor, image_input: bool, precision: str,
                        class_labels: list[str], optimize: bool):
    """The Core ML classifier of ``wrapped``: input ``image``, outputs ``classLabel`` and ``classLabel_probs``."""
    traced = _trace(wrapped, example)
    if image_input:
        inp = ct.ImageType(name="image", shape=example.shape, scale=wrapped.pixel_scale, bias=wrapped.coreml_bias(),
                           color_layout=ct.colorlayout.RGB)
    else:
        inp = ct.TensorType(name="image", shape=example.shape)
    # coremltools names the probabilities output predicted_feature_name + "_probs": classLabel_probs
    return _convert(ct, traced, [inp], precision=precision, optimize=optimize,
                    classifier_config=ct.ClassifierConfig(class_labels, predicted_feature_name="classLabel"))


def _describe_classifier(mlmodel, info: dict[str, Any], img_size: int, precision: str, image_input: bool,
                         k: int, optimize: bool) -> None:
    meta = {"swiftlib.model": info["model"], "swiftlib.attention": info["attention"],
            "swiftlib.resolution": img_size, "swiftlib.precision": precision,
            "swiftlib.version": swiftlib.__version__, "swiftlib.source_checkpoint": info["source_checkpoint"],
            "swiftlib.library": info["library"], "swiftlib.input": "image" if image_input else "normalised tensor",
            "swiftlib.num_classes": k, "swiftlib.passes": "swiftlib" if optimize else "coremltools default"}
    _describe_mlmodel(mlmodel, f"{info['model']} ({info['library']}) image classifier, {img_size}x{img_size}, "
                               f"{precision}", meta)
    if image_input:
        mlmodel.input_description["image"] = (f"RGB image {img_size}x{img_size}; ImageNet mean/std "
                                              f"normalisation is part of the model")
    else:
        mlmodel.input_description["image"] = f"float [1, 3, {img_size}, {img_size}], ImageNet-normalised"
    mlmodel.output_description["classLabel"] = "most likely class"
    mlmodel.output_description["classLabel_probs"] = "probability of each class (softmax)"


def to_coreml(model_or_name, path, img_size: int = 224, precision: str = "fp16", image_input: bool = True,
              class_labels: Sequence[str] | None = None, checkpoint=None, num_classes: int | None = None,
              attention: str | None = None, optimize: bool = True) -> Path:
    """Export an image classifier to a Core ML ML program (``.mlpackage``, minimum target iOS 16).

    ``model_or_name``: a swiftlib model name (built by :func:`~swiftlib.export.common.build_model`:
    ``checkpoint``'s weights and class count, or seed 0 with ``num_classes``), a
    :class:`swiftlib.models.SwiftFormer` in eval mode (fused and put on the export-friendly path, see
    :func:`resolve_model`) or any other eval-mode image classifier.

    * input ``image``: with ``image_input=True`` an RGB image of ``img_size`` x ``img_size`` pixels;
      Core ML subtracts ``255 mean`` (``p / 255 - mean`` with ``optimize=False``) and the rest of the
      normalisation is folded into the first convolution. With ``image_input=False`` a float tensor
      ``[1, 3, S, S]`` already normalised.
    * outputs (classifier): ``classLabel`` (the top class name) and ``classLabel_probs`` (name ->
      softmax probability). Labels: ``class_labels``, else a swiftlib training checkpoint's
      ``class_names``, else ImageNet's for 1000 classes.
    * ``optimize``: swiftlib's graph rewrites and pixel-unit input (see the module docstring); False
      gives coremltools' default conversion (what a peer is compared with).
    * metadata: model, attention, resolution, precision, swiftlib version, source checkpoint, passes.

    Returns ``path``, written atomically.
    """
    img_size = check_img_size(img_size)
    precision = check_precision(precision)
    path = check_out_path(path, ".mlpackage")
    model, info = resolve_model(model_or_name, num_classes=num_classes, checkpoint=checkpoint, attention=attention)
    example = torch.zeros(1, 3, img_size, img_size)
    with torch.no_grad():
        k = model(example).shape[-1]                                 # [1, 3, S, S] -> [1, K]
    class_labels = _checked_labels(class_labels if class_labels is not None else info.get("class_names"), k)
    # a SwiftFormer (named or given) comes back from resolve_model as a fresh module: fold into it
    wrapped = ImageClassifier(model, std=IMAGENET_DEFAULT_STD if image_input else None, softmax=True,
                              copy=model is model_or_name, pixel_scale=1.0 if optimize else 1 / 255).eval()
    with quiet_coremltools() as ct:
        mlmodel = _convert_classifier(ct, wrapped, example, image_input, precision, class_labels, optimize)
        _describe_classifier(mlmodel, info, img_size, precision, image_input, k, optimize)
        return _save_mlpackage(mlmodel, path)


# ============================================================================ one block, any module
def _single_encoder(c: int, attention: str) -> nn.Module:
    """A fused SwiftFormer Encoder of width ``c`` (from a one-stage SwiftFormer, through the public fuse)."""
    net = fuse_for_inference(SwiftFormer(widths=(c,), depths=(1,), attention=attention, num_classes=1,
                                         distillation=False), inplace=True)
    return net.stages[0].blocks[-1]


def block_module(kind: str, variant: str, n: int | None = None, d: int | None = None,
                 hw: tuple[int, int] | None = None) -> tuple[nn.Module, torch.Tensor]:
    """The module and an example input for one block export (seed 0 weights and input).

    ``kind="attention"``: ``build_attention(variant, d)`` on tokens ``[1, n, d]`` (``hw`` gives
    ``n = H * W``). ``kind="encoder"``: a fused SwiftFormer Encoder with mixer ``variant`` on a map
    ``[1, d, H, W]`` (additive attention on the export-friendly map path).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown attention {variant!r}; choose one of {sorted(VARIANTS)}")
    if d is None or d < 1:
        raise ValueError(f"d (channels) must be a positive int, got {d}")
    if kind == "attention":
        if n is None:
            if hw is None:
                raise ValueError("give the token count n or the map size hw=(H, W)")
            n = hw[0] * hw[1]
        if n < 1:
            raise ValueError(f"n (tokens) must be >= 1, got {n}")
        with seeded(0):  # seed-0 weights and input; the caller's random stream is left as it was
            return build_attention(variant, d).eval(), torch.randn(1, n, d)
    if kind == "encoder":
        if hw is None or len(hw) != 2 or min(hw) < 1:
            raise ValueError(f"an encoder export needs the map size hw=(H, W) with H, W >= 1, got {hw}")
        with seeded(0):
            return export_friendly(_single_encoder(d, variant), inplace=True).eval(), torch.randn(1, d, *hw)
    raise ValueError(f"kind must be 'attention' or 'encoder', got {kind!r}")


def to_coreml_block(path, variant: str = "additive", kind: str = "attention", n: int | None = None,
                    d: int | None = None, hw: tuple[int, int] | None = None, precision: str = "fp16") -> Path:
    """Export one attention module (tokens ``[1, n, d]`` -> ``[1, n, d]``) or one SwiftFormer Encoder
    (map ``[1, d, H, W]`` -> ``[1, d, H, W]``) to ``path`` (``.mlpackage``), for per-block timing.

    Input ``x``, output ``y`` (fp16 arrays for an fp16 export, so no casts at the edges); metadata
    records kind, variant, shape and the analytic MACs.
    """
    precision = check_precision(precision)
    path = check_out_path(path, ".mlpackage")
    module, example = block_module(kind, variant, n=n, d=d, hw=hw)
    meta = {"swiftlib.kind": kind, "swiftlib.attention": variant,
            "swiftlib.source_checkpoint": "random initialisation (seed 0)"}
    if kind == "attention":
        meta["swiftlib.attention_macs"] = attention_macs(variant, example.shape[1], example.shape[2])
    return to_coreml_module(module, example, path, precision, metadata=meta,
                            description=f"{variant} {kind} block")


def to_coreml_module(module: nn.Module, example: torch.Tensor, path, precision: str = "fp16",
                     metadata: dict[str, Any] | None = None, description: str = "module",
                     optimize: bool = True) -> Path:
    """Export any eval-mode module with one tensor input to ``path`` (``.mlpackage``): input ``x`` of
    ``example``'s shape, output ``y``, fp16 arrays at both ends for an fp16 export (no casts there).
    ``optimize``: swiftlib's graph rewrites after coremltools' passes (see the module docstring)."""
    check_eval(module)
    precision = check_precision(precision)
    path = check_out_path(path, ".mlpackage")
    with quiet_coremltools() as ct:
        traced = _trace(module, example)
        io_dtype = np.float16 if precision == "fp16" else np.float32  # no cast at the block's edges
        mlmodel = _convert(ct, traced, [ct.TensorType(name="x", shape=example.shape, dtype=io_dtype)],
                           outputs=[ct.TensorType(name="y", dtype=io_dtype)], precision=precision, optimize=optimize)
        shape = "x".join(str(s) for s in example.shape)
        meta = {"swiftlib.input_shape": shape, "swiftlib.precision": precision, "swiftlib.version": swiftlib.__version__,
                "swiftlib.passes": "swiftlib" if optimize else "coremltools default", **(metadata or {})}
        _describe_mlmodel(mlmodel, f"{description}, input {shape}, {precision}", meta)
        return _save_mlpackage(mlmodel, path)
