"""Bad inputs and hostile files for swiftlib.attention and swiftlib.models: every case gets a clear error
naming the argument (or dtype, or blocked global), files never run code, training-only traps are explained,
and the transposed attention's temperature gets no weight decay in timm's optimizer."""
import argparse
import math
import pickle
from pathlib import Path

import pytest
import timm
import torch
from fvcore.nn import FlopCountAnalysis
from safetensors.torch import save_file
from timm.optim import create_optimizer_v2
from torch import nn

import swiftlib.attention as A
from swiftlib.attention_inference import EfficientAdditiveAttentionInference
from swiftlib.models import (SwiftFormer, checkpoint_num_classes, create_model, fuse_for_inference, load_checkpoint,
                             read_checkpoint, save_checkpoint, stage_shapes, swiftformer_macs, to_official_keys)

VARIANT_NAMES = ["self", "transposed", "separable", "additive"]
FORMS = VARIANT_NAMES + ["additive_inference"]


def _build(form, d=32):
    if form == "additive_inference":
        return A.EfficientAdditiveAttention(d).eval().reparameterize()
    return A.build_attention(form, d).eval()


class _Touch:
    """Unpickling this object creates ``path`` (the way a hostile pickle runs code)."""

    def __init__(self, path):
        self.path = Path(path)

    def __reduce__(self):
        return (Path.touch, (self.path,))


# --------------------------------------------------------------------------- nothing runs from a file
@pytest.fixture
def hostile(tmp_path):
    """A torch.save file whose weights dict hides an object that would create ``marker`` when unpickled."""
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.pth"
    weights = {**create_model("swiftformer_xs", num_classes=3).state_dict(), "evil": _Touch(marker)}
    torch.save({"model": weights, "arch": "swiftformer_xs"}, path)
    return path, marker


def test_a_hostile_pickle_is_refused_by_every_reader(hostile):
    path, marker = hostile
    readers = {
        "read_checkpoint": lambda: read_checkpoint(path),
        "read_checkpoint(str)": lambda: read_checkpoint(str(path)),
        "load_checkpoint": lambda: load_checkpoint(create_model("swiftformer_xs", num_classes=3), path),
        "create_model": lambda: create_model("swiftformer_xs", num_classes=3, checkpoint=path),
        "checkpoint_num_classes": lambda: checkpoint_num_classes(path),
    }
    for name, read in readers.items():
        with pytest.raises(ValueError) as refused:
            read()
        message = str(refused.value)
        assert "getattr" in message, name  # the blocked global (Path.touch pickles as getattr(Path, "touch"))
        assert "never runs code" in message and "torch.save(model.state_dict()" in message, name
        assert "weights_only=False" not in message, name
        assert not marker.exists(), name
    torch.load(path, weights_only=False)  # the file really runs code when unpickled in full
    assert marker.exists()


def test_a_plain_pickle_file_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": _Touch(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="refused to load .*getattr"):
        read_checkpoint(path)
    with pytest.raises(ValueError):
        load_checkpoint(create_model("swiftformer_xs"), path)
    assert not marker.exists()


def test_weights_only_cannot_be_turned_off(tmp_path):
    path = save_checkpoint(create_model("swiftformer_xs", num_classes=3), tmp_path / "xs.pth")
    with pytest.raises(ValueError, match="weights_only must be True.*never runs code"):
        load_checkpoint(create_model("swiftformer_xs", num_classes=3), path, weights_only=False)
    payload = read_checkpoint(path)  # the one reader returns the payload save_checkpoint wrote
    assert set(payload) == {"model", "arch", "attention", "num_classes"} and payload["num_classes"] == 3


