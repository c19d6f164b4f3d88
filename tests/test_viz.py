"""Headless tests of swiftlib.viz (Agg backend): the notebook-01 plots, the notebook widgets' behaviour
(a change redraws, the busy state, slider steps), readable redrawn plots, and a quiet ``import swiftlib.*``."""
import itertools
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from swiftlib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_attention_cost_curves_are_the_formulas_on_log_axes():
    fig = viz.plot_attention_costs(d=64, heads=4, batch=2, n_max=4096, n_mark=300)
    ax_macs, ax_mem = fig.axes
    assert ax_macs.get_xscale() == ax_macs.get_yscale() == "log"
    assert ax_mem.get_xscale() == ax_mem.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax_macs.get_lines() if not line.get_label().startswith("_")}
    assert len(lines) == 4
    # independent of swiftlib.attention: the textbook counts, batch 2
    n = 1024
    textbook = {"self": 4 * n * 64**2 + 2 * n * n * 64, "additive": 4 * n * 64**2 + 2 * n * 64,
                "separable": 3 * n * 64**2 + 2 * n * 64, "transposed": 4 * n * 64**2 + 2 * n * 64**2 // 4}
    for name, expected in textbook.items():
        line = lines[viz.VARIANT_STYLE[name][1]]
        xs, ys = line.get_data()
        i = int(np.flatnonzero(xs == n)[0]) if n in xs else None
        if i is None:  # n not on the grid: interpolate in log-log space
            ys_at = np.exp(np.interp(np.log(n), np.log(xs), np.log(ys)))
            assert ys_at == pytest.approx(2 * expected, rel=0.02)
        else:
            assert ys[i] == 2 * expected
    # stage token counts and the marked n are drawn as vertical lines
    verticals = sorted({line.get_xdata()[0] for line in ax_macs.get_lines() if line.get_label().startswith("_")})
    assert verticals == [49, 196, 300, 784, 3136]


def test_attention_cost_plot_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="not divisible"):
        viz.plot_attention_costs(d=50, heads=4)


def test_attention_maps_overlay_token_scores_and_show_matrices_as_matrices():
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    maps = {"self row": np.linspace(0, 1, 16), "channel map": np.eye(8), "signed": np.linspace(-1, 1, 16)}
    fig = viz.plot_attention_maps(img, maps, grid=(4, 4), query=5)
    assert len(fig.axes) == 4
    overlay, matrix, signed = fig.axes[1], fig.axes[2], fig.axes[3]
    assert len(overlay.images) == 2 and len(matrix.images) == 1
    assert overlay.images[1].get_array().shape == (4, 4)
    assert signed.images[1].get_cmap().name == "coolwarm"
    assert len(overlay.patches) == 1  # the query patch is outlined


# --------------------------------------------------------------------------- widgets, headless
def _png(out):
    """The PNG (base64) an ipywidgets Output widget shows, or None."""
    shown = [o["data"]["image/png"] for o in out.outputs if "image/png" in o.get("data", {})]
    return shown[0] if shown else None


def test_token_steps_are_log_spaced_and_reach_the_stage_counts():
    steps = viz.token_steps(16384)
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 16384
    assert {49, 196, 784, 3136} <= set(steps)
    assert len(steps) < 80  # a slider of a few hundred pixels: each step several pixels wide
    # no jump: a quarter octave at most, up to the rounding to integers
    assert all(b / a <= 2 ** 0.25 * (1 + 1 / a) or b - a <= 3 for a, b in zip(steps, steps[1:]))


