"""Pure plotting functions for the notebooks: each takes data (or formulas) and returns a matplotlib
Figure, touches no global state, and is tested headlessly. Sections follow the notebooks.

Shapes: sweep points are dicts (``variant``, ``n``, ``median_ms``, ...); images ``[B, 3, H, W]``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

from swiftlib.attention import VARIANTS, attention_macs, attention_memory, variant_heads
from swiftlib.models import stage_shapes


# ============================================================ shared by the plots and the widgets
#: One colour and label per attention variant, shared by every plot.
VARIANT_STYLE = {  # the label gives the cost of the token mixing itself; every mixer adds O(ND²) projections
    "self": ("tab:red", "self-attention, mixing O(N²D)"),
    "transposed": ("tab:purple", "transposed, mixing O(ND²/h)"),
    "separable": ("tab:green", "separable, mixing O(ND)"),
    "additive": ("tab:blue", "additive (SwiftFormer), mixing O(ND)"),
}


#: Token counts of SwiftFormer's four stages at 224 px (56², 28², 14², 7²), from the model's stage shapes.
SWIFTFORMER_STAGE_TOKENS = tuple(row["tokens"] for row in stage_shapes("swiftformer_xs", 224))


def _log_token_axes(ax, ylabel: str, stage_tokens, n_lo: float, n_hi: float, label_stages: bool = False):
    """Log-log axes against the token count: decades labelled as plain numbers (no crowded minor labels),
    SwiftFormer's stage token counts in [n_lo, n_hi] dotted and, if ``label_stages``, labelled at the top."""
    ax.set(xscale="log", yscale="log", ylabel=ylabel,
           xlabel="tokens N" + (" (dotted: SwiftFormer's stages)" if label_stages else ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)
    for n in stage_tokens:
        if n_lo <= n <= n_hi:
            ax.axvline(n, color="grey", lw=0.8, ls=":")
            if label_stages:
                _label_vline(ax, n, str(n), 0, n_lo, n_hi, color="grey")


def _label_vline(ax, x: float, text: str, row: int, x_lo: float, x_hi: float, **style):
    """Horizontal label beside the vertical line at ``x``, in text row ``row`` below the top of the axes;
    it sits left of the line in the right part of the (log) axis, so that it never runs off the panel."""
    right_part = np.log(x / x_lo) > 0.6 * np.log(x_hi / x_lo) if x_hi > x_lo else False
    ax.annotate(text, (x, 1), xycoords=("data", "axes fraction"), xytext=(-3 if right_part else 3, -4 - 11 * row),
                textcoords="offset points", fontsize=7, va="top", ha="right" if right_part else "left",
                bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8), **style)


def token_steps(n_max: int = 16384, per_octave: int = 4, stage_tokens=SWIFTFORMER_STAGE_TOKENS) -> list[int]:
    """Token counts for a slider, sorted: ``per_octave`` log-spaced steps per doubling from 1 to ``n_max``
    (each pixel of a linear 1..16384 slider would be ~130 tokens) plus SwiftFormer's stage counts, so
    that 49, 196, 784 and 3136 are reachable exactly."""
    grid = np.rint(2.0 ** (np.arange(int(np.log2(n_max) * per_octave) + 1) / per_octave)).astype(int)
    return sorted({*grid.tolist(), *(n for n in stage_tokens if n <= n_max), n_max})


# ============================================================ notebook 01: attention zoo
def plot_attention_costs(d: int = 48, heads: int = 1, batch: int = 1, n_max: int = 16384,
                         n_mark: int | None = None, bytes_per_element: int = 4):
    """Analytic MACs and activation memory of the four attentions against the token count N.

    Two log-log panels (MACs, memory in MiB) with one line per variant from
    :func:`swiftlib.attention.attention_macs` / :func:`~swiftlib.attention.attention_memory`;
    SwiftFormer's per-stage token counts are dotted, ``n_mark`` (if given) dashed and labelled.
    Returns the Figure (nothing is shown or saved).
    """
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    ns = np.unique(np.geomspace(1, n_max, 200).astype(int))
    fig, (ax_macs, ax_mem) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for name in VARIANTS:
        h = variant_heads(name, heads)
        colour, label = VARIANT_STYLE[name]
        ax_macs.plot(ns, [batch * attention_macs(name, int(n), d, h) for n in ns], color=colour, label=label)
        ax_mem.plot(ns, [attention_memory(name, int(n), d, h, batch=batch, bytes_per_element=bytes_per_element)
                         / 2**20 for n in ns], color=colour, label=label)
    for ax, ylabel in ((ax_macs, "multiply-accumulates (MACs)"), (ax_mem, "activation memory (MiB)")):
        _log_token_axes(ax, ylabel, SWIFTFORMER_STAGE_TOKENS, 1, n_max)
        if n_mark is not None:
            ax.axvline(n_mark, color="black", lw=1.2, ls="--")
            _label_vline(ax, n_mark, f"N = {n_mark}", 0, 1, n_max)
    ax_macs.set_title(f"MACs, d={d}, heads={heads}, batch={batch}")
    ax_mem.set_title("intermediate activations (analytic)")
    ax_macs.legend(fontsize=8, loc="lower right")  # the curves rise to the right: that corner stays empty
    return fig


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
            ax.set(xlabel="channel", ylabel="channel")
        ax.set_title(title, fontsize=9)
    return fig


