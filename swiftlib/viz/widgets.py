"""The notebooks' widgets: thin ipywidgets wrappers around :mod:`swiftlib.viz.plots`. Their controls
redraw on release into an ``Output`` widget, as a PNG; a control that re-measures shows a busy state.
"""
from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from contextlib import contextmanager

import ipywidgets as widgets
import matplotlib.pyplot as plt

from swiftlib.models import PAPER_NAMES
from swiftlib.viz.plots import plot_attention_costs, plot_stage_costs, plot_sweep, token_steps


#: Widget controls: redraw when released (not while dragged); descriptions never cut.
_STYLE = {"description_width": "initial"}
_CONTROL = dict(continuous_update=False, style=_STYLE)


def _show_in(out, make_figure: Callable | None = None, message: str | None = None) -> None:
    """Replace what the ``Output`` widget ``out`` shows by the Figure ``make_figure()`` returns (as the PNG
    the inline backend would show; the figure is closed) or the text ``message``, in one step: setting
    ``out.outputs`` leaves no blank frame in between and needs no running kernel (headless tests)."""
    if message is not None:
        out.outputs = ({"output_type": "stream", "name": "stdout", "text": message + "\n"},)
        return
    fig, buf = make_figure(), io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    out.outputs = ({"output_type": "display_data", "metadata": {}, "data": {
        "image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}},)


@contextmanager
def busy(status, controls, message: str):
    """While the block runs: ``controls`` disabled and ``message`` (e.g. "measuring…") in the ``status``
    label; afterwards the controls are enabled again and the status says how long it took (or what failed)."""
    for c in controls:
        c.disabled = True
    status.value = message
    t0 = time.perf_counter()
    try:
        yield
    except Exception as err:
        status.value = f"failed: {err}"
        raise
    else:
        status.value = f"done in {time.perf_counter() - t0:.1f} s"
    finally:
        for c in controls:
            c.disabled = False


def attention_cost_widget(d: int = 48, heads: int = 1, n: int = 196, n_max: int = 16384):
    """Token count N (log-spaced steps, :func:`token_steps`, stage counts included), width d and heads,
    redrawing :func:`plot_attention_costs` (thin ipywidgets wrapper)."""
    out = widgets.Output()
    n_slider = widgets.SelectionSlider(options=sorted({*token_steps(n_max), n}), value=n, description="tokens N",
                                       layout=widgets.Layout(width="380px"), **_CONTROL)
    d_slider = widgets.IntSlider(value=d, min=8, max=512, step=8, description="d", **_CONTROL)
    h_menu = widgets.Dropdown(options=sorted({1, 2, 4, 8, heads}), value=heads, description="heads",
                              layout=widgets.Layout(width="130px"), style=_STYLE)

    def redraw(*_):
        if d_slider.value % h_menu.value:
            _show_in(out, message=f"d={d_slider.value} is not divisible by heads={h_menu.value}")
        else:
            _show_in(out, lambda: plot_attention_costs(d_slider.value, h_menu.value, n_max=n_max,
                                                       n_mark=n_slider.value))

    for w in (n_slider, d_slider, h_menu):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([n_slider, d_slider, h_menu]), out])


def attention_bench_widget(run, points=None, d: int = 48, heads: int = 1, batch: int = 1, devices=("cpu",)):
    """Sliders for d, heads and batch and a device menu; every change re-measures with
    ``run(d=, heads=, batch=, device=) -> (points, crossovers)`` and redraws :func:`plot_sweep`.
    A measurement takes seconds: meanwhile the controls are disabled and the status says "measuring…".
    ``points`` (optional ``(points, crossovers)``) draws a first result without measuring.
    """
    out, status = widgets.Output(), widgets.Label()
    d_slider = widgets.IntSlider(value=d, min=16, max=256, step=16, description="d", **_CONTROL)
    h_slider = widgets.IntSlider(value=heads, min=1, max=8, step=1, description="heads", **_CONTROL)
    b_slider = widgets.IntSlider(value=batch, min=1, max=8, step=1, description="batch", **_CONTROL)
    dev = widgets.Dropdown(options=list(devices), value=devices[0], description="device", style=_STYLE,
                           layout=widgets.Layout(width="160px"))
    controls = (d_slider, h_slider, b_slider, dev)

    def redraw(*_):
        setting = dict(d=d_slider.value, heads=h_slider.value, batch=b_slider.value, device=dev.value)
        if setting["d"] % setting["heads"]:
            _show_in(out, message=f"d={setting['d']} is not divisible by heads={setting['heads']}")
            return
        with busy(status, controls, "measuring " + ", ".join(f"{k}={v}" for k, v in setting.items()) + " …"):
            pts, cross = run(**setting)
        _show_in(out, lambda: plot_sweep(pts, cross, title=", ".join(f"{k}={v}" for k, v in setting.items())))

    for w in controls:
        w.observe(redraw, names="value")
    if points is not None:
        _show_in(out, lambda: plot_sweep(*points, title=f"d={d}, heads={heads}, batch={batch}, {devices[0]}"))
    else:
        redraw()
    return widgets.VBox([widgets.HBox([d_slider, h_slider]), widgets.HBox([b_slider, dev, status]), out])


def swiftformer_cost_widget(costs_fn, sizes=("swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3"),
                            resolutions=range(64, 1025, 32), size: str = "swiftformer_xs", resolution: int = 224):
    """A model menu (paper names, :data:`swiftlib.models.PAPER_NAMES`) and an input-resolution slider
    around :func:`plot_stage_costs`; ``costs_fn(size, resolution) -> {attention: swiftformer_macs(...)}``
    supplies the data (``size`` is the model name, e.g. ``"swiftformer_xs"``)."""
    size_menu = widgets.Dropdown(options=[(PAPER_NAMES.get(s, s), s) for s in sizes], value=size,
                                 description="model", layout=widgets.Layout(width="240px"), style=_STYLE)
    res_slider = widgets.SelectionSlider(options=list(resolutions), value=resolution, description="input pixels",
                                         layout=widgets.Layout(width="380px"), **_CONTROL)
    out = widgets.Output()

    def redraw(_=None):
        size, px = size_menu.value, res_slider.value
        _show_in(out, lambda: plot_stage_costs(costs_fn(size, px), title=f"{PAPER_NAMES.get(size, size)} at "
                                                                         f"{px} x {px} px"))

    for w in (size_menu, res_slider):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([size_menu, res_slider]), out])