def test_cost_widget_redraws_on_change_and_its_token_slider_snaps_to_stages():
    widget = viz.attention_cost_widget(d=48, heads=2, n=100)
    n_slider, d_slider, h_menu = widget.children[0].children
    out = widget.children[1]
    assert {49, 196, 784, 3136, 100} <= set(n_slider.options)  # the given n is kept reachable too
    assert n_slider.continuous_update is False and d_slider.continuous_update is False
    first = _png(out)
    assert first is not None
    n_slider.value = 3136
    assert _png(out) not in (None, first)  # redrawn, with the new N marked
    second = _png(out)
    d_slider.value = 40  # 40 % 2 == 0
    assert _png(out) not in (None, second)
    h_menu.value = 8  # 40 % 8 == 0; then 44 is not divisible by 8: a message instead of a figure
    d_slider.value = 44 if 44 in range(d_slider.min, d_slider.max + 1, d_slider.step) else 12
    assert _png(out) is None and "not divisible" in out.outputs[0]["text"]


def _self_attention_points(d):
    return [{"variant": "self", "n": n, "median_ms": d * n * n * 1e-6, "iqr_ms": 0.0} for n in (49, 196, 784)], []


def test_bench_widget_is_busy_while_measuring_and_redraws_after():
    seen = []

    def run(d, heads, batch, device):
        seen.append((d, status.value, [c.disabled for c in controls]))  # the state while measuring
        return _self_attention_points(d)

    box = viz.attention_bench_widget(run, points=_self_attention_points(48), d=48, heads=1)
    (d_slider, h_slider), (b_slider, dev, status) = box.children[0].children, box.children[1].children
    controls, out = (d_slider, h_slider, b_slider, dev), box.children[2]
    first = _png(out)
    assert seen == [] and first is not None  # the first figure comes from the given points
    d_slider.value = 96
    assert seen == [(96, "measuring d=96, heads=1, batch=1, device=cpu …", [True] * 4)]
    assert not any(c.disabled for c in controls) and status.value.startswith("done in ")
    assert _png(out) not in (None, first)


def test_bench_widget_without_points_measures_once_and_ends_idle():
    calls = []
    box = viz.attention_bench_widget(lambda **setting: calls.append(setting) or _self_attention_points(48))
    assert calls == [dict(d=48, heads=1, batch=1, device="cpu")]
    assert box.children[1].children[2].value.startswith("done in ") and _png(box.children[2]) is not None


def test_bench_widget_gives_the_controls_back_when_a_measurement_fails():
    def run(d, heads, batch, device):
        if d != 48:
            raise RuntimeError("out of memory")
        return [{"variant": "self", "n": 49, "median_ms": 1.0, "iqr_ms": 0.0}], []

    box = viz.attention_bench_widget(run, d=48)
    d_slider, status = box.children[0].children[0], box.children[1].children[2]
    with pytest.raises(RuntimeError):
        d_slider.value = 64
    assert status.value == "failed: out of memory"
    assert not any(c.disabled for row in box.children[:2] for c in row.children if hasattr(c, "disabled"))


def test_swiftformer_widget_menu_shows_whole_model_names_and_redraws():
    calls = []

    def costs_fn(size, res):
        calls.append((size, res))
        return {"additive": {"stages": [{"stage": 1, "tokens": (res // 4) ** 2, "channels": 48, "conv": 1e6 * res,
                                         "attention": 1e5 * res, "total": 1.1e6 * res}]}}

    box = viz.swiftformer_cost_widget(costs_fn)
    menu, res_slider = box.children[0].children
    out = box.children[1]
    assert [label for label, _ in menu.options] == ["SwiftFormer-XS", "SwiftFormer-S", "SwiftFormer-L1",
                                                    "SwiftFormer-L3"]
    assert menu.style.description_width == "initial" and int(menu.layout.width.rstrip("px")) >= 200
    first = _png(out)
    menu.value = "swiftformer_l3"
    res_slider.value = 512
    assert calls == [("swiftformer_xs", 224), ("swiftformer_l3", 224), ("swiftformer_l3", 512)]
    assert _png(out) not in (None, first)


# --------------------------------------------------------------------------- readable redrawn plots
def _sweep_points(ns=(49, 196, 784)):
    laws = {"self": lambda n: 2e-6 * n * n + 0.05, "additive": lambda n: 1e-4 * n + 0.07,
            "transposed": lambda n: 1.2e-4 * n + 0.09, "timm_additive": lambda n: 1.1e-4 * n + 0.12}
    return [{"variant": v, "n": n, "median_ms": f(n), "iqr_ms": 0.01, "peak_bytes": 1000 * n}
            for v, f in laws.items() for n in ns]


def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_redrawn_sweep_labels_neither_overlap_nor_leave_the_panel():
    crossovers = [{"a": "self", "b": "additive", "n": 74.0, "key": "median_ms"},
                  {"a": "self", "b": "transposed", "n": 112.0, "key": "median_ms"},
                  {"a": "self", "b": "timm_additive", "n": 137.0, "key": "median_ms"},
                  {"a": "transposed", "b": "timm_additive", "n": 700.0, "key": "median_ms"}]
    fig = viz.plot_sweep(_sweep_points(), crossovers)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        inside = ax.get_window_extent(renderer)
        assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1
                   for b in labels)
        assert not any(_overlap(a, b) for a, b in itertools.combinations(labels, 2))
        ticks = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in ticks
                 if inside.x0 - 1 <= t.get_window_extent(renderer).x0 <= inside.x1]
        assert not any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2))
        assert not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]  # no crowded 2x10^2, 3x10^2 ...
    ax_t = fig.axes[0]
    legend = ax_t.get_legend().get_window_extent(renderer)
    assert legend.y1 <= ax_t.get_window_extent(renderer).y0  # below the panel: it hides no curve
    assert sum("=" in t.get_text() for t in ax_t.texts) == 4


