"""swiftlib.attention and swiftlib.attention_inference against independent references (torch's own
MHA, timm's XCA, LinearSelfAttention and EfficientAdditiveAttention), plus properties every attention has."""
import shutil

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from helpers import ExplicitPath
from timm.models.mobilevit import LinearSelfAttention
from timm.models.swiftformer import EfficientAdditiveAttention as TimmAdditive
from timm.models.xcit import XCA
from torch import nn

import swiftlib.attention as A
from swiftlib.attention_inference import EfficientAdditiveAttentionInference

# (batch, tokens, dim, heads): N=1, prime and non-square token counts (5 x 7 = 35 map), SwiftFormer widths,
# one sample with more tokens than channels.
SHAPES = [(2, 1, 8, 1), (3, 7, 48, 1), (2, 35, 56, 2), (1, 49, 64, 4), (2, 196, 48, 3), (1, 64, 32, 2)]
VARIANT_NAMES = ["self", "transposed", "separable", "additive"]
# the four mixers and the additive attention's inference module
FORMS = VARIANT_NAMES + ["additive_inference"]
# (batch, tokens) at D = 32: one sample and a batch, G on the weight (N >= D) and on the keys (N < D)
ADDITIVE_REGIMES = [(1, 35), (2, 35), (1, 9), (3, 9)]
needs_compiler = pytest.mark.skipif(shutil.which("c++") is None,
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def _heads(name, heads):
    return A.variant_heads(name, heads)


def _tokens(b, n, d, seed=0):
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


def _build(form, d, heads=1):
    """An eval-mode mixer of ``form`` (a variant, or "additive_inference": the additive one reparameterized)."""
    if form == "additive_inference":
        return A.EfficientAdditiveAttention(d).eval().reparameterize()
    return A.build_attention(form, d, num_heads=_heads(form, heads)).eval()


def _timm_pair(d, layout="timm"):
    """timm's module with random weights and ours loaded from its state dict (timm or official key names)."""
    ref = TimmAdditive(in_dims=d, token_dim=d).eval()
    state = ref.state_dict()
    if layout == "official":  # the official repo names the projection `Proj`
        state = {k.replace("proj.", "Proj."): v for k, v in state.items()}
    ours = A.EfficientAdditiveAttention(d).eval()
    ours.load_state_dict(state)
    return ref, ours


def _timm_on_tokens(ref, x):
    """timm's module works on maps: tokens [B, N, D] as a [B, D, N, 1] map and back."""
    b, n, d = x.shape
    return ref(x.transpose(1, 2).reshape(b, d, n, 1)).flatten(2).transpose(1, 2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_variants_registry():
    assert sorted(A.VARIANTS) == ["additive", "self", "separable", "transposed"]
    assert A.VARIANTS["additive"] is A.EfficientAdditiveAttention
    with pytest.raises(ValueError, match="unknown attention 'linformer'"):
        A.build_attention("linformer", 32)


def test_variant_facts():
    """Which variants split D into heads (the papers: multi-head self-attention and XCA; MobileViTv2's
    and SwiftFormer's attentions are single-head), and the last linear layer of each, where a layer
    scale after the mixer folds in."""
    assert {n for n, c in A.VARIANTS.items() if c.multi_head} == {"self", "transposed"}
    assert [A.variant_heads(n, 4) for n in ("self", "transposed", "separable", "additive")] == [4, 4, 1, 1]
    for name, cls in A.VARIANTS.items():
        m = A.build_attention(name, 48, num_heads=A.variant_heads(name, 4)).eval()
        layer = getattr(m, cls.output_layer)
        assert isinstance(layer, nn.Linear)
        with torch.no_grad():
            assert m(_tokens(1, 5, 48)).abs().max() > 0
            layer.weight.zero_(), layer.bias.zero_()
            assert torch.equal(m(_tokens(1, 5, 48)), torch.zeros(1, 5, 48)), name  # nothing comes after it
    with pytest.raises(ValueError, match="dim=50 is not divisible by num_heads=3"):
        A.attention_macs("self", 10, 50, 3)
    with pytest.raises(ValueError, match="dim=50 is not divisible by num_heads=3"):
        A.attention_memory("transposed", 10, 50, 3)


# --------------------------------------------------------------------------- reference equivalence
@pytest.mark.parametrize("b,n,d,h", SHAPES)
def test_self_attention_matches_torch_multihead_attention(b, n, d, h):
    ours = A.SelfAttention(d, num_heads=h).eval()
    ref = nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = _tokens(b, n, d)
    with torch.no_grad():
        expected, expected_attn = ref(x, x, x, need_weights=True, average_attn_weights=False)
        out, attn = ours(x, return_attn=True)
        torch.testing.assert_close(ours(x), expected)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(attn, expected_attn)


@pytest.mark.parametrize("b,n,d,h", SHAPES)
def test_transposed_attention_matches_timm_xca(b, n, d, h):
    ref = XCA(d, num_heads=h, qkv_bias=True).eval()
    with torch.no_grad():
        ref.temperature.uniform_(0.5, 2.0)  # a trained temperature, not the all-ones init
    ours = A.TransposedAttention(d, num_heads=h).eval()
    ours.load_state_dict(ref.state_dict())
    x = _tokens(b, n, d)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("b,n,d,h", SHAPES)
def test_separable_attention_matches_timm_mobilevitv2(b, n, d, h):
    ref = LinearSelfAttention(d).eval()  # 1x1 convs on unfolded maps [B, C, P, N]
    ours = A.SeparableAttention(d).eval()
    ours.load_state_dict({k: v.flatten(1) if v.dim() == 4 else v for k, v in ref.state_dict().items()})
    x = _tokens(b, n, d)
    with torch.no_grad():
        expected = ref(x.transpose(1, 2).unsqueeze(2)).squeeze(2).transpose(1, 2)  # P = 1 patch pixel
        torch.testing.assert_close(ours(x), expected)


@pytest.mark.parametrize("b,n,d,h", SHAPES)
@pytest.mark.parametrize("layout", ["timm", "official"])
@pytest.mark.parametrize("inference", [False, True], ids=["reference", "inference"])
def test_additive_attention_matches_timm_swiftformer(b, n, d, h, layout, inference):
    ref, ours = _timm_pair(d, layout)
    m = ours.reparameterize() if inference else ours
    x = _tokens(b, n, d)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _timm_on_tokens(ref, x))


@pytest.mark.parametrize("b,n", ADDITIVE_REGIMES)
def test_additive_attention_gradients_match_timm_swiftformer(b, n):
    """Training: gradients of input and weights of the reference equal timm's."""
    d = 32
    ref, ours = _timm_pair(d)
    ref.train(), ours.train()
    x = _tokens(b, n, d)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(x_ours).square().sum().backward()
    _timm_on_tokens(ref, x_ref).square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    torch.testing.assert_close(ours.qk.weight.grad, torch.cat([ref.to_query.weight.grad, ref.to_key.weight.grad]))
    for name in ("w_g", "proj.weight", "proj.bias", "final.weight", "final.bias"):
        torch.testing.assert_close(ours.get_parameter(name).grad, ref.get_parameter(name).grad)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the trace keeps the path of its shape
@pytest.mark.parametrize("b,n", ADDITIVE_REGIMES)
@pytest.mark.parametrize("inference", [False, True], ids=["reference", "inference"])
def test_traced_additive_attention_matches_timm_swiftformer(b, n, inference):
    """torch.jit.trace (what fvcore and the exporters use) records the same function: traced on one
    input, run on another of the same shape."""
    d = 32
    ref, ours = _timm_pair(d)
    m = ours.reparameterize() if inference else ours
    with torch.no_grad():
        traced = torch.jit.trace(m, (_tokens(b, n, d, seed=1),))
        x = _tokens(b, n, d, seed=2)
        torch.testing.assert_close(traced(x), _timm_on_tokens(ref, x))


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("inference", [False, True], ids=["reference", "inference"])
def test_compiled_additive_attention_matches_timm_swiftformer(inference, tmp_path, monkeypatch):
    """torch.compile (dynamic shapes) over one sample and batches, G on the weight (N >= D) and on the keys."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # the compiled code stays out of /tmp
    d = 32
    ref, ours = _timm_pair(d)
    compiled = torch.compile(ours.reparameterize() if inference else ours, dynamic=True)
    for b, n in ADDITIVE_REGIMES:
        x = _tokens(b, n, d)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), _timm_on_tokens(ref, x))


@pytest.mark.parametrize("b,n", [(1, 49), (2, 196), (1, 16), (3, 4)])  # G on the weight (N >= D), on the keys
def test_reparameterize_returns_a_merged_inference_module(b, n):
    """A new module with one [D, 2D] output weight in place of two [D, D] layers: D fewer parameters,
    the same outputs and scores, the same MACs as fvcore counts them; the caller's module unchanged."""
    d = 48
    m = A.EfficientAdditiveAttention(d).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fast = m.reparameterize()
    assert isinstance(fast, EfficientAdditiveAttentionInference) and not fast.training
    assert m.state_dict().keys() == before.keys() and all(torch.equal(m.state_dict()[k], v) for k, v in before.items())
    assert set(fast.state_dict()) == {"qk.weight", "qk.bias", "w_g", "merged_weight", "merged_bias"}
    assert sum(p.numel() for p in fast.parameters()) == sum(p.numel() for p in m.parameters()) - d
    assert not any(p.requires_grad for p in fast.parameters())
    fast.qk.weight.add_(1.0)  # its own copies: the reference keeps its weights
    assert torch.equal(m.qk.weight, before["qk.weight"])
    fast.qk.weight.sub_(1.0)
    x = _tokens(b, n, d)
    with torch.no_grad():
        out, a = m(x, return_attn=True)
        out_r, a_r = fast(x, return_attn=True)
    torch.testing.assert_close(out_r, out)
    torch.testing.assert_close(a_r, a)
    fca = FlopCountAnalysis(ExplicitPath(fast), (x,))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert fca.total() == b * A.attention_macs("additive", n, d) == b * fast.macs(n, d)
    with pytest.raises(RuntimeError, match="Unexpected key"):  # checkpoints load into the reference, before
        fast.load_state_dict(A.EfficientAdditiveAttention(d).state_dict())


@pytest.mark.parametrize("inference", [False, True], ids=["reference", "inference"])
def test_output_weights_are_the_merged_output_layer(inference):
    """(A, M, c) with final(Proj(G * K) + Q) = Q A + (G * K) M + c, on random Q, K, G."""
    d = 24
    m = A.EfficientAdditiveAttention(d).eval()
    a, mm, c = (m.reparameterize() if inference else m).output_weights()
    q, k, g = torch.randn(10, d), torch.randn(10, d), torch.randn(1, d)
    with torch.no_grad():
        torch.testing.assert_close(q @ a + (g * k) @ mm + c, m.final(m.proj(g * k) + q))


def test_inference_module_rejects_wrong_shapes():
    fast = A.EfficientAdditiveAttention(32).eval().reparameterize()
    for bad, what in ((torch.randn(10, 32), "rank 2"), (torch.randn(1, 32, 4, 4), "rank 4"),
                      (torch.randn(1, 10, 31), "last dimension 31")):
        with pytest.raises(ValueError, match=rf"EfficientAdditiveAttentionInference expects tokens of shape \[B, N, D\] "
                                             rf"with D=32; got {what}"):
            fast(bad)
    with pytest.raises(TypeError, match="got list"):
        fast([[0.0] * 32])


def test_additive_attention_is_not_the_first_release_softmax():
    """The March 2023 release softmaxed an [N, 1] tensor (all ones): a plain sum of queries.
    The released checkpoints use the L2 normalisation over tokens; make sure the scores vary."""
    _, a = A.EfficientAdditiveAttention(32)(_tokens(1, 20, 32), return_attn=True)
    assert a.std() > 1e-3
    torch.testing.assert_close(a.norm(dim=1), torch.ones(1))


# --------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", FORMS)
def test_permutation_equivariant_over_tokens(name):
    m = _build(name, 48, 4)
    x = _tokens(2, 30, 48)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(m(x[:, perm]), m(x)[:, perm])


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("n", [25, 60])  # fewer and more tokens than channels
def test_independent_across_the_batch(name, n):
    m = _build(name, 48, 4)
    x = _tokens(3, n, 48)
    y = x.clone()
    y[1:] = _tokens(2, n, 48, seed=7)  # change every sample but the first
    with torch.no_grad():
        out = m(x)
        torch.testing.assert_close(m(y)[0], out[0])
        torch.testing.assert_close(torch.cat([m(x[i:i + 1]) for i in range(3)]), out)


@pytest.mark.parametrize("name", VARIANT_NAMES)
@pytest.mark.parametrize("n", [1, 35])
def test_forward_backward(name, n):
    m = A.build_attention(name, 32, num_heads=_heads(name, 2))
    x = _tokens(2, n, 32).requires_grad_()
    out = m(x)
    assert out.shape == (2, n, 32)
    assert torch.isfinite(out).all()
    (out.square().mean() + out.mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", FORMS)
def test_return_attn_is_free_of_side_effects_and_well_formed(name):
    h = _heads(name.removesuffix("_inference"), 2)
    m = _build(name, 32, 2)
    x = _tokens(2, 12, 32)
    with torch.no_grad():
        out, attn = m(x, return_attn=True)
        torch.testing.assert_close(out, m(x))
    if name == "self":
        assert attn.shape == (2, h, 12, 12)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, h, 12))
    elif name == "transposed":
        assert attn.shape == (2, h, 16, 16)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, h, 16))
    elif name == "separable":
        assert attn.shape == (2, 12)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2))
    else:
        assert attn.shape == (2, 12)
        torch.testing.assert_close(attn.norm(dim=-1), torch.ones(2))


