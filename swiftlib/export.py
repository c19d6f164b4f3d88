"""Export SwiftFormer to Core ML (``.mlpackage``, for iPhone timing) and ONNX (for desktop timing).

Shape glossary (as in :mod:`swiftlib.attention`)::

    B batch   C channels   H, W map height/width   N = H * W tokens   D = C token width   K classes
    B, C, H, W  feature maps / images             B, N, D  token tensors

What lives here, top to bottom:

* **Export-friendly path** -- :func:`export_friendly` swaps every SwiftFormer Encoder's additive
  attention for :class:`MapAdditiveAttention`, the same math written on ``[B, C, H, W]`` maps
  with 1x1 convolutions: no flatten / transpose back and forth, the global query ``G`` broadcast
  (never tiled), and each L2 normalisation one ``reduce_l2_norm`` + ``maximum`` + ``real_div``.
  The Neural Engine's native layout is 4-D channels-first, so this is the graph it prefers.
* **Core ML** -- :func:`to_coreml` (a whole model: image input with the ImageNet normalisation
  folded into Core ML's input scale/bias and the stem convolution, a classifier output with class
  labels, metadata), :func:`to_coreml_block` (one attention module or one SwiftFormer Encoder) and
  :func:`export_sweep` (four attentions x the token counts of the four stages, plus a manifest CSV
  for timing on a phone). Target: ML program, iOS 16, fp16 by default.
* **Op inventory** -- :func:`op_inventory` reads a saved ``.mlpackage`` (any OS) and counts MIL ops
  by type, weight and compute precision, with a lint list of ops that fall off the Neural Engine
  or are slow there (:data:`NE_LINT`); :func:`inventory_vs_timm` puts swiftlib's export beside
  the export of timm's ``swiftformer_*`` of the same size.
* **Running Core ML** -- :func:`check_coreml` (``predict`` vs torch) and :func:`time_coreml`
  (latency per compute unit) need macOS. Elsewhere they return ``{"status": "skipped", ...}``
  with the reason (:func:`coreml_runtime`); they never raise for the platform.
* **ONNX** -- :func:`to_onnx`, :func:`check_onnx` (ONNX Runtime vs torch) and :func:`onnx_latency`
  (ONNX Runtime CPU latency of swiftlib's export as a ratio against timm's export, timed in
  alternating rounds in the same run): the desktop proxy.
* **Phone numbers** -- :func:`load_device_timings` reads the CSV filled from Xcode's Core ML
  Performance Report (template: ``data/device_timings_template.csv``); :func:`paper_latency`
  gives the paper's Table 2 latencies to compare with.

Command line: ``python -m swiftlib.export {coreml,block,sweep,inventory,compare,onnx,check} ...``
(``--help`` on each).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from copy import deepcopy as _deepcopy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import swiftlib
from swiftlib.attention import VARIANTS, EfficientAdditiveAttention, attention_macs, build_attention
from swiftlib.data import imagenet_class_labels
from swiftlib.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from swiftlib.measure import machine_info, time_interleaved
from swiftlib.models import MIN_INPUT_SIZE, SwiftFormer, create_model, fuse_for_inference, resolve_name
from swiftlib.models import stage_shapes as _model_stage_shapes
from swiftlib.models.export_friendly import MapAdditiveAttention, MapSwiftFormerEncoder, export_friendly

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "COMPUTE_UNITS",
    "NE_LINT",
    "MapAdditiveAttention",
    "MapSwiftFormerEncoder",
    "export_friendly",
    "resolve_model",
    "imagenet_class_labels",
    "sample_images",
    "to_coreml",
    "to_coreml_block",
    "to_coreml_module",
    "block_module",
    "stage_shapes",
    "export_sweep",
    "OpInventory",
    "op_inventory",
    "compare_inventories",
    "format_inventory_table",
    "inventory_vs_timm",
    "coreml_runtime",
    "check_coreml",
    "time_coreml",
    "to_onnx",
    "check_onnx",
    "onnx_latency",
    "ort_session",
    "load_device_timings",
    "paper_latency",
    "DEVICE_TIMING_COLUMNS",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Core ML compute units timed by :func:`time_coreml` (``coremltools.ComputeUnit`` names).
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_ONLY")
_ALL_COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
PRECISIONS = ("fp16", "fp32")
RESULTS_DIR = swiftlib.DATA_DIR / "results"

# ============================================================================ Neural Engine lint
#: MIL op type -> (severity, reason). ``off_ne``: reported not to run on the Neural Engine, so Core ML
#: splits the graph and hands the op (and usually what follows) to the GPU or CPU. ``slow_on_ne``:
#: runs there but costs memory traffic for no arithmetic. Sources: Apple, "Deploying Transformers on
#: the Apple Neural Engine" (2022: 4-D channels-first layout, the last axis padded to 64 bytes,
#: minimise reshapes/transposes); hollance/neural-engine, "unsupported layers" (gather, RNNs, custom
#: layers); SwiftFormer issue #3 (tile from einops.repeat). Core ML picks devices per op at load
#: time and publishes no list: the Performance Report in Xcode is the ground truth.
NE_LINT: dict[str, tuple[str, str]] = {
    "tile": ("slow_on_ne", "materialises N copies of a tensor in memory (einops.repeat, expand_as, F.normalize's "
                           "expand); a broadcasting elementwise op gives the same result without the copies"),
    "gather": ("off_ne", "index-driven memory reads (embedding lookups, fancy indexing) are listed as not "
                         "running on the Neural Engine"),
    "gather_nd": ("off_ne", "index-driven memory reads are listed as not running on the Neural Engine"),
    "gather_along_axis": ("off_ne", "index-driven memory reads are listed as not running on the Neural Engine"),
    "scatter": ("off_ne", "index-driven memory writes run on the GPU or CPU"),
    "scatter_nd": ("off_ne", "index-driven memory writes run on the GPU or CPU"),
    "scatter_along_axis": ("off_ne", "index-driven memory writes run on the GPU or CPU"),
    "while_loop": ("off_ne", "control flow is executed by the CPU"),
    "cond": ("off_ne", "control flow is executed by the CPU"),
    "lstm": ("off_ne", "recurrent layers are listed as not running on the Neural Engine"),
    "gru": ("off_ne", "recurrent layers are listed as not running on the Neural Engine"),
    "rnn": ("off_ne", "recurrent layers are listed as not running on the Neural Engine"),
    "reshape": ("slow_on_ne", "a layout change: the Neural Engine keeps 4-D channels-first tensors with the "
                              "last axis padded to 64 bytes, so a reshape can copy the whole tensor"),
    "transpose": ("slow_on_ne", "a layout change (memory copy) that does no arithmetic; token-major [B, N, D] "
                                "tensors need one on the way in and one on the way out"),
}
_FP32_LINT = ("off_ne", "the Neural Engine computes in fp16 only; an ML program with fp32 compute runs on the GPU "
                        "or CPU (export with precision='fp16')")


# ============================================================================ inputs and checks
def _check_img_size(img_size) -> int:
    if isinstance(img_size, bool) or not isinstance(img_size, (int, np.integer)):
        raise TypeError(f"img_size must be an int (pixels per side), got {type(img_size).__name__}")
    img_size = int(img_size)
    if img_size < MIN_INPUT_SIZE or img_size % MIN_INPUT_SIZE:
        raise ValueError(f"img_size must be a multiple of {MIN_INPUT_SIZE} (the network's total stride) and at least "
                         f"{MIN_INPUT_SIZE}, e.g. 224 or 256; got {img_size}")
    return img_size


def _check_out_path(path, suffix: str) -> Path:
    path = Path(path)
    if path.suffix != suffix:
        raise ValueError(f"output path must end with {suffix!r}, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist (create it first); "
                                f"needed for {path.name}")
    return path


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _check_eval(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model name or an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode (BatchNorm would use batch statistics and a "
                         f"distilled SwiftFormer returns two outputs): call model.eval() before exporting")


def resolve_model(model_or_name, num_classes: int = 1000, checkpoint=None, attention: str = "additive"
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """The module to export and a description of it.

    A name (``"swiftformer_xs"``, ``"xs"``, ... as :func:`swiftlib.models.resolve_name` reads it)
    builds :func:`swiftlib.models.create_model` (loading ``checkpoint``). A
    :class:`swiftlib.models.SwiftFormer` must be in eval mode. Either way a SwiftFormer is fused
    (:func:`swiftlib.models.fuse_for_inference`) and put on the export-friendly path: a built model
    is changed in place, a given one is copied once (the caller's model is never changed). Any
    other module (e.g. a timm model) is returned as given (not copied), after the same eval-mode check.
    """
    owned = isinstance(model_or_name, str)  # built here: fuse and convert in place
    if owned:
        key = resolve_name(model_or_name)
        if checkpoint is not None and not isinstance(checkpoint, dict) and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
        with torch.random.fork_rng():
            torch.manual_seed(0)  # a random-init export is reproducible (and checkable against torch later)
            model = create_model(key, num_classes=num_classes, attention=attention, checkpoint=checkpoint).eval()
        source = "random initialisation (seed 0)" if checkpoint is None else (
            str(checkpoint) if not isinstance(checkpoint, dict) else "in-memory state dict")
    else:
        model = model_or_name
        _check_eval(model)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        key = getattr(model, "variant_name", None) or cfg.get("architecture") or type(model).__name__
        source = getattr(model, "checkpoint_source", "given module")
    info = {"model": key, "attention": getattr(model, "attention", "unknown"),
            "num_classes": getattr(model, "num_classes", None), "source_checkpoint": source,
            "library": "swiftlib" if isinstance(model, SwiftFormer) else type(model).__module__.split(".")[0]}
    if isinstance(model, SwiftFormer):
        model = export_friendly(fuse_for_inference(model, inplace=owned), inplace=True)  # at most one copy
        info["fused"] = True
    return model.eval(), info


def sample_images(img_size: int = 224, names: Sequence[str] = ("chelsea", "coffee", "astronaut", "rocket")
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's bundled photos, resized (short side ``img_size / 0.875``, bicubic) and center-cropped.

    Returns ``(pixels, normalised)``: ``uint8 [B, 3, S, S]`` (what a camera gives Core ML) and
    ``float [B, 3, S, S]`` with the ImageNet mean/std applied (what the torch model takes).
    """
    import skimage.data

    img_size = _check_img_size(img_size)
    resize = int(math.floor(img_size / 0.875))
    out = []
    for name in names:
        fn = getattr(skimage.data, name, None)
        if fn is None:
            raise ValueError(f"skimage.data has no image {name!r}")
        im = torch.from_numpy(np.ascontiguousarray(fn())).permute(2, 0, 1)[None].float()  # [H, W, 3] -> [1, 3, H, W]
        h, w = im.shape[-2:]
        s = resize / min(h, w)
        im = F.interpolate(im, size=(max(resize, round(h * s)), max(resize, round(w * s))), mode="bicubic",
                           antialias=True, align_corners=False)
        top, left = (im.shape[-2] - img_size) // 2, (im.shape[-1] - img_size) // 2
        out.append(im[..., top:top + img_size, left:left + img_size].clamp(0, 255).round())
    pixels = torch.cat(out).to(torch.uint8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return pixels, (pixels.float() / 255 - mean) / std


# ============================================================================ Core ML
@contextmanager
def _quiet_coremltools():
    """Import coremltools without its Linux start-up noise (no native runtime) or the untested-torch warning."""
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
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    def _int(context, node):
        x = torch_ops._get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and np.size(x.val) == 1:
            context.add(mb.const(val=int(np.asarray(x.val).reshape(()).item()), name=node.name), node.name)
        else:
            torch_ops._cast(context, node, int, "int32")

    register_torch_op(_int, torch_alias=["int"], override=True)

    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY

    if _TORCH_OPS_REGISTRY.get_func("addcmul") is None:
        def addcmul(context, node):
            """``addcmul(input, t1, t2, value=1) = input + value * t1 * t2`` (used by swiftlib.attention)."""
            inputs = torch_ops._get_inputs(context, node, min_expected=3)
            x, t1, t2 = inputs[:3]
            prod = mb.mul(x=t1, y=t2, name=node.name + "_prod")
            value = inputs[3].val if len(inputs) > 3 and inputs[3] is not None else 1
            if value is not None and float(value) != 1.0:
                prod = mb.mul(x=prod, y=float(value), name=node.name + "_scaled")
            context.add(mb.add(x=x, y=prod, name=node.name), node.name)

        register_torch_op(addcmul)
    _FIXES_REGISTERED = True


class _ImageClassifier(nn.Module):
    """What the Core ML image classifier computes: ``[B, 3, H, W]`` image -> probabilities ``[B, K]``.

    Core ML gives the model ``p / 255 - mean`` (its input ``scale`` is one number, ``bias`` one per
    channel); the per-channel ``1 / std`` is folded into the first convolution's input channels,
    which is exact (zero padding stays zero). Modules without a foldable first conv get an explicit
    per-channel multiply instead.

    Folding changes the first convolution, so ``model`` is deep-copied first; ``copy=False`` wraps
    (and folds into) ``model`` itself, for a module the caller owns (e.g. from :func:`resolve_model`).
    """

    def __init__(self, model: nn.Module, std=IMAGENET_STD, softmax: bool = True, copy: bool = True):
        super().__init__()
        self.model = (_deepcopy(model) if copy else model).eval()
        self.softmax = softmax
        inv_std = 1.0 / torch.tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32)
        self.register_buffer("inv_std", inv_std.view(1, 3, 1, 1), persistent=False)
        self.folded = True if std is None else self._fold(inv_std)  # std=None: input already normalised

    @torch.no_grad()
    def _fold(self, inv_std: torch.Tensor) -> bool:
        first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None or first.in_channels != 3 or first.groups != 1:
            return False
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        expected = self.model(x * self.inv_std)
        saved = first.weight.detach().clone()
        first.weight.mul_(inv_std.view(1, 3, 1, 1))                 # [O, 3, k, k] * [1, 3, 1, 1]
        if not torch.allclose(self.model(x), expected, rtol=1e-4, atol=1e-5):  # the conv was not applied first
            first.weight.copy_(saved)
            return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.folded:
            x = x * self.inv_std
        y = self.model(x)                                          # [B, K] logits
        return y.softmax(dim=-1) if self.softmax else y


def _trace(module: nn.Module, example: torch.Tensor):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, example, check_trace=False)


