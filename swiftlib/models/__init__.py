"""swiftlib.models: SwiftFormer (XS / S / L1 / L3) with a swappable token mixer, checkpoint loading
(official, timm and swiftlib layouts; files are read with ``weights_only=True`` by :func:`read_checkpoint`:
nothing in a checkpoint runs), inference-time fusion, the export-friendly map form and
analytic per-stage costs. Images ``[B, 3, H, W]`` -> logits ``[B, K]``.

    >>> from swiftlib.models import create_model, fuse_for_inference
    >>> model = create_model("swiftformer_xs", attention="additive")    # the paper's network
    >>> fast = fuse_for_inference(model)                                # eval-mode fused copy
"""
from swiftlib.models.checkpoints import (CheckpointMismatchError, LoadReport, checkpoint_num_classes,
                                         extract_state_dict, load_checkpoint, nonfinite_tensors, read_checkpoint,
                                         remap_official_keys, save_checkpoint, to_official_keys)
from swiftlib.models.costs import stage_shapes, swiftformer_macs
from swiftlib.models.export_friendly import MapAdditiveAttention, MapSwiftFormerEncoder, export_friendly
from swiftlib.models.fuse import fuse_for_inference
from swiftlib.models.swiftformer import (MIN_INPUT_SIZE, MODEL_NAMES, PAPER_NAMES, SWIFTFORMER_VARIANTS, SwiftFormer,
                                         create_model, resolve_name)

__all__ = [
    "create_model",
    "resolve_name",
    "load_checkpoint",
    "read_checkpoint",
    "extract_state_dict",
    "nonfinite_tensors",
    "checkpoint_num_classes",
    "CheckpointMismatchError",
    "save_checkpoint",
    "fuse_for_inference",
    "remap_official_keys",
    "to_official_keys",
    "LoadReport",
    "SwiftFormer",
    "MODEL_NAMES",
    "PAPER_NAMES",
    "SWIFTFORMER_VARIANTS",
    "MIN_INPUT_SIZE",
    "stage_shapes",
    "swiftformer_macs",
    "export_friendly",
    "MapAdditiveAttention",
    "MapSwiftFormerEncoder",
]
