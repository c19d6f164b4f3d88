"""swiftlib.models against independent references: timm's SwiftFormer (weights both ways, official
layout via timm's own checkpoint_filter_fn), the paper's parameter / GMAC numbers in
data/swiftformer_variants.csv, fvcore's counts, and the unfused model for fusion."""
import csv
import datetime
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from fvcore.nn import FlopCountAnalysis  # noqa: E402
from timm.models.swiftformer import EfficientAdditiveAttention as TimmAdditive  # noqa: E402
from timm.models.swiftformer import checkpoint_filter_fn  # noqa: E402
from torch import nn  # noqa: E402

import swiftlib.attention as A  # noqa: E402
from swiftlib import DATA_DIR, viz  # noqa: E402
from swiftlib.attention_inference import EfficientAdditiveAttentionInference  # noqa: E402
from swiftlib.flops import count_macs  # noqa: E402
from swiftlib.models import (MIN_INPUT_SIZE, MODEL_NAMES, PAPER_NAMES, SWIFTFORMER_VARIANTS,  # noqa: E402
                             MapAdditiveAttention, create_model, export_friendly, fuse_for_inference, load_checkpoint,
                             resolve_name, save_checkpoint, stage_shapes, swiftformer_macs, to_official_keys)
from swiftlib.models.swiftformer import LayerScale2d, SwiftFormerEncoder  # noqa: E402

ATTENTIONS = ["additive", "self", "transposed", "separable"]


def _variants_csv():
    with open(DATA_DIR / "swiftformer_variants.csv") as f:
        return {row["timm_name"]: row for row in csv.DictReader(f)}


PAPER = _variants_csv()


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and buffer random (BN statistics and affine, layer scales, w_g included),
    so that no equality below can hold by accident of the default initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                continue
            if leaf == "weight" and t.dim() > 1:  # conv / linear: unit-variance outputs
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel()))
            elif leaf in ("weight", "running_var"):  # BN scale and variance
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif leaf == "gamma":  # layer scales
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.25)
            else:  # biases, running means, w_g, temperatures
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model


def random_model(factory, *args, seed: int = 0, **kwargs) -> nn.Module:
    """``factory(*args, **kwargs)`` built on the meta device (no weight initialisation: fast for L3),
    then materialised on the CPU with every tensor random (:func:`randomize_`)."""
    with torch.device("meta"):
        model = factory(*args, **kwargs)
    model.to_empty(device="cpu")
    for name, buf in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buf.zero_()
    return randomize_(model, seed=seed)


