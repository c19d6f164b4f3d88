"""Pure plotting functions for the notebooks: each takes data (or formulas) and returns a matplotlib
Figure, touches no global state, and is tested headlessly. Notebook widgets are thin wrappers.

Sections are grouped by the notebook that uses them.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

# ============================================================ notebook 01: attention zoo

#: One colour and label per attention variant, shared by every plot.
VARIANT_STYLE = {
    "self": ("tab:red", "self-attention  O(N²D)"),
    "transposed": ("tab:purple", "transposed  O(ND²/h)"),
    "separable": ("tab:green", "separable  O(ND)"),
    "additive": ("tab:blue", "additive (SwiftFormer)  O(ND)"),
}

#: Token counts of SwiftFormer's four stages at 224 px (56², 28², 14², 7²).
SWIFTFORMER_STAGE_TOKENS = (3136, 784, 196, 49)


def plot_attention_costs(d: int = 48, heads: int = 1, batch: int = 1, n_max: int = 16384,
                         n_mark: int | None = None, bytes_per_element: int = 4):
    """Analytic MACs and activation memory of the four attentions against the token count N.

    Two log-log panels (MACs, memory in MiB) with one line per variant from
    :func:`swiftlib.attention.attention_macs` / :func:`~swiftlib.attention.attention_memory`;
    SwiftFormer's per-stage token counts are marked, and ``n_mark`` (if given) too.
    Returns the Figure (nothing is shown or saved).
    """
    from swiftlib.attention import VARIANTS, attention_macs, attention_memory

    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    ns = np.unique(np.geomspace(1, n_max, 200).astype(int))
    fig, (ax_macs, ax_mem) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name in VARIANTS:
        h = heads if name in ("self", "transposed") else 1
        colour, label = VARIANT_STYLE[name]
        macs = [batch * attention_macs(name, int(n), d, h) for n in ns]
        mem = [attention_memory(name, int(n), d, h, batch=batch, bytes_per_element=bytes_per_element) / 2**20
               for n in ns]
        ax_macs.plot(ns, macs, color=colour, label=label)
        ax_mem.plot(ns, mem, color=colour, label=label)
    for ax, ylabel in ((ax_macs, "multiply-accumulates (MACs)"), (ax_mem, "activation memory (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        for n in SWIFTFORMER_STAGE_TOKENS:
            if n <= n_max:
                ax.axvline(n, color="grey", lw=0.8, ls=":")
        if n_mark is not None:
            ax.axvline(n_mark, color="black", lw=1.2, ls="--")
    ax_macs.set_title(f"MACs, d={d}, heads={heads}, batch={batch}")
    ax_mem.set_title("intermediate activations (analytic)")
    ax_macs.legend(fontsize=8, loc="upper left")
    return fig


def attention_cost_widget(d: int = 48, heads: int = 1, n: int = 196):
    """Sliders for N, d and heads redrawing :func:`plot_attention_costs` (thin ipywidgets wrapper)."""
    import ipywidgets as W
    from IPython.display import display

    out = W.Output()
    style = dict(continuous_update=False)
    n_slider = W.IntSlider(value=n, min=1, max=16384, step=1, description="N", **style)
    d_slider = W.IntSlider(value=d, min=8, max=512, step=8, description="d", **style)
    h_slider = W.Dropdown(options=[1, 2, 4, 8], value=heads, description="heads")

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            if d_slider.value % h_slider.value:
                print(f"d={d_slider.value} is not divisible by heads={h_slider.value}")
                return
            fig = plot_attention_costs(d_slider.value, h_slider.value, n_mark=n_slider.value)
            display(fig)
            plt.close(fig)

    for w in (n_slider, d_slider, h_slider):
        w.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([n_slider, d_slider, h_slider]), out])


def plot_attention_maps(image: np.ndarray, maps: dict, grid: tuple[int, int], query: int | None = None):
    """What each attention "looks at", one panel per entry of ``maps``.

    ``image`` is ``[H, W, 3]``; each map is either a per-token score of ``grid[0] * grid[1]`` values,
    drawn over the photo (signed scores with a diverging colour map), or a square matrix (e.g. the
    ``d' x d'`` channel map of transposed attention), drawn as a matrix. ``query`` marks the query
    patch of a self-attention row. Returns the Figure.
    """
    gh, gw = grid
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.2 * (len(maps) + 1), 3.4), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].set_title("input")
    axes[0].axis("off")
    H, W = image.shape[:2]
    for ax, (title, m) in zip(axes[1:], maps.items()):
        m = np.asarray(m, dtype=float)
        if m.size == gh * gw and m.ndim <= 1 or m.shape == (gh, gw):
            m = m.reshape(gh, gw)
            signed = m.min() < 0
            lim = np.abs(m).max() or 1.0
            ax.imshow(image)
            ax.imshow(m, cmap="coolwarm" if signed else "viridis", alpha=0.6, extent=(0, W, H, 0),
                      vmin=-lim if signed else 0, vmax=lim, interpolation="nearest")
            if query is not None and "self" in title:
                qy, qx = divmod(query, gw)
                ax.add_patch(plt.Rectangle((qx * W / gw, qy * H / gh), W / gw, H / gh, fill=False,
                                           edgecolor="white", lw=2))
            ax.axis("off")
        else:
            ax.imshow(m, cmap="viridis")
            ax.set_xlabel("channel")
            ax.set_ylabel("channel")
        ax.set_title(title, fontsize=9)
    return fig


# ============================================================ notebook 02: attention costs
def plot_sweep(points, crossovers=(), stage_tokens=SWIFTFORMER_STAGE_TOKENS, title: str = ""):
    """Measured latency and peak memory of the attentions against the token count, log-log.

    ``points`` are the dicts of :func:`swiftlib.bench.attention_sweep` (``variant``, ``n``,
    ``median_ms``, ``iqr_ms`` and optionally ``peak_bytes``); each variant is a line with IQR error
    bars (timm's additive attention, ``"timm_additive"``, dashed). ``crossovers`` (dicts with ``a``,
    ``b``, ``n``, ``key`` as from :func:`swiftlib.bench.sweep_crossovers`) are marked on the panel of
    their ``key``; SwiftFormer's per-stage token counts (3136, 784, 196, 49 at 224 px) are dotted,
    labelled lines. Returns the Figure.
    """
    styles = {**{k: (c, lbl, "-") for k, (c, lbl) in VARIANT_STYLE.items()},
              "timm_additive": ("tab:blue", "timm additive (peer)", "--")}
    if not points:
        raise ValueError("plot_sweep needs at least one measured point")
    has_mem = any("peak_bytes" in p for p in points)
    fig, axes = plt.subplots(1, 2 if has_mem else 1, figsize=(11 if has_mem else 6, 4), constrained_layout=True,
                             squeeze=False)
    ax_t = axes[0, 0]
    ax_m = axes[0, 1] if has_mem else None
    variants = list(dict.fromkeys(p["variant"] for p in points))
    for v in variants:
        colour, label, ls = styles.get(v, ("black", v, "-"))
        pts = sorted((p for p in points if p["variant"] == v), key=lambda p: p["n"])
        ns = [p["n"] for p in pts]
        ax_t.errorbar(ns, [p["median_ms"] for p in pts], yerr=[p.get("iqr_ms", 0) / 2 for p in pts],
                      color=colour, ls=ls, marker="o", ms=3, capsize=2, label=label)
        if ax_m is not None and all("peak_bytes" in p for p in pts):
            ax_m.plot(ns, [p["peak_bytes"] / 2**20 for p in pts], color=colour, ls=ls, marker="o", ms=3, label=label)
    panels = [(ax_t, "median_ms", "latency (ms, median, IQR bars)")]
    if ax_m is not None:
        panels.append((ax_m, "peak_bytes", "peak memory (MiB)"))
    all_n = [p["n"] for p in points]
    for ax, key, ylabel in panels:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        for n in stage_tokens:
            if min(all_n) <= n <= max(all_n):
                ax.axvline(n, color="grey", lw=0.8, ls=":")
                ax.annotate(str(n), (n, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                            va="top", ha="right", color="grey")
        for c in crossovers:
            if c.get("key", "median_ms") == key:
                ax.axvline(c["n"], color="black", lw=1, ls="--", alpha=0.6)
                ax.annotate(f"{c['a']}={c['b']}\nN≈{c['n']:.0f}", (c["n"], 0.02), xycoords=("data", "axes fraction"),
                            fontsize=7, rotation=90, va="bottom", ha="left")
    ax_t.legend(fontsize=8, loc="upper left")
    ax_t.set_title(title or "measured latency")
    if ax_m is not None:
        ax_m.set_title("peak memory of one forward")
    return fig


def attention_bench_widget(run, points=None, d: int = 48, heads: int = 1, batch: int = 1, devices=("cpu",)):
    """Sliders for d, heads, batch and a device dropdown (``continuous_update=False``).

    ``run(d=, heads=, batch=, device=)`` measures and returns ``(points, crossovers)``; the
    Figure is :func:`plot_sweep`. ``points`` (optional) draws a first result without measuring.
    """
    import ipywidgets as W
    from IPython.display import display

    out = W.Output()
    style = dict(continuous_update=False)
    d_slider = W.IntSlider(value=d, min=16, max=256, step=16, description="d", **style)
    h_slider = W.IntSlider(value=heads, min=1, max=8, step=1, description="heads", **style)
    b_slider = W.IntSlider(value=batch, min=1, max=8, step=1, description="batch", **style)
    dev = W.Dropdown(options=list(devices), value=devices[0], description="device")

    def draw(pts, cross):
        with out:
            out.clear_output(wait=True)
            fig = plot_sweep(pts, cross, title=f"d={d_slider.value}, heads={h_slider.value}, "
                                                f"batch={b_slider.value}, {dev.value}")
            display(fig)
            plt.close(fig)

    def redraw(*_):
        if d_slider.value % h_slider.value:
            with out:
                out.clear_output(wait=True)
                print(f"d={d_slider.value} is not divisible by heads={h_slider.value}")
            return
        draw(*run(d=d_slider.value, heads=h_slider.value, batch=b_slider.value, device=dev.value))

    for w in (d_slider, h_slider, b_slider, dev):
        w.observe(redraw, names="value")
    if points is not None:
        draw(*points)
    else:
        redraw()
    return W.VBox([W.HBox([d_slider, h_slider]), W.HBox([b_slider, dev]), out])
