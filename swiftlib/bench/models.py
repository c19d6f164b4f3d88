"""The model benchmark (notebook 03): SwiftFormer end to end against timm's on the same weights.

Shapes: images ``x [B, 3, H, W]`` (``H = W = img``) -> logits ``[B, K]``.

Contenders (every latency of one batch size comes from one interleaved run, so the ratios are what
to read): ``timm`` (timm's ``swiftformer_*``, eager), ``swiftlib`` (unfused eager),
``swiftlib_fused`` (:func:`~swiftlib.models.fuse_for_inference`: folded BN / layer scales, the
attention inference modules, channels_last), ``swiftlib_fused_nchw`` (folding only),
``swiftlib_fused_compiled`` (``torch.compile`` of the fused model); in ONNX Runtime (CPU, every batch
size: both files have a dynamic batch axis) ``swiftlib_fused_onnxruntime`` -- the very file
``python -m swiftlib.export onnx`` writes, made by :func:`swiftlib.export.to_onnx` -- beside
``timm_onnxruntime``, timm's model exported the way timm's users do (:func:`swiftlib.export.to_onnx_peer`,
timm's own ``onnx_export``); at batch 1 also peers from timm / torchvision and the attention-swap ablation.
:func:`named_ratios` names each ratio for ``--expect``.

Weights: random (seeded), timm's initialisation; the BatchNorms get the running statistics of real
activations from a few train-mode forward passes over random images (:func:`settle_batchnorm`), so
that folding them is not a no-op; swiftlib's model loads timm's state dict.
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import onnx
import timm
import torch
import torchvision
from torch import nn
from tqdm.auto import tqdm

from swiftlib.attention import VARIANTS
from swiftlib.bench.common import known_names, positive_sorted
from swiftlib.export import ort_session, to_onnx, to_onnx_peer
from swiftlib.flops import count_macs
from swiftlib.measure import resolve_device, time_interleaved
from swiftlib.models import (PAPER_NAMES, create_model, fuse_for_inference, load_checkpoint, resolve_name,
                             swiftformer_macs)

__all__ = ["MODEL_PEERS", "settle_batchnorm", "models_benchmark", "named_ratios"]

MODEL_PEERS: dict[str, dict[str, Any]] = {
    "mobilevitv2_100@256": {"library": "timm", "name": "mobilevitv2_100", "img": 256, "paper": "MobileViT-v2 x1.0"},
    "mobilevitv2_100@224": {"library": "timm", "name": "mobilevitv2_100", "img": 224, "paper": "MobileViT-v2 x1.0"},
    "efficientformer_l1": {"library": "timm", "name": "efficientformer_l1", "img": 224, "paper": "EfficientFormer-L1"},
    "mobilenet_v2": {"library": "torchvision", "name": "mobilenet_v2", "img": 224, "paper": "MobileNet-v2 x1.0"},
}

#: Products that :func:`swiftlib.flops.count_macs` counts and fvcore's default handlers skip (see
#: the ``matmul`` column in :mod:`swiftlib.flops`); the paper's GMACs leave them out.
_NOT_IN_FVCORE_DEFAULT = ("scaled_dot_product_attention",)
#: train-mode forward passes that give timm's model its BatchNorm statistics (:func:`settle_batchnorm`)
_BN_PASSES = 4
#: the contenders whose logits are checked against timm's
_CHECKED = ("swiftlib", "swiftlib_fused", "swiftlib_fused_nchw", "swiftlib_fused_compiled",
            "swiftlib_fused_onnxruntime", "timm_onnxruntime")


def _fvcore_gmacs(model: nn.Module, img: int) -> float:
    """fvcore's default count (the paper's convention) of one 1 x 3 x img x img forward, in GMACs: the
    ``matmul`` column of :func:`swiftlib.flops.count_macs` without the products fvcore's defaults skip."""
    c = count_macs(model, torch.zeros(1, 3, img, img))
    return (c["matmul"] - sum(c["by_op"].get(op, 0) for op in _NOT_IN_FVCORE_DEFAULT)) / 1e9


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_peer(key: str) -> nn.Module:
    spec = MODEL_PEERS[key]
    if spec["library"] == "torchvision":
        return getattr(torchvision.models, spec["name"])(weights=None).eval()
    return timm.create_model(spec["name"], pretrained=False).eval()