# --------------------------------------------------------------------------- a quiet start-up
USERS_SCRIPT = """
import logging, warnings
import swiftlib.flops, swiftlib.measure  # import fvcore.nn and torch.utils.benchmark quietly
import torch

def plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    torch.jit.script(plus_one)
print(any("torch.jit.script" in str(w.message) for w in caught))
print(logging.getLogger("torch.utils.cpp_extension").getEffectiveLevel() <= logging.WARNING)
"""


def _python(tmp_path, *args):
    """A fresh interpreter; TMPDIR in tmp_path (importing torch._dynamo creates a cache folder there)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(tmp_path)})


def test_importing_swiftlib_prints_nothing(tmp_path):
    res = _python(tmp_path, "-c", "import swiftlib.attention, swiftlib.models, swiftlib.export, swiftlib.flops, "
                  "swiftlib.viz, swiftlib.measure, swiftlib.bench")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # no "No CUDA runtime is found", no torch.jit.script deprecation


def test_the_silenced_messages_stay_on_for_the_users_own_code(tmp_path):
    (tmp_path / "users_code.py").write_text(USERS_SCRIPT)
    res = _python(tmp_path, "users_code.py")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True"]  # their torch.jit.script warns; the torch logger still logs


# --------------------------------------------------------------------------- notebook 04 plots (headless)
def test_confusion_counts_match_histogram2d_and_plots_render():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    ref, _, _ = np.histogram2d(t, p, bins=[np.arange(5) - 0.5] * 2)
    assert np.array_equal(viz.confusion_counts(t, p, 4), ref.astype(int))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        viz.confusion_counts([0, 3], [0, 1], 3)
    fig = viz.plot_confusion_matrix(t, p, list("abcd"))
    assert fig.axes[0].images[0].get_array().shape == (4, 4)
    rows = [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.5, "train_top1": 30.0, "val_top1": 40.0},
            {"epoch": 2, "train_loss": 1.0, "val_loss": None, "train_top1": 60.0, "val_top1": None}]
    fig = viz.plot_training_curves(rows, steps=[(0.5, 2.2), (1.0, 1.9)])
    loss_ax, acc_ax = fig.axes
    assert [len(line.get_xdata()) for line in loss_ax.lines] == [2, 2, 1]  # steps, train, val (epoch 1 only)
    fig = viz.plot_predictions(np.zeros((3, 3, 8, 8)), ["a", "b"], [0, 1, 1], [0, 0, 1])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["a", "a\n(b)", "b"]
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        viz.plot_predictions(np.zeros((3, 8, 8)), ["a"], [0, 0, 0])
