"""Op inventory of a saved Core ML ML program, with a Neural Engine lint, and swiftlib's export beside timm's.

:func:`op_inventory` reads a ``.mlpackage`` (any OS, no Core ML runtime needed) and counts its MIL ops
by type, weight and compute precision; :data:`NE_LINT` lists the ops that fall off the Neural Engine
or are slow there. :func:`inventory_vs_timm` exports swiftlib's model and timm's ``swiftformer_*``
of the same size in the same run and puts their inventories side by side: the ratio of non-const ops,
the ``tile`` count and the ops the lint calls slow on the Neural Engine.

Which timm count. timm's model converted with the same interface as swiftlib's package (image
``[1, 3, S, S]`` in with Core ML's scale / bias, softmax, ``classify`` out: :func:`to_coreml` with
``optimize=False``, i.e. coremltools' default passes) has six ops more than the same model converted
bare (a tensor in, logits out, :func:`to_coreml_module`): the image ``mul`` and ``add``, the softmax,
``classify`` and the two ``cast`` ops around the fp16 program (231 vs 225 for XS with coremltools 9.0).
Both are recorded; the ratio against the bare count is the stricter one.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from swiftlib.export.common import output_dir, results_path, timm_model
from swiftlib.export.coreml import quiet_coremltools, to_coreml, to_coreml_module
from swiftlib.io import atomic_write_json, write_csv
from swiftlib.measure import machine_info
from swiftlib.models import resolve_name

__all__ = ["NE_LINT", "OpInventory", "op_inventory", "compare_inventories", "format_inventory_table",
           "inventory_vs_timm", "write_inventory_results", "COMPARE_FIGURES"]

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

    def lint_count(self, severity: str) -> int:
        """Ops the Neural Engine lint flags with ``severity`` (``"off_ne"`` or ``"slow_on_ne"``)."""
        return sum(x["count"] for x in self.lint if x["severity"] == severity)

    @property
    def weight_precision(self) -> str:
        """The dtype holding most weight elements (``"fp16"`` for a default export)."""
        return max(self.weight_elements, key=self.weight_elements.get) if self.weight_elements else "none"


# ============================================================================ reading the ML program
_DTYPE_NAMES = {"FLOAT16": "fp16", "FLOAT32": "fp32", "FLOAT64": "fp64", "INT32": "int32", "INT8": "int8",
                "UINT8": "uint8", "INT16": "int16", "BOOL": "bool", "STRING": "string", "INT64": "int64"}
_HEAVY_OPS = {"conv", "linear", "matmul", "conv_transpose", "einsum"}


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


def _count_ops(block, dtype_name) -> tuple[Counter, Counter, Counter, int]:
    """``(op counts, weight elements by dtype, compute ops by dtype, heavy fp32 ops)`` of an ML program block."""
    counts: Counter = Counter()
    weights: Counter = Counter()
    compute: Counter = Counter()
    heavy_fp32 = 0
    for op in _walk_ops(block):
        counts[op.type] += 1
        if not op.outputs:
            continue
        tt = op.outputs[0].type.tensorType
        dtype = _DTYPE_NAMES.get(dtype_name(tt.dataType), dtype_name(tt.dataType).lower())
        if op.type == "const":
            n = 1
            for dim in tt.dimensions:
                n *= dim.constant.size if dim.HasField("constant") else 1
            weights[dtype] += n
        elif op.type not in ("cast", "classify"):
            compute[dtype] += 1
            if op.type in _HEAVY_OPS and dtype == "fp32":
                heavy_fp32 += 1
    return counts, weights, compute, heavy_fp32


def _lint(counts: Counter, compute: Counter, heavy_fp32: int) -> list[dict[str, Any]]:
    lint = [{"op": t, "count": counts[t], "severity": sev, "reason": why}
            for t, (sev, why) in NE_LINT.items() if counts.get(t)]
    if heavy_fp32:  # the fp32 image scaling before the first cast alone is not flagged
        lint.append({"op": "fp32 compute", "count": compute["fp32"], "severity": _FP32_LINT[0],
                     "reason": _FP32_LINT[1]})
    lint.sort(key=lambda x: (x["severity"] != "off_ne", -x["count"]))
    return lint


def op_inventory(mlpackage) -> OpInventory:
    """Read a saved ``.mlpackage`` (no Core ML runtime needed) and inventory its ML program.

    Walks ``spec.mlProgram.functions['main']`` (the block for its opset, nested blocks included).
    """
    path = Path(mlpackage)
    if not path.exists():
        raise FileNotFoundError(f"Core ML package {str(path)!r} does not exist")
    with quiet_coremltools() as ct:
        from coremltools.proto import MIL_pb2

        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if spec.WhichOneof("Type") in ("neuralNetworkClassifier", "neuralNetwork"):
        raise ValueError(f"{path} is a neural-network model, not an ML program (export with convert_to='mlprogram')")
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path} holds no ML program (model type {spec.WhichOneof('Type')!r})")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    counts, weights, compute, heavy_fp32 = _count_ops(block, MIL_pb2.DataType.Name)
    images = [d.name for d in spec.description.input if d.type.WhichOneof("Type") == "imageType"]
    return OpInventory(
        path=str(path), counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        total=sum(counts.values()), non_const=sum(v for k, v in counts.items() if k != "const"),
        weight_elements=dict(weights), compute_ops=dict(compute), lint=_lint(counts, compute, heavy_fp32),
        inputs=[_feature(d) for d in spec.description.input], outputs=[_feature(d) for d in spec.description.output],
        metadata=dict(spec.description.metadata.userDefined), class_labels=_class_labels(block),
        image_preprocessing=_image_preprocessing(block, images))


# ============================================================================ comparing inventories
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


#: The figures of an :func:`inventory_vs_timm` result that ``compare --expect`` can name.
COMPARE_FIGURES = ("ratio_non_const", "ratio_non_const_bare", "tile", "ops_slow_on_ne", "ops_off_ne")
#: How each side of :func:`inventory_vs_timm` is converted (recorded with the result).
CONVERSIONS = {"swiftlib": "swiftlib.export.to_coreml: fused map form, image in pixel units, swiftlib's graph "
                           "passes after coremltools' defaults (jit.trace, mlprogram, iOS16)",
               "timm": "swiftlib.export.to_coreml(optimize=False): timm's model behind the same image-classifier "
                       "interface, coremltools' default passes (jit.trace, mlprogram, iOS16)",
               "timm_bare": "swiftlib.export.to_coreml_module(optimize=False): timm's model alone, tensor in, logits "
                            "out, coremltools' default passes (jit.trace, mlprogram, iOS16)"}


def _bare_timm(model: str, path: Path, img_size: int, precision: str) -> OpInventory:
    """timm's model converted bare: tensor ``[1, 3, S, S]`` in, logits ``[1, K]`` out, coremltools' defaults."""
    example = torch.zeros(1, 3, img_size, img_size)
    return op_inventory(to_coreml_module(timm_model(model), example, path, precision, optimize=False,
                                         description=f"timm {model} (bare)"))


def inventory_vs_timm(model: str = "swiftformer_xs", out_dir=None, img_size: int = 224, precision: str = "fp16"
                      ) -> dict[str, Any]:
    """Export swiftlib's ``model`` and timm's model of the same name in the same run, inventory them, compare.

    Three packages (:data:`CONVERSIONS`): swiftlib's export as ``python -m swiftlib.export coreml``
    writes it, timm's model behind the same classifier interface with coremltools' default passes, and
    timm's model converted bare (see the module docstring). ``out_dir``: where they go (a temporary
    folder, deleted afterwards, if None); :func:`write_inventory_results` records the result.
    Returns ``{"model", "img_size", "precision", "swiftlib", "timm", "timm_bare", "rows", "conversions",
    "ratio_non_const", "ratio_non_const_bare", "tile", "ops_slow_on_ne", "ops_off_ne"}``: the ratios are
    swiftlib's non-const ops over timm's, ``tile`` and the lint counts are swiftlib's.
    """
    model = resolve_name(model)
    with output_dir(out_dir, "swiftlib-export-") as out_dir:
        ours = op_inventory(to_coreml(model, out_dir / f"{model}_swiftlib.mlpackage", img_size, precision))
        theirs = op_inventory(to_coreml(timm_model(model), out_dir / f"{model}_timm.mlpackage", img_size, precision,
                                        optimize=False))
        bare = _bare_timm(model, out_dir / f"{model}_timm_bare.mlpackage", img_size, precision)
    rows = compare_inventories({"swiftlib": ours, "timm": theirs, "timm_bare": bare})
    result = {"model": model, "img_size": img_size, "precision": precision, "conversions": CONVERSIONS,
              "swiftlib": ours.to_dict(), "timm": theirs.to_dict(), "timm_bare": bare.to_dict(), "rows": rows,
              "ratio_non_const": round(ours.non_const / theirs.non_const, 4),
              "ratio_non_const_bare": round(ours.non_const / bare.non_const, 4), "tile": ours.counts.get("tile", 0),
              "ops_slow_on_ne": ours.lint_count("slow_on_ne"), "ops_off_ne": ours.lint_count("off_ne")}
    for side in ("swiftlib", "timm", "timm_bare"):
        result[side]["path"] = Path(result[side]["path"]).name
    return result


def write_inventory_results(result: dict[str, Any], results_dir) -> Path:
    """Write an :func:`inventory_vs_timm` result as ``export_inventory_<model>.json`` (with machine
    info and the coremltools version) and its rows as ``.csv`` in ``results_dir``; returns the JSON path."""
    json_path = results_path(results_dir, f"export_inventory_{result['model']}.json")
    with quiet_coremltools() as ct:
        versions = {"coremltools": ct.__version__}
    atomic_write_json(json_path, {**result, "machine": machine_info("cpu"), "versions": versions})
    write_csv(json_path.with_suffix(".csv"), result["rows"], ["op", "swiftlib", "timm", "timm_bare"])
    return json_path