@torch.no_grad()
def settle_batchnorm(model: nn.Module, img: int, passes: int = 4, batch: int = 8, seed: int = 0) -> nn.Module:
    """Give a freshly built model's BatchNorms running statistics of real activations, in place.

    A new network has ``running_mean = 0, running_var = 1``: its BatchNorms are (almost) the identity
    in eval mode and folding them would prove nothing. ``passes`` forward passes in train mode over
    random images ``[batch, 3, img, img]`` (seeded) move every running mean and variance towards
    the statistics of the activations (BatchNorm's default momentum, 0.1). Returns ``model`` in eval mode.
    """
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(passes):
        model(torch.randn(batch, 3, img, img, generator=gen))
    return model.eval()


def _ablation_models(name: str, img: int, seed: int) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """The fused model with each attention of :data:`swiftlib.attention.VARIANTS` in all stages, and its facts."""
    fused, info = {}, {}
    for v in VARIANTS:
        torch.manual_seed(seed)
        m = create_model(name, attention=v).eval()
        fused[f"ablation_{v}"] = fuse_for_inference(m)
        info[f"ablation_{v}"] = {
            "params": _n_params(m), "gmacs": _fvcore_gmacs(m, img), "img": img, "attention": v,
            # fvcore's default handlers skip scaled_dot_product_attention; the analytic count does not
            "analytic_gmacs": swiftformer_macs(name, img, attention=v)["total"] / 1e9}
    return fused, info


def _models_info(name: str, img: int, ref: nn.Module, fused_nchw: nn.Module,
                 peers: dict[str, nn.Module]) -> dict[str, dict[str, Any]]:
    """Parameters and GMACs (fvcore's default count) of timm's model, swiftlib's fused one and the peers."""
    info = {"timm": {"params": _n_params(ref), "gmacs": _fvcore_gmacs(ref, img), "img": img, "paper": PAPER_NAMES[name]},
            "swiftlib_fused": {"params": _n_params(fused_nchw), "gmacs": _fvcore_gmacs(fused_nchw, img), "img": img}}
    for p, m in peers.items():
        spec = MODEL_PEERS[p]
        info[p] = {"params": _n_params(m), "gmacs": _fvcore_gmacs(m, spec["img"]), "img": spec["img"],
                   "paper": spec["paper"], "source": f"{spec['library']}.{spec['name']}"}
    return info


def _onnx_opset(path: Path) -> int:
    """The default-domain opset the ``.onnx`` file ``path`` declares."""
    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _onnx_contenders(name: str, ours: nn.Module, ref: nn.Module, img: int, threads: int
                     ) -> tuple[dict[str, Callable[[torch.Tensor], torch.Tensor]], dict[str, dict[str, Any]]]:
    """swiftlib's model exported by :func:`swiftlib.export.to_onnx` and timm's by
    :func:`swiftlib.export.to_onnx_peer` (input ``image`` ``[B, 3, img, img]``, output ``logits``
    ``[B, K]``, ``B`` dynamic), each opened with :func:`swiftlib.export.ort_session`.

    Returns ``(contenders, files)``: ``contenders[k](x)`` runs the session on ``x [B, 3, img, img]``;
    ``files[k]`` records the exporter, opset and file name. The files live in a temporary folder
    (a session keeps its model in memory)."""
    sources = {"swiftlib_fused_onnxruntime": ("to_onnx", ours, f"{name}_swiftlib.onnx",
                                              "swiftlib's model, fused, export-friendly map form "
                                              "(what python -m swiftlib.export onnx writes)"),
               "timm_onnxruntime": ("to_onnx_peer", ref, f"{name}_timm.onnx",
                                    "timm's model, the same weights, exported by timm.utils.onnx.onnx_export")}
    contenders, files = {}, {}
    with tempfile.TemporaryDirectory(prefix="swiftlib-bench-onnx-") as tmp:
        for key, (exporter, model, file, what) in sources.items():
            export = to_onnx if exporter == "to_onnx" else to_onnx_peer
            path = export(model, Path(tmp) / file, img_size=img)
            sess = ort_session(path, threads)
            feed = sess.get_inputs()[0].name
            contenders[key] = lambda x, sess=sess, feed=feed: torch.from_numpy(sess.run(None, {feed: x.numpy()})[0])
            files[key] = {"exporter": f"swiftlib.export.{exporter}", "file": file, "opset": _onnx_opset(path),
                          "input_shape": ["batch", 3, img, img], "model": what}
    return contenders, files


