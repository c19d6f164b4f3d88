"""A reference interpreter for the ML programs in Core ML packages: check a ``.mlpackage`` numerically on any OS.

Shape glossary: images ``[1, C, H, W]`` (what Core ML hands an image input to the program), logits
``[1, K]``; every other value has the shape the program declares for it.

coremltools converts and saves packages everywhere, but ``MLModel.predict`` runs only on macOS. An ML
program is a list of typed operations; this module evaluates that list op by op with torch, in three
steps a reader can follow:

1. :func:`load_program` reads the package's protobuf spec (``coremltools.models.MLModel(path,
   skip_model_load=True).get_spec()``) and walks ``spec.mlProgram.functions["main"]``: every ``const``
   op becomes a value (small ones are stored in the spec, weights in ``weights/weight.bin``, read with
   coremltools' blob reader), every other op a :class:`MILOp` ``(type, name, inputs, outputs)``; each
   output carries the dtype and shape the program declares. The spec is walked directly (not through
   coremltools' PyMIL loader) so that what runs is exactly what is on disk, with no type inference re-run.
2. :func:`run_program` feeds the inputs and runs the ops in program order, looking each op type up in
   :data:`swiftlib.export.mil_ops.OPS` (one torch function per MIL op type).
3. :func:`check_package` compares the outputs with the torch model the package was exported from,
   against the fp16 tolerance :data:`FP16_RTOL` (why that value: see its comment).

Precision. A value the program declares fp16 is held as fp16. Each op widens its fp16 inputs to fp32,
computes in fp32 and rounds its result to the dtype the program declares for it (fp16 for almost every
op of an fp16 export): one rounding per op, as a device that stores fp16 activations but accumulates
convolutions and reductions in higher precision. ``cast`` ops change the declared dtype and so are
honoured by the same rule. Results are a reference within fp16 rounding, not bit-exact copies of a
particular Apple chip.

Image inputs. Core ML hands an image to the program as float ``[1, C, H, W]`` pixel values 0..255
(RGB or BGR as the spec's colour space says, one channel for grayscale). The ``ImageType`` scale and
bias are not in the spec's description: coremltools writes them into the program as a ``mul`` and an
``add`` right after the input, so they run as ordinary ops (:attr:`MILProgram.image_preprocessing`
reports them). Pass a ``PIL.Image`` or a uint8 array ``[H, W, C]`` / ``[C, H, W]`` / ``[1, C, H, W]``
of exactly the input's size.

Classifiers. The ``classify`` op returns what ``MLModel.predict`` returns: the top label and a dict
label -> probability; :func:`classifier_logits_name` finds the logits in front of its softmax.

An op type missing from ``OPS`` is a NotImplementedError naming it (and its op name).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from swiftlib.export.coreml import quiet_coremltools
from swiftlib.export.mil_ops import OPS

__all__ = ["MILProgram", "MILOp", "MILValue", "load_program", "run_program", "classifier_logits_name",
           "check_package", "FP16_RTOL", "FP32_RTOL", "OPS"]

#: MIL dtype name -> torch dtype (the tensor dtypes the interpreter holds values in).
TORCH_DTYPES = {"FLOAT16": torch.float16, "FLOAT32": torch.float32, "FLOAT64": torch.float64,
                "INT8": torch.int8, "UINT8": torch.uint8, "INT16": torch.int16, "INT32": torch.int32,
                "INT64": torch.int64, "BOOL": torch.bool}
_NUMPY_DTYPES = {"FLOAT16": np.float16, "FLOAT32": np.float32, "FLOAT64": np.float64, "INT8": np.int8,
                 "UINT8": np.uint8, "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32,
                 "UINT32": np.uint32, "INT64": np.int64, "BOOL": np.bool_}
_BLOB_READS = {"FLOAT16": "read_fp16_data", "FLOAT32": "read_float_data", "INT8": "read_int8_data",
               "UINT8": "read_uint8_data", "INT16": "read_int16_data", "UINT16": "read_uint16_data",
               "INT32": "read_int32_data", "UINT32": "read_uint32_data"}
_LIST_INPUTS = {"values"}  # op inputs that are a tuple of tensors (concat's ``values``)


# ============================================================================ the program
@dataclass
class MILValue:
    """A named value of the program: its MIL dtype (``"FLOAT16"``, ``"INT32"``, ``"STRING"``, ...;
    ``"DICT"`` / ``"LIST"`` for non-tensors) and, for tensors, its shape (None where not static)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None = None