# ============================================================ notebook 02: attention costs
#: Line style of each sweep contender: (colour, label, line style).
SWEEP_STYLE = {**{k: (c, lbl, "-") for k, (c, lbl) in VARIANT_STYLE.items()},
               "timm_additive": ("tab:blue", "timm additive (peer)", "--"),
               "additive_inference": ("tab:blue", "additive, inference module", "-."),
               "additive_matmuls": ("tab:blue", "additive: its matrix products alone", ":")}


def plot_sweep(points, crossovers=(), stage_tokens=SWIFTFORMER_STAGE_TOKENS, title: str = ""):
    """Measured latency and peak memory of the attentions against the token count, log-log.

    ``points`` are the dicts of :func:`swiftlib.bench.attention_sweep` (``variant``, ``n``,
    ``median_ms``, ``iqr_ms`` and optionally ``peak_bytes``); each variant is a line with IQR error
    bars, styled by :data:`SWEEP_STYLE` (timm's peer dashed, swiftlib's inference module dash-dotted,
    its matrix products alone dotted), explained in a legend below the latency panel. ``crossovers``
    (dicts with ``a``, ``b``, ``n``, ``key`` as from :func:`swiftlib.bench.sweep_crossovers`) are dashed
    on the panel of their ``key``, each labelled in its own text row; SwiftFormer's per-stage token
    counts (:data:`SWIFTFORMER_STAGE_TOKENS`) are dotted and labelled at the top. Returns the Figure.
    """
    if not points:
        raise ValueError("plot_sweep needs at least one measured point")
    has_mem = any("peak_bytes" in p for p in points)
    fig, axes = plt.subplots(1, 2 if has_mem else 1, figsize=(11 if has_mem else 6, 5), constrained_layout=True,
                             squeeze=False)
    panels = list(zip(axes[0], ("median_ms", "peak_bytes"), ("latency (ms, median, IQR bars)", "peak memory (MiB)"),
                      (title or "measured latency", "peak memory of one forward")))  # one panel without memory
    ax_t = axes[0, 0]
    for v in dict.fromkeys(p["variant"] for p in points):
        colour, label, ls = SWEEP_STYLE.get(v, ("black", v, "-"))
        pts = sorted((p for p in points if p["variant"] == v), key=lambda p: p["n"])
        ns = [p["n"] for p in pts]
        ax_t.errorbar(ns, [p["median_ms"] for p in pts], yerr=[p.get("iqr_ms", 0) / 2 for p in pts],
                      color=colour, ls=ls, marker="o", ms=3, capsize=2, label=label)
        if has_mem and all("peak_bytes" in p for p in pts):
            axes[0, 1].plot(ns, [p["peak_bytes"] / 2**20 for p in pts], color=colour, ls=ls, marker="o", ms=3)
    n_lo, n_hi = min(p["n"] for p in points), max(p["n"] for p in points)
    for ax, key, ylabel, panel_title in panels:
        ax.set_title(panel_title)
        _log_token_axes(ax, ylabel, stage_tokens, n_lo, n_hi, label_stages=True)
        marks = sorted((c for c in crossovers if c.get("key", "median_ms") == key), key=lambda c: c["n"])
        for row, c in enumerate(marks, 1):  # row 0 holds the stage labels
            ax.axvline(c["n"], color="black", lw=1, ls="--", alpha=0.6)
            _label_vline(ax, c["n"], f"{c['a']}={c['b']} at N≈{c['n']:.0f}", row, n_lo, n_hi)
    ax_t.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2)
    return fig


# ============================================================ notebook 03: the SwiftFormer family
def plot_stage_costs(costs: dict, title: str = ""):
    """Per-stage MACs of one SwiftFormer for several token mixers: one panel per stage, each on its own
    linear axis (so that the small late stages stay visible), one bar per attention with the
    convolutions hatched at the bottom and the mixer on top, labelled with the mixer's MMACs and its
    share of the stage.

    ``costs``: ``{attention: swiftlib.models.swiftformer_macs(...)}``; colours from
    :data:`VARIANT_STYLE`. Returns the Figure.
    """
    if not costs:
        raise ValueError("plot_stage_costs needs at least one {attention: swiftformer_macs(...)} entry")
    stages = next(iter(costs.values()))["stages"]
    fig, axes = plt.subplots(1, len(stages), figsize=(12, 3.6), constrained_layout=True, squeeze=False)
    for i, ax in enumerate(axes[0]):
        for j, (name, c) in enumerate(costs.items()):
            s, color = c["stages"][i], VARIANT_STYLE.get(name, ("tab:gray", name))[0]
            ax.bar(j, s["conv"] / 1e6, color=color, alpha=0.3, hatch="//", edgecolor=color)
            ax.bar(j, s["attention"] / 1e6, bottom=s["conv"] / 1e6, color=color)
            ax.annotate(f"{s['attention'] / 1e6:.1f}\n{s['attention'] / s['total']:.0%}", (j, s["total"] / 1e6),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(costs)), list(costs), fontsize=8, rotation=20)
        ax.margins(y=0.2)
        ax.set_title(f"stage {s['stage']}: N={s['tokens']:,}, D={s['channels']}", fontsize=9)
    axes[0][0].set_ylabel("MMACs (hatched: convolutions)")
    fig.suptitle((title or "MACs per stage") + "; labels: mixer MMACs, share of the stage", fontsize=10)
    return fig


