"""Headless tests of the notebook-01 plotting functions in swiftlib.viz (Agg backend)."""
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


def test_cost_widget_builds_and_redraws():
    widget = viz.attention_cost_widget(d=48, heads=2, n=100)
    sliders = widget.children[0].children
    sliders[0].value = 500  # redraw on change, no exception
    sliders[1].value = 40   # 40 % 2 == 0
    assert sliders[0].continuous_update is False