@dataclass
class MILOp:
    """One operation: ``inputs`` maps each parameter to the names of the values bound to it."""

    type: str
    name: str
    inputs: dict[str, list[str]]
    outputs: list[MILValue]


@dataclass
class MILProgram:
    """The ``main`` function of a package's ML program, ready to run."""

    path: str
    inputs: list[MILValue]
    ops: list[MILOp]                              # non-const ops, in program order
    consts: dict[str, Any]                        # const name -> torch tensor (weights included), str or list
    outputs: list[str]                            # names the function returns
    image_inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"color_space", ...}
    opset: str = ""
    metadata: dict[str, str] = field(default_factory=dict)  # the package's user-defined metadata

    def op_types(self) -> Counter:
        """Non-const op type -> count."""
        return Counter(op.type for op in self.ops)

    def op_by_output(self, name: str) -> MILOp | None:
        return next((op for op in self.ops if any(o.name == name for o in op.outputs)), None)

    @property
    def image_preprocessing(self) -> dict[str, dict[str, list[float]]]:
        """Image input name -> ``{"scale": [...], "bias": [...]}`` (each present only if the program has it):
        the const operands of the ``mul`` and ``add`` that coremltools puts right after an image input."""
        out = {}
        for name in self.image_inputs:
            found, current = {}, name
            for op in self.ops:
                if op.type in ("mul", "add") and op.inputs.get("x") == [current] and op.inputs["y"][0] in self.consts:
                    found["scale" if op.type == "mul" else "bias"] = self.consts[op.inputs["y"][0]].reshape(-1).tolist()
                    current = op.outputs[0].name
            out[name] = found
        return out


# ============================================================================ reading it from disk
@dataclass
class _SpecReader:
    """Turns protobuf pieces of a spec into :class:`MILValue` / :class:`MILOp` / tensors.

    ``dtype_name``: MIL's ``DataType.Name``; ``blob_reader``: coremltools' ``_BlobStorageReader`` class
    (one reader per weight file, opened on first use)."""

    weights_dir: Path
    dtype_name: Callable[[int], str]
    blob_reader: type
    readers: dict[Path, Any] = field(default_factory=dict)

    def value_type(self, vtype) -> tuple[str, tuple | None]:
        """MIL dtype name and shape of a protobuf ``ValueType``."""
        kind = vtype.WhichOneof("type")
        if kind != "tensorType":
            return {"dictionaryType": "DICT", "listType": "LIST"}.get(kind, kind.upper()), None
        tt = vtype.tensorType
        shape = tuple(d.constant.size if d.WhichOneof("dimension") == "constant" else None for d in tt.dimensions)
        return self.dtype_name(tt.dataType), shape

    def _blob(self, blob, dtype: str) -> np.ndarray:
        path = self.weights_dir / blob.fileName.split("/")[-1]  # "@model_path/weights/weight.bin"
        if path not in self.readers:
            self.readers[path] = self.blob_reader(str(path))
        if dtype not in _BLOB_READS:
            raise NotImplementedError(f"weights of dtype {dtype} in {path.name}")
        raw = np.asarray(getattr(self.readers[path], _BLOB_READS[dtype])(blob.offset))
        return raw.view(np.float16) if dtype == "FLOAT16" else raw  # fp16 comes back as its uint16 bits

    def decode(self, value) -> Any:
        """A protobuf ``Value`` (immediate or in the weight file) -> torch tensor, str or list."""
        if value.WhichOneof("value") == "immediateValue" and value.immediateValue.WhichOneof("value") == "list":
            items = [self.decode(v) for v in value.immediateValue.list.values]
            return [v.item() if torch.is_tensor(v) and v.dim() == 0 else v for v in items]  # e.g. int class labels
        dtype, shape = self.value_type(value.type)
        if value.WhichOneof("value") == "blobFileValue":
            array = self._blob(value.blobFileValue, dtype)
        else:
            tensor = value.immediateValue.tensor
            kind = tensor.WhichOneof("value")
            if kind == "strings":
                strings = [str(s) for s in tensor.strings.values]
                return strings[0] if shape == () else strings
            if kind == "bytes":  # fp16 / int8 / uint8 immediates are stored as raw bytes
                array = np.frombuffer(tensor.bytes.values, _NUMPY_DTYPES[dtype])
            else:
                array = np.array(list(getattr(tensor, kind).values), dtype=_NUMPY_DTYPES[dtype])
        return torch.from_numpy(np.array(array.reshape(shape)))

    def op_record(self, op, consts: dict[str, Any]) -> MILOp:
        """A non-const protobuf ``Operation`` -> :class:`MILOp` (values written in place go into ``consts``)."""
        outputs = [MILValue(o.name, *self.value_type(o.type)) for o in op.outputs]
        if op.blocks:
            raise NotImplementedError(f"MIL op {op.type!r} (op name {outputs[0].name!r}) has nested blocks "
                                      f"(control flow), which the reference interpreter does not run")
        inputs = {}
        for param, arg in op.inputs.items():
            names = []
            for i, binding in enumerate(arg.arguments):
                if binding.WhichOneof("binding") == "name":
                    names.append(binding.name)
                else:  # a value written in place (classify's class labels): kept as a const
                    names.append(f"{outputs[0].name}/{param}/{i}")
                    consts[names[-1]] = self.decode(binding.value)
            inputs[param] = names
        name = op.attributes["name"].immediateValue.tensor.strings.values[0] if "name" in op.attributes \
            else outputs[0].name  # ops are named after their first output unless the spec names them
        return MILOp(op.type, name, inputs, outputs)


