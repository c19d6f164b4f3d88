"""swiftlib.export's Core ML side against independent references: timm's SwiftFormer (same weights, its own
code), timm's ImageNet class names and mean/std, the saved Core ML spec itself (read back from disk), the
paper's Table 2. Bad input: tests/test_export_faults.py; ONNX: tests/test_export_onnx.py; the Core ML
interpreter: tests/test_mil.py; ``check``: tests/test_export_check.py.

The expensive part (three Core ML exports of XS through ``python -m swiftlib.export compare``) is done
once per module by a fixture; the tests that need it are marked slow. ``ours_xs`` / ``timm_xs``: conftest.py.
"""
import contextlib
import csv
import io
import json
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pytest
import timm
import torch
from helpers import randomize_
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageNetInfo
from timm.models.swiftformer import EfficientAdditiveAttention as TimmAdditive
from torch import nn

import swiftlib
import swiftlib.export as E
from swiftlib.attention import EfficientAdditiveAttention, attention_macs
from swiftlib.models import SwiftFormer, create_model, fuse_for_inference, resolve_name
from swiftlib.models import stage_shapes as model_stage_shapes
from swiftlib.models import swiftformer_macs
from swiftlib.viz import plot_device_vs_paper, plot_op_inventory

VARIANT_NAMES = ["self", "transposed", "separable", "additive"]


EXPECTATIONS = ["ratio_non_const<=0.8", "tile<=0", "ratio_non_const>=1"]