# --------------------------------------------------------------------------- analytic costs
@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("b,n,d,h", [(1, 49, 48, 1), (2, 196, 64, 4), (1, 50, 96, 2), (1, 1, 16, 1)])
def test_analytic_macs_equal_fvcore(name, b, n, d, h):
    """fvcore counts linear (weights, not bias), matmul, bmm: the ops `macs()` counts. It counts
    elementwise ops, softmax and normalisation as zero, and `macs()` leaves them out too."""
    variant = name.removesuffix("_inference")
    h = _heads(variant, h)
    m = _build(name, d, h)
    fca = FlopCountAnalysis(ExplicitPath(m), (_tokens(b, n, d),))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert fca.total() == b * A.attention_macs(variant, n, d, h)


def test_self_attention_is_quadratic_and_the_others_linear_in_tokens():
    for name in VARIANT_NAMES:
        ratio = A.attention_macs(name, 8192, 64) / A.attention_macs(name, 1024, 64)
        assert ratio == pytest.approx(8, rel=0.02) if name != "self" else ratio > 30


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_bad_input_names_expected_shape(name):
    m = A.build_attention(name, 32)
    with pytest.raises(ValueError, match=r"\[B, N, D\] with D=32.*rank 2"):
        m(torch.randn(10, 32))
    with pytest.raises(ValueError, match=r"rank 4.*flatten"):
        m(torch.randn(1, 32, 4, 4))
    with pytest.raises(ValueError, match=r"D=32.*last dimension 31"):
        m(torch.randn(1, 10, 31))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m([[0.0] * 32])


@pytest.mark.parametrize("name", ["self", "transposed"])
def test_dim_not_divisible_by_heads(name):
    with pytest.raises(ValueError, match="dim=50 is not divisible by num_heads=3"):
        A.build_attention(name, 50, num_heads=3)


@pytest.mark.parametrize("name", ["separable", "additive"])
def test_single_head_variants_reject_heads(name):
    with pytest.raises(ValueError, match="num_heads=1"):
        A.build_attention(name, 48, num_heads=4)
