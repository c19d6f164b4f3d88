"""Pure plotting functions for the notebooks: each takes data (or formulas) and returns a matplotlib
Figure, touches no global state, and is tested headlessly. Notebook widgets are thin wrappers.

Sections are grouped by the notebook that uses them.
"""
from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np

from swiftlib.attention import VARIANTS, attention_macs, attention_memory, variant_heads
from swiftlib.models import stage_shapes

# ============================================================ notebook 01: attention zoo

#: One colour and label per attention variant, shared by every plot.
VARIANT_STYLE = {
    "self": ("tab:red", "self-attention  O(N²D)"),
    "transposed": ("tab:purple", "transposed  O(ND²/h)"),
    "separable": ("tab:green", "separable  O(ND)"),
    "additive": ("tab:blue", "additive (SwiftFormer)  O(ND)"),
}

#: Token counts of SwiftFormer's four stages at 224 px (56², 28², 14², 7²), from the model's stage shapes.
SWIFTFORMER_STAGE_TOKENS = tuple(row["tokens"] for row in stage_shapes("swiftformer_xs", 224))


def _log_token_axes(ax, ylabel: str, stage_tokens, n_lo: float, n_hi: float, label_stages: bool = False):
    """Log-log axes against the token count, with SwiftFormer's stage token counts in [n_lo, n_hi] dotted."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens N")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    for n in stage_tokens:
        if n_lo <= n <= n_hi:
            ax.axvline(n, color="grey", lw=0.8, ls=":")
            if label_stages:
                ax.annotate(str(n), (n, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                            va="top", ha="right", color="grey")


def plot_attention_costs(d: int = 48, heads: int = 1, batch: int = 1, n_max: int = 16384,
                         n_mark: int | None = None, bytes_per_element: int = 4):
    """Analytic MACs and activation memory of the four attentions against the token count N.

    Two log-log panels (MACs, memory in MiB) with one line per variant from
    :func:`swiftlib.attention.attention_macs` / :func:`~swiftlib.attention.attention_memory`;
    SwiftFormer's per-stage token counts are marked, and ``n_mark`` (if given) too.
    Returns the Figure (nothing is shown or saved).
    """
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    ns = np.unique(np.geomspace(1, n_max, 200).astype(int))
    fig, (ax_macs, ax_mem) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name in VARIANTS:
        h = variant_heads(name, heads)
        colour, label = VARIANT_STYLE[name]
        macs = [batch * attention_macs(name, int(n), d, h) for n in ns]
        mem = [attention_memory(name, int(n), d, h, batch=batch, bytes_per_element=bytes_per_element) / 2**20
               for n in ns]
        ax_macs.plot(ns, macs, color=colour, label=label)
        ax_mem.plot(ns, mem, color=colour, label=label)
    for ax, ylabel in ((ax_macs, "multiply-accumulates (MACs)"), (ax_mem, "activation memory (MiB)")):
        _log_token_axes(ax, ylabel, SWIFTFORMER_STAGE_TOKENS, 1, n_max)
        if n_mark is not None:
            ax.axvline(n_mark, color="black", lw=1.2, ls="--")
    ax_macs.set_title(f"MACs, d={d}, heads={heads}, batch={batch}")
    ax_mem.set_title("intermediate activations (analytic)")
    ax_macs.legend(fontsize=8, loc="upper left")
    return fig


def _show_in(out, make_figure: Callable | None = None, message: str | None = None) -> None:
    """Replace what the ipywidgets ``Output`` ``out`` shows: the Figure ``make_figure()`` returns (closed
    once displayed, so that it is not drawn a second time) or, if given, the text ``message``."""
    from IPython.display import display

    with out:
        out.clear_output(wait=True)
        if message is not None:
            print(message)
            return
        fig = make_figure()
        display(fig)
        plt.close(fig)


def attention_cost_widget(d: int = 48, heads: int = 1, n: int = 196):
    """Sliders for N, d and heads redrawing :func:`plot_attention_costs` (thin ipywidgets wrapper)."""
    import ipywidgets as W

    out = W.Output()
    style = dict(continuous_update=False)
    n_slider = W.IntSlider(value=n, min=1, max=16384, step=1, description="N", **style)
    d_slider = W.IntSlider(value=d, min=8, max=512, step=8, description="d", **style)
    h_slider = W.Dropdown(options=[1, 2, 4, 8], value=heads, description="heads")

    def redraw(*_):
        if d_slider.value % h_slider.value:
            _show_in(out, message=f"d={d_slider.value} is not divisible by heads={h_slider.value}")
        else:
            _show_in(out, lambda: plot_attention_costs(d_slider.value, h_slider.value, n_mark=n_slider.value))

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
    bars (timm's additive attention, ``"timm_additive"``, dashed; swiftlib's inference module,
    ``"additive_inference"`` (``"additive_reparameterized"`` in older sweep files), dash-dotted; the
    matrix products of that form, ``"additive_matmuls"``, dotted). ``crossovers`` (dicts with ``a``,
    ``b``, ``n``, ``key`` as from :func:`swiftlib.bench.sweep_crossovers`) are marked on the panel of
    their ``key``; SwiftFormer's per-stage token counts (:data:`SWIFTFORMER_STAGE_TOKENS`) are dotted,
    labelled lines. Returns the Figure.
    """
    styles = {**{k: (c, lbl, "-") for k, (c, lbl) in VARIANT_STYLE.items()},
              "timm_additive": ("tab:blue", "timm additive (peer)", "--"),
              "additive_inference": ("tab:blue", "additive, inference module", "-."),
              "additive_reparameterized": ("tab:blue", "additive, inference module", "-."),
              "additive_matmuls": ("tab:blue", "additive: its matrix products alone", ":")}
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
        _log_token_axes(ax, ylabel, stage_tokens, min(all_n), max(all_n), label_stages=True)
        marks = [c for c in crossovers if c.get("key", "median_ms") == key]
        for i, c in enumerate(marks):
            ax.axvline(c["n"], color="black", lw=1, ls="--", alpha=0.6)
            ax.annotate(f"{c['a']}={c['b']}\nN≈{c['n']:.0f}", (c["n"], 0.55 - 0.25 * (i % 3)),
                        xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="bottom", ha="left")
    ax_t.legend(fontsize=8, loc="lower right")
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

    out = W.Output()
    style = dict(continuous_update=False)
    d_slider = W.IntSlider(value=d, min=16, max=256, step=16, description="d", **style)
    h_slider = W.IntSlider(value=heads, min=1, max=8, step=1, description="heads", **style)
    b_slider = W.IntSlider(value=batch, min=1, max=8, step=1, description="batch", **style)
    dev = W.Dropdown(options=list(devices), value=devices[0], description="device")

    def draw(pts, cross):
        _show_in(out, lambda: plot_sweep(pts, cross, title=f"d={d_slider.value}, heads={h_slider.value}, "
                                                          f"batch={b_slider.value}, {dev.value}"))

    def redraw(*_):
        if d_slider.value % h_slider.value:
            _show_in(out, message=f"d={d_slider.value} is not divisible by heads={h_slider.value}")
            return
        draw(*run(d=d_slider.value, heads=h_slider.value, batch=b_slider.value, device=dev.value))

    for w in (d_slider, h_slider, b_slider, dev):
        w.observe(redraw, names="value")
    if points is not None:
        draw(*points)
    else:
        redraw()
    return W.VBox([W.HBox([d_slider, h_slider]), W.HBox([b_slider, dev]), out])