def _image_inputs(spec) -> dict[str, dict[str, Any]]:
    out = {}
    for d in spec.description.input:
        if d.type.WhichOneof("Type") == "imageType":
            t = d.type.imageType
            out[d.name] = {"color_space": type(t).ColorSpace.Name(t.colorSpace), "width": t.width, "height": t.height}
    return out


def load_program(mlpackage) -> MILProgram:
    """Read the ``main`` function of a saved ``.mlpackage`` (no Core ML runtime needed)."""
    path = Path(mlpackage)
    if not path.exists():
        raise FileNotFoundError(f"no such Core ML package: {str(path)!r}")
    if not (path / "Manifest.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} is not a Core ML package (no Manifest.json)")
    with quiet_coremltools() as ct:
        from coremltools.libmilstoragepython import _BlobStorageReader  # the weight-file reader
        from coremltools.proto import MIL_pb2

        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
    if not spec.HasField("mlProgram"):
        raise ValueError(f"{path} holds a {spec.WhichOneof('Type')!r} model, not an ML program "
                         f"(export with convert_to='mlprogram')")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    reader = _SpecReader(Path(model.weights_dir), MIL_pb2.DataType.Name, _BlobStorageReader)
    consts, ops = {}, []
    for op in block.operations:
        if op.type == "const":
            consts[op.outputs[0].name] = reader.decode(op.attributes["val"])
        else:
            ops.append(reader.op_record(op, consts))
    inputs = [MILValue(i.name, *reader.value_type(i.type)) for i in fn.inputs]
    return MILProgram(str(path), inputs, ops, consts, list(block.outputs), _image_inputs(spec), fn.opset,
                      dict(spec.description.metadata.userDefined))


# ============================================================================ running it
def _image_tensor(image, info: dict[str, Any]) -> torch.Tensor:
    """What Core ML gives the program for an image: float ``[1, C, H, W]``, pixel values 0..255."""
    gray = info["color_space"].startswith("GRAYSCALE")
    if hasattr(image, "convert"):  # a PIL image
        image = np.asarray(image.convert("L" if gray else "RGB"))
    a = torch.as_tensor(np.array(image))  # a copy: PIL's arrays are read-only
    if a.dim() == 2:
        a = a[None]
    elif a.dim() == 3 and a.shape[-1] in (1, 3) and a.shape[0] not in (1, 3):
        a = a.permute(2, 0, 1)  # [H, W, C] -> [C, H, W]
    a = a.reshape(-1, *a.shape[-2:])
    if tuple(a.shape[-2:]) != (info["height"], info["width"]) or a.shape[0] != (1 if gray else 3):
        raise ValueError(f"image of shape {tuple(a.shape)} (as [C, H, W]); the package takes "
                         f"{1 if gray else 3} x {info['height']} x {info['width']} ({info['color_space']}); "
                         f"resize it first")
    if info["color_space"] == "BGR":
        a = a.flip(0)
    return a[None].float()                                     # [C, H, W] -> [1, C, H, W]