def test_official_arguments_and_timm_safetensors_load(tmp_path):
    """The official main.py saves its argparse.Namespace beside the weights; timm's hub files are safetensors."""
    timm_model = timm.create_model("swiftformer_xs", pretrained=False, num_classes=7).eval()
    official = {"model": to_official_keys(create_model("swiftformer_xs", num_classes=7).state_dict()),
                "epoch": 299, "args": argparse.Namespace(model="SwiftFormer_XS", lr=2e-3)}
    torch.save(official, tmp_path / "official.pth")
    assert read_checkpoint(tmp_path / "official.pth")["args"].lr == 2e-3
    save_file(timm_model.state_dict(), tmp_path / "model.safetensors")
    ours = create_model("swiftformer_xs", num_classes=7, checkpoint=tmp_path / "model.safetensors").eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x))
    assert checkpoint_num_classes(tmp_path / "model.safetensors") == 7
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_checkpoint(tmp_path / "bad.safetensors")


def test_bad_checkpoint_paths_get_one_line_errors(tmp_path):
    model = create_model("swiftformer_xs")
    with pytest.raises(IsADirectoryError, match="got a directory"):
        load_checkpoint(model, tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        read_checkpoint(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"\(0 bytes\): the file is truncated"):
        load_checkpoint(model, empty)
    with pytest.raises(TypeError, match="expects a file path"):
        read_checkpoint(3)


# --------------------------------------------------------------------------- non-finite weights
def test_non_finite_weights_warn_and_still_load():
    src = create_model("swiftformer_xs", num_classes=3)
    sd = src.state_dict()
    sd["stem.0.weight"][0, 0, 0, 0] = float("nan")
    sd["head.bias"][1] = float("inf")
    sd["norm.running_var"][2] = -float("inf")
    model = create_model("swiftformer_xs", num_classes=3)
    with pytest.warns(UserWarning, match=rf"non-finite values \(nan or inf\) in 3 of {len(sd)} tensors, "
                                         r"e\.g\. \['stem\.0\.weight', 'norm\.running_var', 'head\.bias'\]"):
        load_checkpoint(model, sd)
    assert torch.isnan(model.stem[0].weight[0, 0, 0, 0]) and torch.isinf(model.head.bias[1])  # loaded as given


# --------------------------------------------------------------------------- class count of a checkpoint
def test_checkpoint_num_classes_of_every_layout(tmp_path):
    ours = create_model("swiftformer_xs", num_classes=7)
    assert checkpoint_num_classes(ours.state_dict()) == 7
    assert checkpoint_num_classes({"model": to_official_keys(ours.state_dict())}) == 7  # official layout
    with torch.device("meta"):
        assert checkpoint_num_classes(timm.create_model("swiftformer_xs", num_classes=5).state_dict()) == 5
    state = save_checkpoint(ours, tmp_path / "last.pth", epoch=2, optimizer={"state": {}, "lr": 0.1},
                            rng={"torch": torch.get_rng_state()})  # a training state: weights under "model"
    assert checkpoint_num_classes(state) == checkpoint_num_classes(str(state)) == 7
    headless = {k: v for k, v in ours.state_dict().items() if not k.startswith(("head.", "head_dist."))}
    with pytest.raises(ValueError, match="holds no classifier"):
        checkpoint_num_classes(headless)


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64, torch.bool])
def test_tokens_of_another_dtype_name_both_dtypes(form, dtype):
    m = _build(form)
    x = torch.randn(2, 5, 32).to(dtype)
    name = EfficientAdditiveAttentionInference.__name__ if form == "additive_inference" else type(m).__name__
    with pytest.raises(ValueError, match=rf"{name} has torch.float32 weights but got tokens of dtype {dtype}"):
        m(x)


@pytest.mark.parametrize("form", FORMS)
def test_the_module_dtype_is_what_counts_and_autocast_passes(form):
    m = _build(form).double()
    with torch.no_grad():
        assert m(torch.randn(2, 5, 32, dtype=torch.float64)).dtype == torch.float64
    m = _build(form)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # AMP: bf16 activations, fp32 weights
        assert m(torch.randn(2, 5, 32).bfloat16()).shape == (2, 5, 32)
        with pytest.raises(ValueError, match="dtype torch.int64"):  # integers never pass
            m(torch.randint(0, 3, (2, 5, 32)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.uint8])
def test_images_of_another_dtype_name_both_dtypes(dtype):
    model = create_model("swiftformer_xs", num_classes=3).eval()
    with pytest.raises(ValueError, match=rf"SwiftFormer has torch.float32 weights but got images of dtype {dtype}"):
        model(torch.zeros(2, 3, 32, 32, dtype=dtype))


