"""The reference MIL interpreter (:mod:`swiftlib.export.mil`) against torch, op by op.

* Every op type it implements, in fp32 and fp16: a tiny torch module is traced and converted by
  coremltools (ML program, iOS16), the converted program must contain the op type under test, and the
  interpreter's output must match the torch module's. A few op options torch never produces (gelu's
  sigmoid approximation, concat's interleave, slice_by_size, the "same" pad types) are written with
  coremltools' MIL builder instead and compared with a torch expression.
* Image inputs (RGB, BGR, grayscale scale/bias) and a classifier's ``classify`` outputs.
* Bad programs and inputs are clear errors.

Whole packages and ``python -m swiftlib.export check``: tests/test_export_check.py. The torch-module
cases are converted together, once per precision (:class:`AllCases`).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import Fn
from PIL import Image
from torch import nn

from swiftlib.export import mil
from swiftlib.export.coreml import quiet_coremltools

with quiet_coremltools() as ct:  # coremltools without its start-up noise
    from coremltools.converters.mil import Builder as mb
logging.getLogger("coremltools").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore:`torch\\.jit\\.trace:FutureWarning")  # the cases are traced on purpose

#: interpreter vs torch, max |difference| / max(1, max |torch|). fp32: arithmetic order only (measured
#: <= 1.2e-7). fp16: the rounding of the inputs and of each op's output, 2**-11 ~ 4.9e-4 each, over one
#: to three ops (measured <= 6.9e-4).
TOL = {"fp32": 1e-5, "fp16": 2e-3}


def randn(*shape):
    return lambda g: torch.randn(shape, generator=g)


def positive(*shape):  # 0.5 .. 2
    return lambda g: 0.5 + 1.5 * torch.rand(shape, generator=g)


def half_integers(*shape, scale=1.0):
    """``(k + 0.5) * scale``, exact in fp16 and far from where floor / truncation jump."""
    return lambda g: (torch.randint(-5, 5, shape, generator=g) + 0.5) * scale


def small_integers(*shape):
    return lambda g: torch.randint(1, 4, shape, generator=g).float()


@dataclass
class Case:
    id: str
    ops: tuple[str, ...]            # MIL op types the converted program must contain
    module: nn.Module
    inputs: list = field(default_factory=list)  # one generator -> tensor per input
    reference: object = None        # what the package computes, where it is not exactly the module


def _seeded(mod: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
        for name, b in mod.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape) * 0.3)
    return mod.eval()


CASES = [  # torch modules; each case's ops must be behind its output in the converted program
    Case("conv_stride_pad", ("conv",), _seeded(nn.Conv2d(4, 6, 3, stride=2, padding=1)), [randn(1, 4, 9, 9)]),
    Case("conv_dilated_grouped", ("conv",), _seeded(nn.Conv2d(4, 6, 3, dilation=2, groups=2, padding=2)),
         [randn(1, 4, 8, 8)]),
    Case("conv_depthwise_valid", ("conv",), _seeded(nn.Conv2d(4, 4, 3, groups=4)), [randn(1, 4, 7, 7)]),
    Case("conv_torch_same", ("conv",), _seeded(nn.Conv2d(3, 4, 4, padding="same", bias=False)),
         [randn(1, 3, 8, 8)]),
    Case("conv1d", ("conv",), _seeded(nn.Conv1d(3, 4, 3, padding=1)), [randn(1, 3, 8)]),
    Case("linear", ("linear",), _seeded(nn.Linear(8, 5)), [randn(2, 8)]),
    Case("linear_no_bias", ("linear",), _seeded(nn.Linear(8, 5, bias=False)), [randn(3, 8)]),
    Case("matmul", ("matmul",), Fn(lambda x, y: x @ y), [randn(2, 3, 4), randn(2, 4, 5)]),
    Case("matmul_transpose_x", ("matmul",), Fn(lambda x, y: x.transpose(-1, -2) @ y),
         [randn(2, 3, 4), randn(2, 3, 5)]),
    Case("matmul_transpose_y", ("matmul",), Fn(lambda x, y: x @ y.transpose(-1, -2)),
         [randn(2, 3, 4), randn(2, 5, 4)]),
    Case("add", ("add",), Fn(lambda x, y: x + y), [randn(2, 3, 4), randn(3, 1)]),
    Case("sub", ("sub",), Fn(lambda x, y: x - y), [randn(2, 3), randn(2, 3)]),
    Case("mul", ("mul",), Fn(lambda x, y: x * y), [randn(2, 3, 4), randn(1, 4)]),
    Case("real_div", ("real_div",), Fn(lambda x, y: x / y), [randn(2, 3), positive(2, 3)]),
    Case("floor_div", ("floor_div",), Fn(lambda x, y: torch.floor_divide(x, y)),
         [half_integers(2, 3), small_integers(2, 3)]),
    Case("maximum", ("maximum",), Fn(torch.maximum), [randn(2, 3), randn(2, 3)]),
    Case("minimum", ("minimum",), Fn(torch.minimum), [randn(2, 3), randn(2, 3)]),
    Case("pow_scalar", ("pow",), Fn(lambda x: x.pow(3)), [randn(2, 3)]),
    Case("pow_tensor", ("pow",), Fn(lambda x, y: x ** y), [positive(2, 3), randn(2, 3)]),
    Case("relu", ("relu",), nn.ReLU(), [randn(2, 5)]),
    Case("sigmoid", ("sigmoid",), nn.Sigmoid(), [randn(2, 5)]),
    Case("tanh", ("tanh",), nn.Tanh(), [randn(2, 5)]),
    Case("silu", ("silu",), nn.SiLU(), [randn(2, 5)]),
    Case("gelu_exact", ("gelu",), nn.GELU(), [randn(2, 5)]),
    Case("gelu_tanh", ("gelu",), nn.GELU(approximate="tanh"), [randn(2, 5)]),
    Case("leaky_relu", ("leaky_relu",), nn.LeakyReLU(0.1), [randn(2, 5)]),
    Case("clip", ("clip",), Fn(lambda x: x.clamp(-0.5, 0.7)), [randn(2, 5)]),
    Case("exp", ("exp",), Fn(torch.exp), [randn(2, 5)]),
    Case("log", ("log",), Fn(torch.log), [positive(2, 5)]),
    Case("sqrt", ("sqrt",), Fn(torch.sqrt), [positive(2, 5)]),
    Case("rsqrt", ("rsqrt",), Fn(torch.rsqrt), [positive(2, 5)]),
    # coremltools writes torch.reciprocal as MIL inverse with epsilon 1e-4: 1 / (x + 1e-4)
    Case("inverse", ("inverse",), Fn(torch.reciprocal), [positive(2, 5)], reference=lambda x: 1 / (x + 1e-4)),
    Case("abs", ("abs",), Fn(torch.abs), [randn(2, 5)]),
    Case("erf", ("erf",), Fn(torch.erf), [randn(2, 5)]),
    Case("floor", ("floor",), Fn(torch.floor), [half_integers(2, 5)]),
    Case("cast", ("cast",), Fn(lambda x: (x * 4).int().float()), [half_integers(2, 5, scale=0.25)]),
    Case("reduce_mean", ("reduce_mean",), Fn(lambda x: x.mean(dim=(2, 3))), [randn(1, 3, 4, 5)]),
    Case("reduce_sum", ("reduce_sum",), Fn(lambda x: x.sum(dim=-1, keepdim=True)), [randn(2, 3, 4)]),
    Case("reduce_max", ("reduce_max",), Fn(lambda x: x.amax(dim=(1, 2))), [randn(2, 3, 4)]),
    Case("reduce_min", ("reduce_min",), Fn(lambda x: x.amin(dim=1)), [randn(2, 3, 4)]),
    Case("reduce_l2_norm", ("reduce_l2_norm",), Fn(lambda x: torch.linalg.vector_norm(x, dim=1, keepdim=True)),
         [randn(2, 3, 4)]),
    Case("reduce_log_sum_exp", ("reduce_log_sum_exp",), Fn(lambda x: torch.logsumexp(x, dim=1)),
         [randn(2, 3, 4)]),
    Case("softmax_last", ("softmax",), Fn(lambda x: x.softmax(-1)), [randn(2, 3, 7)]),
    Case("softmax_channels", ("softmax",), Fn(lambda x: x.softmax(1)), [randn(1, 4, 3, 3)]),
    Case("layer_norm", ("layer_norm",), _seeded(nn.LayerNorm(6)), [randn(2, 3, 6)]),
    Case("batch_norm", ("batch_norm",), _seeded(nn.BatchNorm2d(3)), [randn(1, 3, 4, 4)]),
    Case("instance_norm", ("instance_norm",), _seeded(nn.InstanceNorm2d(3, affine=True)), [randn(1, 3, 5, 4)]),
    Case("avg_pool", ("avg_pool",), nn.AvgPool2d(3, 2, 1), [randn(1, 3, 8, 8)]),
    Case("avg_pool_exclude_pad", ("avg_pool",), nn.AvgPool2d(3, 2, 1, count_include_pad=False),
         [randn(1, 3, 8, 8)]),
    Case("max_pool", ("max_pool",), nn.MaxPool2d(3, 2, 1), [randn(1, 3, 8, 8)]),
    Case("max_pool_ceil", ("max_pool",), nn.MaxPool2d(3, 2, ceil_mode=True), [randn(1, 3, 8, 8)]),
    Case("reshape", ("reshape",), Fn(lambda x: x.reshape(2, 12) * 2), [randn(2, 3, 4)]),
    Case("transpose", ("transpose",), Fn(lambda x: x.permute(0, 2, 3, 1) * 2), [randn(1, 2, 3, 4)]),
    Case("squeeze", ("squeeze",), Fn(lambda x: x.squeeze(1) * 2), [randn(2, 1, 3)]),
    Case("expand_dims", ("expand_dims",), Fn(lambda x: x.unsqueeze(1) * 2), [randn(2, 3)]),
    Case("concat", ("concat",), Fn(lambda x, y: torch.cat([x, y * 2], dim=1)), [randn(1, 2, 3), randn(1, 4, 3)]),
    Case("split", ("split",), Fn(lambda x: torch.cat([t * (i + 1) for i, t in enumerate(x.split([1, 2, 3], 1))], 1)),
         [randn(1, 6, 4)]),
    Case("slice_by_index", ("slice_by_index",), Fn(lambda x: x[:, 1:3, ::2] * 2), [randn(2, 4, 6)]),
    Case("slice_by_index_select", ("slice_by_index",), Fn(lambda x: x[:, 1] * 2), [randn(2, 4, 6)]),
    Case("tile", ("tile",), Fn(lambda x: x.repeat(1, 2, 3)), [randn(2, 4, 6)]),
    Case("pad_reflect", ("pad",), Fn(lambda x: F.pad(x, (1, 2, 0, 1), mode="reflect")), [randn(1, 2, 4, 6)]),
    Case("pad_constant", ("pad",), Fn(lambda x: F.pad(x, (1, 2, 0, 1), value=0.5)), [randn(1, 2, 4, 6)]),
]


def _builder_cases():
    """Op options torch does not produce: MIL builder programs with a torch expression as reference."""
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3) * 0.5

    def conv(pad_type):
        return lambda x: mb.conv(x=x, weight=w.numpy(), strides=[2, 2], pad_type=pad_type)

    return [  # id, op types, builder fn, torch reference, input shapes
        ("gelu_sigmoid_approximation", ("gelu",), lambda x: mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
         lambda x: x * torch.sigmoid(1.702 * x), [(2, 5)]),
        ("concat_interleave", ("concat",), lambda x, y: mb.concat(values=[x, y], axis=1, interleave=True),
         lambda x, y: torch.stack([x, y], dim=2).flatten(1, 2), [(1, 3, 2), (1, 3, 2)]),
        ("slice_by_size", ("slice_by_size",), lambda x: mb.slice_by_size(x=x, begin=[0, 1, 2], size=[-1, 2, 3]),
         lambda x: x[:, 1:3, 2:5], [(2, 4, 6)]),
        ("conv_pad_same", ("conv",), conv("same"), lambda x: F.conv2d(F.pad(x, (0, 1, 0, 1)), w, stride=2),
         [(1, 3, 8, 8)]),
        ("conv_pad_same_lower", ("conv",), conv("same_lower"), lambda x: F.conv2d(F.pad(x, (1, 0, 1, 0)), w, stride=2),
         [(1, 3, 8, 8)]),
        ("max_pool_same", ("max_pool",),
         lambda x: mb.max_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="same"),
         lambda x: F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2), [(1, 3, 8, 8)]),
        # what swiftlib's rewrite makes of an attention-score normalisation: [B, 1, H, W] over the last three axes
        ("l2_norm_map", ("l2_norm",), lambda x: mb.l2_norm(x=x, epsilon=1e-6),
         lambda x: x / torch.sqrt((x * x).sum(dim=(1, 2, 3), keepdim=True) + 1e-6), [(2, 1, 5, 6)]),
        ("l2_norm_rank3", ("l2_norm",), lambda x: mb.l2_norm(x=x, epsilon=0.25),
         lambda x: x / torch.sqrt((x * x).sum() + 0.25), [(3, 4, 2)]),
    ]


BUILDER_CASES = _builder_cases()


# --------------------------------------------------------------------------- conversion (cached)
def _convert(source, precision: str, path: Path, **kw) -> mil.MILProgram:
    kw.setdefault("minimum_deployment_target", ct.target.iOS16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = ct.convert(source, convert_to="mlprogram",
                        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32, **kw)
    ml.save(str(path))
    return mil.load_program(path)


class AllCases(nn.Module):
    """Every case side by side in one module (inputs ``<id>__<i>``, outputs ``<id>``): one conversion
    per precision instead of one per case."""

    def __init__(self, cases):
        super().__init__()
        self.cases = nn.ModuleList(c.module for c in cases)
        self.arity = [len(c.inputs) for c in cases]

    def forward(self, *xs):
        outs, i = [], 0
        for module, n in zip(self.cases, self.arity):
            outs.append(module(*xs[i:i + n]))
            i += n
        return tuple(outs)


@pytest.fixture(scope="session")
def programs(tmp_path_factory):
    """``get(precision)`` -> (the converted program of :class:`AllCases`, its outputs on the cases' inputs)."""
    root, cache = tmp_path_factory.mktemp("mil_ops"), {}

    def get(precision: str):
        if precision not in cache:
            xs = [x for c in CASES for x in _inputs(c)]
            names = [f"{c.id}__{i}" for c in CASES for i in range(len(c.inputs))]
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(AllCases(CASES).eval(), tuple(xs))
            program = _convert(traced, precision, root / f"ops_{precision}.mlpackage",
                               inputs=[ct.TensorType(name=n, shape=x.shape) for n, x in zip(names, xs)],
                               outputs=[ct.TensorType(name=c.id) for c in CASES])
            cache[precision] = program, mil.run_program(program, {n: x.numpy() for n, x in zip(names, xs)})
        return cache[precision]

    return get


def _op_types_behind(program: mil.MILProgram, name: str) -> dict[str, set[str]]:
    """Op type -> output dtypes of the ops that ``name`` is computed from."""
    producer = {o.name: op for op in program.ops for o in op.outputs}
    found, stack, seen = {}, [name], set()
    while stack:
        op = producer.get(stack.pop())
        if op is not None and op.name not in seen:
            seen.add(op.name)
            found.setdefault(op.type, set()).add(op.outputs[0].dtype)
            stack.extend(n for names in op.inputs.values() for n in names)
    return found


def _inputs(case: Case) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [make(g) for make in case.inputs]


def _assert_close(got, ref: torch.Tensor, precision: str, what: str) -> None:
    got = torch.from_numpy(np.asarray(got, dtype=np.float32))
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} vs torch {tuple(ref.shape)}"
    err = float((got - ref.float()).abs().max())
    bound = TOL[precision] * max(1.0, float(ref.abs().max()))
    assert err <= bound, f"{what} ({precision}): max |interpreter - torch| = {err:.3g} > {bound:.3g}"


