"""Export SwiftFormer to Core ML (``.mlpackage``, for iPhone timing) and ONNX (for desktop timing).

Shape glossary (as in :mod:`swiftlib.attention`)::

    B batch   C channels   H, W map height/width   N = H * W tokens   D = C token width   K classes
    B, C, H, W  feature maps / images             B, N, D  token tensors

Export converts; it does not model. A SwiftFormer is fused (:func:`swiftlib.models.fuse_for_inference`)
and put on the export-friendly map path (:func:`swiftlib.models.export_friendly`:
additive attention on ``[B, C, H, W]`` maps, no flatten / transpose, no ``tile``) before it is traced.
One module a job:

* :mod:`~swiftlib.export.common` -- :func:`resolve_model` (name or module -> the module to trace),
  argument checks, :func:`sample_images` (photos ``uint8 [B, 3, S, S]`` and their normalised floats).
* :mod:`~swiftlib.export.coreml` -- :func:`to_coreml` (a whole image classifier, the ImageNet
  normalisation folded into Core ML's input scale/bias and the stem conv), :func:`to_coreml_block`
  (one attention ``[1, N, D]`` or one Encoder ``[1, C, H, W]``), :func:`to_coreml_module`; ML program,
  iOS 16, fp16 by default.
* :mod:`~swiftlib.export.sweep` -- :func:`export_sweep`: four attentions x the shapes of the four
  stages (:func:`stage_shapes`), plus a manifest CSV for timing on a phone.
* :mod:`~swiftlib.export.inventory` -- :func:`op_inventory` (MIL ops of a saved package, any OS),
  the Neural Engine lint :data:`NE_LINT`, :func:`inventory_vs_timm` (beside timm's export).
* :mod:`~swiftlib.export.coreml_passes` -- the exact graph rewrite swiftlib's Core ML exports run after
  coremltools' passes (an L2 normalisation over a whole map becomes one ``l2_norm`` op).
* :mod:`~swiftlib.export.mil` (+ :mod:`~swiftlib.export.mil_ops`) -- a reference interpreter of ML
  programs: :func:`~swiftlib.export.mil.load_program`, :func:`~swiftlib.export.mil.run_program`,
  :func:`~swiftlib.export.mil.check_package`, any OS.
* :mod:`~swiftlib.export.check` -- :func:`check_mlpackage`: a package against the torch model it was
  exported from, through the interpreter (``python -m swiftlib.export check``).
* :mod:`~swiftlib.export.onnx` -- :func:`to_onnx` (the file ``python -m swiftlib.export onnx`` writes),
  :func:`to_onnx_peer` (timm's export, as timm's users make it), :func:`check_onnx`, :func:`ort_session`
  (the one ONNX Runtime session builder), :func:`onnx_latency` (ratio against timm's export, same run).
* :mod:`~swiftlib.export.runtime` -- :func:`check_coreml`, :func:`compute_plan`, :func:`time_coreml`
  (macOS; elsewhere ``{"status": "skipped", "reason"}``, see :func:`coreml_runtime`).
* :mod:`~swiftlib.export.timings` -- :func:`load_device_timings` (Xcode Performance Report numbers,
  template ``data/device_timings_template.csv``), :func:`paper_latency` (the paper's Table 2).
* :mod:`~swiftlib.export.cli` -- ``python -m swiftlib.export {coreml,block,sweep,inventory,compare,onnx,check}``
  (:func:`main` raises on bad input, :func:`cli` answers it in one line, exit status 2).
"""
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN  # timm's constants, re-exported (one home: timm)
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from swiftlib.data import imagenet_class_labels
from swiftlib.export import mil
from swiftlib.export.check import check_mlpackage, format_check
from swiftlib.export.cli import build_parser, cli, main
from swiftlib.export.common import COMPUTE_UNITS, PRECISIONS, RESULTS_DIR, build_model, resolve_model, sample_images
from swiftlib.export.coreml import ImageClassifier, block_module, to_coreml, to_coreml_block, to_coreml_module
from swiftlib.export.inventory import (NE_LINT, OpInventory, compare_inventories, format_inventory_table,
                                       inventory_vs_timm, op_inventory, write_inventory_results)
from swiftlib.export.onnx import (ONNX_OPSET, check_onnx, onnx_latency, ort_session, to_onnx, to_onnx_peer,
                                  write_onnx_latency)
from swiftlib.export.runtime import check_coreml, compute_plan, coreml_runtime, time_coreml
from swiftlib.export.sweep import MANIFEST_COLUMNS, export_sweep, stage_shapes
from swiftlib.export.timings import DEVICE_TIMING_COLUMNS, load_device_timings, paper_latency
from swiftlib.models import MapAdditiveAttention, MapSwiftFormerEncoder, export_friendly

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "COMPUTE_UNITS",
    "PRECISIONS",
    "RESULTS_DIR",
    "NE_LINT",
    "MapAdditiveAttention",
    "MapSwiftFormerEncoder",
    "export_friendly",
    "resolve_model",
    "build_model",
    "imagenet_class_labels",
    "sample_images",
    "ImageClassifier",
    "to_coreml",
    "to_coreml_block",
    "to_coreml_module",
    "block_module",
    "stage_shapes",
    "export_sweep",
    "MANIFEST_COLUMNS",
    "OpInventory",
    "op_inventory",
    "compare_inventories",
    "format_inventory_table",
    "inventory_vs_timm",
    "write_inventory_results",
    "coreml_runtime",
    "check_coreml",
    "time_coreml",
    "compute_plan",
    "mil",
    "check_mlpackage",
    "format_check",
    "ONNX_OPSET",
    "to_onnx",
    "to_onnx_peer",
    "check_onnx",
    "onnx_latency",
    "write_onnx_latency",
    "ort_session",
    "load_device_timings",
    "paper_latency",
    "DEVICE_TIMING_COLUMNS",
    "build_parser",
    "main",
    "cli",
]