def test_amp_training_step_runs_under_autocast():
    torch.manual_seed(0)
    model = create_model("swiftformer_xs", num_classes=3).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.head.weight.detach().clone()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for images in (x, x.bfloat16()):  # fp32 images, and images already in the autocast dtype
        with torch.autocast("cpu", dtype=torch.bfloat16):
            head, dist = model(images)
            loss = nn.functional.cross_entropy(head, y) + nn.functional.cross_entropy(dist, y)
        assert head.dtype == torch.bfloat16
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(model.head.weight, before)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("form", FORMS)
def test_tracing_and_counting_still_work(form):
    m = _build(form, 48)
    x = torch.randn(1, 49, 48)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.trace(m, (x,))(x), m(x))
    fca = FlopCountAnalysis(m, (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert fca.total() > 0


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_compiled_forward_has_no_graph_break_and_still_checks(form):
    """torch.compile(fullgraph=True) traces the whole forward with its checks (Dynamo only, no code generation);
    a compiled module without fullgraph still answers a wrong dtype with the same ValueError."""
    m = _build(form)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m, backend="eager", fullgraph=True)(x), m(x))
        compiled = torch.compile(m, backend="eager")
        compiled(x)
        with pytest.raises(ValueError, match="dtype torch.float64"):
            compiled(x.double())


# --------------------------------------------------------------------------- cost functions
_TOKENS = {"n": 8, "d": 16, "heads": 1}
_MEMORY = {**_TOKENS, "batch": 1, "bytes_per_element": 4}
# (label, cost function, valid keyword arguments, the argument made bad)
COST_CALLS = (
    [(f"{v}.macs", cls.macs, _TOKENS, arg) for v, cls in A.VARIANTS.items() for arg in _TOKENS]
    + [(f"{v}.activation_memory", cls.activation_memory, _MEMORY, arg) for v, cls in A.VARIANTS.items()
       for arg in _MEMORY]
    + [("attention_macs", A.attention_macs, {"name": "self", **_TOKENS}, arg) for arg in _TOKENS]
    + [("attention_memory", A.attention_memory, {"name": "additive", **_MEMORY}, arg) for arg in _MEMORY]
    + [("inference.macs", EfficientAdditiveAttentionInference.macs, _TOKENS, arg) for arg in _TOKENS]
    + [("stage_shapes", stage_shapes, {"name": "xs", "height": 224, "width": 96}, arg) for arg in ("height", "width")]
    + [("swiftformer_macs", swiftformer_macs, {"name": "xs", "height": 224, "width": 96, "num_classes": 10}, arg)
       for arg in ("height", "width", "num_classes")]
)


@pytest.mark.parametrize("label,fn,kwargs,arg", COST_CALLS, ids=[f"{c[0]}.{c[3]}" for c in COST_CALLS])
@pytest.mark.parametrize("bad", [0, -3, 2.5, 64.0, True, "8"])
def test_cost_functions_reject_non_positive_and_non_integer_sizes(label, fn, kwargs, arg, bad):
    assert fn(**kwargs)  # the valid call works
    with pytest.raises(ValueError, match=rf"\b{arg} must be a positive integer, got {bad!r}"):
        fn(**{**kwargs, arg: bad})


def test_cost_functions_take_numpy_integers():
    np = pytest.importorskip("numpy")
    assert A.attention_macs("additive", np.int64(49), np.int64(48)) == A.attention_macs("additive", 49, 48)
    assert stage_shapes("xs", np.int64(224)) == stage_shapes("xs", 224)


# --------------------------------------------------------------------------- a batch of one while training
def _raw_forward(model, x):
    """The network without its input checks: what torch itself says."""
    return model.forward_head(model.norm(model.stages(model.stem(x))))


