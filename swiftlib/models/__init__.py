"""swiftlib.models: SwiftFormer (XS / S / L1 / L3) with a swappable token mixer, checkpoint loading
(official, timm and swiftlib layouts), inference-time fusion and analytic per-stage costs.

    >>> from swiftlib.models import create_model, fuse_for_inference
    >>> model = create_model("swiftformer_xs", attention="additive")    # the paper's network
    >>> fast = fuse_for_inference(model)                                # eval-mode fused copy
"""
from swiftlib.models.costs import stage_shapes, swiftformer_macs
from swiftlib.models.fuse import fuse_for_inference
from swiftlib.models.swiftformer import (MIN_INPUT_SIZE, MODEL_NAMES, SWIFTFORMER_VARIANTS, LoadReport, SwiftFormer,
                                         create_model, load_checkpoint, remap_official_keys, resolve_name,
                                         save_checkpoint, to_official_keys)

__all__ = [
    "create_model",
    "resolve_name",
    "load_checkpoint",
    "save_checkpoint",
    "fuse_for_inference",
    "remap_official_keys",
    "to_official_keys",
    "LoadReport",
    "SwiftFormer",
    "MODEL_NAMES",
    "SWIFTFORMER_VARIANTS",
    "MIN_INPUT_SIZE",
    "stage_shapes",
    "swiftformer_macs",
]