def _logit_diffs(contenders: dict[str, tuple[Callable, torch.Tensor]], expected: torch.Tensor) -> dict[str, float]:
    """``max |logits - timm's|`` of each checked contender."""
    out = {}
    with torch.no_grad():
        for k in _CHECKED:
            if k in contenders:
                m, x = contenders[k]
                out[k] = float((torch.as_tensor(m(x)).float().cpu() - expected).abs().max())
    return out


def _batch_contenders(b: int, x: torch.Tensor, base: dict[str, nn.Module], onnx_runs: dict[str, Callable],
                      extra_at_1: dict[str, tuple], compile: bool, errors: dict[str, str]
                      ) -> dict[str, tuple[Callable, torch.Tensor]]:
    """``{name: (callable, its input)}`` at batch size ``b``: the base models, the compiled fused model,
    the ONNX Runtime pair and, at batch 1, the ``extra_at_1`` contenders (peers, ablation)."""
    contenders = {k: (m, x) for k, m in base.items()}
    if compile:
        try:
            compiled = torch.compile(base["swiftlib_fused"])
            with torch.no_grad():
                compiled(x)
            contenders["swiftlib_fused_compiled"] = (compiled, x)
        except Exception as e:  # no compiler toolchain etc.: record, keep going
            errors[f"compile@{b}"] = f"{type(e).__name__}: {e}"[:500]
    contenders.update({k: (run, x.cpu()) for k, run in onnx_runs.items()})
    if b == 1:
        contenders.update(extra_at_1)
    return contenders


def _onnx_pair(name: str, ours: nn.Module, ref: nn.Module, img: int, dev: torch.device, threads: int, onnx: bool
               ) -> tuple[dict[str, Callable], dict[str, Any], dict[str, str]]:
    """The ONNX Runtime contenders (CPU only), what their files are, and the errors met (an export that
    fails is recorded, not raised)."""
    if not (onnx and dev.type == "cpu"):
        return {}, {}, {}
    try:
        runs, files = _onnx_contenders(name, ours, ref, img, threads)
        return runs, {**files, "onnxruntime": importlib.metadata.version("onnxruntime")}, {}
    except Exception as e:
        return {}, {}, {"onnx": f"{type(e).__name__}: {e}"[:500]}


def _extras_at_batch_1(img: int, dev: torch.device, peers: dict[str, nn.Module], ablation: dict[str, nn.Module],
                       seed: int) -> dict[str, tuple]:
    """The contenders timed at batch 1 only (peers at their own resolution, the ablation) with their inputs."""
    x = torch.randn(1, 3, img, img, generator=torch.Generator().manual_seed(seed)).to(dev)
    extra: dict[str, tuple] = {}
    for p, m in peers.items():
        s = MODEL_PEERS[p]["img"]
        extra[p] = (m, torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(seed)).to(dev))
    extra.update({k: (m, x) for k, m in ablation.items()})
    return extra