def separate_labels(ax, offset=(3, -9)) -> None:
    """Move each text annotation of ``ax`` that overlaps an earlier one to ``offset`` points below its point."""
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for text in ax.texts:
        if any(text.get_window_extent(renderer).overlaps(box) for box in placed):
            text.set_position(offset)
        placed.append(text.get_window_extent(renderer))


def _scatter_labelled(ax, points) -> None:
    """``points``: ``(x, y, label, colour)`` tuples, drawn and labelled."""
    for x, y, label, color in points:
        ax.scatter(x, y, color=color, s=25)
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")


def plot_accuracy_vs_latency(paper_rows, measured_rows, title: str = "",
                             measured_xlabel: str = "latency, CPU, batch 1 (ms, median, measured)",
                             measured_title: str = "measured (top-1 from the paper)"):
    """Two panels, top-1 (paper) against latency: the paper's iPhone 14 Neural Engine (left) and
    measured latencies (right; say where with ``measured_xlabel`` / ``measured_title``).

    ``paper_rows``: dicts with ``model``, ``family``, ``iphone14_ne_latency_ms``, ``top1``
    (data/paper_table2.csv). ``measured_rows``: dicts with ``model`` (a paper name), ``latency_ms``,
    ``top1`` and optional ``label``. SwiftFormers are drawn in blue; overlapping labels are moved
    below their points. Returns the Figure.
    """
    if not paper_rows:
        raise ValueError("plot_accuracy_vs_latency needs the paper rows (data/paper_table2.csv)")
    colors = {"swiftformer": "tab:blue", "hybrid": "tab:orange", "convnet": "tab:green", "transformer": "tab:red"}
    fig, (ax_p, ax_m) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    _scatter_labelled(ax_p, [(float(r["iphone14_ne_latency_ms"]), float(r["top1"]), r["model"],
                              colors.get(r.get("family", ""), "tab:gray")) for r in paper_rows])
    ax_p.set(xlabel="latency, iPhone 14 Neural Engine (ms, paper)", ylabel="ImageNet-1K top-1 (%, paper)")
    ax_p.set_title("paper, Table 2", fontsize=10)
    _scatter_labelled(ax_m, [(float(r["latency_ms"]), float(r["top1"]), r.get("label", r["model"]),
                              "tab:blue" if str(r["model"]).startswith("SwiftFormer") else "tab:orange")
                             for r in measured_rows])
    ax_m.set_xlabel(measured_xlabel)
    ax_m.set_title(measured_title, fontsize=10)
    for ax in (ax_p, ax_m):
        ax.grid(alpha=0.3)
        separate_labels(ax)
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
        ax_l.plot(*zip(*steps), color="0.75", lw=0.8, label="train loss (step)")
    for ax, metric, unit in ((ax_l, "loss", ""), (ax_a, "top1", " %")):
        for key, style in ((f"train_{metric}", "o-"), (f"val_{metric}", "s--")):
            pts = [(e, r[key]) for e, r in zip(ep, history) if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=key.replace("_", " ") + unit)
    ax_l.set(xlabel="epoch", ylabel="loss")
    ax_a.set(xlabel="epoch", ylabel="top-1 %", ylim=(0, 100))
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
    ax.set(xlabel="predicted", ylabel="true")
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
    scale, shift = (np.asarray(v, dtype=np.float32)[None, :, None, None] for v in (std, mean))
    imgs = np.clip((imgs * scale + shift).transpose(0, 2, 3, 1), 0, 1)  # [B, C, H, W] -> [B, H, W, C]
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
    y, h = np.arange(len(ops)), 0.8 / len(names)
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
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="paper Table 2 latency, iPhone 14 NE (ms)",
           ylabel=f"measured median latency, {compute_units} (ms)")
    ax.legend(loc="upper left", fontsize=8)
    devices = sorted({p[3] for p in pts})
    ax.set_title(title or ("measured vs paper" + (f": {', '.join(devices)}" if devices else "")), fontsize=10)
    return fig
