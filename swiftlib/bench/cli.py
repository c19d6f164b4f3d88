"""Command line of the benchmarks: ``python -m swiftlib.bench attention|models|train [options]``.

Every subcommand takes ``--device``, ``--threads``, ``--json``, ``--malloc`` and ``--expect`` besides
its own options (:data:`COMMANDS`, one row per subcommand). :func:`main` checks every flag before
anything is measured (:mod:`swiftlib.bench.checks`), runs the subcommand, adds machine info, checks
the expectations and writes the payload atomically with ``--json``; :func:`cli` is ``main`` with
one-line answers (:func:`swiftlib.cli.run`): a bad flag or a library error is ``error: <message>``
on stderr and exit status 2, no traceback (``--debug`` or ``SWIFTLIB_DEBUG=1`` shows it).

``--expect 'NAME<=VALUE'`` (or ``>=``, repeatable; :func:`swiftlib.cli.parse_expectation`) states
what a figure the run computes should be, e.g.
``--expect 'additive_inference_over_timm_additive@3136<=0.8'``: each is printed as met / NOT met
and recorded under ``"expectations"`` in the JSON; the names are those of the subcommand's
``named_ratios`` (see each subcommand's ``--help``). A name the run does not compute is an error
(after the results are written). Nothing here holds a target of its own.

No tensors here: argument strings in, the payload dict (and its JSON file) out.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from swiftlib.bench import attention, data_loading, models, train
from swiftlib.bench.checks import check_args
from swiftlib.bench.common import int_list
from swiftlib.cli import (ArgumentParser, add_debug_argument, add_expect_argument, check_expectations,
                          print_expectations, require_known, run)
from swiftlib.io import atomic_write_json
from swiftlib.measure import CLOCKS, MALLOC_MODES, machine_info, steady_allocator

__all__ = ["PROG", "COMMANDS", "build_parser", "main", "cli"]

PROG = "python -m swiftlib.bench"


# =================================================================== attention
_ATTENTION_EXPECT = ("NAME is RATIO@N, the latency ratio of pooled medians at token count N, RATIO a key of the "
                     f"JSON's 'ratios' ({', '.join(f'{a}_over_{b}' for a, b in attention.SWEEP_RATIOS)}), e.g. "
                     "additive_inference_over_timm_additive@3136; RATIO@N:min from the fastest runs, RATIO@N:paired "
                     "round by round; exponent_VARIANT (and exponent_VARIANT:min), the fitted latency exponent, "
                     "e.g. exponent_additive")


def _attention_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int_list, default=[49, 196, 784, 3136, 12544],
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
    p.add_argument("--no-peer", action="store_true",
                   help="skip timm's EfficientAdditiveAttention, the inference module and its matrix products")
    p.add_argument("--resume", action="store_true",
                   help="keep partial results in <json>.partial after every n and reuse them when run again")


def _attention_run(args: argparse.Namespace) -> dict[str, Any]:
    partial = Path(f"{args.json}.partial") if args.resume else None
    result = attention.attention_sweep(args.n, d=args.d, heads=args.heads, batch=args.batch, device=args.device,
                                       variants=args.variants, min_run_time=args.min_run_time, rounds=args.rounds,
                                       max_seconds_per_point=args.max_seconds_per_point, threads=args.threads,
                                       memory=not args.no_memory, peer=not args.no_peer, clock=args.clock,
                                       checkpoint=partial)
    if partial is not None:
        partial.unlink(missing_ok=True)  # main writes the complete file next
    print(f"{'variant':>24} {'n':>6} {'median ms':>10} {'IQR ms':>8} {'runs':>5} {'peak MB':>8}")
    for p in result["points"]:
        mb = f"{p['peak_bytes'] / 2**20:8.2f}" if "peak_bytes" in p else f"{'-':>8}"
        print(f"{p['variant']:>24} {p['n']:>6} {p['median_ms']:10.3f} {p['iqr_ms']:8.3f} {p['runs']:>5} {mb}")
    print(f"exponents (n >= {result['exponent_fit_from_n']}):", result["exponents"])
    for k, r in result["ratios"].items():
        print(f"{k} (pooled medians):", r)
        for source, how in (("ratios_min", "fastest runs"), ("ratios_paired", "round by round")):
            if k in result.get(source, {}):
                print(f"    {how}:", result[source][k])
    print("crossovers:", [(c["a"], c["b"], c["n"]) for c in result["crossovers"] if c["key"] == "median_ms"])
    return result


# =================================================================== models
_MODELS_EXPECT = ("NAME is RATIO@B, a latency ratio at batch size B, RATIO a key of the JSON's 'ratios' "
                  "(CONTENDER_over_timm, e.g. swiftlib_fused_over_timm@1; at batch 1 also "
                  "swiftlib_fused_onnxruntime_over_timm_onnxruntime@1)")


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="swiftformer_xs",
                   help="swiftformer_xs|s|l1|l3, prefix optional (default: swiftformer_xs)")
    p.add_argument("--batches", type=int_list, default=[1, 32], help="comma-separated batch sizes (default: 1,32)")
    p.add_argument("--img", type=int, default=224, help="image side in pixels (default: 224)")
    p.add_argument("--peers", default=None,
                   help=f"comma-separated subset of {','.join(models.MODEL_PEERS)} ('' for none)")
    p.add_argument("--no-ablation", action="store_true", help="skip the attention-swap ablation")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-onnx", action="store_true",
                   help="skip ONNX Runtime (swiftlib.export.to_onnx's files of swiftlib's and timm's model)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    p.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per contender and batch size")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="time budget per contender and batch size; slower ones are timed as 3+ single calls")


def _models_run(args: argparse.Namespace) -> dict[str, Any]:
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE" and not (args.no_compile and args.no_onnx):
        # torch.compile's kernels bring a second OpenMP runtime; idle threads of one spin while the
        # other works, which slows the eager contenders timed next to them several-fold.
        print("note: run with OMP_WAIT_POLICY=PASSIVE (set before Python starts) for stable eager timings "
              "next to torch.compile / ONNX Runtime", file=sys.stderr)
    result = models.models_benchmark(args.model, batches=args.batches, img=args.img, device=args.device,
                                     peers=args.peers, ablation=not args.no_ablation, compile=not args.no_compile,
                                     onnx=not args.no_onnx, rounds=args.rounds, min_run_time=args.min_run_time,
                                     max_seconds=args.max_seconds, threads=args.threads)
    print(f"{'contender':>28} {'batch':>5} {'median ms':>10} {'IQR ms':>8} {'runs':>5} {'/ timm':>7}")
    for b, t in result["latency"].items():
        for k, v in t.items():
            ratio = result["ratios"][b].get(f"{k}_over_timm", 1.0)
            print(f"{k:>28} {b:>5} {v['median_ms']:10.2f} {v['iqr_ms']:8.2f} {v['runs']:>5} {ratio:7.3f}")
    print("max |logits - timm|:", result["max_abs_diff_vs_timm"])
    if result["errors"]:
        print("errors:", result["errors"])
    return result


# =================================================================== train
_TRAIN_EXPECT = ("NAME is train_ratio@SIZE (swiftlib.train's img/s over the plain loop's at image size SIZE, "
                 "e.g. train_ratio@224), data_ratio (uint8 cache over JPEG), data_ratio_batch (cache + batch "
                 "augmentation over JPEG) or data_load_only_ratio (image access alone)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int_list, default=[64, 160, 224], help="training image sizes (default 64,160,224)")
    p.add_argument("--model", default="swiftformer_xs")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-images", type=int, default=300, help="JPEGs in the data-loading comparison")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-data", action="store_true", help="only the training-loop comparison")
    p.add_argument("--skip-train", action="store_true", help="only the data-loading comparison")


def _train_run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [] if args.skip_train else train.train_throughput(args.sizes, args.batch, args.steps, args.rounds,
                                                             args.model, args.device)
    out = {"model": args.model, "device": args.device, "train": rows, "threads": torch.get_num_threads()}
    if not args.skip_data:
        out["data"] = data_loading.data_loading_throughput(images=args.data_images, workers=args.workers)
    return out


def _train_names(result: dict[str, Any]) -> dict[str, float]:
    named = train.named_ratios(result["train"])
    if "data" in result:
        named.update(data_loading.named_ratios(result["data"]))
    return named


# =================================================================== the table and main
#: subcommand -> its help, its own options, the function that runs it and the names --expect reads
COMMANDS: dict[str, dict[str, Any]] = {
    "attention": {"help": "latency, memory and scaling of the four attentions as tokens grow",
                  "arguments": _attention_args, "run": _attention_run, "names": attention.named_ratios,
                  "expect": _ATTENTION_EXPECT},
    "models": {"help": "SwiftFormer latency: swiftlib (fused, compiled, ONNX Runtime) vs timm, ablation, peers",
               "arguments": _models_args, "run": _models_run, "names": models.named_ratios,
               "expect": _MODELS_EXPECT},
    "train": {"help": "training img/s of swiftlib.train vs a plain loop; data loading JPEG vs uint8 cache",
              "arguments": _train_args, "run": _train_run, "names": _train_names, "expect": _TRAIN_EXPECT},
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; a bad or missing value is one ``error:`` line (exit status 2)."""
    parser = ArgumentParser(prog=PROG, description="swiftlib benchmarks: latency and memory as ratios against peers")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True
    for name, spec in COMMANDS.items():
        p = sub.add_parser(name, help=spec["help"], description=spec["help"])
        p.add_argument("--device", default="cpu", help="cpu, cuda[:index] or auto (default: cpu)")
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
        p.add_argument("--json", type=Path, default=None,
                       help="write the results here (atomic; the folder must exist)")
        p.add_argument("--malloc", choices=MALLOC_MODES, default="default",
                       help="'steady': glibc keeps freed memory for reuse, so timings do not depend on "
                            "page faults of fresh allocations (whole process; see swiftlib.measure.steady_allocator)")
        add_debug_argument(p)
        add_expect_argument(p, spec["expect"])
        spec["arguments"](p)
    return parser