def _check_shape(t: torch.Tensor, decl: MILValue, what: str) -> None:
    if decl.shape is None:
        return
    ok = t.dim() == len(decl.shape) and all(d is None or d == s for d, s in zip(decl.shape, t.shape))
    if not ok:
        raise ValueError(f"{what} has shape {tuple(t.shape)}; the program declares {decl.shape} (None: any size)")


def _input_tensor(program: MILProgram, decl: MILValue, value) -> torch.Tensor:
    if decl.name in program.image_inputs:
        t = _image_tensor(value, program.image_inputs[decl.name])
    else:
        t = torch.as_tensor(np.asarray(value))
    if decl.shape is not None and None not in decl.shape and t.numel() == int(np.prod(decl.shape)):
        t = t.reshape(decl.shape)
    _check_shape(t, decl, f"input {decl.name!r}")
    return t.to(TORCH_DTYPES[decl.dtype])


def _not_implemented(op: MILOp) -> NotImplementedError:
    return NotImplementedError(
        f"MIL op {op.type!r} (op name {op.name!r}) is not implemented by swiftlib's reference interpreter; "
        f"implemented: {', '.join(sorted(OPS))}")


def _argument(env: dict[str, Any], param: str, names: list[str]) -> Any:
    values = [env[n] for n in names]
    values = [v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v for v in values]  # widen fp16
    return values if param in _LIST_INPUTS or len(values) > 1 else values[0]