def _save_mlpackage(mlmodel, path: Path) -> Path:
    """Atomic save of a ``.mlpackage`` (a folder): write a temporary sibling, then rename it into place."""
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
    return path


def _convert(ct, traced, inputs, outputs=None, precision: str = "fp16", classifier_config=None):
    kw = dict(inputs=inputs, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
              compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
    if outputs is not None:
        kw["outputs"] = outputs
    if classifier_config is not None:
        kw["classifier_config"] = classifier_config
    from contextlib import redirect_stderr

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


def to_coreml(model_or_name, path, img_size: int = 224, precision: str = "fp16", image_input: bool = True,
              class_labels: Sequence[str] | None = None, checkpoint=None, num_classes: int = 1000,
              attention: str = "additive") -> Path:
    """Export an image classifier to a Core ML ML program (``.mlpackage``, minimum target iOS 16).

    ``model_or_name``: a swiftlib model name (built with ``num_classes``, ``attention`` and
    ``checkpoint``), a :class:`swiftlib.models.SwiftFormer` in eval mode (fused and put on the
    export-friendly path, see :func:`resolve_model`) or any other eval-mode image classifier.

    * input ``image``: with ``image_input=True`` an RGB image of ``img_size`` x ``img_size`` pixels;
      Core ML applies ``p / 255 - mean`` and ``1 / std`` is folded into the first convolution. With
      ``image_input=False`` a float tensor ``[1, 3, S, S]`` already normalised.
    * outputs (classifier): ``classLabel`` (the top class name) and ``classLabel_probs`` (name ->
      softmax probability). Labels: ``class_labels``, else ImageNet's for 1000 classes.
    * metadata: model, attention, resolution, precision, swiftlib version, source checkpoint.

    Returns ``path``, written atomically.
    """
    img_size = _check_img_size(img_size)
    precision = _check_precision(precision)
    path = _check_out_path(path, ".mlpackage")
    model, info = resolve_model(model_or_name, num_classes=num_classes, checkpoint=checkpoint, attention=attention)
    example = torch.zeros(1, 3, img_size, img_size)
    with torch.no_grad():
        k = model(example).shape[-1]
    if class_labels is None:
        if k != 1000:
            raise ValueError(f"the model has {k} classes; pass class_labels (e.g. the training dataset's classes), "
                             f"ImageNet's 1000 names apply only to 1000-class models")
        class_labels = imagenet_class_labels()
    class_labels = [str(c) for c in class_labels]
    if len(class_labels) != k or len(set(class_labels)) != k:
        raise ValueError(f"class_labels must be {k} unique names (one per model output), got {len(class_labels)} "
                         f"names of which {len(set(class_labels))} unique")
    # a SwiftFormer (named or given) comes back from resolve_model as a fresh module: fold into it
    wrapped = _ImageClassifier(model, std=IMAGENET_STD if image_input else None, softmax=True,
                               copy=model is model_or_name).eval()
    with _quiet_coremltools() as ct:
        traced = _trace(wrapped, example)
        if image_input:
            inp = ct.ImageType(name="image", shape=example.shape, scale=1 / 255.0,
                               bias=[-m for m in IMAGENET_MEAN], color_layout=ct.colorlayout.RGB)
        else:
            inp = ct.TensorType(name="image", shape=example.shape)
        mlmodel = _convert(ct, traced, [inp], precision=precision,
                           classifier_config=ct.ClassifierConfig(class_labels, predicted_feature_name="classLabel"))
        spec = mlmodel.get_spec()
        probs = [o.name for o in spec.description.output if o.name != "classLabel"]
        if probs and probs[0] != "classLabel_probs":
            ct.utils.rename_feature(spec, probs[0], "classLabel_probs")
            mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
        meta = {"swiftlib.model": info["model"], "swiftlib.attention": info["attention"],
                "swiftlib.resolution": img_size, "swiftlib.precision": precision,
                "swiftlib.version": swiftlib.__version__, "swiftlib.source_checkpoint": info["source_checkpoint"],
                "swiftlib.library": info["library"], "swiftlib.input": "image" if image_input else "normalised tensor",
                "swiftlib.num_classes": k}
        _describe_mlmodel(mlmodel, f"{info['model']} ({info['library']}) image classifier, {img_size}x{img_size}, "
                                   f"{precision}", meta)
        if image_input:
            mlmodel.input_description["image"] = (f"RGB image {img_size}x{img_size}; ImageNet mean/std "
                                                  f"normalisation is part of the model")
        else:
            mlmodel.input_description["image"] = f"float [1, 3, {img_size}, {img_size}], ImageNet-normalised"
        mlmodel.output_description["classLabel"] = "most likely class"
        mlmodel.output_description["classLabel_probs"] = "probability of each class (softmax)"
        return _save_mlpackage(mlmodel, path)


def _single_encoder(c: int, attention: str) -> nn.Module:
    """A fused SwiftFormer Encoder of width ``c`` (from a one-stage SwiftFormer, through the public fuse)."""
    net = fuse_for_inference(SwiftFormer(widths=(c,), depths=(1,), attention=attention, num_classes=1,
                                         distillation=False), inplace=True)
    return net.stages[0].blocks[-1]


def block_module(kind: str, variant: str, n: int | None = None, d: int | None = None,
                 hw: tuple[int, int] | None = None) -> tuple[nn.Module, torch.Tensor]:
    """The module and an example input for one block export.

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
        torch.manual_seed(0)
        return build_attention(variant, d).eval(), torch.randn(1, n, d)
    if kind == "encoder":
        if hw is None or len(hw) != 2 or min(hw) < 1:
            raise ValueError(f"an encoder export needs the map size hw=(H, W) with H, W >= 1, got {hw}")
        torch.manual_seed(0)
        return export_friendly(_single_encoder(d, variant), inplace=True).eval(), torch.randn(1, d, *hw)
    raise ValueError(f"kind must be 'attention' or 'encoder', got {kind!r}")


def to_coreml_block(path, variant: str = "additive", kind: str = "attention", n: int | None = None,
                    d: int | None = None, hw: tuple[int, int] | None = None, precision: str = "fp16") -> Path:
    """Export one attention module (tokens ``[1, n, d]`` -> ``[1, n, d]``) or one SwiftFormer Encoder
    (map ``[1, d, H, W]`` -> ``[1, d, H, W]``) to ``path`` (``.mlpackage``), for per-block timing.

    Input ``x``, output ``y`` (fp16 arrays for an fp16 export, so no casts at the edges); metadata
    records kind, variant, shape and the analytic MACs.
    """
    precision = _check_precision(precision)
    path = _check_out_path(path, ".mlpackage")
    module, example = block_module(kind, variant, n=n, d=d, hw=hw)
    meta = {"swiftlib.kind": kind, "swiftlib.attention": variant,
            "swiftlib.source_checkpoint": "random initialisation (seed 0)"}
    if kind == "attention":
        meta["swiftlib.attention_macs"] = attention_macs(variant, example.shape[1], example.shape[2])
    return to_coreml_module(module, example, path, precision, metadata=meta,
                            description=f"{variant} {kind} block")


def to_coreml_module(module: nn.Module, example: torch.Tensor, path, precision: str = "fp16",
                     metadata: dict[str, Any] | None = None, description: str = "module") -> Path:
    """Export any eval-mode module with one tensor input to ``path`` (``.mlpackage``): input ``x`` of
    ``example``'s shape, output ``y``, fp16 arrays at both ends for an fp16 export (no casts there)."""
    _check_eval(module)
    precision = _check_precision(precision)
    path = _check_out_path(path, ".mlpackage")
    with _quiet_coremltools() as ct:
        traced = _trace(module, example)
        io_dtype = np.float16 if precision == "fp16" else np.float32  # no cast at the block's edges
        mlmodel = _convert(ct, traced, [ct.TensorType(name="x", shape=example.shape, dtype=io_dtype)],
                           outputs=[ct.TensorType(name="y", dtype=io_dtype)], precision=precision)
        shape = "x".join(str(s) for s in example.shape)
        meta = {"swiftlib.input_shape": shape, "swiftlib.precision": precision,
                "swiftlib.version": swiftlib.__version__, **(metadata or {})}
        _describe_mlmodel(mlmodel, f"{description}, input {shape}, {precision}", meta)
        return _save_mlpackage(mlmodel, path)


def stage_shapes(model: str = "swiftformer_xs", img_size: int = 224) -> list[dict[str, int]]:
    """``[{"stage", "h", "w", "n", "d"}]`` of the four SwiftFormer Encoders of ``model`` at ``img_size``
    (a multiple of 32): :func:`swiftlib.models.stage_shapes` under the short keys of the export manifest.

    Stage ``i`` (0-based) works at stride ``2 ** (i + 2)``: 56, 28, 14, 7 pixels per side at 224.
    """
    model = resolve_name(model)
    img_size = _check_img_size(img_size)
    return [{"stage": r["stage"], "h": r["height"], "w": r["width"], "n": r["tokens"], "d": r["channels"]}
            for r in _model_stage_shapes(model, img_size)]


MANIFEST_COLUMNS = ["file", "kind", "attention", "stage", "n", "d", "h", "w", "input_shape", "precision",
                    "attention_macs", "non_const_ops", "ops_off_ne", "ops_slow_on_ne"]


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Atomic CSV write (temporary file in the same folder + ``os.replace``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def _read_csv(path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {str(path)!r} does not exist")
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f)]


def export_sweep(out_dir, model: str = "swiftformer_xs", variants: Sequence[str] = tuple(VARIANTS),
                 stages: Sequence[int] = (1, 2, 3, 4), kind: str = "attention", img_size: int = 224,
                 precision: str = "fp16", progress: bool = True) -> Path:
    """Export every ``variant`` at the shape of every ``stage`` of ``model`` into ``out_dir`` and write
    ``out_dir/manifest.csv`` (one row per ``.mlpackage``: shape, analytic MACs, op counts, lint).

    Resumable: a package already in the folder and in the manifest is kept. Returns the manifest path.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {str(out_dir)!r} does not exist (create it first)")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown attention {bad}; choose from {sorted(VARIANTS)}")
    shapes = {r["stage"]: r for r in stage_shapes(model, img_size)}
    bad = [s for s in stages if s not in shapes]
    if bad:
        raise ValueError(f"stages are numbered 1..{len(shapes)}, got {bad}")
    manifest = out_dir / "manifest.csv"
    done = {r["file"]: r for r in _read_csv(manifest)} if manifest.is_file() else {}
    jobs = [(v, shapes[s]) for s in stages for v in variants]
    from tqdm.auto import tqdm

    rows = []
    for v, sh in tqdm(jobs, desc=f"Core ML sweep ({kind})", disable=not progress):
        name = f"{kind}_{v}_s{sh['stage']}_n{sh['n']}_d{sh['d']}_{precision}.mlpackage"
        if name in done and (out_dir / name).is_dir():
            rows.append(done[name])
            continue
        to_coreml_block(out_dir / name, variant=v, kind=kind, d=sh["d"], hw=(sh["h"], sh["w"]), precision=precision)
        inv = op_inventory(out_dir / name)
        shape = [1, sh["n"], sh["d"]] if kind == "attention" else [1, sh["d"], sh["h"], sh["w"]]
        rows.append({"file": name, "kind": kind, "attention": v, "stage": sh["stage"], "n": sh["n"], "d": sh["d"],
                     "h": sh["h"], "w": sh["w"], "input_shape": "x".join(map(str, shape)), "precision": precision,
                     "attention_macs": attention_macs(v, sh["n"], sh["d"]), "non_const_ops": inv.non_const,
                     "ops_off_ne": sum(x["count"] for x in inv.lint if x["severity"] == "off_ne"),
                     "ops_slow_on_ne": sum(x["count"] for x in inv.lint if x["severity"] == "slow_on_ne")})
        _write_csv(manifest, rows + [r for f, r in done.items() if f not in {x["file"] for x in rows}],
                   MANIFEST_COLUMNS)
    ours = {r["file"] for r in rows}
    kept = [r for f, r in done.items() if f not in ours and (out_dir / f).is_dir()]  # earlier sweeps' packages
    return _write_csv(manifest, rows + kept, MANIFEST_COLUMNS)


# ============================================================================ op inventory
@dataclass
class OpInventory:
    """MIL ops of one saved ``.mlpackage``: counts by type, precision, Neural Engine lint, interface."""

    path: str
    counts: dict[str, int]                # op type -> count, const included
    total: int
    non_const: int
    weight_elements: dict[str, int]       # dtype -> elements held in const ops
    compute_ops: dict[str, int]           # dtype of the first output -> non-const ops
    lint: list[dict[str, Any]]            # {"op", "count", "severity", "reason"}
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    class_labels: list[str] = field(default_factory=list)
    image_preprocessing: dict[str, list[float]] = field(default_factory=dict)  # {"scale", "bias"} of an image input

    def to_dict(self, labels: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not labels:
            d["class_labels"] = len(self.class_labels)
        return d

    @property
    def weight_precision(self) -> str:
        """The dtype holding most weight elements (``"fp16"`` for a default export)."""
        return max(self.weight_elements, key=self.weight_elements.get) if self.weight_elements else "none"


_DTYPE_NAMES = {"FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "INT32": "int32", "INT8": "int8",
                "UINT8": "uint8", "INT16": "int16", "BOOL": "bool", "STRING": "string", "INT64": "int64"}


def _walk_ops(block):
    for op in block.operations:
        yield op
        for sub in op.blocks:
            yield from _walk_ops(sub)


def _feature(desc) -> dict[str, Any]:
    kind = desc.type.WhichOneof("Type")
    out: dict[str, Any] = {"name": desc.name, "type": kind}
    if kind == "imageType":
        t = desc.type.imageType
        out.update(width=t.width, height=t.height, color_space=type(t).ColorSpace.Name(t.colorSpace))
    elif kind == "multiArrayType":
        t = desc.type.multiArrayType
        out.update(shape=list(t.shape), dtype=type(t).ArrayDataType.Name(t.dataType))
    return out


def _class_labels(block) -> list[str]:
    """Labels of an ML program classifier: the ``classes`` argument of its ``classify`` op."""
    for op in _walk_ops(block):
        if op.type == "classify" and "classes" in op.inputs:
            for arg in op.inputs["classes"].arguments:
                if arg.HasField("value"):
                    return [str(v.immediateValue.tensor.strings.values[0]) if v.immediateValue.tensor.strings.values
                            else str(v.immediateValue.tensor.ints.values[0])
                            for v in arg.value.immediateValue.list.values]
    return []


_HEAVY_OPS = {"conv", "linear", "matmul", "conv_transpose", "einsum"}


def _image_preprocessing(block, image_inputs: list[str]) -> dict[str, list[float]]:
    """Core ML's image scale (``mul`` by a constant) and per-channel bias (``add``) applied to an image input."""
    consts, out = {}, {}
    for op in block.operations:
        if op.type == "const" and op.outputs:
            t = op.attributes["val"].immediateValue.tensor
            kind = t.WhichOneof("value")
            if kind in ("floats", "doubles"):
                consts[op.outputs[0].name] = [float(v) for v in getattr(t, kind).values]
    current = set(image_inputs)
    for op in block.operations:
        if op.type in ("mul", "add") and {a.name for a in op.inputs["x"].arguments} & current:
            y = [a.name for a in op.inputs["y"].arguments]
            if y and y[0] in consts:
                out["scale" if op.type == "mul" else "bias"] = consts[y[0]]
                current = {o.name for o in op.outputs}
    return out


def op_inventory(mlpackage) -> OpInventory:
    """Read a saved ``.mlpackage`` (no Core ML runtime needed) and inventory its ML program.

    Walks ``spec.mlProgram.functions['main']`` (the block for its opset, nested blocks included).
    """
    path = Path(mlpackage)
    if not path.exists():
        raise FileNotFoundError(f"Core ML package {str(path)!r} does not exist")
    with _quiet_coremltools() as ct:
        from coremltools.proto import MIL_pb2

        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if spec.WhichOneof("Type") in ("neuralNetworkClassifier", "neuralNetwork"):
        raise ValueError(f"{path} is a neural-network model, not an ML program (export with convert_to='mlprogram')")
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path} holds no ML program (model type {spec.WhichOneof('Type')!r})")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    counts: Counter = Counter()
    weights: Counter = Counter()
    compute: Counter = Counter()
    heavy_fp32 = 0
    for op in _walk_ops(block):
        counts[op.type] += 1
        if not op.outputs:
            continue
        tt = op.outputs[0].type.tensorType
        dtype = _DTYPE_NAMES.get(MIL_pb2.DataType.Name(tt.dataType), MIL_pb2.DataType.Name(tt.dataType).lower())
        if op.type == "const":
            n = 1
            for dim in tt.dimensions:
                n *= dim.constant.size if dim.HasField("constant") else 1
            weights[dtype] += n
        elif op.type not in ("cast", "classify"):
            compute[dtype] += 1
            if op.type in _HEAVY_OPS and dtype == "fp32":
                heavy_fp32 += 1
    lint = [{"op": t, "count": counts[t], "severity": sev, "reason": why}
            for t, (sev, why) in NE_LINT.items() if counts.get(t)]
    if heavy_fp32:  # the fp32 image scaling before the first cast alone is not flagged
        lint.append({"op": "fp32 compute", "count": compute["fp32"], "severity": _FP32_LINT[0],
                     "reason": _FP32_LINT[1]})
    lint.sort(key=lambda x: (x["severity"] != "off_ne", -x["count"]))
    labels = _class_labels(block)
    return OpInventory(
        path=str(path), counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        total=sum(counts.values()), non_const=sum(v for k, v in counts.items() if k != "const"),
        weight_elements=dict(weights), compute_ops=dict(compute), lint=lint,
        inputs=[_feature(d) for d in spec.description.input], outputs=[_feature(d) for d in spec.description.output],
        metadata=dict(spec.description.metadata.userDefined), class_labels=labels,
        image_preprocessing=_image_preprocessing(
            block, [d.name for d in spec.description.input if d.type.WhichOneof("Type") == "imageType"]))