@pytest.mark.parametrize("b,h,w", [(1, 32, 32), (1, 32, 48), (1, 33, 32), (2, 32, 32), (1, 64, 64)])
def test_batch_of_one_with_one_by_one_maps_is_explained(b, h, w):
    """The check fires exactly when BatchNorm itself would fail (one value per channel: B * h/32 * w/32 == 1)."""
    model = create_model("swiftformer_xs", num_classes=3).train()
    x = torch.randn(b, 3, h, w)
    fails = b * math.ceil(h / 32) * math.ceil(w / 32) == 1
    if fails:
        with pytest.raises(ValueError, match=r"BatchNorm needs more than one value per channel in training.*"
                                             r"batch of at least 2, eval mode.*larger than 32 px"):
            model(x)
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
            _raw_forward(model, x)
    else:
        assert model(x)[0].shape == (b, 3)
    with torch.no_grad():
        assert model.eval()(x).shape == (b, 3)  # eval mode uses running statistics: any batch works


def test_the_one_value_check_follows_the_network_strides():
    """A three-stage SwiftFormer has a total stride of 16: a single 32 px image leaves 2x2 maps, which train."""
    model = SwiftFormer(widths=(16, 24, 32), depths=(1, 1, 1), num_classes=2).train()
    assert model.total_stride == 16
    head, _ = model(torch.randn(1, 3, 32, 32))
    assert head.shape == (1, 2)


# --------------------------------------------------------------------------- weight decay
def test_transposed_temperatures_get_no_weight_decay_in_timms_optimizer():
    assert A.TransposedAttention(32, num_heads=2).no_weight_decay() == {"temperature"}
    assert create_model("swiftformer_xs").no_weight_decay() == set()
    model = create_model("swiftformer_xs", attention="transposed")
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert names == {n for n in params if n.endswith(".temperature")} and len(names) == 4
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert all(decay_of[id(params[n])] == 0.0 for n in names)
    assert decay_of[id(params["stages.0.blocks.2.attn.qkv.weight"])] == 0.05  # other weights still decay
    assert all(params[n].dim() == 3 for n in names)  # [h, 1, 1]: not caught by timm's 1-D rule by itself


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kw,arg", [({"num_classes": 0}, "num_classes"), ({"num_classes": -1}, "num_classes"),
                                    ({"num_classes": 10.0}, "num_classes"), ({"num_classes": "10"}, "num_classes"),
                                    ({"in_chans": 0}, "in_chans"), ({"in_chans": 1.5}, "in_chans")])
def test_create_model_rejects_bad_sizes_naming_the_argument(kw, arg):
    with pytest.raises(ValueError, match=rf"{arg} must be a positive integer"):
        create_model("swiftformer_xs", **kw)


def test_create_model_rejects_an_unknown_attention():
    with pytest.raises(ValueError, match=r"unknown attention 'linear'; choose one of \['additive', 'self'"):
        create_model("swiftformer_xs", attention="linear")


@pytest.mark.parametrize("name", VARIANT_NAMES)
@pytest.mark.parametrize("dim", [0, -8, 32.0, "32"])
def test_build_attention_rejects_bad_dims_naming_the_argument(name, dim):
    with pytest.raises(ValueError, match=rf"dim must be a positive integer, got {dim!r}"):
        A.build_attention(name, dim)


def test_reset_classifier_rejects_bad_class_counts():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        create_model("swiftformer_xs").reset_classifier(0)


def test_fuse_for_inference_of_another_module():
    with pytest.raises(TypeError, match="expects a swiftlib SwiftFormer, got Linear"):
        fuse_for_inference(nn.Linear(2, 2))


def test_a_checkpoint_of_another_size_says_what_differs(tmp_path):
    path = save_checkpoint(create_model("swiftformer_l1", num_classes=5), tmp_path / "l1.pth")
    with pytest.raises(ValueError) as e:
        create_model("swiftformer_xs", checkpoint=path)
    message = str(e.value)
    assert "\n" not in message and len(message) < 400  # one line, not a list of hundreds of keys
    for part in ("widths: checkpoint (48, 96, 192, 384), model (48, 56, 112, 220)",
                 "depths: checkpoint (4, 3, 10, 5), model (3, 3, 6, 4)", "classes: checkpoint 5, model 1000"):
        assert part in message
    assert len(e.value.differences) == 3