# ============================================================ notebook 03: the SwiftFormer family
def plot_stage_costs(costs: dict, title: str = ""):
    """Per-stage MACs of one SwiftFormer for several token mixers (log scale), tokens annotated.

    ``costs``: ``{attention: swiftlib.models.swiftformer_macs(...)}``. Each stage gets one group of
    bars (convolutions hatched at the bottom, the mixer on top), one colour per attention
    (:data:`VARIANT_STYLE`). Returns the Figure.
    """
    if not costs:
        raise ValueError("plot_stage_costs needs at least one {attention: swiftformer_macs(...)} entry")
    names = list(costs)
    stages = costs[names[0]]["stages"]
    fig, ax = plt.subplots(figsize=(9, 3.8), constrained_layout=True)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        color, label = VARIANT_STYLE.get(name, ("tab:gray", name))
        xs = np.arange(len(stages)) + (j - (len(names) - 1) / 2) * width
        conv = np.array([s["conv"] for s in costs[name]["stages"]]) / 1e6
        attn = np.array([s["attention"] for s in costs[name]["stages"]]) / 1e6
        ax.bar(xs, conv, width, color=color, alpha=0.35, hatch="//", edgecolor=color)
        ax.bar(xs, attn, width, bottom=conv, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels([f"stage {s['stage']}\nN={s['tokens']}, D={s['channels']}" for s in stages])
    ax.set_ylabel("MMACs (hatched: convolutions)")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or "MACs per stage", fontsize=10)
    return fig