def _ratios(latency: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{b: {"<contender>_over_timm": median / timm's median}}``, plus the ONNX Runtime pair's own ratio."""
    ratios = {}
    for b, t in latency.items():
        base = t["timm"]["median_ms"]
        ratios[b] = {f"{k}_over_timm": round(v["median_ms"] / base, 4) for k, v in t.items() if k != "timm"}
        if "swiftlib_fused_onnxruntime" in t and "timm_onnxruntime" in t:
            ratios[b]["swiftlib_fused_onnxruntime_over_timm_onnxruntime"] = round(
                t["swiftlib_fused_onnxruntime"]["median_ms"] / t["timm_onnxruntime"]["median_ms"], 4)
    return ratios


def models_benchmark(name: str = "swiftformer_xs", batches: Sequence[int] = (1, 32), img: int = 224,
                     device: str = "cpu", peers: Sequence[str] | None = None, ablation: bool = True,
                     compile: bool = True, onnx: bool = True, rounds: int = 5, min_run_time: float = 2.0,
                     max_seconds: float = 60.0, threads: int | None = None, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Latency of swiftlib's SwiftFormer against timm's on the same (random, seeded) weights.

    The contenders (module docstring) are timed interleaved (:func:`swiftlib.measure.time_interleaved`)
    at every batch size, the ONNX Runtime pair (CPU only) too (both files have a dynamic batch axis).
    Each contender's logits are checked against timm's (``max_abs_diff_vs_timm``). Run the CLI as
    ``OMP_WAIT_POLICY=PASSIVE python -m swiftlib.bench models ...``: with the compiled contender's
    own OpenMP threads spinning between calls, eager latencies on a 2-core machine become erratic.
    Returns ``{"config", "models", "onnx", "latency", "ratios", "max_abs_diff_vs_timm", "errors"}``;
    ``ratios[b]`` holds ``<contender>_over_timm`` and ``swiftlib_fused_onnxruntime_over_timm_onnxruntime``.
    """
    dev = resolve_device(device)
    name = resolve_name(name)
    peers = known_names(peers, MODEL_PEERS, "peer")
    batches = positive_sorted(batches, "batch sizes")
    threads = torch.get_num_threads() if threads is None else threads
    torch.manual_seed(seed)
    ref = settle_batchnorm(timm.create_model(name, pretrained=False), img, passes=_BN_PASSES, seed=seed)
    ours = create_model(name).eval()
    load_checkpoint(ours, ref.state_dict())
    base = {"timm": ref, "swiftlib": ours, "swiftlib_fused": fuse_for_inference(ours),
            "swiftlib_fused_nchw": fuse_for_inference(ours, channels_last=False)}
    peer_models = {p: _build_peer(p) for p in peers}
    models_info = _models_info(name, img, ref, base["swiftlib_fused_nchw"], peer_models)
    ablation_models, ablation_info = _ablation_models(name, img, seed) if ablation else ({}, {})
    models_info.update(ablation_info)
    onnx_runs, onnx_files, errors = _onnx_pair(name, ours, ref, img, dev, threads, onnx)
    for m in (*base.values(), *peer_models.values(), *ablation_models.values()):
        m.to(dev)
    extra_at_1 = _extras_at_batch_1(img, dev, peer_models, ablation_models, seed)
    latency: dict[str, dict[str, Any]] = {}
    checks: dict[str, dict[str, float]] = {}
    for b in tqdm(batches, desc="batch sizes", disable=not progress):
        x = torch.randn(b, 3, img, img, generator=torch.Generator().manual_seed(seed)).to(dev)
        contenders = _batch_contenders(b, x, base, onnx_runs, extra_at_1, compile, errors)
        with torch.no_grad():
            checks[str(b)] = _logit_diffs(contenders, ref(x).float().cpu())
        fns = {k: (lambda m=m, xx=xx: m(xx)) for k, (m, xx) in contenders.items()}
        latency[str(b)] = time_interleaved(fns, device=dev, rounds=rounds, min_run_time=min_run_time,
                                           threads=threads, max_seconds=max_seconds)
    return {"config": {"model": name, "batches": batches, "img": img, "device": str(dev), "peers": peers,
                       "ablation": ablation, "rounds": rounds, "min_run_time": min_run_time,
                       "max_seconds": max_seconds, "seed": seed, "threads": threads,
                       "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")},
                       "weights": f"random (seeded), timm's initialisation; BatchNorm statistics from {_BN_PASSES} "
                                  "train-mode passes over random images; same weights for timm and every swiftlib "
                                  "contender"},
            "models": models_info, "onnx": onnx_files, "latency": latency, "ratios": _ratios(latency),
            "max_abs_diff_vs_timm": checks, "errors": errors}


def named_ratios(result: dict[str, Any]) -> dict[str, float]:
    """Every ratio of a model benchmark's result by the name ``--expect`` reads: ``<ratio>@<batch>`` for
    each key of ``result["ratios"][batch]``, e.g. ``swiftlib_fused_over_timm@1`` or
    ``swiftlib_fused_onnxruntime_over_timm_onnxruntime@1``."""
    return {f"{k}@{b}": r for b, rs in result["ratios"].items() for k, r in rs.items()}