# --------------------------------------------------------------------------- each op vs torch
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_torch(case, precision, programs):
    program, outputs = programs(precision)
    behind = _op_types_behind(program, case.id)
    missing = set(case.ops) - set(behind)
    assert not missing, f"the converted program computes {case.id} without {missing} (ops: {sorted(behind)})"
    with torch.no_grad():
        ref = (case.reference or case.module)(*_inputs(case))
    _assert_close(outputs[case.id], ref, precision, case.id)
    if precision == "fp16":  # the ops under test hold fp16 values (a cast also gives an int32)
        assert all("FLOAT16" in behind[t] for t in case.ops), behind


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", BUILDER_CASES, ids=[c[0] for c in BUILDER_CASES])
def test_builder_op_matches_torch(case, precision, tmp_path):
    name, ops, body, reference, shapes = case
    prog = mb.program(input_specs=[mb.TensorSpec(shape=s) for s in shapes], opset_version=ct.target.iOS16)(body)
    program = _convert(prog, precision, tmp_path / f"{name}.mlpackage")
    assert set(ops) <= set(program.op_types())
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(s, generator=g) for s in shapes]
    out = mil.run_program(program, {d.name: x.numpy() for d, x in zip(program.inputs, xs)})
    _assert_close(out[program.outputs[0]], reference(*xs), precision, name)