def _images(b=2, h=64, w=96, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _max_diff(a, b):
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- variant table
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_variant_table_matches_csv_and_timm(name):
    row = PAPER[name]
    assert SWIFTFORMER_VARIANTS[name]["widths"] == tuple(int(v) for v in row["widths"].split())
    assert SWIFTFORMER_VARIANTS[name]["depths"] == tuple(int(v) for v in row["depths"].split())
    with torch.device("meta"):  # structure only: no weight initialisation
        ref = timm.create_model(name)
    assert [len(s.blocks) for s in ref.stages] == list(SWIFTFORMER_VARIANTS[name]["depths"])
    assert [s.blocks[0].dwconv.in_channels for s in ref.stages] == list(SWIFTFORMER_VARIANTS[name]["widths"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_param_counts_match_paper(name):
    row = PAPER[name]
    with torch.device("meta"):  # shapes only: no weight initialisation
        with_dist = sum(p.numel() for p in create_model(name).parameters())
        without = sum(p.numel() for p in create_model(name, distillation=False).parameters())
        timm_count = sum(p.numel() for p in timm.create_model(name).parameters())
    assert round(with_dist / 1e6, 3) == float(row["params_m_with_dist_head"])
    assert round(without / 1e6, 3) == float(row["params_m_without_dist_head"])
    assert with_dist == timm_count


def _fvcore_macs(model, x):
    fca = FlopCountAnalysis(model.eval(), (x,))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return fca.total()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gmacs_match_paper_and_timm(name):
    """fvcore at 224 px. swiftlib computes the global query G = a^T Q as a matmul, which fvcore counts
    (N * D MACs per SwiftFormer Encoder); the official code and timm sum elementwise, which it does not.
    Without those, the count equals timm's exactly and the paper's value (truncated to 3 decimals)."""
    x = torch.zeros(1, 3, 224, 224)
    ours = _fvcore_macs(random_model(create_model, name), x)
    stage_maps = (56 * 56, 28 * 28, 14 * 14, 7 * 7)  # paper Table 4: maps of H/4 ... H/32 at 224 px
    widths = [int(w) for w in PAPER[name]["widths"].split()]  # the paper's table, not the variant table
    g_matmul = sum(n * d for n, d in zip(stage_maps, widths))
    if name in ("swiftformer_xs", "swiftformer_l3"):  # timm traced for the smallest and the largest (time)
        assert ours - g_matmul == _fvcore_macs(random_model(timm.create_model, name), x)
    paper = float(PAPER[name]["gmacs_224"])
    assert 0 <= (ours - g_matmul) / 1e9 - paper < 1e-3


# --------------------------------------------------------------------------- timm equivalence
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_timm_weights_give_identical_logits(name):
    ref = random_model(timm.create_model, name, pretrained=False).eval()
    ours = create_model(name).eval()
    report = load_checkpoint(ours, ref.state_dict())
    assert report.layout == "timm" and not report.reinitialised
    x = _images()
    with torch.no_grad():
        expected, out = ref(x), ours(x)
    assert expected.abs().max() > 1.0  # logits of a random network, not near zero
    assert _max_diff(out, expected) <= 1e-5


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_swiftlib_weights_load_into_timm(name):
    """Reverse direction: swiftlib -> official layout (ours) -> timm layout (timm's own filter)."""
    ours = random_model(create_model, name, seed=1).eval()
    with torch.device("meta"):
        ref = timm.create_model(name)
    ref = ref.to_empty(device="cpu").eval()
    ref.load_state_dict(checkpoint_filter_fn({"model": to_official_keys(ours.state_dict())}, ref), strict=True)
    x = _images(seed=1)
    with torch.no_grad():
        assert _max_diff(ours(x), ref(x)) <= 1e-5


def test_official_layout_key_names():
    """Names of the official repo's state dict (models/swiftformer.py there), spelled out."""
    official = to_official_keys(create_model("swiftformer_xs").state_dict())
    for key in ["patch_embed.0.weight", "patch_embed.4.running_var", "network.0.0.dwconv.weight",
                "network.0.0.layer_scale", "network.0.2.local_representation.layer_scale",
                "network.0.2.attn.to_query.weight", "network.0.2.attn.to_key.bias", "network.0.2.attn.Proj.weight",
                "network.0.2.attn.w_g", "network.0.2.attn.final.bias", "network.0.2.layer_scale_1",
                "network.0.2.linear.norm1.weight", "network.1.proj.weight", "network.1.norm.running_mean",
                "network.6.3.layer_scale_2", "norm.weight", "head.weight", "dist_head.bias"]:
        assert key in official, key
    assert not any(k.startswith(("stages.", "stem.", "head_dist.")) or ".qk." in k for k in official)
    assert official["network.0.2.layer_scale_1"].shape == (48, 1, 1)


@pytest.mark.parametrize("name", ["swiftformer_xs", "swiftformer_l1"])
def test_official_checkpoint_file_round_trip(name, tmp_path):
    ref = random_model(timm.create_model, name, seed=2).eval()
    ours = create_model(name).eval()
    load_checkpoint(ours, ref.state_dict())
    official = to_official_keys(ours.state_dict())
    # timm's independent official -> timm conversion recovers timm's state dict exactly
    back = checkpoint_filter_fn({"model": official}, ref)
    assert back.keys() == ref.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in ref.state_dict().items())
    path = tmp_path / f"{name}_official.pth"
    torch.save({"model": official}, path)
    fresh = create_model(name, checkpoint=path).eval()
    x = _images(seed=2)
    with torch.no_grad():
        assert _max_diff(fresh(x), ref(x)) <= 1e-5


def test_swiftlib_checkpoint_round_trip_is_atomic(tmp_path):
    model = randomize_(create_model("swiftformer_xs", num_classes=10), seed=3)
    path = save_checkpoint(model, tmp_path / "ckpt" / "xs.pth", epoch=4)
    assert [p.name for p in path.parent.iterdir()] == ["xs.pth"]  # no temporary file left behind
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model", "arch", "attention", "num_classes", "epoch"}
    assert (payload["arch"], payload["attention"], payload["num_classes"], payload["epoch"]) == \
        ("swiftformer_xs", "additive", 10, 4)
    fresh = create_model("swiftformer_xs", num_classes=10)
    assert load_checkpoint(fresh, path).layout == "swiftlib"
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


# --------------------------------------------------------------------------- checkpoint errors
def test_num_classes_change_reinitialises_head_with_a_message():
    src = random_model(timm.create_model, "swiftformer_xs", seed=4).eval()
    with pytest.warns(UserWarning, match="classifier re-initialised: the checkpoint has 1000 classes, the model 10"):
        model = create_model("swiftformer_xs", num_classes=10, checkpoint=src.state_dict()).eval()
    assert model.head.weight.shape == (10, 220) and model.head_dist.weight.shape == (10, 220)
    assert model.head.weight.std() < 0.05  # fresh trunc-normal(0.02), not copied
    x = _images(seed=4)
    with torch.no_grad():  # the whole body was loaded
        torch.testing.assert_close(model.forward_features(x), src.forward_features(x), rtol=1e-5, atol=1e-5)


def test_distillation_false_drops_dist_head_with_a_message():
    src = random_model(timm.create_model, "swiftformer_xs", seed=5).eval()
    model = create_model("swiftformer_xs", distillation=False).eval()
    with pytest.warns(UserWarning, match="distillation head was dropped"):
        report = load_checkpoint(model, src.state_dict())
    assert report.dropped == ["head_dist.weight", "head_dist.bias"]
    x = _images(seed=5)
    with torch.no_grad():
        feats = src.forward_features(x).mean((2, 3))
        assert _max_diff(model(x), src.head(feats)) <= 1e-5


def test_truncated_file_gives_clear_error(tmp_path):
    path = save_checkpoint(create_model("swiftformer_xs"), tmp_path / "xs.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or is not a PyTorch checkpoint"):
        load_checkpoint(create_model("swiftformer_xs"), path)


def test_non_checkpoint_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_checkpoint(create_model("swiftformer_xs"), text)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_checkpoint(create_model("swiftformer_xs"), listing)
    with_object = tmp_path / "with_object.pth"  # (argparse.Namespace, which official files hold, may load)
    torch.save({"model": {}, "created": datetime.date(2024, 1, 1)}, with_object)
    with pytest.raises(ValueError, match="datetime.date.*never runs code") as refused:
        load_checkpoint(create_model("swiftformer_xs"), with_object)
    assert "weights_only=False" not in str(refused.value)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_checkpoint(create_model("swiftformer_xs"), tmp_path / "missing.pth")


def test_wrong_architecture_names_what_differs_in_one_line():
    src = create_model("swiftformer_s").state_dict()
    with pytest.raises(ValueError, match=r"widths: checkpoint \(48, 64, 168, 224\), model \(48, 56, 112, 220\); "
                                         r"depths: checkpoint \(3, 3, 9, 6\), model \(3, 3, 6, 4\)") as e:
        load_checkpoint(create_model("swiftformer_xs"), src)
    assert "swiftformer_xs" in str(e.value) and "\n" not in str(e.value)
    extra_block = create_model("swiftformer_l1").state_dict()  # stage 1 has 4 blocks, XS has 3
    only = {k: v for k, v in extra_block.items() if k.startswith("stages.0.")}
    with pytest.raises(ValueError, match=r"depths: checkpoint \(4,\), model \(3, 3, 6, 4\)"):
        load_checkpoint(create_model("swiftformer_xs"), only)
    partial = create_model("swiftformer_xs").state_dict()
    del partial["stages.0.blocks.0.dwconv.bias"]
    with pytest.raises(ValueError, match=r"1 missing keys, e\.g\. \['stages\.0\.blocks\.0\.dwconv\.bias'\]") as e:
        load_checkpoint(create_model("swiftformer_xs"), partial)
    assert e.value.missing == ["stages.0.blocks.0.dwconv.bias"]


def test_other_attention_names_both_mixers_and_keeps_the_model():
    src = timm.create_model("swiftformer_xs").state_dict()
    model = create_model("swiftformer_xs", attention="self")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"attention: checkpoint 'additive', model 'self'$"):
        load_checkpoint(model, src)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # nothing half-loaded


# --------------------------------------------------------------------------- construction and inputs
def test_attention_argument_places_the_mixer_in_every_stage():
    model = create_model("swiftformer_s", attention="self")
    last_blocks = [stage.blocks[-1] for stage in model.stages]
    assert all(isinstance(b.attn, A.SelfAttention) for b in last_blocks)
    mixers = [m for m in model.modules() if isinstance(m, tuple(A.VARIANTS.values()))]
    assert len(mixers) == 4


def test_create_model_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown model 'swiftformer_m'"):
        create_model("swiftformer_m")
    with pytest.raises(ValueError, match="unknown attention 'linformer'"):
        create_model("swiftformer_xs", attention="linformer")
    assert create_model("XS").widths == (48, 56, 112, 220)


@pytest.mark.parametrize("hw", [(32, 32), (33, 47), (61, 32), (97, 130)])
def test_any_input_of_at_least_32_pixels(hw):
    model = create_model("swiftformer_xs", num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
        feats = model.forward_features(torch.randn(1, 3, *hw))
    assert out.shape == (1, 7)
    assert feats.shape[2:] == tuple(math.ceil(s / 32) for s in hw)  # four stride-2 halvings after a stride-2 stem


@pytest.mark.parametrize("shape,match", [
    ((1, 3, 31, 64), f"H, W >= {MIN_INPUT_SIZE}"),
    ((1, 1, 64, 64), r"expects images \[B, 3, H, W\].*got 1 channels"),
    ((3, 64, 64), r"expects images \[B, 3, H, W\].*got rank 3"),
])
def test_bad_inputs_raise_clear_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        create_model("swiftformer_xs")(torch.zeros(shape))


def test_eval_averages_the_two_heads_and_training_returns_both():
    model = randomize_(create_model("swiftformer_xs"), seed=6)
    x = _images(seed=6)
    with torch.no_grad():
        model.train()
        head, dist = model(x)
        model.eval()
        feats = model.forward_features(x).mean((2, 3))
        avg = model(x)
    assert head.shape == dist.shape == (2, 1000)
    torch.testing.assert_close(avg, (nn.functional.linear(feats, model.head.weight, model.head.bias)
                                     + nn.functional.linear(feats, model.head_dist.weight, model.head_dist.bias)) / 2)


# --------------------------------------------------------------------------- all (size, attention) pairs
@pytest.fixture(scope="module")
def random_models():
    cache = {}

    def get(name, attention):
        if (name, attention) not in cache:
            torch.manual_seed(0)
            cache[(name, attention)] = random_model(create_model, name, attention=attention, seed=7)
        return cache[(name, attention)]
    return get


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fused_equals_unfused(name, attention, random_models):
    model = random_models(name, attention).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    assert not fused.training
    assert not any(isinstance(m, (nn.BatchNorm2d, LayerScale2d)) for m in fused.modules())
    x = _images(b=1, h=32, w=48, seed=8)
    with torch.no_grad():
        expected, out = model(x), fused(x)
    assert expected.abs().max() > 0.5
    assert _max_diff(out, expected) <= 1e-4
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input model untouched
    # the additive attention is swapped for its inference module; the other mixers stay what they were
    mixers = [type(m.attn) for m in fused.modules() if isinstance(m, SwiftFormerEncoder)]
    assert mixers == [EfficientAdditiveAttentionInference if attention == "additive" else A.VARIANTS[attention]] * 4


@pytest.mark.parametrize("inference", [False, True], ids=["reference", "inference"])
def test_map_form_is_built_from_either_attention_form(inference):
    """MapAdditiveAttention on [B, C, H, W] maps equals timm's module (which works on maps too)."""
    ref = randomize_(TimmAdditive(in_dims=56, token_dim=56)).eval()
    ours = A.EfficientAdditiveAttention(56).eval()
    ours.load_state_dict(ref.state_dict())
    mapped = MapAdditiveAttention(ours.reparameterize() if inference else ours).eval()
    x = torch.randn(2, 56, 7, 5)
    with torch.no_grad():
        expected = ref(x)
        torch.testing.assert_close(mapped(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().mean() > 0.1
    with pytest.raises(TypeError, match="copies an EfficientAdditiveAttention"):
        MapAdditiveAttention(A.SeparableAttention(56))


def test_export_friendly_fused_model_equals_the_model():
    model = random_model(create_model, "swiftformer_xs", seed=10).eval()
    x = _images(b=2, h=64, w=64, seed=10)
    friendly = export_friendly(fuse_for_inference(model))
    with torch.no_grad():
        expected = model(x)
        assert _max_diff(friendly(x), expected) <= 1e-4


def test_fused_without_channels_last_at_224():
    model = random_model(create_model, "swiftformer_xs", seed=8).eval()
    x = _images(b=1, h=224, w=224, seed=8)
    with torch.no_grad():
        expected = model(x)
        assert _max_diff(fuse_for_inference(model, channels_last=False)(x), expected) <= 1e-4
        assert _max_diff(fuse_for_inference(model)(x), expected) <= 1e-4


def test_fusion_removes_work():
    model = create_model("swiftformer_xs")
    x = torch.zeros(1, 3, 224, 224)
    fca_before = FlopCountAnalysis(model.eval(), (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fused = fuse_for_inference(model)
    fca_after = FlopCountAnalysis(fused, (x,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        assert fca_before.by_operator()["batch_norm"] > 0
        assert "batch_norm" not in fca_after.by_operator()
    n_params = sum(p.numel() for p in fused.parameters())
    # BN affines (2 per channel) and layer scales are gone, the heads merged into one
    assert n_params < sum(p.numel() for p in model.parameters()) - 220 * 1000


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_every_size_and_attention(name, attention, random_models):
    model = random_models(name, attention).train()
    x = _images(b=2, h=32, w=40, seed=9).requires_grad_()
    head, dist = model(x)
    assert head.shape == dist.shape == (2, 1000)
    (nn.functional.cross_entropy(head, torch.tensor([1, 2])) + dist.square().mean()).backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- analytic costs and plots
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_analytic_macs_match_fvcore(attention):
    """swiftformer_macs == fvcore's product counts (swiftlib.flops adds SDPA, which fvcore skips),
    BatchNorm excluded, on a non-square input."""
    model = random_model(create_model, "swiftformer_xs", attention=attention).eval()
    x = torch.zeros(1, 3, 64, 96)
    by_op = count_macs(model, x)["by_op"]
    products = sum(v for k, v in by_op.items() if not k.startswith("ew.") and k != "batch_norm")
    costs = swiftformer_macs("swiftformer_xs", 64, 96, attention=attention)
    assert costs["total"] == products
    assert 2 * costs["batchnorm_elements"] == by_op["batch_norm"]  # fvcore: scale and shift per element
    with torch.no_grad():
        feats = model.forward_features(x)
    assert [r["tokens"] for r in stage_shapes("xs", 64, 96)][-1] == feats.shape[2] * feats.shape[3]


def test_stage_shapes_at_224_and_bad_sizes():
    assert [(r["height"], r["channels"]) for r in stage_shapes("swiftformer_s", 224)] == [
        (56, 48), (28, 64), (14, 168), (7, 224)]
    with pytest.raises(ValueError, match="H, W >= 32"):
        stage_shapes("swiftformer_s", 16)


def test_notebook_plots_render_headlessly():
    costs = {a: swiftformer_macs("swiftformer_xs", 224, attention=a) for a in ATTENTIONS}
    fig = viz.plot_stage_costs(costs, title="xs")
    assert len(fig.axes) == 4  # one panel per stage, each on its own linear axis: small stages stay visible
    for ax, i in zip(fig.axes, range(4)):
        assert ax.get_yscale() == "linear" and len(ax.patches) == 2 * 4  # (conv, attention) x attentions
        tops = [p.get_y() + p.get_height() for p in ax.patches]
        assert max(tops) == pytest.approx(max(c["stages"][i]["total"] for c in costs.values()) / 1e6)
        assert ax.get_ylim()[1] > max(tops)  # nothing cut off
    with open(DATA_DIR / "paper_table2.csv") as f:
        paper = list(csv.DictReader(f))
    fig = viz.plot_accuracy_vs_latency(paper, [{"model": "SwiftFormer-XS", "latency_ms": 5.0, "top1": 75.7}])
    assert len(fig.axes) == 2 and len(fig.axes[0].collections) == len(paper)
    fig, ax = plt.subplots()
    ax.set(xlim=(0, 2), ylim=(70, 90))
    for label in ("EfficientFormer-L1", "SwiftFormer-L1"):  # two labels at the same point overlap
        ax.annotate(label, (1.0, 80.0), xytext=(3, 2), textcoords="offset points")
    fig.canvas.draw()
    first, second = (t.get_window_extent(fig.canvas.get_renderer()) for t in ax.texts)
    assert first.overlaps(second)
    viz.separate_labels(ax)
    fig.canvas.draw()
    first, second = (t.get_window_extent(fig.canvas.get_renderer()) for t in ax.texts)
    assert not first.overlaps(second)
    with pytest.raises(ValueError):
        viz.plot_stage_costs({})


# --------------------------------------------------------------------------- model names
SPELLINGS = {"swiftformer_xs": ["xs", "XS", "swiftformer_xs", "SwiftFormer-XS", "swiftformer-xs", " SwiftFormer_XS "],
             "swiftformer_l1": ["l1", "L1", "SwiftFormer-L1", "swiftformer_l1"]}


@pytest.mark.parametrize("canonical", sorted(SPELLINGS))
def test_every_spelling_resolves_to_one_name_everywhere(canonical):
    expected_shapes = stage_shapes(canonical, 224)
    expected_macs = swiftformer_macs(canonical, 224)
    with torch.device("meta"):  # structure only
        expected_params = sum(p.numel() for p in create_model(canonical).parameters())
    for spelling in SPELLINGS[canonical]:
        assert resolve_name(spelling) == canonical
        with torch.device("meta"):
            model = create_model(spelling)
        assert model.variant_name == canonical
        assert sum(p.numel() for p in model.parameters()) == expected_params
        assert stage_shapes(spelling, 224) == expected_shapes
        assert swiftformer_macs(spelling, 224) == expected_macs
    assert [resolve_name(n) for n in MODEL_NAMES] == MODEL_NAMES


def test_paper_names_are_the_papers_spellings():
    assert list(PAPER_NAMES) == MODEL_NAMES
    assert PAPER_NAMES == {name: PAPER[name]["model"] for name in MODEL_NAMES}  # data/swiftformer_variants.csv
    with open(DATA_DIR / "paper_table2.csv") as f:
        assert set(PAPER_NAMES.values()) <= {row["model"] for row in csv.DictReader(f)}
    assert all(resolve_name(paper) == name for name, paper in PAPER_NAMES.items())


@pytest.mark.parametrize("bad", ["swiftformer_xxl", "m", "swiftformer", ""])
def test_unknown_name_gives_one_error_everywhere(bad):
    with pytest.raises(ValueError) as first:
        resolve_name(bad)
    message = str(first.value)
    assert message.startswith(f"unknown model {bad!r}; choose one of {MODEL_NAMES}") and "'xs'" in message
    for call in (lambda: create_model(bad), lambda: stage_shapes(bad, 224), lambda: swiftformer_macs(bad)):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == message
    with pytest.raises(TypeError, match="model name must be a str"):
        resolve_name(None)