def _run_op(op: MILOp, env: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one op; returns its outputs, each rounded to the dtype the program declares for it."""
    fn = OPS.get(op.type)
    if fn is None:
        raise _not_implemented(op)
    args = {param: _argument(env, param, names) for param, names in op.inputs.items()}
    try:
        result = fn(**args)
    except Exception as e:
        raise RuntimeError(f"MIL op {op.type!r} (op name {op.name!r}) failed: {e}") from e
    results = result if isinstance(result, tuple) else (result,)
    if len(results) != len(op.outputs):
        raise RuntimeError(f"MIL op {op.type!r} (op name {op.name!r}) gave {len(results)} outputs, "
                           f"the program declares {len(op.outputs)}")
    out = {}
    for decl, value in zip(op.outputs, results):
        if decl.dtype in TORCH_DTYPES:  # a tensor: round to the declared dtype (fp16 for an fp16 op)
            value = torch.as_tensor(value).to(TORCH_DTYPES[decl.dtype])
            _check_shape(value, decl, f"output {decl.name!r} of MIL op {op.type!r} (op name {op.name!r})")
        out[decl.name] = value
    return out


def run_program(program, inputs: dict[str, Any], keep: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """Evaluate the ``main`` function of ``program`` (a :class:`MILProgram` or a package path).

    ``inputs``: input name -> ``np.ndarray`` (any float/int dtype; cast to the input's declared dtype,
    reshaped if the element count matches) or, for an image input, a ``PIL.Image`` / uint8 array
    (see the module docstring). Returns output name -> ``np.ndarray`` in the declared dtype (fp16
    outputs stay ``np.float16``); a classifier's label output is a ``str`` and its probabilities a
    ``dict`` label -> probability, as ``MLModel.predict`` gives them. ``keep``: names of
    intermediate values to return as well (e.g. :func:`classifier_logits_name`).
    """
    if not isinstance(program, MILProgram):
        program = load_program(program)
    missing = [d.name for d in program.inputs if d.name not in inputs]
    if missing:
        raise ValueError(f"missing inputs {missing}; the program takes {[d.name for d in program.inputs]}")
    env = dict(program.consts)
    for decl in program.inputs:
        env[decl.name] = _input_tensor(program, decl, inputs[decl.name])
    with torch.no_grad():
        for op in program.ops:
            env.update(_run_op(op, env))
    unknown = [n for n in keep if n not in env]
    if unknown:
        raise KeyError(f"no values named {unknown} in the program")
    return {name: env[name].numpy() if torch.is_tensor(env[name]) else env[name] for name in [*program.outputs, *keep]}


def classifier_logits_name(program: MILProgram) -> str | None:
    """The value a classifier's softmax reads (its logits): followed back from ``classify`` through
    ``cast`` ops to the ``softmax``. None if the program has no such chain."""
    op = next((o for o in program.ops if o.type == "classify"), None)
    while op is not None and op.type != "softmax":
        source = op.inputs.get("probabilities" if op.type == "classify" else "x", [None])[0]
        op = program.op_by_output(source) if source else None
        if op is not None and op.type not in ("cast", "softmax"):
            return None
    return op.inputs["x"][0] if op is not None else None


# ============================================================================ checking against torch
#: Pass/fail bound of :func:`check_package` on ``rel_diff``: the largest |package - torch| of an output
#: (a classifier's logits) over the largest |torch| of that output, per input.
#:
#: Why 1e-2. fp16 has a 10-bit mantissa: one rounding moves a value by up to 2**-11 ~ 4.9e-4 of
#: itself, and an fp16 program rounds after each of its ~170-230 ops (SwiftFormer XS..L3), so the
#: errors compound. Measured on healthy packages (the four scikit-image photos and four random
#: images each): 0.5e-3..0.9e-3 for XS, S, L1, L3 (seed-0 weights), 0.8e-3 for an L3 whose weights
#: make every path matter, 2.2e-3..3.0e-3 for a 10-class XS (the largest seen), at most 0.9e-3 for
#: the 32 single-block sweep packages. 1e-2 leaves a margin of 3.3x over the worst. Damaged weights:
#: inverted bits give NaN, a stem convolution scaled by 1.1 gives 0.10..0.19, a middle convolution
#: scaled by 1.5 0.12..0.54 and 4 KB of zeroed weights 0.011..0.078 where those weights matter;
#: damage to weights that barely move the output (an untrained model's damped branches) stays inside
#: fp16 noise and cannot be told apart by any tolerance.
FP16_RTOL = 1e-2
#: The same bound for an fp32 program: fp32 rounding (2**-24 per op) and a different order of the
#: sums are all that separate it from torch (measured below 1e-6 on XS); 1e-4 leaves room for deeper models.
FP32_RTOL = 1e-4


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std                 # uint8 [B, 3, S, S] -> float [B, 3, S, S]


def _run_classifier(program: MILProgram, images: torch.Tensor) -> dict[str, Any]:
    """``probs`` ``[B, K]`` (in the order of the class labels), ``labels`` (top label per image) and
    ``logits`` ``[B, K]`` (None if no softmax precedes ``classify``), one image at a time (batch 1)."""
    image_name, logits_name = program.inputs[0].name, classifier_logits_name(program)
    classify = next(op for op in program.ops if op.type == "classify")
    label_name, probs_name = classify.outputs[0].name, classify.outputs[1].name
    keep = [label_name, probs_name, *([logits_name] if logits_name else [])]
    probs, labels, logits = [], [], []
    for im in images:
        out = run_program(program, {image_name: im.numpy()}, keep=keep)
        probs.append(list(out[probs_name].values()))
        labels.append(list(out[probs_name]).index(out[label_name]))
        if logits_name:
            logits.append(torch.from_numpy(out[logits_name].astype(np.float32)).reshape(-1))
    return {"probs": torch.tensor(probs, dtype=torch.float32), "labels": torch.tensor(labels),
            "logits": torch.stack(logits) if logits_name else None}


def _compare(got: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Largest abs difference, largest |reference| and their ratio (the worst per-row ratio)."""
    diff = (got - ref).abs().flatten(1).amax(1)
    scale = ref.abs().flatten(1).amax(1).clamp_min(1e-30)
    return {"max_abs_diff": float(diff.max()), "max_abs_ref": float(scale.max()), "rel_diff": float((diff / scale).max())}


def _check_classifier(program, torch_model, images, rtol, mean, std) -> dict[str, Any]:
    """A classifier package on ``images`` (uint8 for an image input, normalised floats for a tensor input)."""
    x = _normalise(images, mean, std) if program.image_inputs else images.float()
    with torch.no_grad():
        ref_logits = torch_model(x).float()
    got = _run_classifier(program, images if program.image_inputs else x)
    ref_probs, logits = ref_logits.softmax(-1), got["logits"]
    p = _compare(got["probs"], ref_probs)
    out = {"images": len(images), "max_abs_diff_probs": p["max_abs_diff"],
           "label_agreement": float((got["labels"] == ref_logits.argmax(-1)).float().mean())}
    if logits is None:  # only probabilities to compare
        out.update(top1_agreement=float((got["probs"].argmax(-1) == ref_probs.argmax(-1)).float().mean()),
                   rel_diff=p["rel_diff"], passed=p["rel_diff"] <= rtol)
        return out
    lg = _compare(logits, ref_logits)
    top2 = ref_logits.topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 2 * rtol * ref_logits.abs().amax(-1)  # fp16 noise cannot flip these
    agree = logits.argmax(-1) == ref_logits.argmax(-1)
    flips = int((~agree & decisive).sum())
    out.update(top1_agreement=float(agree.float().mean()), max_abs_diff_logits=lg["max_abs_diff"],
               max_abs_logit=lg["max_abs_ref"], rel_diff=lg["rel_diff"], decisive_top1_disagreements=flips,
               passed=lg["rel_diff"] <= rtol and flips == 0)
    return out


def _check_tensor_program(program, torch_model, inputs) -> dict[str, Any]:
    name, out_name = program.inputs[0].name, program.outputs[0]
    got, ref = [], []
    for x in inputs:
        got.append(torch.from_numpy(run_program(program, {name: x[None].numpy()})[out_name].astype(np.float32)))
        with torch.no_grad():
            ref.append(torch_model(x[None].float()).float())     # [1, ...] per input
    return {"inputs": len(inputs), **_compare(torch.cat(got), torch.cat(ref))}


def check_package(mlpackage, torch_model: nn.Module, images, rtol: float = FP16_RTOL, mean=IMAGENET_DEFAULT_MEAN,
                  std=IMAGENET_DEFAULT_STD) -> dict[str, Any]:
    """Run a package with :func:`run_program` and compare it with the torch model it was exported from.

    * Classifier (a ``classify`` op): with an image input ``images`` are uint8 ``[B, 3, S, S]`` (what a
      camera gives Core ML) and the torch model gets ``(images / 255 - mean) / std``; with a tensor
      input they are the normalised floats both get. Reported: ``max_abs_diff_logits`` (the package's
      softmax input vs torch's logits), ``max_abs_logit``, ``rel_diff`` (the worst per-image ratio of
      the two), ``max_abs_diff_probs``, ``top1_agreement`` (argmax of the logits),
      ``decisive_top1_disagreements`` (images whose torch top-2 margin exceeds twice the tolerance, so
      fp16 rounding cannot explain a different top-1) and ``label_agreement`` (the package's
      ``classLabel`` vs torch's top-1; it can be low for an untrained model, whose probabilities all
      round to the same fp16 value, ~1/K).
    * Any package with one tensor input and output (a sweep block): ``images`` are the inputs
      ``[B, ...]``, fed one by one as ``[1, ...]``; reported ``max_abs_diff``, ``max_abs_ref``, ``rel_diff``.

    ``passed``: ``rel_diff <= rtol`` (and, for a classifier, no decisive top-1 disagreement). The
    default :data:`FP16_RTOL` is justified there. Also returned: ``seconds_per_input``.
    """
    program = mlpackage if isinstance(mlpackage, MILProgram) else load_program(mlpackage)
    torch_model = torch_model.eval()
    images = torch.as_tensor(images)
    start = time.perf_counter()
    if any(op.type == "classify" for op in program.ops) and len(program.inputs) == 1:
        out = _check_classifier(program, torch_model, images, rtol, mean, std)
    elif len(program.inputs) == 1 and len(program.outputs) == 1:
        out = _check_tensor_program(program, torch_model, images)
        out["passed"] = out["rel_diff"] <= rtol
    else:
        raise ValueError(f"{program.path}: check_package compares image classifiers and single-tensor packages; "
                         f"this one has inputs {[d.name for d in program.inputs]}, outputs {program.outputs}")
    out["seconds_per_input"] = (time.perf_counter() - start) / max(len(images), 1)
    return {"package": program.path, "rtol": rtol, **out}