@pytest.fixture(scope="module")
def xs_compare(tmp_path_factory):
    """``python -m swiftlib.export compare`` on XS, keeping both packages: swiftlib's export of the model
    name and timm's XS exported by to_coreml with the same settings. Returns (stdout, out dir, results dir)."""
    out, results = tmp_path_factory.mktemp("coreml"), tmp_path_factory.mktemp("results")
    argv = ["compare", "--model", "xs", "--out-dir", str(out), "--results-dir", str(results)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert E.main(argv + [a for e in EXPECTATIONS for a in ("--expect", e)]) == 0
    return printed.getvalue(), out, results


@pytest.fixture(scope="module")
def xs_pair(xs_compare):
    _, out, _ = xs_compare
    return E.op_inventory(out / "swiftformer_xs_swiftlib.mlpackage"), E.op_inventory(out / "swiftformer_xs_timm.mlpackage")


@pytest.fixture(scope="module")
def xs_bare(xs_compare):
    """timm's XS converted bare (tensor in, logits out, coremltools' defaults), from the same compare run."""
    return E.op_inventory(xs_compare[1] / "swiftformer_xs_timm_bare.mlpackage")


# --------------------------------------------------------------------------- export-friendly path == timm
@pytest.mark.parametrize("form", ["reference", "inference"])
def test_map_additive_attention_matches_timm(form):
    """timm's EfficientAdditiveAttention works on [B, C, H, W] maps too: same weights, same output, whether
    the map form is built from the reference module or from the inference module reparameterize() returns."""
    torch.manual_seed(0)
    ref = randomize_(TimmAdditive(in_dims=56, token_dim=56))
    ours = EfficientAdditiveAttention(56)
    ours.load_state_dict(ref.state_dict())
    source = ours.eval() if form == "reference" else ours.eval().reparameterize()
    mapped = E.MapAdditiveAttention(source).eval()
    x = torch.randn(2, 56, 7, 5)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(mapped(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().mean() > 0.1  # not a vacuous comparison


def test_export_friendly_fused_model_matches_timm(ours_xs, timm_xs):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    friendly = E.export_friendly(fuse_for_inference(ours_xs))
    assert sum(isinstance(m, E.MapSwiftFormerEncoder) for m in friendly.modules()) == 4
    with torch.no_grad():
        expected = timm_xs(x)
        torch.testing.assert_close(friendly(x), expected, rtol=1e-4, atol=1e-4)
    assert expected.std() > 0.1


@pytest.mark.parametrize("pixel_scale", [1 / 255, 1.0])
def test_image_classifier_folds_normalisation_exactly(timm_xs, pixel_scale):
    """Core ML feeds pixel_scale * p + bias; with the rest of the normalisation folded into the stem conv the
    result must equal timm's model on the usual (p/255 - mean) / std input."""
    pixels, normed = E.sample_images(224, names=("chelsea", "coffee"))
    wrapped = E.ImageClassifier(timm_xs, pixel_scale=pixel_scale)
    assert wrapped.folded
    bias = torch.tensor(wrapped.coreml_bias()).view(1, 3, 1, 1)
    torch.testing.assert_close(bias.flatten(), -255 * pixel_scale * torch.tensor(IMAGENET_DEFAULT_MEAN))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(pixel_scale * pixels.float() + bias), timm_xs(normed).softmax(-1),
                                   rtol=1e-4, atol=1e-6)


def test_sample_images_are_center_crops():
    pixels, normed = E.sample_images(64, names=("chelsea",))
    assert pixels.shape == (1, 3, 64, 64) and pixels.dtype == torch.uint8
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(normed * std + mean, pixels.float() / 255)


# --------------------------------------------------------------------------- Core ML: whole model
@pytest.mark.slow
def test_coreml_xs_interface(xs_pair):
    ours, _ = xs_pair
    assert ours.inputs == [{"name": "image", "type": "imageType", "width": 224, "height": 224, "color_space": "RGB"}]
    assert [o["name"] for o in ours.outputs] == ["classLabel", "classLabel_probs"]
    assert [o["type"] for o in ours.outputs] == ["stringType", "dictionaryType"]


@pytest.mark.slow
def test_coreml_xs_image_scale_and_bias(xs_pair):
    """swiftlib's package takes pixels as they are: Core ML only subtracts 255 * mean (timm's ImageNet mean),
    no multiply by 1/255 (the first conv holds 1 / (255 std)); timm's package, converted with coremltools'
    defaults, computes p / 255 - mean."""
    ours, theirs = xs_pair
    assert "scale" not in ours.image_preprocessing
    np.testing.assert_allclose(ours.image_preprocessing["bias"], [-255 * m for m in IMAGENET_DEFAULT_MEAN], rtol=1e-6)
    np.testing.assert_allclose(theirs.image_preprocessing["scale"], [1 / 255], rtol=1e-6)
    np.testing.assert_allclose(theirs.image_preprocessing["bias"], [-m for m in IMAGENET_DEFAULT_MEAN], rtol=1e-6)


@pytest.mark.slow
def test_coreml_xs_labels_are_timm_imagenet_names(xs_pair):
    labels = xs_pair[0].class_labels
    info = ImageNetInfo()
    assert len(labels) == 1000 == len(set(labels))
    assert labels[0] == "tench" and labels[1] == "goldfish"
    for i, lab in enumerate(labels):
        short = info.index_to_description(i).split(",")[0]
        assert lab == short or lab == f"{short} ({info.index_to_label_name(i)})"
    assert "crane (n02012849)" in labels and "crane (n03126707)" in labels


@pytest.mark.slow
def test_coreml_xs_metadata(xs_pair):
    meta = xs_pair[0].metadata
    assert meta["swiftlib.model"] == "swiftformer_xs"
    assert meta["swiftlib.attention"] == "additive"
    assert meta["swiftlib.resolution"] == "224"
    assert meta["swiftlib.version"] == swiftlib.__version__
    assert meta["swiftlib.source_checkpoint"].startswith("random initialisation")
    assert meta["swiftlib.precision"] == "fp16"


@pytest.mark.slow
def test_coreml_xs_weights_are_fp16(xs_pair):
    inv = xs_pair[0]
    assert inv.weight_precision == "fp16"
    floats = inv.weight_elements.get("fp16", 0) + inv.weight_elements.get("fp32", 0)
    assert inv.weight_elements["fp16"] / floats > 0.999
    # fused XS without the distillation head: ~3.23 M weights (paper: 3.25 M with BatchNorms, 3.5 M with dist head)
    assert 3.1e6 < inv.weight_elements["fp16"] < 3.3e6
    assert not [x for x in inv.lint if x["op"] == "fp32 compute"]


@pytest.mark.slow
def test_coreml_xs_inventory_vs_timm(xs_pair, xs_bare):
    ours, theirs = xs_pair
    timm_attn = sum(isinstance(m, TimmAdditive) for m in timm.create_model("swiftformer_xs").modules())
    assert theirs.counts.get("tile") == 3 * timm_attn       # one per F.normalize (query, key, scores)
    assert "tile" in [x["op"] for x in theirs.lint]
    assert ours.counts.get("tile", 0) == 0
    assert ours.counts.get("reshape", 0) == 0 and ours.counts.get("transpose", 0) == 0
    # the scores of each attention are normalised over the map by one l2_norm; query and key over channels
    assert ours.counts.get("l2_norm") == timm_attn and ours.counts["reduce_l2_norm"] == 2 * timm_attn
    assert ours.non_const <= 0.8 * theirs.non_const           # the goal, against both timm counts
    assert ours.non_const <= 0.8 * xs_bare.non_const
    # timm bare lacks exactly the classifier interface: image mul + add, softmax, classify, two casts
    assert theirs.non_const - xs_bare.non_const == sum(theirs.counts.get(t, 0) - xs_bare.counts.get(t, 0)
                                                       for t in ("mul", "add", "softmax", "classify", "cast")) == 6
    assert not [x for x in ours.lint if x["severity"] in ("off_ne", "slow_on_ne")]
    rows = E.compare_inventories({"swiftlib": ours, "timm": theirs})
    total = next(r for r in rows if r["op"] == "non-const total")
    assert total == {"op": "non-const total", "swiftlib": ours.non_const, "timm": theirs.non_const}
    assert sum(r["timm"] for r in rows if r["op"] not in ("non-const total", "const")) == theirs.non_const
    assert "tile" in E.format_inventory_table(rows)


@pytest.mark.slow
def test_compare_cli_prints_and_records_the_expectations(xs_compare, xs_pair, xs_bare):
    """`compare --expect` judges each bound on figures that match the inventories read back from disk."""
    printed, _, results = xs_compare
    ours, theirs = xs_pair
    ratio, tile = ours.non_const / theirs.non_const, ours.counts.get("tile", 0)
    verdicts = [ratio <= 0.8, tile == 0, ratio >= 1]
    assert verdicts == [True, True, False]  # one bound that must fail, so "NOT met" is exercised
    record = json.loads((results / "export_inventory_swiftformer_xs.json").read_text())
    assert [(e["name"], e["op"], e["value"], e["met"]) for e in record["expectations"]] == [
        ("ratio_non_const", "<=", 0.8, True), ("tile", "<=", 0.0, True), ("ratio_non_const", ">=", 1.0, False)]
    assert record["ratio_non_const"] == pytest.approx(ratio, abs=1e-4) and record["tile"] == tile
    assert record["ratio_non_const_bare"] == pytest.approx(ours.non_const / xs_bare.non_const, abs=1e-4)
    assert record["timm_bare"]["non_const"] == xs_bare.non_const and record["ops_slow_on_ne"] == 0
    assert set(record["conversions"]) == {"swiftlib", "timm", "timm_bare"}
    lines = [ln for ln in printed.splitlines() if ln.startswith("expect ")]
    assert [ln.endswith(" met") and not ln.endswith("NOT met") for ln in lines] == verdicts
    assert lines[2].endswith("NOT met") and "ratio_non_const >= 1" in lines[2]
    with open(results / "export_inventory_swiftformer_xs.csv") as f:
        rows = list(csv.DictReader(f))
    total = next(r for r in rows if r["op"] == "non-const total")
    assert (int(total["swiftlib"]), int(total["timm"]), int(total["timm_bare"])) == (
        ours.non_const, theirs.non_const, xs_bare.non_const)


def test_coreml_tensor_input_and_custom_labels(tmp_path):
    model = SwiftFormer(widths=(16, 16, 24, 32), depths=(1, 1, 1, 1), num_classes=3).eval()  # small: quick to convert
    with pytest.raises(ValueError, match="pass class_labels"):
        E.to_coreml(model, tmp_path / "x.mlpackage", img_size=64)
    with pytest.raises(ValueError, match="3 unique names"):
        E.to_coreml(model, tmp_path / "x.mlpackage", img_size=64, class_labels=["a", "a", "b"])
    inv = E.op_inventory(E.to_coreml(model, tmp_path / "x.mlpackage", img_size=64, image_input=False,
                                     class_labels=["cat", "dog", "bird"], precision="fp32"))
    assert inv.class_labels == ["cat", "dog", "bird"]
    assert inv.inputs[0]["type"] == "multiArrayType" and inv.inputs[0]["shape"] == [1, 3, 64, 64]
    assert inv.weight_precision == "fp32"
    assert [x["op"] for x in inv.lint if x["severity"] == "off_ne"] == ["fp32 compute"]



@pytest.mark.slow
def test_coreml_cli_with_labels_file_and_tensor_input(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\nbird\n")
    out = tmp_path / "xs.mlpackage"
    assert E.main(["coreml", "--model", "XS", "--out", str(out), "--img-size", "64", "--num-classes", "3",
                   "--labels", str(labels), "--tensor-input", "--precision", "fp32"]) == 0
    inv = E.op_inventory(out)
    assert inv.class_labels == ["cat", "dog", "bird"]
    assert inv.inputs[0]["type"] == "multiArrayType" and inv.inputs[0]["shape"] == [1, 3, 64, 64]
    assert inv.metadata["swiftlib.model"] == "swiftformer_xs" and inv.metadata["swiftlib.num_classes"] == "3"
    assert inv.weight_precision == "fp32"

# --------------------------------------------------------------------------- Core ML: single blocks
@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_coreml_attention_block(tmp_path, variant):
    inv = E.op_inventory(E.to_coreml_block(tmp_path / f"{variant}.mlpackage", variant, n=49, d=56))
    assert inv.inputs == [{"name": "x", "type": "multiArrayType", "shape": [1, 49, 56], "dtype": "FLOAT16"}]
    assert [(o["name"], o["dtype"]) for o in inv.outputs] == [("y", "FLOAT16")]
    assert inv.counts.get("cast", 0) == 0
    assert inv.metadata["swiftlib.attention"] == variant and inv.metadata["swiftlib.kind"] == "attention"
    assert int(inv.metadata["swiftlib.attention_macs"]) == attention_macs(variant, 49, 56)
    assert inv.weight_precision == "fp16"
    assert inv.counts.get("tile", 0) == 0
    matmuls = inv.counts.get("linear", 0) + inv.counts.get("matmul", 0)
    assert matmuls >= 2  # at least the input and output projections survive conversion


@pytest.mark.parametrize("variant,layout_ops", [("additive", 0), ("self", 1)])
def test_coreml_encoder_block_layout(tmp_path, variant, layout_ops):
    """The additive encoder runs on the map (no reshape/transpose); a token mixer needs layout changes."""
    inv = E.op_inventory(E.to_coreml_block(tmp_path / "enc.mlpackage", variant, kind="encoder", d=56, hw=(7, 7)))
    assert inv.inputs[0]["shape"] == [1, 56, 7, 7]
    n_layout = inv.counts.get("reshape", 0) + inv.counts.get("transpose", 0)
    assert (n_layout == 0) if layout_ops == 0 else (n_layout >= 2)


def test_stage_shapes_match_timm_feature_info():
    m = timm.create_model("swiftformer_s", pretrained=False)
    rows = E.stage_shapes("swiftformer_s", 224)
    assert [r["d"] for r in rows] == [f["num_chs"] for f in m.feature_info]
    assert [224 // r["h"] for r in rows] == [f["reduction"] for f in m.feature_info]
    assert [r["n"] for r in rows] == [3136, 784, 196, 49]


@pytest.mark.parametrize("img_size", [224, 256, 64])
def test_stage_shapes_wrap_the_analytic_shapes(img_size):
    """export's short-key rows are swiftlib.models.stage_shapes' rows; side = img_size / stride at every stage."""
    for name in ("swiftformer_xs", "swiftformer_l3"):
        rows = E.stage_shapes(name, img_size)
        assert rows == [{"stage": r["stage"], "h": r["height"], "w": r["width"], "n": r["tokens"], "d": r["channels"]}
                        for r in model_stage_shapes(name, img_size)]
        assert [(r["h"], r["w"], r["n"]) for r in rows] == [
            (img_size // 2 ** (i + 2), img_size // 2 ** (i + 2), (img_size // 2 ** (i + 2)) ** 2) for i in range(4)]


@pytest.mark.parametrize("spelling", ["xs", "XS", "swiftformer_xs", "SwiftFormer-XS", "swiftformer-xs"])
def test_export_takes_every_spelling_create_model_takes(spelling):
    assert E.stage_shapes(spelling) == E.stage_shapes("swiftformer_xs")
    model, info = E.resolve_model(spelling)
    assert info["model"] == "swiftformer_xs" and info["fused"]
    assert sum(isinstance(m, E.MapSwiftFormerEncoder) for m in model.modules()) == 4


def test_unknown_name_gives_the_same_error_in_export(tmp_path):
    with pytest.raises(ValueError) as first:
        resolve_name("swiftformer_q")
    calls = [lambda: create_model("swiftformer_q"), lambda: swiftformer_macs("swiftformer_q"),
             lambda: E.resolve_model("swiftformer_q"), lambda: E.stage_shapes("swiftformer_q"),
             lambda: E.to_onnx("swiftformer_q", tmp_path / "q.onnx"),
             lambda: E.inventory_vs_timm("swiftformer_q"), lambda: E.onnx_latency(["swiftformer_q"]),
             lambda: E.export_sweep(tmp_path, "swiftformer_q")]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == str(first.value)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- copies
def _tensors(model):
    return list(model.parameters()) + list(model.buffers())


def _storages(model):
    return {t.untyped_storage().data_ptr() for t in _tensors(model) if t.numel()}


@pytest.fixture
def module_copies(monkeypatch):
    """The modules deep-copied as a whole (not their submodules) while the test runs, in order.

    ``copy.deepcopy`` rebuilds every nn.Module it copies through ``nn.Module.__setstate__``, children
    first; a copy whose tree holds earlier copies replaces them in the list (they are parts of it).
    Whoever calls deepcopy, and however it was imported, is seen."""
    real, copies = nn.Module.__setstate__, []

    def recording(self, state):
        real(self, state)
        parts = {id(m) for m in self.modules() if m is not self}
        copies[:] = [m for m in copies if id(m) not in parts] + [self]

    monkeypatch.setattr(nn.Module, "__setstate__", recording)
    return copies


def _names(modules):
    return [type(m).__name__ for m in modules]


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, snapshot):
    sd = model.state_dict()
    return sd.keys() == snapshot.keys() and all(torch.equal(sd[k], v) for k, v in snapshot.items())


def test_resolve_model_copies_a_given_model_once_and_a_named_one_never(ours_xs, module_copies):
    before, storages = _snapshot(ours_xs), _storages(ours_xs)
    friendly, _ = E.resolve_model(ours_xs)
    assert _names(module_copies) == ["SwiftFormer"]             # fuse_for_inference's copy, nothing more
    assert not _storages(friendly) & storages                  # nothing shared with the caller's model
    assert _unchanged(ours_xs, before) and not ours_xs.training and not getattr(ours_xs, "fused", False)
    assert not any(isinstance(m, E.MapSwiftFormerEncoder) for m in ours_xs.modules())
    module_copies.clear()
    E.resolve_model("swiftformer_xs")                           # built here: fused and converted in place
    assert _names(module_copies) == []
    module_copies.clear()
    fused = fuse_for_inference(ours_xs)                        # an already fused model is copied once too
    module_copies.clear()
    again, _ = E.resolve_model(fused)
    assert _names(module_copies) == ["SwiftFormer"] and not _storages(again) & _storages(fused)


def test_export_friendly_copies_once_or_works_in_place(ours_xs, module_copies):
    fused = fuse_for_inference(ours_xs)
    module_copies.clear()
    before, storages = _snapshot(fused), _storages(fused)
    copied = E.export_friendly(fused)
    assert _names(module_copies) == ["SwiftFormer"]
    assert _unchanged(fused, before) and not any(isinstance(m, E.MapSwiftFormerEncoder) for m in fused.modules())
    assert not _storages(copied) & storages
    module_copies.clear()
    in_place = E.export_friendly(fused, inplace=True)
    assert _names(module_copies) == [] and in_place is fused
    assert sum(isinstance(m, E.MapSwiftFormerEncoder) for m in fused.modules()) == 4
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(in_place(x), copied(x))
    encoder = fuse_for_inference(create_model("swiftformer_xs").eval()).stages[0].blocks[-1]
    module_copies.clear()
    wrapped = E.export_friendly(encoder, inplace=True)
    assert _names(module_copies) == [] and wrapped.linear is encoder.linear


def test_to_coreml_copies_only_what_it_must_change(tmp_path, module_copies):
    """A given SwiftFormer is copied once (fusing); the Core ML wrapper folds 1/std into that copy. Any
    other module is copied once, by the wrapper, so that the fold never reaches the caller's weights."""
    torch.manual_seed(0)
    ours = randomize_(SwiftFormer(widths=(16, 16, 24, 32), depths=(1, 1, 1, 1), num_classes=3))
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    for model in (ours, other):
        before = _snapshot(model)
        module_copies.clear()
        E.to_coreml(model, tmp_path / "m.mlpackage", img_size=64, class_labels=["a", "b", "c"])
        assert _names(module_copies) == [type(model).__name__]
        assert _unchanged(model, before) and not model.training


def test_exports_leave_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    """coremltools keeps a temporary copy of every ML program it converts and deletes it only at interpreter
    exit (never reached by a Jupyter kernel that is shut down): the exports delete it once saved."""
    temp = tmp_path / "system_temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where coremltools' mkdtemp writes
    other = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    E.to_coreml(other, tmp_path / "classifier.mlpackage", img_size=32, class_labels=["a", "b", "c"])
    E.to_coreml_module(nn.Conv2d(3, 4, 1).eval(), torch.randn(1, 3, 8, 8), tmp_path / "module.mlpackage")
    E.to_coreml_block(tmp_path / "block.mlpackage", "additive", n=49, d=32)
    assert sorted(p.name for p in temp.iterdir()) == []
    for name in ("classifier", "module", "block"):
        assert E.op_inventory(tmp_path / f"{name}.mlpackage").non_const > 0  # the saved packages are whole


def test_sweep_writes_manifest_and_resumes(tmp_path):
    man = E.export_sweep(tmp_path, variants=["additive", "separable"], stages=[4], progress=False)
    with open(man) as f:
        rows = list(csv.DictReader(f))
    assert [(r["attention"], r["n"], r["d"]) for r in rows] == [("additive", "49", "220"), ("separable", "49", "220")]
    assert all((tmp_path / r["file"]).is_dir() for r in rows)
    assert rows[0]["attention_macs"] == str(attention_macs("additive", 49, 220))
    stamp = (tmp_path / rows[0]["file"]).stat().st_mtime_ns
    E.export_sweep(tmp_path, variants=["additive", "separable"], stages=[4], progress=False)  # resume: nothing redone
    assert (tmp_path / rows[0]["file"]).stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- Core ML runtime
@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS Core ML can run")
def test_coreml_prediction_is_skipped_with_a_reason_off_macos(tmp_path):
    """Core ML's own runtime parts say they need macOS; the numerical check runs anyway (tests/test_mil.py)."""
    ok, why = E.coreml_runtime()
    assert not ok and "macOS" in why
    res = E.check_coreml(tmp_path / "missing.mlpackage", "swiftformer_xs")
    assert res["status"] == "skipped" and "macOS" in res["reason"]
    assert E.time_coreml(tmp_path / "missing.mlpackage")["status"] == "skipped"
    assert E.compute_plan(tmp_path / "missing.mlpackage")["status"] == "skipped"


# --------------------------------------------------------------------------- phone timings and the paper
def test_device_timings_template_and_example():
    assert E.load_device_timings(swiftlib.DATA_DIR / "device_timings_template.csv") == []
    with open(swiftlib.DATA_DIR / "device_timings_template.csv") as f:
        assert next(csv.reader(f)) == E.DEVICE_TIMING_COLUMNS
    rows = E.load_device_timings(swiftlib.DATA_DIR / "device_timings_example.csv")
    assert rows and all(isinstance(r["median_ms"], float) and r["median_ms"] > 0 for r in rows)
    assert all("example" in (r["notes"] or "").lower() for r in rows)


def test_paper_latency_is_table2():
    lat = E.paper_latency()
    assert lat["swiftformer_xs"] == lat["SwiftFormer-XS"] == 0.7
    assert (lat["swiftformer_s"], lat["swiftformer_l1"], lat["swiftformer_l3"]) == (0.8, 1.1, 1.9)
    assert lat["MobileViT-XS"] == 1.5


def test_labels_unique_against_timm():
    labels = E.imagenet_class_labels()
    info = ImageNetInfo()
    assert len(labels) == info.num_classes() == len(set(labels))
    assert np.mean([lab == info.index_to_description(i).split(",")[0] for i, lab in enumerate(labels)]) > 0.99


# --------------------------------------------------------------------------- plots (headless)
def _inv(counts):
    return E.OpInventory(path="x", counts=counts, total=sum(counts.values()),
                         non_const=sum(v for k, v in counts.items() if k != "const"),
                         weight_elements={}, compute_ops={}, lint=[])


def test_plot_op_inventory_bars_follow_the_counts():
    rows = E.compare_inventories({"a": _inv({"const": 9, "conv": 5, "tile": 2}), "b": _inv({"const": 1, "conv": 3})})
    assert [r["op"] for r in rows] == ["conv", "tile", "non-const total", "const"]
    fig = plot_op_inventory(rows, flagged=["tile"])
    ax = fig.axes[0]
    assert sorted(p.get_width() for p in ax.patches) == [0, 2, 3, 5]
    colours = {t.get_text(): t.get_color() for t in ax.get_yticklabels()}
    assert colours["tile"] == "tab:red" and colours["conv"] != "tab:red"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (7 ops)", "b (3 ops)"]
    plt.close(fig)


def test_plot_device_vs_paper_points():
    rows = E.load_device_timings(swiftlib.DATA_DIR / "device_timings_example.csv")
    fig = plot_device_vs_paper(rows, E.paper_latency())
    pts = fig.axes[0].collections[0].get_offsets()
    expected = [(E.paper_latency()[r["model"]], r["median_ms"]) for r in rows
                if r["compute_units"] == "CPU_AND_NE" and r["model"] in E.paper_latency()]
    assert len(expected) == 4
    np.testing.assert_allclose(np.asarray(pts), expected)
    plt.close(fig)
    fig = plot_device_vs_paper([], E.paper_latency())  # nothing measured yet: an empty chart, no error
    plt.close(fig)
