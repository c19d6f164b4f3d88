"""Benchmarks: latency and peak memory of any module, machine info, atomic JSON, and the CLI.

Core API (every subcommand builds on it):

* :func:`time_module` -- latency of ``fn(*inputs)`` with ``torch.utils.benchmark`` (warm-up, then
  median / IQR over timed blocks), threads recorded; :func:`time_interleaved` times several
  callables in alternating rounds so that a shared, noisy machine slows all of them alike, and
  :func:`paired_ratio` takes the ratio of two of them round by round.
* :func:`peak_memory` -- peak bytes of one forward. CUDA: ``torch.cuda.max_memory_allocated``
  above the memory in use before the call. CPU: a ``TorchDispatchMode`` that tracks the storages
  the ops of the call create (see :class:`LiveTensorMemory` for exactly what it counts).
* :func:`machine_info` -- CPU model, cores, threads, torch/timm versions, GPU name.
* :func:`steady_allocator` -- keep freed memory in the process (glibc), so that timings measure
  the kernels rather than the page faults of fresh allocations (``--malloc steady``).
* :func:`write_json` -- atomic write (temporary file in the same folder + ``os.replace``).
* :func:`fit_exponent` -- least-squares slope of ``log t`` against ``log n``.

Command line: ``python -m swiftlib.bench <subcommand> ...``. Subcommands are registered with the
:func:`command` decorator (see the comment above ``COMMANDS``); this module ships ``attention``.

Every performance claim is a ratio against a peer timed in the same run, never an absolute time.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark as tbench
from torch.utils._python_dispatch import TorchDispatchMode

from swiftlib.export import ort_session
from swiftlib.io import atomic_write_json

__all__ = [
    "machine_info",
    "steady_allocator",
    "resolve_device",
    "time_module",
    "time_interleaved",
    "paired_ratio",
    "peak_memory",
    "LiveTensorMemory",
    "fit_exponent",
    "write_json",
    "command",
    "COMMANDS",
    "main",
        "AdditiveMatmuls",
    "ADDITIVE_CONTENDERS",
]


from swiftlib.measure import (CLOCKS, MALLOC_MODES, LiveTensorMemory, fit_exponent, machine_info,  # noqa: E402
                              paired_ratio, peak_memory, resolve_device, steady_allocator, sync as _sync,
                              time_interleaved, time_module)


def _known(names: Sequence[str] | None, table, what: str) -> list[str]:
    """``names`` (all of ``table`` when None), each checked to be a key of ``table``."""
    names = list(table) if names is None else list(names)
    for name in names:
        if name not in table:
            raise ValueError(f"unknown {what} {name!r}; choose from {sorted(table)}")
    return names


def _positive_sorted(values: Sequence[int], what: str) -> list[int]:
    """Distinct ``values`` as sorted ints, all >= 1, or a ValueError naming ``what``."""
    out = sorted(set(int(v) for v in values))
    if not out or out[0] < 1:
        raise ValueError(f"{what} must be positive integers, got {out}")
    return out


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically: a temporary file in the same folder, then rename."""
    return atomic_write_json(path, payload)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 49,196,784, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


