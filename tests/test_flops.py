"""swiftlib.flops: the analytic MAC formulas = fvcore = torch.utils.flop_counter / 2, the elementwise
handlers against hand counts, and the per-module table."""
import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from helpers import ExplicitPath, Fn
from torch import nn

import swiftlib.attention as A
from swiftlib.flops import count_macs, format_table, module_table, torch_flops

VARIANT_NAMES = ["self", "transposed", "separable", "additive"]
# (batch, tokens, dim, heads): SwiftFormer's stage-1 width, a prime token count, several heads, N = 1.
SHAPES = [(1, 49, 48, 1), (2, 196, 64, 4), (1, 37, 96, 2), (1, 1, 16, 1), (3, 64, 32, 8)]


def _heads(name, heads):
    return A.variant_heads(name, heads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- three counters agree
@pytest.mark.parametrize("name", VARIANT_NAMES + ["additive_inference"])
@pytest.mark.parametrize("b,n,d,h", SHAPES)
def test_analytic_equals_fvcore_equals_torch_counter(name, b, n, d, h):
    """The three counts agree for the four mixers and for the additive attention's inference module
    (which has the reference's analytic MACs)."""
    variant = name.removesuffix("_inference")
    h = _heads(variant, h)
    m = A.build_attention(variant, d, num_heads=h).eval()
    if name == "additive_inference":
        m = m.reparameterize()
    x = torch.randn(b, n, d)
    expected = b * A.attention_macs(variant, n, d, h)
    ours = count_macs(m, x)
    flops = torch_flops(m, x)
    assert ours["matmul"] == expected
    assert flops["flops"] == 2 * expected  # torch counts 2 FLOPs per multiply-add
    assert flops["macs"] == expected
    assert ours["total"] == ours["matmul"] + ours["elementwise"]
    assert ours["elementwise"] > 0  # every variant has normalisation / softmax / bias work


@pytest.mark.parametrize("b,n,d,h", SHAPES)
def test_self_attention_sdpa_and_explicit_paths_count_the_same(b, n, d, h):
    """The default path calls F.scaled_dot_product_attention (fvcore counts it as zero without
    swiftlib's handler; torch's counter knows only the CUDA kernels without the CPU mapping)."""
    m = A.SelfAttention(d, num_heads=h).eval()
    x = torch.randn(b, n, d)
    default, explicit = count_macs(m, x), count_macs(ExplicitPath(m), x)
    assert "scaled_dot_product_attention" in default["by_op"]
    assert default["matmul"] == explicit["matmul"] == b * A.SelfAttention.macs(n, d, h)
    assert torch_flops(m, x)["flops"] == torch_flops(ExplicitPath(m), x)["flops"] == 2 * default["matmul"]


def test_fvcore_without_handlers_misses_sdpa():
    """Why the SDPA handler exists: plain fvcore reports only the projections of the default path."""
    m = A.SelfAttention(32).eval()
    x = torch.randn(1, 64, 32)
    plain = FlopCountAnalysis(m, (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
    assert plain == 4 * 64 * 32 * 32  # qkv + proj only
    assert count_macs(m, x)["matmul"] - plain == 2 * 64 * 64 * 32  # Q K^T and A V


# --------------------------------------------------------------------------- elementwise handlers, by hand
@pytest.mark.parametrize("fn,args,matmul,elementwise", [
    (lambda x: x * 2 + x, (torch.randn(2, 3),), 0, 6 + 6),                       # mul 6, add 6
    (lambda x: x / 3 - 1, (torch.randn(3, 4),), 0, 12 + 12),                     # div, sub
    (lambda x: (x + 1).reciprocal_(), (torch.randn(2, 3),), 0, 6 + 6),            # add, in-place reciprocal
    (lambda x: x.softmax(-1), (torch.randn(4, 5),), 0, 3 * 20),                  # exp, sum, divide
    (lambda x: F.normalize(x, dim=-1), (torch.randn(3, 4),), 0, 2 * 12 + 3 + 12),  # norm, clamp_min, div
    (F.gelu, (torch.randn(5),), 0, 5),
    (F.relu, (torch.randn(2, 5),), 0, 10),
    (lambda x: x.sum(-1), (torch.randn(3, 4),), 0, 12),                           # one add per input element
    (lambda x: x.mean(), (torch.randn(3, 4),), 0, 12),
    (lambda x: x.square().sum(-1).rsqrt(), (torch.randn(3, 4),), 0, 12 + 12 + 3),
    # SDPA, q [1, 2, 5, 4], k [1, 2, 7, 4], v [1, 2, 7, 3]: 70 scores; MACs 70 * (4 + 3); scale + softmax 4 / score
    (F.scaled_dot_product_attention, (torch.randn(1, 2, 5, 4), torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 3)),
     2 * 5 * 7 * (4 + 3), 4 * 2 * 5 * 7),
    (lambda x, w: x @ w, (torch.randn(2, 3, 4), torch.randn(4, 5)), 2 * 3 * 4 * 5, 0),
])
def test_elementwise_handlers_by_hand(fn, args, matmul, elementwise):
    c = count_macs(Fn(fn), *args)
    assert (c["matmul"], c["elementwise"]) == (matmul, elementwise)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_bias_add_is_elementwise(bias):
    c = count_macs(nn.Linear(4, 3, bias=bias), torch.randn(5, 2, 4))
    assert c["matmul"] == 5 * 2 * 4 * 3  # fvcore's number, weights only
    assert c["elementwise"] == (5 * 2 * 3 if bias else 0)


def test_count_macs_restores_training_mode_and_rejects_bad_input():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    count_macs(m, torch.randn(3, 4))
    assert m.training
    with pytest.raises(TypeError, match="nn.Module"):
        count_macs(lambda x: x, torch.randn(2))
    with pytest.raises(ValueError, match="example inputs"):
        count_macs(nn.Linear(2, 2))


# --------------------------------------------------------------------------- per-module table
def test_module_table_hierarchical_names_and_columns():
    block = nn.Sequential()
    block.add_module("fc1", nn.Linear(8, 16))
    block.add_module("act", nn.GELU())
    block.add_module("fc2", nn.Linear(16, 4))
    net = nn.Sequential()
    net.add_module("block", block)
    rows = {r["module"]: r for r in module_table(net, torch.randn(2, 8))}
    assert list(rows) == ["(total)", "block", "block.fc1", "block.act", "block.fc2"]
    assert rows["block.fc1"]["matmul"] == 2 * 8 * 16
    assert rows["block.fc2"]["matmul"] == 2 * 16 * 4
    assert rows["(total)"]["matmul"] == rows["block"]["matmul"] == 2 * 8 * 16 + 2 * 16 * 4
    assert rows["block.act"]["elementwise"] == 2 * 16
    assert rows["(total)"]["elementwise"] == 2 * 16 + 2 * 4 + 2 * 16  # two bias adds + GELU
    assert rows["block.fc1"]["params"] == 8 * 16 + 16
    for r in rows.values():
        assert r["torch_macs"] == r["matmul"]  # no norms here: torch's counter agrees row by row
    assert rows["block.fc1"]["share"] == pytest.approx(256 / 384)
    assert [r["module"] for r in module_table(net, torch.randn(2, 8), max_depth=1)] == ["(total)", "block"]
    text = format_table(list(rows.values()))
    assert "fc1" in text and "384" in text


def test_module_table_of_an_attention_adds_up():
    m = A.TransposedAttention(48, num_heads=4).eval()
    rows = {r["module"]: r for r in module_table(m, torch.randn(1, 196, 48))}
    assert set(rows) == {"(total)", "qkv", "proj"}
    assert rows["qkv"]["matmul"] == 3 * 196 * 48 * 48
    assert rows["proj"]["matmul"] == 196 * 48 * 48
    # the channel map Q^T K and its product with V run in the root module: 2 N D^2 / h
    assert rows["(total)"]["matmul"] - rows["qkv"]["matmul"] - rows["proj"]["matmul"] == 2 * 196 * 48 * 48 // 4
    assert rows["(total)"]["torch_macs"] == rows["(total)"]["matmul"]