def _run_measured(spec: dict[str, Any], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(result, machine info)`` of the subcommand, with ``--threads`` and ``--malloc`` in effect."""
    malloc = steady_allocator() if args.malloc == "steady" else "default"
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        result = spec["run"](args)
        machine = {**machine_info(args.device), "malloc": malloc}  # while --threads is in effect
    finally:
        torch.set_num_threads(threads_before)
    return result, machine


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse and check ``argv`` (a bad flag: one-line usage error, exit status 2, before any work), run
    the subcommand, return its payload (and write it with ``--json``). Errors of the run itself
    propagate (ValueError, OSError, ...); :func:`cli` answers them in one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        parser.error(str(e))
    spec = COMMANDS[args.command]
    started = time.time()
    result, machine = _run_measured(spec, args)
    named = spec["names"](result)
    expectations = check_expectations(args.expect, named)
    print_expectations(expectations)
    payload = {"command": args.command,
               "argv": list(sys.argv[1:] if argv is None else argv),
               "machine": machine,
               "created_unix": round(started),
               "wall_seconds": round(time.time() - started, 1),
               **result,
               "expectations": expectations}
    if args.json is not None:
        atomic_write_json(args.json, payload)
        print(f"wrote {args.json}", file=sys.stderr)
    try:
        require_known(args.expect, named)  # after the results are on disk: nothing measured is lost
    except ValueError as e:
        parser.error(str(e))
    return payload


def cli(argv: Sequence[str] | None = None) -> dict:
    """``python -m swiftlib.bench``: :func:`main` with every user error answered in one line, exit status 2."""
    return run(main, argv, prog=PROG)
