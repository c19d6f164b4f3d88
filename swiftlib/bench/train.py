"""The training-loop benchmark (notebook 04): img/s of :func:`swiftlib.train.fit` against a plain loop.

Shapes: images ``x [B, 3, S, S]`` (``S`` the image size), labels ``[B]``; the model's two heads give
logits ``[B, K]`` each.

Both loops train the same model on the same in-memory batches (:class:`_SyntheticImages`: no decoding,
no transform) with the same optimizer family, in interleaved rounds (the order alternates, so drift on
a shared machine hits both alike); the figure is the ratio of their median img/s.
:func:`named_ratios` names it for ``--expect``.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from swiftlib.models import create_model
from swiftlib.train import fit

__all__ = ["train_throughput", "named_ratios"]


class _SyntheticImages(torch.utils.data.Dataset):
    """``n`` fixed random images ``[3, size, size]`` with labels ``i % classes``: no decoding, no transform."""

    def __init__(self, n: int, size: int, classes: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)   # [n, 3, S, S]
        self.targets = [i % classes for i in range(n)]
        self.classes = [f"c{i}" for i in range(classes)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def _plain_loop_img_s(ds, batch: int, model_name: str, seed: int, device: str = "cpu") -> float:
    """The peer: DataLoader(shuffle) -> forward -> CE on both heads -> backward -> AdamW.step, timed like fit's epoch.

    On CPU as timm's train.py runs by default (NCHW, fp32, torch's default AdamW); on CUDA as it runs
    with ``--amp --channels-last`` (bf16 autocast, NHWC), the settings fit uses there.
    """
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=len(ds.classes)).train().to(dev)
    if gpu:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, pin_memory=gpu)
    seen, t0 = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            head, head_dist = model(x)                              # [B, K] each
            loss = 0.5 * (nn.functional.cross_entropy(head, y) + nn.functional.cross_entropy(head_dist, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # like fit, which reads every step's loss
        seen += x.shape[0]
    return seen / (time.perf_counter() - t0)


def _swiftlib_fit_img_s(ds, batch: int, model_name: str, seed: int, out: str, device: str = "cpu") -> float:
    """One epoch of :func:`swiftlib.train.fit` (subset recipe, no smoothing, its defaults: NHWC, fused AdamW,
    bf16 AMP on CUDA) on the same data; its own img/s."""
    res = fit(train_dataset=ds, val_dataset=_SyntheticImages(batch, ds.images.shape[-1]), data="folder",
              model=model_name, recipe="subset", epochs=1, batch_size=batch, smoothing=0.0, img_size=ds.images.shape[-1],
              out=out, progress=False, seed=seed, device=device)
    return res["history"][-1]["img_per_s"]


def train_throughput(sizes: Sequence[int] = (64, 160, 224), batch: int = 16, steps: int = 4, rounds: int = 3,
                     model_name: str = "swiftformer_xs", device: str = "cpu") -> list[dict[str, Any]]:
    """img/s of fit's loop and of the plain loop per image size on ``device``, median of interleaved
    rounds, and their ratio (``ratio`` = swiftlib / plain loop). On CUDA both loops train in bf16 AMP and NHWC."""
    rows = []
    for size in sizes:
        ds = _SyntheticImages(batch * steps, size)
        ours, plain = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):  # alternate the order so drift on a shared machine hits both alike
                run_dir = f"{tmp}/round{r}"  # a fresh run folder per round: no earlier run to warn about
                pair = [lambda: ours.append(_swiftlib_fit_img_s(ds, batch, model_name, r, run_dir, device)),
                        lambda: plain.append(_plain_loop_img_s(ds, batch, model_name, r, device))]
                for fn in (pair if r % 2 == 0 else pair[::-1]):
                    fn()
        o, p = statistics.median(ours), statistics.median(plain)
        rows.append({"img_size": size, "batch": batch, "steps_per_round": steps, "rounds": rounds, "device": device,
                     "amp": "bf16" if torch.device(device).type == "cuda" else None,
                     "swiftlib_img_s": round(o, 2), "plain_loop_img_s": round(p, 2), "ratio": round(o / p, 3),
                     "swiftlib_rounds": [round(v, 2) for v in ours], "plain_rounds": [round(v, 2) for v in plain]})
        print(f"train {model_name} {size}px on {device}: swiftlib {o:.1f} img/s, plain loop {p:.1f} img/s, "
              f"ratio {o / p:.2f}", file=sys.stderr)
    return rows


def named_ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The rows' ratios by the name ``--expect`` reads: ``train_ratio@<img_size>`` (swiftlib img/s over the
    plain loop's, higher is faster), e.g. ``train_ratio@224``."""
    return {f"train_ratio@{r['img_size']}": r["ratio"] for r in rows}
