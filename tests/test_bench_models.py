"""The models benchmark's helpers (swiftlib.bench, section "models"): the GMAC count against fvcore's
own default count, the one ONNX Runtime session builder (shared with swiftlib.export), model names."""
import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torch import nn

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
    assert bench._fvcore_gmacs(model, 64) == _fvcore_default(model, 64) > 0


def test_gmacs_leave_out_what_fvcore_skips_and_keep_the_mode():
    model = _Products().train()
    got = bench._fvcore_gmacs(model, 32)
    assert model.training                                    # counted in eval mode, mode given back
    assert got == _fvcore_default(model, 32) > 0


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], output_names=["y"],
                      opset_version=17, dynamo=False)
    return model, path


def test_ort_session_does_not_spin_and_sets_threads(tiny_onnx):
    import onnxruntime as ort

    _, path = tiny_onnx
    opts = bench.ort_session(path, threads=1).get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert bench.ort_session(path).get_session_options().intra_op_num_threads == 0   # ONNX Runtime's default
    with pytest.raises(ValueError, match="threads must be >= 1"):
        bench.ort_session(path, threads=0)


def test_export_runs_onnx_through_the_bench_session_builder(tiny_onnx, monkeypatch):
    model, path = tiny_onnx
    calls = []
    real = E.ort_session

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(E, "ort_session", spy)
    res = E.check_onnx(path, model, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    assert calls == [(path,)] and res["max_abs_diff"] < 1e-5
    assert not hasattr(E, "_ort_session")


def test_models_benchmark_reads_names_like_create_model():
    with pytest.raises(ValueError) as err:
        bench.models_benchmark("swiftformer_q", progress=False)
    with pytest.raises(ValueError) as expected:
        resolve_name("swiftformer_q")
    assert str(err.value) == str(expected.value)