def test_every_implemented_op_is_tested():
    tested = {t for c in CASES for t in c.ops} | {t for c in BUILDER_CASES for t in c[1]} | {"classify"}
    assert tested == set(mil.OPS), f"untested: {set(mil.OPS) - tested}; listed but not implemented: " \
                                   f"{tested - set(mil.OPS)}"


# --------------------------------------------------------------------------- image inputs and classify
class TinyClassifier(nn.Module):
    """conv -> relu -> mean -> linear (-> softmax): a stand-in image classifier."""

    def __init__(self, channels=3, classes=4, softmax=True):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, stride=2, padding=1)
        self.fc, self.softmax = nn.Linear(8, classes), softmax

    def forward(self, x):
        y = self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))
        return y.softmax(-1) if self.softmax else y


def _pixels(channels, size=16, seed=3):
    return torch.randint(0, 256, (channels, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("layout", ["RGB", "BGR", "G"])
def test_image_input_scale_bias(layout, precision, tmp_path):
    """Core ML's image scale and per-channel bias, and the channel order, as the converter writes them."""
    channels = 1 if layout == "G" else 3
    model = _seeded(TinyClassifier(channels, softmax=False))
    scale, bias = 1 / 255, [-0.5] if channels == 1 else [-0.485, -0.456, -0.406]
    example = torch.zeros(1, channels, 16, 16)
    traced = torch.jit.trace(model, example)
    image = ct.ImageType(name="image", shape=example.shape, scale=scale, bias=bias,
                         color_layout={"RGB": ct.colorlayout.RGB, "BGR": ct.colorlayout.BGR,
                                       "G": ct.colorlayout.GRAYSCALE}[layout])
    program = _convert(traced, precision, tmp_path / "image.mlpackage", inputs=[image])
    assert program.image_preprocessing["image"]["scale"] == pytest.approx([scale])
    pixels = _pixels(channels)                                        # [C, H, W] in the image's own order
    rgb = pixels.flip(0) if layout == "BGR" else pixels                # what the model sees, in its order
    bias_t = torch.tensor(bias).view(1, -1, 1, 1)
    with torch.no_grad():
        ref = model(rgb[None].float() * scale + bias_t)
    hwc = pixels.permute(1, 2, 0).numpy()
    pil = Image.fromarray(hwc[..., 0] if channels == 1 else hwc[..., ::-1].copy() if layout == "BGR" else hwc)
    for given in (pil, pixels.numpy(), hwc):
        if layout == "BGR" and given is pil:
            continue  # a PIL image is RGB: Core ML reorders it itself; covered by the arrays
        out = mil.run_program(program, {"image": given})
        _assert_close(out[program.outputs[0]], ref, precision, f"image input {layout}")
    with pytest.raises(ValueError, match="resize it first"):
        mil.run_program(program, {"image": _pixels(channels, size=20).numpy()})


@pytest.mark.parametrize("precision, labels", [("fp32", ["cat", "dog", "owl", "yak"]),
                                               ("fp16", ["cat", "dog", "owl", "yak"]), ("fp16", [3, 1, 4, 15])])
def test_classify_gives_label_and_probabilities(precision, labels, tmp_path):
    model = _seeded(TinyClassifier(3, classes=4))
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    program = _convert(torch.jit.trace(model, x), precision, tmp_path / "cls.mlpackage",
                       inputs=[ct.TensorType(name="x", shape=x.shape)],
                       classifier_config=ct.ClassifierConfig(labels, predicted_feature_name="label"))
    assert program.op_types()["classify"] == 1
    out = mil.run_program(program, {"x": x.numpy()})
    probs_name = next(n for n in program.outputs if n != "label")
    with torch.no_grad():
        ref = model(x)[0]
    assert list(out[probs_name]) == labels and all(type(k) is type(labels[0]) for k in out[probs_name])
    _assert_close(list(out[probs_name].values()), ref, precision, "classify probabilities")
    assert out["label"] == labels[int(ref.argmax())]
    logits = mil.classifier_logits_name(program)
    assert logits is not None and program.op_by_output(logits).type == "linear"


# --------------------------------------------------------------------------- errors
def test_unimplemented_op_is_a_clear_error(tmp_path):
    x = torch.randn(1, 5)
    program = _convert(torch.jit.trace(Fn(lambda t: torch.cumsum(t, dim=1)), x), "fp32", tmp_path / "c.mlpackage",
                       inputs=[ct.TensorType(name="x", shape=x.shape)])
    op = next(o for o in program.ops if o.type == "cumsum")
    with pytest.raises(NotImplementedError) as e:
        mil.run_program(program, {"x": x.numpy()})
    msg = str(e.value)
    assert f"MIL op 'cumsum' (op name {op.name!r}) is not implemented" in msg
    assert "implemented: " in msg and "conv" in msg


def test_bad_inputs_are_clear_errors(programs, tmp_path):
    program, _ = programs("fp32")
    with pytest.raises(ValueError, match="missing inputs"):
        mil.run_program(program, {})
    feed = {d.name: np.zeros([1 if s is None else s for s in d.shape], np.float32) for d in program.inputs}
    feed[program.inputs[0].name] = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ValueError, match="declares"):
        mil.run_program(program, feed)
    with pytest.raises(FileNotFoundError, match="no such Core ML package"):
        mil.load_program(tmp_path / "nothing.mlpackage")
    (tmp_path / "folder.mlpackage").mkdir()
    with pytest.raises(FileNotFoundError, match="not a Core ML package"):
        mil.load_program(tmp_path / "folder.mlpackage")
