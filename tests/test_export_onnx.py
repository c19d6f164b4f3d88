"""ONNX export (:func:`swiftlib.export.to_onnx`, the file ``python -m swiftlib.export onnx`` writes) against
torch and timm, timm's own export as the peer, ONNX Runtime's optimised graph, and the latency table.

The XS file is exported once per module (fixture ``xs_onnx``); ``ours_xs`` / ``timm_xs`` come from conftest.py.
"""
import contextlib
import io
import statistics
from collections import Counter

import onnx
import onnxruntime as ort
import pytest
import torch
from timm.utils.onnx import onnx_export as timm_onnx_export
from torch import nn

import swiftlib.export as E


# --------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def xs_onnx(tmp_path_factory, ours_xs):
    """The file ``to_onnx`` writes for swiftlib's XS (timm's randomised weights): what `export onnx` writes."""
    return E.to_onnx(ours_xs, tmp_path_factory.mktemp("onnx") / "xs.onnx")


def _ort_optimised_ops(path, tmp_path) -> Counter:
    """Op types of the graph ONNX Runtime runs for ``path`` (its portable, 'extended' optimisations)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / f"{path.stem}.ort.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


@pytest.mark.slow
def test_onnx_xs_matches_torch_and_timm(xs_onnx, ours_xs, timm_xs):
    friendly, _ = E.resolve_model(ours_xs)
    torch.manual_seed(0)
    random_images = torch.randn(2, 3, 224, 224)
    _, photos = E.sample_images(224, names=("chelsea", "astronaut"))
    for images in (random_images, photos):
        res = E.check_onnx(xs_onnx, ours_xs, images)
        assert res["max_abs_diff"] < 1e-4 and res["top1_agreement"] == 1.0
        assert res["max_abs_logit"] > 1.0
        # and against the independent implementation
        assert E.check_onnx(xs_onnx, timm_xs, images)["max_abs_diff"] < 1e-4
    assert E.check_onnx(xs_onnx, friendly, photos)["max_abs_diff"] < 1e-4
    batch32 = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    assert E.check_onnx(xs_onnx, timm_xs, batch32)["max_abs_diff"] < 1e-4   # one call of 32: the dynamic axis


@pytest.mark.slow
def test_onnx_file_runs_fused_gelus_where_the_dynamo_opset_18_file_does_not(xs_onnx, ours_xs, tmp_path):
    """Why the written file is fast: ONNX Runtime fuses each GELU of it into one Gelu kernel. The dynamo
    exporter at opset 18 (torch.onnx.export's default) writes GELU in an order ONNX Runtime does not fuse."""
    ours = _ort_optimised_ops(xs_onnx, tmp_path)
    gelus = sum(isinstance(m, nn.GELU) for m in ours_xs.modules())
    assert gelus == 20 and ours["Gelu"] == gelus and ours["Erf"] == 0
    dynamo = E.to_onnx(ours_xs, tmp_path / "dynamo18.onnx", exporter="dynamo", opset=18)
    theirs = _ort_optimised_ops(dynamo, tmp_path)
    assert theirs["Erf"] == gelus and theirs["Gelu"] == 0
    assert E.check_onnx(dynamo, ours_xs, torch.randn(1, 3, 224, 224))["max_abs_diff"] < 1e-4  # correct, only slower


@pytest.mark.slow
def test_onnx_peer_is_timms_own_export(tmp_path, timm_xs):
    """to_onnx_peer writes what timm.utils.onnx.onnx_export writes (TorchScript, opset 17, dynamic batch)."""
    path = E.to_onnx_peer(timm_xs, tmp_path / "peer.onnx")
    proto = onnx.load(str(path))
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert proto.graph.input[0].name == "image" and proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    reference = tmp_path / "timm_helper.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        timm_onnx_export(timm_xs, str(reference), example_input=torch.zeros(1, 3, 224, 224), opset=17,
                         input_names=["image"], output_names=["logits"])
    assert Counter(n.op_type for n in proto.graph.node) == Counter(n.op_type for n in onnx.load(str(reference)).graph.node)
    _, photos = E.sample_images(224, names=("chelsea", "coffee"))
    assert E.check_onnx(path, timm_xs, photos)["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_onnx_latency_times_both_files_round_by_round(tmp_path):
    res = E.onnx_latency(["xs"], img_size=64, rounds=2, min_run_time=0.1, batch_sizes=(1, 2), out_dir=tmp_path)
    assert [(r["model"], r["batch"]) for r in res["rows"]] == [("swiftformer_xs", 1), ("swiftformer_xs", 2)]
    for r in res["rows"]:
        assert len(r["round_ratios"]) == 2 and r["ratio"] == pytest.approx(statistics.median(r["round_ratios"]), rel=1e-3)
        assert r["max_rel_diff_swiftlib"] < 1e-4 and r["max_rel_diff_timm"] < 1e-4
    assert "to_onnx_peer" in res["files"]["timm"] and "to_onnx" in res["files"]["swiftlib"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swiftformer_xs_swiftlib.onnx", "swiftformer_xs_timm.onnx"]


def test_to_onnx_exports_any_module_and_check_onnx_runs_the_checker(tmp_path):
    """A non-SwiftFormer module (as the model benchmark passes timm's) is exported as given; the file
    passes onnx.checker, has the documented interface (a dynamic batch axis unless a batch size is fixed),
    and ONNX Runtime agrees with torch at any batch size."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5)).eval()
    path = E.to_onnx(model, tmp_path / "tiny.onnx", img_size=32)
    proto = onnx.load(str(path))
    graph = proto.graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == E.ONNX_OPSET == 17
    for n in (3, 1, 5):
        res = E.check_onnx(path, model, torch.randn(n, 3, 32, 32))
        assert res["onnx_checker"] == "passed" and res["images"] == res["batch"] == n
        assert res["max_abs_diff"] < 1e-5 and res["top1_agreement"] == 1.0
    fixed = E.to_onnx(model, tmp_path / "tiny4.onnx", img_size=32, batch_size=4)
    assert [d.dim_value for d in onnx.load(str(fixed)).graph.input[0].type.tensor_type.shape.dim] == [4, 3, 32, 32]
    res = E.check_onnx(fixed, model, torch.randn(8, 3, 32, 32))
    assert res["batch"] == 4 and res["max_abs_diff"] < 1e-5
    with pytest.raises(ValueError, match="takes batches of 4"):
        E.check_onnx(fixed, model, torch.randn(3, 3, 32, 32))