def compare_inventories(inventories: dict[str, OpInventory]) -> list[dict[str, Any]]:
    """Rows ``{"op": type, name1: count, name2: count, ...}`` over the non-const op types of all
    inventories (most frequent first), then ``"non-const total"`` and ``"const"`` rows."""
    names = list(inventories)
    types = sorted({t for inv in inventories.values() for t in inv.counts if t != "const"},
                   key=lambda t: (-max(inv.counts.get(t, 0) for inv in inventories.values()), t))
    rows = [{"op": t, **{n: inventories[n].counts.get(t, 0) for n in names}} for t in types]
    rows.append({"op": "non-const total", **{n: inventories[n].non_const for n in names}})
    rows.append({"op": "const", **{n: inventories[n].counts.get("const", 0) for n in names}})
    return rows


def format_inventory_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare_inventories` as a fixed-width text table (with NE lint marks)."""
    names = [k for k in rows[0] if k != "op"]
    width = max(len(r["op"]) for r in rows) + 2
    lines = [f"{'MIL op':<{width}}" + "".join(f"{n:>12}" for n in names) + "   Neural Engine note"]
    for r in rows:
        note = NE_LINT.get(r["op"], ("", ""))[0]
        lines.append(f"{r['op']:<{width}}" + "".join(f"{r[n]:>12}" for n in names) + (f"   {note}" if note else ""))
    return "\n".join(lines)


def _timm_model(name: str, num_classes: int = 1000) -> nn.Module:
    import timm

    m = timm.create_model(name, pretrained=False, num_classes=num_classes)
    m.checkpoint_source = "random initialisation (timm)"
    return m.eval()


@contextmanager
def _output_dir(out_dir, prefix: str):
    """Yield ``out_dir`` as a Path (it must exist), or a temporary folder deleted afterwards if None."""
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {str(out_dir)!r} does not exist (create it first)")
    yield out_dir


def inventory_vs_timm(model: str = "swiftformer_xs", out_dir=None, img_size: int = 224, precision: str = "fp16",
                      results_dir=None) -> dict[str, Any]:
    """Export swiftlib's ``model`` and timm's model of the same name with the same settings (image input,
    classifier, ``precision``), inventory both, and compare.

    ``out_dir``: where the two packages go (a temporary folder, deleted afterwards, if None).
    ``results_dir``: if given, writes ``export_inventory_<model>.json`` and ``.csv`` there.
    Returns ``{"model", "img_size", "precision", "swiftlib", "timm", "rows", "ratio_non_const",
    "goal"}``; ``goal`` is the target set for XS: no ``tile`` and <= 0.8x timm's non-const ops.
    """
    model = resolve_name(model)
    with _output_dir(out_dir, "swiftlib-export-") as out_dir:
        ours = op_inventory(to_coreml(model, out_dir / f"{model}_swiftlib.mlpackage", img_size, precision))
        theirs = op_inventory(to_coreml(_timm_model(model), out_dir / f"{model}_timm.mlpackage", img_size, precision))
    rows = compare_inventories({"swiftlib": ours, "timm": theirs})
    ratio = ours.non_const / theirs.non_const
    result = {
        "model": model, "img_size": img_size, "precision": precision,
        "swiftlib": ours.to_dict(), "timm": theirs.to_dict(), "rows": rows,
        "ratio_non_const": round(ratio, 4),
        "goal": {"no_tile": ours.counts.get("tile", 0) == 0, "ratio_max": 0.8, "ratio_met": ratio <= 0.8},
    }
    for side in ("swiftlib", "timm"):
        result[side]["path"] = Path(result[side]["path"]).name
    if results_dir is not None:
        results_dir = Path(results_dir)
        if not results_dir.is_dir():
            raise FileNotFoundError(f"results directory {str(results_dir)!r} does not exist")
        with _quiet_coremltools() as ct:
            versions = {"coremltools": ct.__version__}
        atomic_write_json(results_dir / f"export_inventory_{model}.json", {**result, "machine": machine_info("cpu"),
                                                                    "versions": versions})
        _write_csv(results_dir / f"export_inventory_{model}.csv", rows, ["op", "swiftlib", "timm"])
    return result


# ============================================================================ running Core ML (macOS)
def coreml_runtime() -> tuple[bool, str]:
    """``(available, message)``: whether ``MLModel.predict`` can run here, and why not."""
    if sys.platform != "darwin":
        return False, (f"Core ML prediction needs macOS: coremltools converts, saves and inspects .mlpackage files "
                       f"on any OS, but MLModel.predict, compilation and timing run only on macOS (this machine: "
                       f"{sys.platform}). Copy the .mlpackage to a Mac, or time it on an iPhone with Xcode's Core ML "
                       f"Performance Report (see the iPhone protocol).")
    try:
        with _quiet_coremltools():
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
    from PIL import Image

    if isinstance(model, str):
        torch_model, _ = resolve_model(model, checkpoint=checkpoint)
    else:
        _check_eval(model)
        torch_model = model
    pixels, normed = sample_images(img_size)
    with torch.no_grad():
        expected = torch_model(normed).softmax(-1)
    with _quiet_coremltools() as ct:
        ml = ct.models.MLModel(str(mlpackage), compute_units=getattr(ct.ComputeUnit, compute_unit))
        labels = op_inventory(mlpackage).class_labels
        got = []
        for im in pixels:
            out = ml.predict({"image": Image.fromarray(im.permute(1, 2, 0).numpy())})
            got.append([out["classLabel_probs"][c] for c in labels])
    got = torch.tensor(got, dtype=torch.float32)
    return {"status": "ok", "compute_unit": compute_unit, "images": len(pixels),
            "max_abs_diff": float((got - expected).abs().max()),
            "top1_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean())}


def time_coreml(mlpackage, compute_units: Sequence[str] = COMPUTE_UNITS, runs: int = 50, warmup: int = 5
                ) -> dict[str, Any]:
    """Latency of ``predict`` per compute unit (median / p10 / p90 ms over ``runs`` calls, after ``warmup``),
    preprocessing excluded (a fixed input). ``{"status": "skipped", "reason"}`` where Core ML cannot run."""
    bad = [u for u in compute_units if u not in _ALL_COMPUTE_UNITS]
    if bad:
        raise ValueError(f"unknown compute units {bad}; choose from {_ALL_COMPUTE_UNITS}")
    ok, why = coreml_runtime()
    if not ok:
        return {"status": "skipped", "reason": why}
    import time

    from PIL import Image

    with _quiet_coremltools() as ct:
        inv = op_inventory(mlpackage)
        feat = inv.inputs[0]
        if feat["type"] == "imageType":
            x = {feat["name"]: Image.fromarray(np.zeros((feat["height"], feat["width"], 3), np.uint8))}
        else:
            x = {feat["name"]: np.random.default_rng(0).standard_normal(feat["shape"]).astype(np.float32)}
        result: dict[str, Any] = {"status": "ok", "runs": runs}
        for unit in compute_units:
            ml = ct.models.MLModel(str(mlpackage), compute_units=getattr(ct.ComputeUnit, unit))
            for _ in range(warmup):
                ml.predict(x)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                ml.predict(x)
                times.append((time.perf_counter() - t0) * 1e3)
            q = np.percentile(times, [10, 50, 90])
            result[unit] = {"median_ms": float(q[1]), "p10_ms": float(q[0]), "p90_ms": float(q[2])}
    return result


# ============================================================================ ONNX
def ort_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU ``InferenceSession`` of the ``.onnx`` file ``path``, set up for timing.

    ``threads``: intra-op threads (one inter-op thread); None keeps ONNX Runtime's default.
    Idle threads do not spin (they spin by default and would steal the CPU from whatever is timed
    next); graph optimisations all on (ONNX Runtime's default, stated); warnings off. The one
    session builder of swiftlib (the model benchmark of :mod:`swiftlib.bench` uses it too).
    """
    import onnxruntime as ort

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
    ``[1, K]``. A SwiftFormer is fused and on the export-friendly path, as for Core ML (:func:`resolve_model`).
    Written atomically; returns ``path``."""
    img_size = _check_img_size(img_size)
    path = _check_out_path(path, ".onnx")
    model, _ = resolve_model(model_or_name, num_classes=num_classes, checkpoint=checkpoint, attention=attention)
    example = torch.zeros(1, 3, img_size, img_size)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _stdout_to_stderr():
        warnings.simplefilter("ignore")
        staged = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (example,), str(staged), input_names=["image"], output_names=["logits"],
                          opset_version=opset, dynamo=True, external_data=False, verbose=False)
        return atomic_write_bytes(path, staged.read_bytes())  # the shared writer: fsync, usual permissions


@contextmanager
def _stdout_to_stderr():
    """Send the ONNX exporter's progress lines to stderr (they are not results)."""
    from contextlib import redirect_stdout

    with redirect_stdout(sys.stderr):
        yield


def check_onnx(path, model: nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs torch on ``inputs`` ``[B, 3, S, S]`` (one call per image, batch 1 as exported):
    ``{"max_abs_diff", "max_abs_logit", "max_rel_diff" (diff / largest torch logit), "top1_agreement", "images"}``."""
    _check_eval(model)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    sess = ort_session(path)
    name = sess.get_inputs()[0].name
    got = torch.cat([torch.from_numpy(sess.run(None, {name: x[None].numpy()})[0]) for x in inputs])
    with torch.no_grad():
        expected = model(inputs)
    scale = float(expected.abs().max())
    diff = float((got - expected).abs().max())
    return {"max_abs_diff": diff, "max_abs_logit": scale, "max_rel_diff": diff / scale if scale else float("inf"),
            "images": len(inputs), "top1_agreement": float((got.argmax(-1) == expected.argmax(-1)).float().mean())}


def onnx_latency(models: Sequence[str] = ("swiftformer_xs",), img_size: int = 224, out_dir=None, threads: int = 1,
                 rounds: int = 5, min_run_time: float = 2.0, results_dir=None) -> dict[str, Any]:
    """ONNX Runtime CPU latency of swiftlib's export of each model, as a ratio against timm's export of
    the same model (the peer), timed in alternating rounds in the same run (:func:`swiftlib.bench.time_interleaved`).

    Both are checked against their torch models first (largest logit difference relative to the
    largest logit, on one random image: the weights are a random initialisation).
    ``results_dir``: if given, writes ``export_onnx_latency.json`` there (with machine info).
    Returns ``{"rows": [{"model", "swiftlib_ms", "timm_ms", "ratio", "max_rel_diff_swiftlib", ...}], ...}``.
    """
    models = [resolve_name(m) for m in models]
    img_size = _check_img_size(img_size)
    x = torch.randn(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    rows = []
    with _output_dir(out_dir, "swiftlib-onnx-") as out_dir:
        for name in models:
            ours, _ = resolve_model(name)
            theirs = _timm_model(name)
            p_ours = to_onnx(ours, out_dir / f"{name}_swiftlib.onnx", img_size)
            p_theirs = to_onnx(theirs, out_dir / f"{name}_timm.onnx", img_size)
            check_ours = check_onnx(p_ours, ours, x)
            check_theirs = check_onnx(p_theirs, theirs, x)
            s_ours, s_theirs = ort_session(p_ours, threads), ort_session(p_theirs, threads)
            feed = {"image": x.numpy()}
            t = time_interleaved({"swiftlib": lambda: s_ours.run(None, feed), "timm": lambda: s_theirs.run(None, feed)},
                                 rounds=rounds, min_run_time=min_run_time, threads=threads)
            rows.append({"model": name, "swiftlib_ms": t["swiftlib"]["median_ms"], "timm_ms": t["timm"]["median_ms"],
                         "ratio": t["swiftlib"]["median_ms"] / t["timm"]["median_ms"],
                         "swiftlib_iqr_ms": t["swiftlib"]["iqr_ms"], "timm_iqr_ms": t["timm"]["iqr_ms"],
                         "max_rel_diff_swiftlib": check_ours["max_rel_diff"],
                         "max_rel_diff_timm": check_theirs["max_rel_diff"]})
    import onnxruntime

    result = {"img_size": img_size, "threads": threads, "provider": "CPUExecutionProvider",
              "onnxruntime": onnxruntime.__version__, "peer": "timm export of the same model, same run", "rows": rows}
    if results_dir is not None:
        results_dir = Path(results_dir)
        if not results_dir.is_dir():
            raise FileNotFoundError(f"results directory {str(results_dir)!r} does not exist")
        atomic_write_json(results_dir / "export_onnx_latency.json", {**result, "machine": machine_info("cpu")})
    return result


# ============================================================================ phone timings
#: Columns of ``data/device_timings_template.csv`` (one row per model x device x compute units).
DEVICE_TIMING_COLUMNS = ["model", "mlpackage", "kind", "attention", "n", "d", "img_size", "precision", "device",
                         "ios", "xcode", "coremltools", "compute_units", "median_ms", "min_ms", "max_ms",
                         "ops_ne", "ops_gpu", "ops_cpu", "date", "notes"]
_REQUIRED_TIMING_COLUMNS = ["model", "device", "ios", "compute_units", "median_ms"]
_FLOAT_COLUMNS = ["median_ms", "min_ms", "max_ms"]
_INT_COLUMNS = ["n", "d", "img_size", "ops_ne", "ops_gpu", "ops_cpu"]


def load_device_timings(path) -> list[dict[str, Any]]:
    """Read a filled copy of ``data/device_timings_template.csv``: one dict per non-empty row, numbers
    parsed (``median_ms`` etc. as float, op counts as int, empty cells as None).

    Raises FileNotFoundError for a missing file and ValueError naming the column and row for a missing
    required column (``model, device, ios, compute_units, median_ms``), an unknown compute unit or a
    latency that is not a positive number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"device timings CSV {str(path)!r} does not exist "
                                f"(start from data/device_timings_template.csv)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        got = reader.fieldnames or []
        missing = [c for c in _REQUIRED_TIMING_COLUMNS if c not in got]
        if missing:
            raise ValueError(f"{path.name}: missing columns {missing}; expected at least {_REQUIRED_TIMING_COLUMNS} "
                             f"(template columns: {DEVICE_TIMING_COLUMNS}), got {got}")
        rows = []
        for i, raw in enumerate(reader, start=2):  # line 1 is the header
            if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
                continue
            row: dict[str, Any] = {k: (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
            for k in list(row):
                if row[k] == "":
                    row[k] = None
            for k in _REQUIRED_TIMING_COLUMNS:
                if row.get(k) is None:
                    raise ValueError(f"{path.name} line {i}: column {k!r} is empty")
            if row["compute_units"] not in _ALL_COMPUTE_UNITS:
                raise ValueError(f"{path.name} line {i}: compute_units must be one of {_ALL_COMPUTE_UNITS}, "
                                 f"got {row['compute_units']!r}")
            for k in _FLOAT_COLUMNS:
                if row.get(k) is not None:
                    try:
                        row[k] = float(row[k])
                    except ValueError:
                        raise ValueError(f"{path.name} line {i}: {k} must be a number of milliseconds, "
                                         f"got {row[k]!r}") from None
                    if not row[k] > 0:
                        raise ValueError(f"{path.name} line {i}: {k} must be > 0 ms, got {row[k]}")
            for k in _INT_COLUMNS:
                if row.get(k) is not None:
                    try:
                        row[k] = int(row[k])
                    except ValueError:
                        raise ValueError(f"{path.name} line {i}: {k} must be an integer, got {row[k]!r}") from None
            rows.append(row)
    return rows


_PAPER_NAMES = {"swiftformer_xs": "SwiftFormer-XS", "swiftformer_s": "SwiftFormer-S",
                "swiftformer_l1": "SwiftFormer-L1", "swiftformer_l3": "SwiftFormer-L3"}


def paper_latency(path=None) -> dict[str, float]:
    """Paper Table 2 iPhone 14 Neural Engine latencies (ms) from ``data/paper_table2.csv``, keyed by the
    paper's model names; SwiftFormer rows also under swiftlib's names (``"swiftformer_xs"`` ...)."""
    rows = _read_csv(path or swiftlib.DATA_DIR / "paper_table2.csv")
    out = {r["model"]: float(r["iphone14_ne_latency_ms"]) for r in rows}
    out.update({k: out[v] for k, v in _PAPER_NAMES.items() if v in out})
    return out


# ============================================================================ command line
def _print_inventory(inv: OpInventory) -> None:
    print(f"{inv.path}: {inv.non_const} non-const ops ({inv.total} with const), weights {inv.weight_precision}")
    print("  " + ", ".join(f"{k} {v}" for k, v in inv.counts.items()))
    for x in inv.lint:
        print(f"  [{x['severity']}] {x['op']} x{x['count']}: {x['reason']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swiftlib.export", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("coreml", help="export a model to a Core ML .mlpackage")
    c.add_argument("--model", required=True, help="swiftformer_xs | swiftformer_s | swiftformer_l1 | swiftformer_l3 "
                                                  "(or xs | s | l1 | l3)")
    c.add_argument("--out", required=True, help="output path ending in .mlpackage")
    c.add_argument("--img-size", type=int, default=224)
    c.add_argument("--precision", choices=PRECISIONS, default="fp16")
    c.add_argument("--checkpoint", default=None, help="weights (official, timm or swiftlib layout)")
    c.add_argument("--num-classes", type=int, default=1000)
    c.add_argument("--labels", default=None, help="text file with one class name per line (needed unless 1000 classes)")
    c.add_argument("--attention", choices=sorted(VARIANTS), default="additive")
    c.add_argument("--tensor-input", action="store_true", help="float tensor input instead of an image")

    b = sub.add_parser("block", help="export one attention module or one SwiftFormer Encoder")
    b.add_argument("--out", required=True)
    b.add_argument("--attention", choices=sorted(VARIANTS), default="additive")
    b.add_argument("--kind", choices=["attention", "encoder"], default="attention")
    b.add_argument("--n", type=int, default=None, help="tokens (attention)")
    b.add_argument("--d", type=int, required=True, help="channels")
    b.add_argument("--hw", type=int, nargs=2, default=None, metavar=("H", "W"), help="map size")
    b.add_argument("--precision", choices=PRECISIONS, default="fp16")

    s = sub.add_parser("sweep", help="export four attentions x four stage shapes + manifest.csv")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--model", default="swiftformer_xs")
    s.add_argument("--attention", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    s.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4])
    s.add_argument("--kind", choices=["attention", "encoder"], default="attention")
    s.add_argument("--img-size", type=int, default=224)
    s.add_argument("--precision", choices=PRECISIONS, default="fp16")
    s.add_argument("--results-dir", default=None,
                   help="also copy the manifest to RESULTS_DIR/export_sweep_<kind>_<model>.csv (e.g. data/results)")

    i = sub.add_parser("inventory", help="MIL op inventory and Neural Engine lint of .mlpackage files")
    i.add_argument("paths", nargs="+")

    k = sub.add_parser("compare", help="op inventory of swiftlib's export vs timm's; writes data/results/")
    k.add_argument("--model", default="swiftformer_xs")
    k.add_argument("--img-size", type=int, default=224)
    k.add_argument("--precision", choices=PRECISIONS, default="fp16")
    k.add_argument("--out-dir", default=None, help="keep the two .mlpackage files here")
    k.add_argument("--results-dir", default=str(RESULTS_DIR))

    o = sub.add_parser("onnx", help="export to ONNX, check against torch; --time: ORT latency vs timm's export")
    o.add_argument("--model", required=True, nargs="+", help="one model to export; one or more with --time")
    o.add_argument("--out", default=None, help="output .onnx path (export only)")
    o.add_argument("--img-size", type=int, default=224)
    o.add_argument("--checkpoint", default=None)
    o.add_argument("--time", action="store_true", help="latency table vs timm's export (writes data/results/)")
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--results-dir", default=str(RESULTS_DIR))

    m = sub.add_parser("check", help="Core ML predict vs torch and latency per compute unit (macOS only)")
    m.add_argument("--mlpackage", required=True)
    m.add_argument("--model", required=True)
    m.add_argument("--img-size", type=int, default=224)
    m.add_argument("--checkpoint", default=None, help="the weights the package was exported with")
    m.add_argument("--runs", type=int, default=50)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "coreml":
            labels = None
            if args.labels:
                lp = Path(args.labels)
                if not lp.is_file():
                    raise FileNotFoundError(f"labels file {str(lp)!r} does not exist")
                labels = [ln.strip() for ln in lp.read_text().splitlines() if ln.strip()]
            out = to_coreml(args.model, args.out, args.img_size, args.precision, image_input=not args.tensor_input,
                            class_labels=labels, checkpoint=args.checkpoint, num_classes=args.num_classes,
                            attention=args.attention)
            _print_inventory(op_inventory(out))
        elif args.cmd == "block":
            out = to_coreml_block(args.out, args.attention, args.kind, n=args.n, d=args.d,
                                  hw=tuple(args.hw) if args.hw else None, precision=args.precision)
            _print_inventory(op_inventory(out))
        elif args.cmd == "sweep":
            args.model = resolve_name(args.model)
            man = export_sweep(args.out_dir, args.model, args.attention, args.stages, args.kind, args.img_size,
                               args.precision)
            rows = _read_csv(man)
            print(f"wrote {len(rows)} packages and {man}")
            if args.results_dir:
                rd = Path(args.results_dir)
                if not rd.is_dir():
                    raise FileNotFoundError(f"results directory {str(rd)!r} does not exist")
                rec = _write_csv(rd / f"export_sweep_{args.kind}_{args.model}.csv", rows, MANIFEST_COLUMNS)
                print(f"recorded {rec}")
        elif args.cmd == "inventory":
            for pth in args.paths:
                _print_inventory(op_inventory(pth))
        elif args.cmd == "compare":
            res = inventory_vs_timm(args.model, args.out_dir, args.img_size, args.precision, args.results_dir)
            model = res["model"]  # the canonical name
            print(format_inventory_table(res["rows"]))
            goal = (f" (goal for XS <= 0.8: {'met' if res['goal']['ratio_met'] else 'NOT met'})"
                    if model == "swiftformer_xs" else "")
            print(f"non-const ops: swiftlib / timm = {res['ratio_non_const']:.2f}{goal}; tile in swiftlib's export: "
                  f"{'none' if res['goal']['no_tile'] else 'present'}")
            print(f"wrote {Path(args.results_dir) / f'export_inventory_{model}.json'} and .csv")
        elif args.cmd == "onnx":
            if args.time:
                res = onnx_latency(args.model, args.img_size, threads=args.threads, results_dir=args.results_dir)
                for r in res["rows"]:
                    print(f"{r['model']}: swiftlib {r['swiftlib_ms']:.2f} ms, timm {r['timm_ms']:.2f} ms, "
                          f"ratio {r['ratio']:.2f} (ONNX Runtime CPU, {args.threads} thread(s), same run)")
                print(f"wrote {Path(args.results_dir) / 'export_onnx_latency.json'}")
            else:
                if not args.out or len(args.model) != 1:
                    raise ValueError("export needs one --model and --out PATH.onnx (or --time for the latency table)")
                model, _ = resolve_model(args.model[0], checkpoint=args.checkpoint)
                out = to_onnx(model, args.out, args.img_size)
                _, normed = sample_images(args.img_size)
                res = check_onnx(out, model, normed)
                print(f"wrote {out}; ONNX Runtime vs torch on {res['images']} images: max abs diff "
                      f"{res['max_abs_diff']:.2e} (largest logit {res['max_abs_logit']:.2e}), "
                      f"top-1 agreement {res['top1_agreement']:.0%}")
        elif args.cmd == "check":
            res = check_coreml(args.mlpackage, args.model, args.img_size, checkpoint=args.checkpoint)
            if res["status"] == "skipped":
                print(res["reason"])
                return 0
            print(json.dumps(res, indent=1))
            print(json.dumps(time_coreml(args.mlpackage, runs=args.runs), indent=1))
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