def swiftformer_cost_widget(costs_fn, sizes=("swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3"),
                            resolutions=range(64, 1025, 32), size: str = "swiftformer_xs", resolution: int = 224):
    """Sliders (model size, input resolution; ``continuous_update=False``) around :func:`plot_stage_costs`.

    ``costs_fn(size, resolution) -> {attention: swiftformer_macs(...)}`` supplies the data.
    """
    import ipywidgets as w

    size_slider = w.SelectionSlider(options=list(sizes), value=size, description="model", continuous_update=False)
    res_slider = w.SelectionSlider(options=list(resolutions), value=resolution, description="pixels",
                                   continuous_update=False)
    out = w.Output()

    def redraw(_=None):
        size, px = size_slider.value, res_slider.value
        _show_in(out, lambda: plot_stage_costs(costs_fn(size, px), title=f"{size} at {px} x {px} px"))

    size_slider.observe(redraw, names="value")
    res_slider.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([size_slider, res_slider]), out])


def plot_accuracy_vs_latency(paper_rows, measured_rows, title: str = ""):
    """Two panels, top-1 (paper) against latency: the paper's iPhone 14 Neural Engine (left) and
    latencies measured here (right).

    ``paper_rows``: dicts with ``model``, ``family``, ``iphone14_ne_latency_ms``, ``top1``
    (data/paper_table2.csv). ``measured_rows``: dicts with ``model`` (a paper name), ``latency_ms``,
    ``top1`` and optional ``label``. SwiftFormers are drawn in blue. Returns the Figure.
    """
    if not paper_rows:
        raise ValueError("plot_accuracy_vs_latency needs the paper rows (data/paper_table2.csv)")
    colors = {"swiftformer": "tab:blue", "hybrid": "tab:orange", "convnet": "tab:green", "transformer": "tab:red"}
    fig, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in paper_rows:
        c = colors.get(r.get("family", ""), "tab:gray")
        ax_p.scatter(float(r["iphone14_ne_latency_ms"]), float(r["top1"]), color=c, s=25)
        ax_p.annotate(r["model"], (float(r["iphone14_ne_latency_ms"]), float(r["top1"])), fontsize=6,
                      xytext=(3, 2), textcoords="offset points")
    ax_p.set_xlabel("latency, iPhone 14 Neural Engine (ms, paper)")
    ax_p.set_ylabel("ImageNet-1K top-1 (%, paper)")
    ax_p.set_title("paper, Table 2", fontsize=10)
    for r in measured_rows:
        c = "tab:blue" if str(r["model"]).startswith("SwiftFormer") else "tab:orange"
        ax_m.scatter(float(r["latency_ms"]), float(r["top1"]), color=c, s=25)
        ax_m.annotate(r.get("label", r["model"]), (float(r["latency_ms"]), float(r["top1"])), fontsize=6,
                      xytext=(3, 2), textcoords="offset points")
    ax_m.set_xlabel("latency, this machine's CPU, batch 1 (ms, measured)")
    ax_m.set_title("measured here (top-1 from the paper)", fontsize=10)
    for ax in (ax_p, ax_m):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ============================================================ notebook 04: training on ImageNet subsets