# =================================================================== subcommand registry
# How to add a subcommand: append a section at the END of this file, headed by a comment line
# "# ===...=== <name> (notebook NN)", with an options function and a run function:
#
#     def _models_args(p: argparse.ArgumentParser) -> None:           # the subcommand's own options
#         p.add_argument("--variant", default="xs")
#
#     @command("models", help="latency of the SwiftFormer variants", arguments=_models_args)
#     def _models_run(args: argparse.Namespace) -> dict:               # do the work, return a JSON-able dict
#         ...
#
# ``main`` gives every subcommand the shared options --device (validated), --threads and --json,
# calls the run function, adds machine info to the payload and writes it atomically when --json
# is given. Build on the core API above (time_interleaved, peak_memory, machine_info, write_json).
COMMANDS: dict[str, dict[str, Any]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register ``fn(args) -> dict`` as ``python -m swiftlib.bench <name>``; ``arguments(parser)`` adds its options."""
    def register(fn: Callable[[argparse.Namespace], dict]):
        if name in COMMANDS:
            raise ValueError(f"bench subcommand {name!r} is registered twice")
        COMMANDS[name] = {"run": fn, "help": help, "arguments": arguments}
        return fn
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m swiftlib.bench",
                                     description="swiftlib benchmarks: latency and memory as ratios against peers")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    for name, spec in COMMANDS.items():
        p = sub.add_parser(name, help=spec["help"], description=spec["help"])
        p.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default: cpu)")
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
        p.add_argument("--json", type=Path, default=None, help="write the results here (atomic)")
        p.add_argument("--malloc", choices=MALLOC_MODES, default="default",
                       help="'steady': glibc keeps freed memory for reuse, so timings do not depend on "
                            "page faults of fresh allocations (whole process; see steady_allocator)")
        if spec["arguments"] is not None:
            spec["arguments"](p)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, run the subcommand, return its payload (and write it with --json)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.device = str(resolve_device(args.device))
    except ValueError as e:
        parser.error(str(e))
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    malloc = steady_allocator() if args.malloc == "steady" else "default"
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.time()
    try:
        result = COMMANDS[args.command]["run"](args)
        machine = {**machine_info(args.device), "malloc": malloc}  # while --threads is in effect
    finally:
        torch.set_num_threads(threads_before)
    payload = {"command": args.command,
               "argv": list(sys.argv[1:] if argv is None else argv),
               "machine": machine,
               "created_unix": round(started),
               "wall_seconds": round(time.time() - started, 1),
               **result}
    if args.json is not None:
        write_json(args.json, payload)
        print(f"wrote {args.json}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    # Run as a script, this file is module ``__main__``; importing ``swiftlib.bench`` executes it
    # once more, completely, so every subcommand section below registers before ``main`` runs.
    import swiftlib.bench as _bench

    _bench.main()


# =================================================================== attention (notebook 02)
# Sweeps the four attentions of swiftlib.attention over token counts n, with timm's
# EfficientAdditiveAttention (on its native [B, C, H, W] input, H * W = n, same weights) as the peer.


def map_size(n: int) -> tuple[int, int]:
    """``(H, W)`` with ``H * W = n`` and ``H <= W`` as close to square as possible (56 x 56 for 3136)."""
    if n < 1:
        raise ValueError(f"token count n must be >= 1, got {n}")
    h = math.isqrt(n)
    while n % h:
        h -= 1
    return h, n // h


#: contenders of the sweep that time a form of swiftlib's own additive attention, not a variant of their own
OWN_ADDITIVE_FORMS = ("additive_reparameterized", "additive_matmuls")
#: contenders of the sweep that compute swiftlib's additive attention (its analytic costs apply)
ADDITIVE_CONTENDERS = ("timm_additive", *OWN_ADDITIVE_FORMS)


class TimmAdditiveOnTokens(nn.Module):
    """timm's ``EfficientAdditiveAttention`` as the peer: ``forward(x_map)`` with ``x_map [B, C, H, W]``.

    Built with ``in_dims = token_dim = D`` (as in SwiftFormer) and loaded with the state dict of a
    swiftlib :class:`~swiftlib.attention.EfficientAdditiveAttention`, so both compute the same function.
    """

    def __init__(self, ours: nn.Module):
        super().__init__()
        from timm.models.swiftformer import EfficientAdditiveAttention as TimmAdditive

        d = ours.dim
        self.m = TimmAdditive(in_dims=d, token_dim=d)
        qk_w, qk_b = ours.qk.weight.detach(), ours.qk.bias.detach()
        self.m.load_state_dict({
            "to_query.weight": qk_w[:d], "to_query.bias": qk_b[:d],
            "to_key.weight": qk_w[d:], "to_key.bias": qk_b[d:],
            "w_g": ours.w_g.detach(), "proj.weight": ours.proj.weight.detach(),
            "proj.bias": ours.proj.bias.detach(), "final.weight": ours.final.weight.detach(),
            "final.bias": ours.final.bias.detach()})

    def forward(self, x_map: torch.Tensor) -> torch.Tensor:
        return self.m(x_map)


class AdditiveMatmuls(nn.Module):
    """The matrix products of :class:`~swiftlib.attention.EfficientAdditiveAttention`'s inference form alone.

    Same shapes, layouts and BLAS calls as the reparameterized module
    (:meth:`~swiftlib.attention.EfficientAdditiveAttention.reparameterize`) on maps with at least as many
    tokens as channels (``N >= D``, every point of the sweep): ``qk`` ``[B*N, D] @ [D, 2D]``
    with its bias, ``Q w_g``, ``a^T Q`` and ``[Qhat | Khat] @ [W_f^T ; diag(G) W_p^T W_f^T]`` with its
    bias, on fixed operands, with no elementwise work in between. Its latency is a floor for any
    eager implementation of the same products: ``additive_reparameterized / additive_matmuls`` is the
    share the elementwise work and op dispatch add, and ``additive_matmuls / timm_additive`` the best
    ratio against timm these products allow. ``forward(x [B, N, D])`` returns every product
    (``[B, N, D]`` first; not the attention's value), so that a tracer such as fvcore sees them all.
    """

    def __init__(self, ours: nn.Module, batch: int, n: int):
        super().__init__()
        d = ours.dim
        g = torch.Generator().manual_seed(0)
        self.qk, self.w_g = ours.qk, ours.w_g
        self.register_buffer("scores", torch.rand(batch, n, generator=g))          # a, [B, N]
        self.register_buffer("w2", torch.randn(batch, d, 2 * d, generator=g))      # [W_f | W_f W_p diag(G)]
        self.register_buffer("bias", torch.randn(d, generator=g))                  # W_f b_p + b_f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qk = nn.functional.linear(x, self.qk.weight, self.qk.bias)                 # [B, N, 2D]
        q = qk.view(B * N, 2, D)[:, 0]                                             # [B*N, D]
        alpha = torch.mm(q, self.w_g)                                              # [B*N, 1]
        if B == 1:
            g = torch.mm(self.scores, q)                                           # [1, D]
            out = nn.functional.linear(qk, self.w2[0], self.bias)                  # [1, N, 2D] -> [1, N, D]
        else:
            g = torch.bmm(self.scores.view(B, 1, N), q.view(B, N, D))              # [B, 1, D]
            out = torch.bmm(qk, self.w2.transpose(1, 2)).add_(self.bias)           # [B, N, D]
        return out, qk, alpha, g


def attention_sweep(ns: Sequence[int], d: int = 48, heads: int = 1, batch: int = 1, device: str = "cpu",
                    variants: Sequence[str] | None = None, min_run_time: float = 0.5, rounds: int = 5,
                    max_seconds_per_point: float | None = 20.0, threads: int | None = None,
                    memory: bool = True, peer: bool = True, seed: int = 0, progress: bool = True,
                    clock: str = "wall", checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """Latency (and peak memory) of each attention variant at each token count in ``ns``.

    At every ``n`` the variants (and, when ``peer``, timm's additive attention ``"timm_additive"``,
    swiftlib's reparameterized for inference ``"additive_reparameterized"`` and the floor
    :class:`AdditiveMatmuls` ``"additive_matmuls"``) are timed interleaved (:func:`time_interleaved`)
    on ``x [batch, n, d]`` (timm: the same values as a ``[batch, d, H, W]`` map). ``heads`` applies to self and transposed attention.
    Returns ``{"config", "points", "exponents", "ratios", ...}``; ``points`` is one dict per
    (variant, n) with latency, ``peak_memory`` and the analytic MACs / activation bytes.

    ``checkpoint``: a JSON file rewritten (atomically) after every ``n``; a sweep started again
    with the same settings reuses the token counts it already holds (resume after an interruption).
    """
    from tqdm.auto import tqdm

    from swiftlib.attention import VARIANTS, attention_macs, attention_memory, build_attention, variant_heads

    dev = resolve_device(device)
    variants = _known(variants, VARIANTS, "attention variant")
    ns = _positive_sorted(ns, "token counts")
    if d < 1 or batch < 1 or heads < 1:
        raise ValueError(f"d, batch and heads must be >= 1, got d={d}, batch={batch}, heads={heads}")
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")

    config = {"n": ns, "d": d, "heads": heads, "batch": batch, "device": str(dev), "variants": variants,
              "peer": "timm.models.swiftformer.EfficientAdditiveAttention" if peer else None,
              "min_run_time": min_run_time, "rounds": rounds, "max_seconds_per_point": max_seconds_per_point,
              "seed": seed, "clock": clock, "threads": torch.get_num_threads() if threads is None else threads,
              "memory": memory}
    points: list[dict[str, Any]] = []
    checks: dict[str, float] = {}
    rep_checks: dict[str, float] = {}  # reparameterized vs as built, max abs difference
    done: set[int] = set()
    if checkpoint is not None and Path(checkpoint).exists():
        saved = json.loads(Path(checkpoint).read_text())
        same = {k: v for k, v in saved.get("config", {}).items() if k != "n"} == \
            {k: v for k, v in config.items() if k != "n"}
        if same:
            points = [p for p in saved["points"] if p["n"] in ns]
            checks = {k: v for k, v in saved.get("peer_max_abs_diff", {}).items() if int(k) in ns}
            rep_checks = {k: v for k, v in saved.get("reparameterized_max_abs_diff", {}).items() if int(k) in ns}
            done = {p["n"] for p in points}
    bar = tqdm(ns, desc="attention sweep", disable=not progress)
    for n in bar:
        if n in done:
            continue
        torch.manual_seed(seed)
        mods = {v: build_attention(v, d, num_heads=variant_heads(v, heads)).to(dev).eval() for v in variants}
        x = torch.randn(batch, n, d, generator=torch.Generator().manual_seed(seed)).to(dev)
        fns: dict[str, Callable] = {v: m for v, m in mods.items()}
        inputs: dict[str, torch.Tensor] = {v: x for v in variants}
        if peer:
            ours = mods.get("additive") or build_attention("additive", d).to(dev).eval()
            timm_m = TimmAdditiveOnTokens(ours.cpu()).to(dev).eval()
            ours.to(dev)
            h, w = map_size(n)
            x_map = x.transpose(1, 2).reshape(batch, d, h, w).contiguous()  # [B, N, D] -> [B, D, H, W]
            with torch.no_grad():
                diff = (timm_m(x_map).flatten(2).transpose(1, 2) - ours(x)).abs().max().item()
            checks[str(n)] = diff
            fns["timm_additive"] = timm_m
            inputs["timm_additive"] = x_map
            rep = copy.deepcopy(ours).reparameterize()  # the inference form (Proj merged into final)
            with torch.no_grad():
                rep_checks[str(n)] = (rep(x) - ours(x)).abs().max().item()
            fns["additive_reparameterized"] = rep
            inputs["additive_reparameterized"] = x
            fns["additive_matmuls"] = AdditiveMatmuls(ours, batch, n).to(dev).eval()
            inputs["additive_matmuls"] = x
        # one input tuple for all: each callable picks its own tensor
        wrapped = {k: (lambda f=f, k=k: f(inputs[k])) for k, f in fns.items()}
        bar.set_postfix(n=n)
        timing = time_interleaved(wrapped, device=dev, rounds=rounds, min_run_time=min_run_time,
                                  threads=threads, max_seconds=max_seconds_per_point, clock=clock)
        for k in fns:
            v = "additive" if k in ADDITIVE_CONTENDERS else k
            hk = variant_heads(v, heads)
            point = {"variant": k, "n": n, "d": d, "heads": hk, "batch": batch, **timing[k],
                     "analytic_macs": batch * attention_macs(v, n, d, hk),
                     "analytic_activation_bytes": attention_memory(v, n, d, hk, batch=batch)}
            if memory:
                mem = peak_memory(fns[k], inputs[k], device=dev)
                point.update({"peak_bytes": mem["peak_bytes"], "output_bytes": mem["output_bytes"],
                              "memory_method": mem["method"]})
            points.append(point)
        if checkpoint is not None:
            write_json(checkpoint, {"config": config, "points": points, "peer_max_abs_diff": checks,
                                    "reparameterized_max_abs_diff": rep_checks})
    points.sort(key=lambda p: p["n"])
    return {"config": config,
            "points": points,
            "peer_max_abs_diff": checks,
            "reparameterized_max_abs_diff": rep_checks,
            "crossovers": sweep_crossovers(points) + sweep_crossovers(points, "peak_bytes"),
            **summarize_sweep(points)}


_SWEEP_RATIOS = (("additive", "timm_additive"), ("additive_reparameterized", "timm_additive"), ("additive", "self"),
                 ("additive_matmuls", "timm_additive"), ("additive_matmuls", "additive_reparameterized"))


def _by_variant(points: Sequence[dict[str, Any]], key: str) -> dict[str, dict[int, Any]]:
    """``{variant: {n: point[key]}}`` over the points that have ``key``."""
    by: dict[str, dict[int, Any]] = {}
    for p in points:
        if key in p:
            by.setdefault(p["variant"], {})[p["n"]] = p[key]
    return by


def _ratios(by: dict[str, dict[int, Any]], ratio: Callable[[Any, Any], float]) -> dict[str, dict[str, float]]:
    return {f"{a}_over_{b}": {str(n): round(ratio(by[a][n], by[b][n]), 4) for n in sorted(by[a]) if n in by[b]}
            for a, b in _SWEEP_RATIOS if a in by and b in by}


def _exponents_and_ratios(points: Sequence[dict[str, Any]], key: str, fit_from: int) -> tuple[dict, dict]:
    by = _by_variant(points, key)
    exponents = {}
    for v, series in by.items():
        ns = [n for n in sorted(series) if n >= fit_from]
        exponents[v] = round(fit_exponent(ns, [series[n] for n in ns]), 3) if len(ns) >= 2 else None
    return exponents, _ratios(by, lambda a, b: a / b)


def _targets(exponents: dict, ratios: dict) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}
    r = ratios.get("additive_over_timm_additive", {}).get("3136")
    if r is not None:
        targets["additive_over_timm_at_3136"] = {"measured": r, "target": "<= 0.8", "met": r <= 0.8}
        rr = ratios.get("additive_reparameterized_over_timm_additive", {}).get("3136")
        if rr is not None:  # the same module in its inference form
            targets["additive_over_timm_at_3136"].update({"reparameterized": rr, "met_reparameterized": rr <= 0.8})
        floor = ratios.get("additive_matmuls_over_timm_additive", {}).get("3136")
        if floor is not None:  # the best ratio the shared matrix products allow
            targets["additive_over_timm_at_3136"]["matmul_floor"] = floor
    r = ratios.get("additive_over_self", {}).get("3136")
    if r is not None:
        targets["self_over_additive_at_3136"] = {"measured": round(1 / r, 2), "target": ">= 20", "met": 1 / r >= 20}
    for v in ("transposed", "separable", "additive"):
        if exponents.get(v) is not None:
            targets[f"exponent_{v}"] = {"measured": exponents[v], "target": "<= 1.1", "met": exponents[v] <= 1.1}
    return targets


def summarize_sweep(points: Sequence[dict[str, Any]], fit_from: int = 196) -> dict[str, Any]:
    """Fitted latency exponents (log-log slope over ``n >= fit_from``), ratios against the peers and
    the performance targets, from the medians; the same from the fastest run of each point
    (``*_min``), which on a shared machine is the least disturbed estimate of a kernel's cost; and
    the ratios and ratio targets taken round by round (``*_paired``, :func:`paired_ratio`)."""
    exponents, ratios = _exponents_and_ratios(points, "median_ms", fit_from)
    out: dict[str, Any] = {"exponents": exponents, "exponent_fit_from_n": fit_from, "ratios": ratios,
                           "targets": _targets(exponents, ratios)}
    if all("min_ms" in p for p in points):
        exponents_min, ratios_min = _exponents_and_ratios(points, "min_ms", fit_from)
        out.update({"exponents_min": exponents_min, "ratios_min": ratios_min,
                    "targets_min": _targets(exponents_min, ratios_min)})
    if all(p.get("round_medians_ms") for p in points):
        ratios_paired = _ratios(_by_variant(points, "round_medians_ms"), paired_ratio)
        out.update({"ratios_paired": ratios_paired, "targets_paired": _targets({}, ratios_paired)})
    return out


def _attention_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_int_list, default=[49, 196, 784, 3136, 12544],
                   help="comma-separated token counts (default: 49,196,784,3136,12544)")
    p.add_argument("--d", type=int, default=48, help="embedding dim D (default: 48, SwiftFormer's stage 1)")
    p.add_argument("--heads", type=int, default=1, help="heads of self / transposed attention (default: 1)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--variants", default=None, help="comma-separated subset of self,transposed,separable,additive")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per variant and n")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per n")
    p.add_argument("--max-seconds-per-point", type=float, default=20.0,
                   help="time budget of one (variant, n); slower points are timed as 3+ single calls")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time (default) or process CPU time (steadier on a shared CPU machine)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--no-peer", action="store_true", help="skip timm's EfficientAdditiveAttention")
    p.add_argument("--resume", action="store_true",
                   help="keep partial results in <json>.partial after every n and reuse them when run again")


@command("attention", help="latency, memory and scaling of the four attentions as tokens grow",
         arguments=_attention_args)
def _attention_run(args: argparse.Namespace) -> dict[str, Any]:
    variants = None if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.resume and args.json is None:
        raise SystemExit("--resume needs --json (the partial results are kept next to it)")
    partial = Path(f"{args.json}.partial") if args.resume else None
    result = attention_sweep(args.n, d=args.d, heads=args.heads, batch=args.batch, device=args.device,
                             variants=variants, min_run_time=args.min_run_time, rounds=args.rounds,
                             max_seconds_per_point=args.max_seconds_per_point, threads=args.threads,
                             memory=not args.no_memory, peer=not args.no_peer, clock=args.clock,
                             checkpoint=partial)
    if partial is not None:
        partial.unlink(missing_ok=True)  # main writes the complete file next
    print(f"{'variant':>24} {'n':>6} {'median ms':>10} {'IQR ms':>8} {'runs':>5} {'peak MB':>8}")
    for p in result["points"]:
        mb = f"{p['peak_bytes'] / 2**20:8.2f}" if "peak_bytes" in p else f"{'-':>8}"
        print(f"{p['variant']:>24} {p['n']:>6} {p['median_ms']:10.3f} {p['iqr_ms']:8.3f} {p['runs']:>5} {mb}")
    print("exponents (n >= 196):", result["exponents"])
    for k, r in result["ratios"].items():
        print(f"{k}:", r)
    for k, t in result["targets"].items():
        tm, tp = result.get("targets_min", {}).get(k), result.get("targets_paired", {}).get(k)
        extra = f"; from the fastest runs {tm['measured']}" if tm else ""
        extra += f"; round by round {tp['measured']}" if tp else ""
        if "reparameterized" in t:
            extra += (f"; reparameterized for inference {t['reparameterized']}: "
                      f"{'met' if t['met_reparameterized'] else 'NOT met'}")
        print(f"target {k}: measured {t['measured']} (target {t['target']}): {'met' if t['met'] else 'NOT met'}{extra}")
    print("crossovers:", [(c["a"], c["b"], c["n"]) for c in sweep_crossovers(result["points"])])
    return result


def find_crossovers(ns: Sequence[float], a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Token counts where series ``a`` and ``b`` (measured at sizes ``ns``) cross.

    Between two neighbouring sizes where ``a - b`` changes sign, the crossing is found by linear
    interpolation of ``log(a / b)`` against ``log(n)`` (both curves are close to power laws).
    A size where they are exactly equal counts once. Returns the crossings in increasing order.
    """
    if not (len(ns) == len(a) == len(b)):
        raise ValueError(f"find_crossovers needs equal lengths, got {len(ns)} sizes, {len(a)} and {len(b)} values")
    if min(list(a) + list(b), default=1) <= 0 or min(ns, default=1) <= 0:
        raise ValueError("find_crossovers needs positive sizes and values (log scale)")
    order = sorted(range(len(ns)), key=lambda i: ns[i])
    xs = [math.log(ns[i]) for i in order]
    rs = [math.log(a[i] / b[i]) for i in order]
    out: list[float] = []
    for i in range(len(xs)):
        if rs[i] == 0 and (not out or out[-1] != math.exp(xs[i])):
            out.append(math.exp(xs[i]))
        if i + 1 < len(xs) and rs[i] * rs[i + 1] < 0:
            t = rs[i] / (rs[i] - rs[i + 1])
            out.append(math.exp(xs[i] + t * (xs[i + 1] - xs[i])))
    return out


def sweep_series(points: Sequence[dict[str, Any]], key: str = "median_ms") -> dict[str, tuple[list[int], list[float]]]:
    """``{variant: (ns, values)}`` from a sweep's points, ``ns`` increasing."""
    return {v: (sorted(s), [s[n] for n in sorted(s)]) for v, s in _by_variant(points, key).items()}


def sweep_crossovers(points: Sequence[dict[str, Any]], key: str = "median_ms",
                     skip: Sequence[str] = OWN_ADDITIVE_FORMS) -> list[dict[str, Any]]:
    """Every crossing of every pair of variants in a sweep (``{"a", "b", "n", "key"}``), by n.

    ``skip``: series that are not attentions of their own (by default the matrix-product floor of
    :class:`AdditiveMatmuls` and the reparameterized form of the additive attention)."""
    series = sweep_series(points, key)
    names = [v for v in series if v not in skip]
    found = []
    for i, va in enumerate(names):
        for vb in names[i + 1:]:
            common = sorted(set(series[va][0]) & set(series[vb][0]))
            if len(common) < 2:
                continue
            ya = [series[va][1][series[va][0].index(n)] for n in common]
            yb = [series[vb][1][series[vb][0].index(n)] for n in common]
            found += [{"a": va, "b": vb, "n": round(n, 1), "key": key} for n in find_crossovers(common, ya, yb)]
    return sorted(found, key=lambda c: c["n"])


# =================================================================== train (notebook 04)
# Training throughput of swiftlib.train's loop against a plain timm-style loop (same model, same
# in-memory batches, same optimizer family, interleaved rounds), and data-loading throughput of a
# JPEG folder against its uint8 cache. Both are ratios measured in the same run.
class _SyntheticImages(torch.utils.data.Dataset):
    """``n`` fixed random images ``[3, size, size]`` with labels ``i % classes``: no decoding, no transform."""

    def __init__(self, n: int, size: int, classes: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)
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
    from swiftlib.models import create_model

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
            head, head_dist = model(x)
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
    from swiftlib.train import fit

    res = fit(train_dataset=ds, val_dataset=_SyntheticImages(batch, ds.images.shape[-1]), data="folder",
              model=model_name, recipe="subset", epochs=1, batch_size=batch, smoothing=0.0, img_size=ds.images.shape[-1],
              out=out, progress=False, seed=seed, device=device)
    return res["history"][-1]["img_per_s"]


def train_throughput(sizes: Sequence[int] = (64, 160, 224), batch: int = 16, steps: int = 4, rounds: int = 3,
                     model_name: str = "swiftformer_xs", device: str = "cpu") -> list[dict[str, Any]]:
    """img/s of fit's loop and of the plain loop per image size on ``device``, median of interleaved
    rounds, and their ratio. On CUDA both loops train in bf16 AMP and NHWC."""
    import tempfile as _tf

    rows = []
    for size in sizes:
        ds = _SyntheticImages(batch * steps, size)
        ours, plain = [], []
        with _tf.TemporaryDirectory() as tmp:
            for r in range(rounds):  # alternate the order so drift on a shared machine hits both alike
                pair = [lambda: ours.append(_swiftlib_fit_img_s(ds, batch, model_name, r, tmp, device)),
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


def data_loading_throughput(img_size: int = 128, cache_size: int = 144, images: int = 300, jpeg_size=(500, 375),
                            workers: int = 2, batch: int = 32, rounds: int = 3) -> dict[str, Any]:
    """img/s of three loaders over one JPEG folder, all giving normalised ``[B, 3, img_size, img_size]`` batches
    of the same augmentation (random resized crop 0.08-1 + flip):

    * ``jpeg``: decode every JPEG, timm's transform per image (in ``workers`` processes);
    * ``cache``: the uint8 cache, the same per-image transform;
    * ``cache_batch``: the uint8 cache, rows collated as they are and augmented per batch by
      :class:`swiftlib.data.BatchRandomResizedCrop`, all in the main process with torch's threads
      (what ``swiftlib.train`` does with in-memory data; reading a row is ~50x cheaper than decoding,
      so worker processes would only add transfers).

    Also the image access alone (decode vs memmap row, one process, no transform).
    """
    import tempfile as _tf

    from swiftlib import data as sdata

    tf = sdata.build_transform(img_size, True, color_jitter=0.0)
    batch_tf = sdata.BatchRandomResizedCrop(img_size)
    with _tf.TemporaryDirectory() as tmp:
        classes = [f"class{i}" for i in range(10)]
        root = sdata.write_image_folder(Path(tmp) / "jpeg", classes, images // 10, size=jpeg_size, splits=("train",))
        old = os.environ.get("SWIFTLIB_CACHE")
        os.environ["SWIFTLIB_CACHE"] = str(Path(tmp) / "cache")
        try:
            jpeg = sdata.build_dataset("folder", root, "train", img_size, transform=tf)
            t0 = time.perf_counter()
            cached = sdata.build_dataset("folder", root, "train", img_size, transform=tf, cache=True,
                                         cache_size=cache_size)
            build_s = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("SWIFTLIB_CACHE", None)
            else:
                os.environ["SWIFTLIB_CACHE"] = old
        raw = cached.raw_view()  # the same rows, uint8 as stored

        loaders = {k: torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=w,
                                                  persistent_workers=w > 0)
                   for k, ds, w in (("jpeg", jpeg, workers), ("cache", cached, workers), ("cache_batch", raw, 0))}

        def rate(name: str, loader) -> float:  # one full pass over the folder, workers already running
            gen = torch.Generator().manual_seed(0)
            t = time.perf_counter()
            n = 0
            for x, _ in loader:
                if name == "cache_batch":
                    x = batch_tf(x, gen)
                n += x.shape[0]
            return n / (time.perf_counter() - t)

        for name, loader in loaders.items():  # warm-up pass: start the workers, fill the page cache
            rate(name, loader)
        passes: dict[str, list[float]] = {name: [] for name in loaders}
        for r in range(rounds):
            for name in (list(loaders) if r % 2 == 0 else list(reversed(loaders))):
                passes[name].append(rate(name, loaders[name]))
        del loaders

        def load_rate(ds) -> float:  # decode (JPEG) or read (cache) only, one process, no transform
            t = time.perf_counter()
            for i in range(len(ds)):
                ds.load(i)
            return len(ds) / (time.perf_counter() - t)

        lj, lc = [], []
        for r in range(rounds):
            for name in (("jpeg", "cache") if r % 2 == 0 else ("cache", "jpeg")):
                (lj if name == "jpeg" else lc).append(load_rate(jpeg if name == "jpeg" else cached))
    j, c, cb = (statistics.median(passes[k]) for k in ("jpeg", "cache", "cache_batch"))
    load_j, load_c = statistics.median(lj), statistics.median(lc)
    print(f"data loading: JPEG {j:.0f} img/s, uint8 cache {c:.0f} img/s (ratio {c / j:.1f}), cache + batch "
          f"augmentation {cb:.0f} img/s (ratio {cb / j:.1f}); image access only: ratio {load_c / load_j:.1f}",
          file=sys.stderr)
    return {"images": len(jpeg), "jpeg_size_wh": list(jpeg_size), "img_size": img_size, "cache_size": cache_size,
            "workers": workers, "batch": batch, "rounds": rounds,
            "augmentation": "random resized crop (0.08-1) + flip + normalise, in every loader",
            "jpeg_img_s": round(j, 1), "cache_img_s": round(c, 1), "cache_batch_img_s": round(cb, 1),
            "ratio": round(c / j, 2), "ratio_batch": round(cb / j, 2), "cache_build_seconds": round(build_s, 2),
            "rounds_img_s": {k: [round(v, 1) for v in vs] for k, vs in passes.items()},
            "load_only": {"jpeg_img_s": round(load_j, 1), "cache_img_s": round(load_c, 1),
                          "ratio": round(load_c / load_j, 1),
                          "what": "image access without the transform: JPEG decode + RGB vs uint8 memmap row"},
            "note": "synthetic noisy JPEGs (quality 90) decode slower than typical photos of the same size"}


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=_int_list, default=[64, 160, 224], help="training image sizes (default 64,160,224)")
    p.add_argument("--model", default="swiftformer_xs")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-images", type=int, default=300, help="JPEGs in the data-loading comparison")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-data", action="store_true", help="only the training-loop comparison")
    p.add_argument("--skip-train", action="store_true", help="only the data-loading comparison")


@command("train", help="training img/s of swiftlib.train vs a plain loop; data loading JPEG vs uint8 cache",
         arguments=_train_args)
def _train_run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [] if args.skip_train else train_throughput(args.sizes, args.batch, args.steps, args.rounds, args.model,
                                                       args.device)
    out = {"model": args.model, "device": args.device, "train": rows,
           "goals": {"train_ratio_min": 1.0, "data_ratio_min": 5.0},
           "threads": torch.get_num_threads()}
    if not args.skip_data:
        out["data"] = data_loading_throughput(images=args.data_images, workers=args.workers)
    return out


# =================================================================== models (notebook 03)
# SwiftFormer end to end: swiftlib (unfused, fused, torch.compile, ONNX Runtime) against timm's
# swiftformer_* on the same weights, the attention-swap ablation, and peers from timm / torchvision.
# Every latency of one batch size comes from one interleaved run, so the ratios are what to read.
MODEL_PEERS: dict[str, dict[str, Any]] = {
    "mobilevitv2_100@256": {"library": "timm", "name": "mobilevitv2_100", "img": 256, "paper": "MobileViT-v2 x1.0"},
    "mobilevitv2_100@224": {"library": "timm", "name": "mobilevitv2_100", "img": 224, "paper": "MobileViT-v2 x1.0"},
    "efficientformer_l1": {"library": "timm", "name": "efficientformer_l1", "img": 224, "paper": "EfficientFormer-L1"},
    "mobilenet_v2": {"library": "torchvision", "name": "mobilenet_v2", "img": 224, "paper": "MobileNet-v2 x1.0"},
}
SWIFTFORMER_PAPER_NAMES = {"swiftformer_xs": "SwiftFormer-XS", "swiftformer_s": "SwiftFormer-S",
                           "swiftformer_l1": "SwiftFormer-L1", "swiftformer_l3": "SwiftFormer-L3"}


#: Products that :func:`swiftlib.flops.count_macs` counts and fvcore's default handlers skip (see
#: the ``matmul`` column in :mod:`swiftlib.flops`); the paper's GMACs leave them out.
_NOT_IN_FVCORE_DEFAULT = ("scaled_dot_product_attention",)


def _fvcore_gmacs(model: nn.Module, img: int) -> float:
    """fvcore's default count (the paper's convention) of one 1 x 3 x img x img forward, in GMACs: the
    ``matmul`` column of :func:`swiftlib.flops.count_macs` without the products fvcore's defaults skip."""
    from swiftlib.flops import count_macs

    c = count_macs(model, torch.zeros(1, 3, img, img))
    return (c["matmul"] - sum(c["by_op"].get(op, 0) for op in _NOT_IN_FVCORE_DEFAULT)) / 1e9


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_peer(key: str) -> nn.Module:
    spec = MODEL_PEERS[key]
    if spec["library"] == "torchvision":
        import torchvision

        return getattr(torchvision.models, spec["name"])(weights=None).eval()
    import timm

    return timm.create_model(spec["name"], pretrained=False).eval()


def _onnx_session(model: nn.Module, x: torch.Tensor, threads: int):
    """Export ``model`` (eval, CPU) to ONNX in memory and return a callable running it in ONNX Runtime."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}}, opset_version=17, dynamo=False)
        sess = ort_session(path, threads)
    feed = {"images": x.numpy()}
    return lambda: sess.run(None, feed)[0]


def models_benchmark(name: str = "swiftformer_xs", batches: Sequence[int] = (1, 32), img: int = 224,
                     device: str = "cpu", peers: Sequence[str] | None = None, ablation: bool = True,
                     compile: bool = True, onnx: bool = True, rounds: int = 5, min_run_time: float = 2.0,
                     max_seconds: float = 60.0, threads: int | None = None, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Latency of swiftlib's SwiftFormer against timm's on the same (random, seeded) weights.

    Contenders at every batch size, timed interleaved (:func:`time_interleaved`):
    ``timm`` (timm's ``name``, eager), ``swiftlib`` (unfused eager), ``swiftlib_fused`` (the
    default :func:`~swiftlib.models.fuse_for_inference`: folded BN / layer scales, channels_last),
    ``swiftlib_fused_nchw`` (folding only), ``swiftlib_fused_compiled`` (``torch.compile`` of the
    fused model), ``swiftlib_fused_onnxruntime`` (the fused model exported to ONNX, CPU only); at
    batch 1 also the ``peers`` (timm / torchvision, random weights) and, with ``ablation``, the
    fused model with each attention of :data:`swiftlib.attention.VARIANTS` in all stages.
    Each contender's logits are checked against timm's (``max_abs_diff_vs_timm``). Run the CLI as
    ``OMP_WAIT_POLICY=PASSIVE python -m swiftlib.bench models ...``: with the compiled contender's
    own OpenMP threads spinning between calls, eager latencies on a 2-core machine become erratic.
    Returns ``{"config", "models", "latency", "ratios"}``.
    """
    import timm
    from tqdm.auto import tqdm

    from swiftlib.attention import VARIANTS
    from swiftlib.models import create_model, fuse_for_inference, load_checkpoint, resolve_name
    from swiftlib.models.costs import swiftformer_macs

    dev = resolve_device(device)
    name = resolve_name(name)
    peers = _known(peers, MODEL_PEERS, "peer")
    batches = _positive_sorted(batches, "batch sizes")
    threads = torch.get_num_threads() if threads is None else threads

    torch.manual_seed(seed)
    ref = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # trained-looking BN statistics, so that folding them is not a no-op
        g = torch.Generator().manual_seed(seed)
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    ours = create_model(name).eval()
    load_checkpoint(ours, ref.state_dict())
    fused = fuse_for_inference(ours)
    fused_nchw = fuse_for_inference(ours, channels_last=False)
    models_info: dict[str, dict[str, Any]] = {}
    info_bar = tqdm(total=2 + len(peers) + (len(VARIANTS) if ablation else 0), desc="params / GMACs",
                    disable=not progress)
    models_info["timm"] = {"params": _n_params(ref), "gmacs": _fvcore_gmacs(ref, img), "img": img,
                           "paper": SWIFTFORMER_PAPER_NAMES[name]}
    info_bar.update()
    models_info["swiftlib_fused"] = {"params": _n_params(fused), "gmacs": _fvcore_gmacs(fused_nchw, img), "img": img}
    info_bar.update()
    peer_models = {}
    for p in peers:
        peer_models[p] = _build_peer(p)
        models_info[p] = {"params": _n_params(peer_models[p]), "gmacs": _fvcore_gmacs(peer_models[p], MODEL_PEERS[p]["img"]),
                          "img": MODEL_PEERS[p]["img"], "paper": MODEL_PEERS[p]["paper"],
                          "source": f"{MODEL_PEERS[p]['library']}.{MODEL_PEERS[p]['name']}"}
        info_bar.update()
    ablation_models = {}
    if ablation:
        for v in VARIANTS:
            torch.manual_seed(seed)
            m = create_model(name, attention=v).eval()
            ablation_models[f"ablation_{v}"] = fuse_for_inference(m)
            models_info[f"ablation_{v}"] = {
                "params": _n_params(m), "gmacs": _fvcore_gmacs(m, img), "img": img, "attention": v,
                # fvcore's default handlers skip scaled_dot_product_attention; the analytic count does not
                "analytic_gmacs": swiftformer_macs(name, img, attention=v)["total"] / 1e9}
            info_bar.update()
    info_bar.close()

    latency: dict[str, dict[str, Any]] = {}
    checks: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for b in tqdm(batches, desc="batch sizes", disable=not progress):
        x = torch.randn(b, 3, img, img, generator=torch.Generator().manual_seed(seed))
        contenders: dict[str, tuple[nn.Module | Callable, torch.Tensor | None]] = {
            "timm": (ref, x), "swiftlib": (ours, x), "swiftlib_fused": (fused, x), "swiftlib_fused_nchw": (fused_nchw, x)}
        if compile:
            try:
                compiled = torch.compile(fused)
                with torch.no_grad():
                    compiled(x)
                contenders["swiftlib_fused_compiled"] = (compiled, x)
            except Exception as e:  # no compiler toolchain etc.: record, keep going
                errors[f"compile@{b}"] = f"{type(e).__name__}: {e}"[:500]
        if onnx and dev.type == "cpu":
            try:
                contenders["swiftlib_fused_onnxruntime"] = (_onnx_session(fused_nchw, x, threads), None)
            except Exception as e:
                errors[f"onnx@{b}"] = f"{type(e).__name__}: {e}"[:500]
        if b == 1:
            for p, m in peer_models.items():
                s = MODEL_PEERS[p]["img"]
                contenders[p] = (m, torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(seed)))
            for k, m in ablation_models.items():
                contenders[k] = (m, x)
        moved = {}
        for k, (m, xx) in contenders.items():
            if isinstance(m, nn.Module):
                m.to(dev)
            moved[k] = (m, None if xx is None else xx.to(dev))
        with torch.no_grad():
            expected = ref(x.to(dev)).float().cpu()
            for k in ("swiftlib", "swiftlib_fused", "swiftlib_fused_nchw", "swiftlib_fused_compiled",
                      "swiftlib_fused_onnxruntime"):
                if k in moved:
                    m, xx = moved[k]
                    out = m() if xx is None else m(xx)
                    out = torch.as_tensor(out).float().cpu()
                    checks.setdefault(str(b), {})[k] = float((out - expected).abs().max())
        fns = {k: (m if xx is None else (lambda m=m, xx=xx: m(xx))) for k, (m, xx) in moved.items()}
        timing = time_interleaved(fns, device=dev, rounds=rounds, min_run_time=min_run_time, threads=threads,
                                  max_seconds=max_seconds)
        latency[str(b)] = timing

    ratios: dict[str, dict[str, float]] = {}
    for b, t in latency.items():
        base = t["timm"]["median_ms"]
        ratios[b] = {f"{k}_over_timm": round(v["median_ms"] / base, 4) for k, v in t.items() if k != "timm"}
    return {"config": {"model": name, "batches": batches, "img": img, "device": str(dev), "peers": peers,
                       "ablation": ablation, "rounds": rounds, "min_run_time": min_run_time,
                       "max_seconds": max_seconds, "seed": seed, "threads": threads,
                       "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")},
                       "weights": "random (seeded), timm's initialisation with random BN statistics; same weights "
                                  "for timm and every swiftlib contender"},
            "models": models_info, "latency": latency, "ratios": ratios,
            "max_abs_diff_vs_timm": checks, "errors": errors,
            "goal": {"swiftlib_fused_over_timm_at_batch_1_max": 0.8}}


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="swiftformer_xs",
                   help="swiftformer_xs|s|l1|l3, prefix optional (default: swiftformer_xs)")
    p.add_argument("--batches", type=_int_list, default=[1, 32], help="comma-separated batch sizes (default: 1,32)")
    p.add_argument("--img", type=int, default=224, help="image side in pixels (default: 224)")
    p.add_argument("--peers", default=None, help=f"comma-separated subset of {','.join(MODEL_PEERS)} ('' for none)")
    p.add_argument("--no-ablation", action="store_true", help="skip the attention-swap ablation")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    p.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per contender and batch size")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="time budget per contender and batch size; slower ones are timed as 3+ single calls")


