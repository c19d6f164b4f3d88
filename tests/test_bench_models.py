"""The model benchmark (swiftlib.bench.models): the GMAC count against fvcore's own default count,
trained-looking BatchNorm statistics, the ONNX Runtime contenders made by swiftlib.export, model names;
and the one ONNX Runtime session builder it shares with swiftlib.export."""
import sys

import onnxruntime as ort
import pytest
import timm
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torch import nn

import swiftlib.bench.models as bench_models
import swiftlib.export as E
from swiftlib import bench
from swiftlib.models import SwiftFormer, resolve_name


def _fvcore_default(model, img):
    """fvcore with its default handlers only: the paper's GMAC convention."""
    fca = FlopCountAnalysis(model.eval(), (torch.zeros(1, 3, img, img),))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return fca.total() / 1e9


class _Products(nn.Module):
    """conv, linear, SDPA, baddbmm, elementwise: products fvcore's defaults count and ones they skip."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 8)
        self.mix = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        t = self.fc(self.bn(self.conv(x)).flatten(2).transpose(1, 2))     # [B, N, 8]
        a = F.scaled_dot_product_attention(t[:, None], t[:, None], t[:, None])[:, 0]
        t = torch.baddbmm(a, t, self.mix.expand(t.shape[0], 8, 8))       # [B, N, 8]
        return (t.relu() * 2).mean(dim=1)


@pytest.mark.parametrize("attention", ["additive", "self", "transposed", "separable"])
def test_gmacs_are_fvcores_default_count(attention):
    torch.manual_seed(0)
    model = SwiftFormer(widths=(16, 16, 24, 32), depths=(1, 1, 1, 2), attention=attention, num_classes=10).eval()
    assert bench_models._fvcore_gmacs(model, 64) == _fvcore_default(model, 64) > 0


def test_gmacs_leave_out_what_fvcore_skips_and_keep_the_mode():
    model = _Products().train()
    got = bench_models._fvcore_gmacs(model, 32)
    assert model.training                                    # counted in eval mode, mode given back
    assert got == _fvcore_default(model, 32) > 0


def test_settle_batchnorm_gives_every_batchnorm_statistics_of_its_activations():
    """After the train-mode passes no BatchNorm is the identity any more (mean 0, variance 1), the
    model is back in eval mode, and the statistics move toward each layer's real activations: the
    stem's first BatchNorm sees a conv of unit-variance noise, whose per-channel variance is the
    squared norm of the channel's filter."""
    torch.manual_seed(0)
    model = timm.create_model("swiftformer_xs", pretrained=False)
    assert bench.settle_batchnorm(model, 64, passes=4, seed=0) is model and not model.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    assert all(m.running_mean.abs().max() > 0 for m in bns)
    conv, bn = model.stem[0], model.stem[1]
    filter_var = conv.weight.detach().pow(2).sum(dim=(1, 2, 3))       # Var(w . x) for x ~ N(0, 1), [C]
    expected = 0.9 ** 4 * 1 + (1 - 0.9 ** 4) * filter_var              # momentum 0.1, four passes
    torch.testing.assert_close(bn.running_var, expected, rtol=0.15, atol=1e-3)


def test_models_benchmark_reads_names_like_create_model():
    with pytest.raises(ValueError) as err:
        bench.models_benchmark("swiftformer_q", progress=False)
    with pytest.raises(ValueError) as expected:
        resolve_name("swiftformer_q")
    assert str(err.value) == str(expected.value)


@pytest.mark.slow
def test_models_benchmark_times_the_files_swiftlib_export_writes(monkeypatch, tmp_path):
    """The ONNX Runtime contenders are the files swiftlib.export writes: to_onnx's of swiftlib's model (what
    python -m swiftlib.export onnx writes) and to_onnx_peer's of timm's (the JSON says which), opened with
    swiftlib.export.ort_session, at every batch size (dynamic batch axis); their logits match timm's."""
    exported, opened = [], []
    real_to_onnx, real_peer, real_session = bench_models.to_onnx, bench_models.to_onnx_peer, bench_models.ort_session
    monkeypatch.setattr(bench_models, "to_onnx", lambda m, p, **kw: exported.append(type(m)) or real_to_onnx(m, p, **kw))
    monkeypatch.setattr(bench_models, "to_onnx_peer",
                        lambda m, p, **kw: exported.append(("peer", type(m))) or real_peer(m, p, **kw))
    monkeypatch.setattr(bench_models, "ort_session", lambda p, t=None: opened.append(p.name) or real_session(p, t))
    out = tmp_path / "models.json"
    payload = bench.main(["models", "--img", "64", "--batches", "1,2", "--peers", "", "--no-ablation", "--no-compile",
                          "--rounds", "1", "--min-run-time", "0.05", "--threads", "1", "--json", str(out),
                          "--expect", "swiftlib_fused_over_timm@1<=1e6"])
    assert exported == [SwiftFormer, ("peer", timm.models.swiftformer.SwiftFormer)]
    assert opened == ["swiftformer_xs_swiftlib.onnx", "swiftformer_xs_timm.onnx"]
    onnx_info = payload["onnx"]
    for key, file, exporter in (("swiftlib_fused_onnxruntime", "swiftformer_xs_swiftlib.onnx", "to_onnx"),
                                ("timm_onnxruntime", "swiftformer_xs_timm.onnx", "to_onnx_peer")):
        assert onnx_info[key]["file"] == file and onnx_info[key]["exporter"] == f"swiftlib.export.{exporter}"
        assert onnx_info[key]["opset"] >= 17 and onnx_info[key]["input_shape"] == ["batch", 3, 64, 64]
        for b in ("1", "2"):  # one file, any batch size
            assert key in payload["latency"][b] and payload["max_abs_diff_vs_timm"][b][key] < 1e-3
    assert onnx_info["onnxruntime"] == ort.__version__
    assert payload["ratios"]["1"]["swiftlib_fused_onnxruntime_over_timm_onnxruntime"] == round(
        payload["latency"]["1"]["swiftlib_fused_onnxruntime"]["median_ms"]
        / payload["latency"]["1"]["timm_onnxruntime"]["median_ms"], 4)
    assert max(payload["max_abs_diff_vs_timm"]["2"].values()) < 1e-3
    assert payload["errors"] == {} and "goal" not in payload
    assert [e["met"] for e in payload["expectations"]] == [True]


# --------------------------------------------------------------------------- the ONNX Runtime session (swiftlib.export)
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], output_names=["y"],
                      opset_version=17, dynamo=False)
    return model, path


def test_ort_session_does_not_spin_and_sets_threads(tiny_onnx):
    _, path = tiny_onnx
    opts = E.ort_session(path, threads=1).get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert E.ort_session(path).get_session_options().intra_op_num_threads == 0   # ONNX Runtime's default
    with pytest.raises(ValueError, match="threads must be >= 1"):
        E.ort_session(path, threads=0)


def test_bench_builds_no_onnx_session_of_its_own():
    """One ONNX Runtime session builder (swiftlib.export.ort_session), one exporter (swiftlib.export.to_onnx)."""
    assert bench_models.ort_session is E.ort_session and bench_models.to_onnx is E.to_onnx
    assert not hasattr(bench_models, "_onnx_session") and not hasattr(E, "_ort_session")


def test_export_checks_onnx_through_the_same_session_builder(tiny_onnx, monkeypatch):
    model, path = tiny_onnx
    calls = []
    real = E.ort_session

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sys.modules[E.check_onnx.__module__], "ort_session", spy)  # where check_onnx looks it up
    res = E.check_onnx(path, model, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert calls == [(path,)] and res["max_abs_diff"] < 1e-5
