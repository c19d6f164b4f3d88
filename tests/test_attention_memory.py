"""Memory of one attention forward (swiftlib.measure.peak_memory, op-level accounting on the CPU) against
the analytic formulas of swiftlib.attention: bounds, not the bytes of one implementation."""
import pytest
import torch
from helpers import ExplicitPath
from timm.models.swiftformer import EfficientAdditiveAttention as TimmAdditive

import swiftlib.attention as A
from swiftlib.measure import peak_memory

VARIANT_NAMES = ["self", "transposed", "separable", "additive"]
#: elements of each variant's first projection [B, N, ...] per token: a tensor every forward materialises
PROJECTION_WIDTH = {"self": lambda d: 3 * d, "transposed": lambda d: 3 * d, "separable": lambda d: 1 + 2 * d,
                    "additive": lambda d: 2 * d}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _created(fn, x) -> int:
    """Bytes of the tensors one call creates, its output excluded."""
    r = peak_memory(fn, x)
    return r["allocated_bytes"] - r["output_bytes"]


@pytest.mark.parametrize("name", VARIANT_NAMES)
@pytest.mark.parametrize("n,d,h", [(49, 48, 1), (196, 64, 2), (100, 32, 4), (16, 64, 1), (1, 16, 1)])
def test_one_forward_creates_at_most_the_formula(name, n, d, h):
    """Every tensor of one sample's forward is a term of attention_memory (both paths of self-attention);
    and at least the first projection is created (the accounting sees the forward at all)."""
    h = A.variant_heads(name, h)
    m = A.build_attention(name, d, num_heads=h).eval()
    x = torch.randn(1, n, d)
    formula = A.attention_memory(name, n, d, h)
    for path in (m, ExplicitPath(m)):
        created = _created(path, x)
        assert 4 * n * PROJECTION_WIDTH[name](d) <= created <= formula


@pytest.mark.parametrize("name", ["separable", "additive"])
@pytest.mark.parametrize("b,n,d", [(3, 49, 48), (2, 16, 64)])
def test_single_head_forward_on_a_batch_creates_at_most_the_formula(name, b, n, d):
    m = A.build_attention(name, d).eval()
    assert _created(m, torch.randn(b, n, d)) <= A.attention_memory(name, n, d, batch=b)


@pytest.mark.parametrize("n,d,h", [(196, 64, 2), (512, 16, 1), (1024, 32, 4)])
def test_self_attention_sdpa_path_never_materialises_the_score_maps(n, d, h):
    """Default path (fused SDPA kernel): at most what the formula counts besides the two h x N x N maps,
    and never as much as one map alive; the explicit path holds them."""
    m = A.SelfAttention(d, num_heads=h).eval()
    x = torch.randn(1, n, d)
    r = peak_memory(m, x)
    maps = 4 * h * n * n                                   # bytes of one [1, h, N, N] map
    assert r["allocated_bytes"] - r["output_bytes"] <= A.attention_memory("self", n, d, h) - 2 * maps
    assert r["peak_bytes"] < maps
    assert peak_memory(ExplicitPath(m), x)["peak_bytes"] >= 2 * maps  # scores and their softmax at once


@pytest.mark.parametrize("b,n,d", [(1, 784, 48), (1, 49, 48), (2, 196, 64), (1, 16, 64), (3, 9, 32)])
def test_inference_module_creates_less_than_timm_and_the_reference(b, n, d):
    """The same function with fewer and smaller tensors: [Q | K] normalised in place, Proj merged into final."""
    ours = A.EfficientAdditiveAttention(d).eval()
    fast = ours.reparameterize()
    peer = TimmAdditive(in_dims=d, token_dim=d).eval()
    x = torch.randn(b, n, d)
    x_map = x.transpose(1, 2).reshape(b, d, n, 1).contiguous()  # [B, N, D] -> [B, D, N, 1]
    mine = _created(fast, x)
    assert mine < _created(ours, x)
    assert mine < _created(peer, x_map)