@command("models", help="SwiftFormer latency: swiftlib (fused, compiled, ONNX Runtime) vs timm, ablation, peers",
         arguments=_models_args)
def _models_run(args: argparse.Namespace) -> dict[str, Any]:
    peers = None if args.peers is None else [p.strip() for p in args.peers.split(",") if p.strip()]
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and not (args.no_compile and args.no_onnx):
        # torch.compile's kernels bring a second OpenMP runtime; idle threads of one spin while the
        # other works, which slows the eager contenders timed next to them several-fold.
        print("note: run with OMP_WAIT_POLICY=PASSIVE (set before Python starts) for stable eager timings "
              "next to torch.compile / ONNX Runtime", file=sys.stderr)
    result = models_benchmark(args.model, batches=args.batches, img=args.img, device=args.device, peers=peers,
                              ablation=not args.no_ablation, compile=not args.no_compile, onnx=not args.no_onnx,
                              rounds=args.rounds, min_run_time=args.min_run_time, max_seconds=args.max_seconds,
                              threads=args.threads)
    print(f"{'contender':>28} {'batch':>5} {'median ms':>10} {'IQR ms':>8} {'runs':>5} {'/ timm':>7}")
    for b, t in result["latency"].items():
        for k, v in t.items():
            ratio = result["ratios"][b].get(f"{k}_over_timm", 1.0)
            print(f"{k:>28} {b:>5} {v['median_ms']:10.2f} {v['iqr_ms']:8.2f} {v['runs']:>5} {ratio:7.3f}")
    print("max |logits - timm|:", result["max_abs_diff_vs_timm"])
    if result["errors"]:
        print("errors:", result["errors"])
    return result