def plot_training_curves(history, steps=None, title: str = ""):
    """Loss (left) and top-1 accuracy (right) against epoch from ``fit``'s history rows.

    ``history``: dicts with ``epoch``, ``train_loss``, ``val_loss``, ``train_top1``, ``val_top1``
    (``None`` where not evaluated). ``steps``: optional ``(fractional_epoch, loss)`` pairs drawn as a
    thin per-step loss line.
    """
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.3))
    ep = [r["epoch"] for r in history]
    if steps:
        xs, ys = zip(*steps)
        ax_l.plot(xs, ys, color="0.75", lw=0.8, label="train loss (step)")
    for key, style in (("train_loss", "o-"), ("val_loss", "s--")):
        pts = [(e, r[key]) for e, r in zip(ep, history) if r.get(key) is not None]
        if pts:
            ax_l.plot(*zip(*pts), style, label=key.replace("_", " "))
    for key, style in (("train_top1", "o-"), ("val_top1", "s--")):
        pts = [(e, r[key]) for e, r in zip(ep, history) if r.get(key) is not None]
        if pts:
            ax_a.plot(*zip(*pts), style, label=key.replace("_", " ") + " %")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("top-1 %")
    ax_a.set_ylim(0, 100)
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def confusion_counts(targets, predictions, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` int counts, rows = true class, columns = predicted class."""
    t, p = np.asarray(targets, dtype=int), np.asarray(predictions, dtype=int)
    if t.shape != p.shape:
        raise ValueError(f"targets and predictions must have the same length, got {t.shape} and {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{min(t.min(), p.min())}, "
                         f"{max(t.max(), p.max())}]")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def plot_confusion_matrix(targets, predictions, class_names, normalize: bool = True, title: str = ""):
    """Confusion matrix (rows: true, columns: predicted), row-normalised to percent if ``normalize``."""
    k = len(class_names)
    cm = confusion_counts(targets, predictions, k).astype(float)
    if normalize:
        cm = 100 * cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.5 * k + 2.5, 0.5 * k + 2))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j] >= (1 if normalize else 0.5):
                ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if cm[i, j] > (50 if normalize else cm.max() / 2) else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of true class" if normalize else "count")
    ax.set_title(title or "confusion matrix", fontsize=10)
    fig.tight_layout()
    return fig


def plot_predictions(images, class_names, targets, predictions=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     ncols: int = 8):
    """A grid of images ``[B, 3, H, W]`` (normalised tensors or arrays) titled ``true`` or ``pred / true``;
    wrong predictions in red."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 3, H, W] (or [B, 1, H, W]), got shape {imgs.shape}")
    imgs = imgs * np.asarray(std, dtype=np.float32)[None, :, None, None] + \
        np.asarray(mean, dtype=np.float32)[None, :, None, None]
    imgs = np.clip(imgs.transpose(0, 2, 3, 1), 0, 1)
    n = len(imgs)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.6 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(imgs[i].squeeze(), cmap="gray" if imgs.shape[-1] == 1 else None)
        true = class_names[int(targets[i])]
        if predictions is None:
            ax.set_title(true, fontsize=7)
        else:
            pred = class_names[int(predictions[i])]
            ax.set_title(f"{pred}\n({true})" if pred != true else pred, fontsize=7,
                         color="black" if pred == true else "red")
    fig.tight_layout()
    return fig


# ============================================================ notebook 05: export to Core ML and ONNX
def plot_op_inventory(rows, names=None, flagged=None, title: str = ""):
    """Side-by-side MIL op counts of two (or more) Core ML exports, one horizontal bar group per op type.

    ``rows``: :func:`swiftlib.export.compare_inventories` output (``{"op": type, name: count, ...}``;
    its ``"non-const total"`` and ``"const"`` rows go to the legend, not the bars). ``flagged``: op
    types to mark in red on the axis (e.g. the Neural Engine lint). Returns the Figure.
    """
    names = list(names or [k for k in rows[0] if k != "op"])
    totals = {r["op"]: r for r in rows if r["op"] in ("non-const total", "const")}
    ops = [r for r in rows if r["op"] not in totals]
    flagged = set(flagged or ())
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(ops) + 1.2), constrained_layout=True)
    y = np.arange(len(ops))
    h = 0.8 / len(names)
    for i, name in enumerate(names):
        label = name + (f" ({totals['non-const total'][name]} ops)" if "non-const total" in totals else "")
        ax.barh(y + (i - (len(names) - 1) / 2) * h, [r[name] for r in ops], height=h, label=label)
    ax.set_yticks(y, [r["op"] for r in ops])
    for tick, r in zip(ax.get_yticklabels(), ops):
        if r["op"] in flagged:
            tick.set_color("tab:red")
    ax.invert_yaxis()
    ax.set_xlabel("ops in the ML program (const excluded)")
    ax.legend(loc="lower right")
    ax.set_title(title or "MIL ops by type" + (" (red: Neural Engine lint)" if flagged else ""), fontsize=10)
    return fig


def plot_device_vs_paper(timings, paper: dict, compute_units: str = "CPU_AND_NE", title: str = ""):
    """Measured phone latency vs the paper's Table 2 (iPhone 14 Neural Engine), one point per model.

    ``timings``: rows of :func:`swiftlib.export.load_device_timings` (those with ``compute_units`` and a
    model found in ``paper`` are drawn); ``paper``: model -> ms (:func:`swiftlib.export.paper_latency`).
    The diagonal marks agreement. Returns the Figure.
    """
    pts = [(paper[r["model"]], r["median_ms"], r["model"], r.get("device") or "")
           for r in timings if r.get("compute_units") == compute_units and r.get("model") in paper]
    fig, ax = plt.subplots(figsize=(4.8, 4.4), constrained_layout=True)
    if pts:
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        ax.scatter(xs, ys, zorder=3)
        for x, yv, name, _ in pts:
            ax.annotate(name, (x, yv), textcoords="offset points", xytext=(4, -10), fontsize=8)
        hi = max(xs.max(), ys.max()) * 1.3  # room for the labels
    else:
        hi = 1.0
        ax.text(0.5, 0.5, f"no {compute_units} rows for models in the paper", ha="center", transform=ax.transAxes)
    ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="measured = paper")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("paper Table 2 latency, iPhone 14 NE (ms)")
    ax.set_ylabel(f"measured median latency, {compute_units} (ms)")
    ax.legend(loc="upper left", fontsize=8)
    devices = sorted({p[3] for p in pts})
    ax.set_title(title or ("measured vs paper" + (f": {', '.join(devices)}" if devices else "")), fontsize=10)
    return fig
