"""``python -m swiftlib.export {coreml,block,sweep,inventory,compare,onnx,check} ...`` (``--help`` on each).

:func:`main` parses and checks the flags before any export starts (an unknown model, an image size
that is not a multiple of 32, an ``--out`` whose folder is missing or is a file, a missing checkpoint
or labels file, a labels file with the wrong number of names: each named in one line) and runs the
subcommand; :func:`cli` is ``main`` with one-line answers (:func:`swiftlib.cli.run`): a bad flag or a
library error prints ``python -m swiftlib.export: error: <message>`` on stderr and exits 2, with no
traceback (``--debug`` or ``SWIFTLIB_DEBUG=1`` shows it). ``check`` exits 1 when the package disagrees
with its torch model beyond the tolerance.

A checkpoint (``--checkpoint FILE``) is read with ``torch.load(weights_only=True)`` through
:mod:`swiftlib.models` only: nothing in the file runs. Its classifier sets the class count; its
``class_names`` (swiftlib training checkpoints hold them) label a Core ML package unless ``--labels``
is given.

``compare`` and ``onnx --time`` take ``--expect 'NAME<=VALUE'`` (or ``>=``; repeatable,
:func:`swiftlib.cli.add_expect_argument`): after the run each expectation on a computed figure is
printed as met / NOT met and recorded under ``"expectations"`` in the results JSON (the exit status
does not change). No tensors here: argument strings in, printed lines and an exit status out.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from swiftlib.attention import VARIANTS
from swiftlib.cli import (ArgumentParser, add_debug_argument, add_expect_argument, check_expectations,
                          print_expectations, require_known, run)
from swiftlib.export.check import check_mlpackage, format_check, reference_model
from swiftlib.export.common import (PRECISIONS, RESULTS_DIR, check_img_size, check_out_path, resolve_model,
                                    results_path, sample_images)
from swiftlib.export.coreml import to_coreml, to_coreml_block
from swiftlib.export.inventory import (COMPARE_FIGURES, OpInventory, format_inventory_table, inventory_vs_timm,
                                       op_inventory, write_inventory_results)
from swiftlib.export.onnx import EXPORTERS, ONNX_OPSET, check_onnx, onnx_latency, to_onnx, write_onnx_latency
from swiftlib.export.runtime import check_coreml, compute_plan, coreml_runtime
from swiftlib.export.sweep import MANIFEST_COLUMNS, export_sweep
from swiftlib.io import read_csv, write_csv
from swiftlib.models import checkpoint_num_classes, resolve_name

__all__ = ["PROG", "build_parser", "main", "cli"]

PROG = "python -m swiftlib.export"
_MODELS = "swiftformer_xs | swiftformer_s | swiftformer_l1 | swiftformer_l3 (or xs | s | l1 | l3)"


# ============================================================================ parser
def _add_export_commands(sub) -> None:
    c = sub.add_parser("coreml", help="export a model to a Core ML .mlpackage")
    c.add_argument("--model", required=True, help=_MODELS)
    c.add_argument("--out", required=True, help="output path ending in .mlpackage (its folder must exist)")
    c.add_argument("--img-size", type=int, default=224, help="a multiple of 32")
    c.add_argument("--precision", choices=PRECISIONS, default="fp16")
    c.add_argument("--checkpoint", default=None, help="weights (official, timm or swiftlib layout); sets the class count")
    c.add_argument("--num-classes", type=int, default=None, help="classes of a seed-0 model (default 1000)")
    c.add_argument("--labels", default=None, help="text file with one class name per line (default: the checkpoint's "
                                                  "class_names, else ImageNet's for 1000 classes)")
    c.add_argument("--attention", choices=sorted(VARIANTS), default=None, help="default: the checkpoint's, else additive")
    c.add_argument("--tensor-input", action="store_true", help="float tensor input instead of an image")

    b = sub.add_parser("block", help="export one attention module or one SwiftFormer Encoder")
    b.add_argument("--out", required=True)
    b.add_argument("--attention", choices=sorted(VARIANTS), default="additive")
    b.add_argument("--kind", choices=["attention", "encoder"], default="attention")
    b.add_argument("--n", type=int, default=None, help="tokens (attention)")
    b.add_argument("--d", type=int, required=True, help="channels")
    b.add_argument("--hw", type=int, nargs=2, default=None, metavar=("H", "W"), help="map size")
    b.add_argument("--precision", choices=PRECISIONS, default="fp16")

    s = sub.add_parser("sweep", help="export four attentions x four stage shapes + manifest.csv")
    s.add_argument("--out-dir", required=True)
    s.add_argument("--model", default="swiftformer_xs")
    s.add_argument("--attention", nargs="+", default=list(VARIANTS), choices=sorted(VARIANTS))
    s.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4])
    s.add_argument("--kind", choices=["attention", "encoder"], default="attention")
    s.add_argument("--img-size", type=int, default=224)
    s.add_argument("--precision", choices=PRECISIONS, default="fp16")
    s.add_argument("--results-dir", default=None,
                   help="also copy the manifest to RESULTS_DIR/export_sweep_<kind>_<model>.csv (e.g. data/results)")


def _add_check_commands(sub) -> None:
    i = sub.add_parser("inventory", help="MIL op inventory and Neural Engine lint of .mlpackage files")
    i.add_argument("paths", nargs="+")

    k = sub.add_parser("compare", help="op inventory of swiftlib's export vs timm's; writes data/results/")
    k.add_argument("--model", default="swiftformer_xs")
    k.add_argument("--img-size", type=int, default=224)
    k.add_argument("--precision", choices=PRECISIONS, default="fp16")
    k.add_argument("--out-dir", default=None, help="keep the .mlpackage files here")
    k.add_argument("--results-dir", default=str(RESULTS_DIR))
    add_expect_argument(k, f"Figures: {', '.join(COMPARE_FIGURES)} (ratios: swiftlib / timm non-const ops).")

    o = sub.add_parser("onnx", help="export to ONNX, check against torch; --time: ORT latency vs timm's export")
    o.add_argument("--model", required=True, nargs="+", help="one model to export; one or more with --time")
    o.add_argument("--out", default=None, help="output .onnx path (export only)")
    o.add_argument("--img-size", type=int, default=224)
    o.add_argument("--checkpoint", default=None, help="weights; sets the class count")
    o.add_argument("--num-classes", type=int, default=None, help="classes of a seed-0 model (default 1000)")
    o.add_argument("--batch-size", type=int, nargs="+", default=None,
                   help="export: a fixed batch size (default: a dynamic batch axis); --time: the batch sizes to time "
                        "(default 1)")
    o.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    o.add_argument("--opset", type=int, default=ONNX_OPSET)
    o.add_argument("--time", action="store_true", help="latency table vs timm's export (writes data/results/)")
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--rounds", type=int, default=5)
    o.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per file and batch size")
    o.add_argument("--results-dir", default=str(RESULTS_DIR))
    add_expect_argument(o, "With --time. Figures: ratio@MODEL (batch 1, round-by-round ratio swiftlib / timm) and "
                           "ratio@MODEL@B (batch B), e.g. ratio@swiftformer_xs, ratio@swiftformer_xs@32.")

    m = sub.add_parser("check", help="run a .mlpackage on any OS with the reference MIL interpreter and compare it "
                                     "with its torch model (exit 1 if they disagree); on macOS also Core ML predict")
    m.add_argument("--mlpackage", required=True)
    m.add_argument("--model", default=None, help="the model the package was exported from (default: its metadata)")
    m.add_argument("--img-size", type=int, default=None, help="default: the package's input size")
    m.add_argument("--checkpoint", default=None, help="the weights the package was exported with")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Export SwiftFormer to Core ML (.mlpackage) and ONNX, and check it.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=ArgumentParser)
    _add_export_commands(sub)
    _add_check_commands(sub)
    for command in sub.choices.values():
        add_debug_argument(command)
    return p


# ============================================================================ flags checked before any work
def _read_labels(path: str | None) -> list[str] | None:
    if not path:
        return None
    lp = Path(path)
    if not lp.is_file():
        raise FileNotFoundError(f"--labels: file {str(lp)!r} does not exist")
    labels = [ln.strip() for ln in lp.read_text().splitlines() if ln.strip()]
    if not labels:
        raise ValueError(f"--labels: {str(lp)!r} holds no class names (one per line)")
    return labels


def _class_count(args) -> int:
    """The class count the export will have: the checkpoint's classifier, else ``--num-classes``, else 1000."""
    if getattr(args, "checkpoint", None):
        k = checkpoint_num_classes(args.checkpoint)
        if args.num_classes is not None and args.num_classes != k:
            raise ValueError(f"--num-classes {args.num_classes} but the classifier in {args.checkpoint} has {k} classes")
        return k
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
    return 1000 if args.num_classes is None else args.num_classes


def _check_model_flags(args, out_suffix: str) -> int:
    """The flags shared by ``coreml`` and ``onnx`` (model name, image size, output path, checkpoint);
    returns the class count the export will have."""
    for name in args.model if isinstance(args.model, list) else [args.model]:
        resolve_name(name)
    check_img_size(args.img_size)
    check_out_path(args.out, out_suffix)
    return _class_count(args)  # reads the checkpoint: missing, unreadable or refused files fail here


def _checked_labels_flag(args, k: int) -> list[str] | None:
    labels = _read_labels(args.labels)
    if labels is not None and len(labels) != k:
        raise ValueError(f"--labels: {args.labels} has {len(labels)} names; the model has {k} classes (one name per "
                         f"line, one line per class)")
    return labels


# ============================================================================ subcommands
def _print_inventory(inv: OpInventory) -> None:
    print(f"{inv.path}: {inv.non_const} non-const ops ({inv.total} with const), weights {inv.weight_precision}")
    print("  " + ", ".join(f"{k} {v}" for k, v in inv.counts.items()))
    for x in inv.lint:
        print(f"  [{x['severity']}] {x['op']} x{x['count']}: {x['reason']}")


def _coreml(args) -> int:
    labels = _checked_labels_flag(args, _check_model_flags(args, ".mlpackage"))
    out = to_coreml(args.model, args.out, args.img_size, args.precision, image_input=not args.tensor_input,
                    class_labels=labels, checkpoint=args.checkpoint, num_classes=args.num_classes,
                    attention=args.attention)
    _print_inventory(op_inventory(out))
    return 0


def _block(args) -> int:
    check_out_path(args.out, ".mlpackage")
    out = to_coreml_block(args.out, args.attention, args.kind, n=args.n, d=args.d,
                          hw=tuple(args.hw) if args.hw else None, precision=args.precision)
    _print_inventory(op_inventory(out))
    return 0


def _sweep(args) -> int:
    model = resolve_name(args.model)
    check_img_size(args.img_size)
    man = export_sweep(args.out_dir, model, args.attention, args.stages, args.kind, args.img_size, args.precision)
    rows = read_csv(man)
    print(f"wrote {len(rows)} packages and {man}")
    if args.results_dir:
        recorded = results_path(args.results_dir, f"export_sweep_{args.kind}_{model}.csv")
        print(f"recorded {write_csv(recorded, rows, MANIFEST_COLUMNS)}")
    return 0


def _inventory(args) -> int:
    for pth in args.paths:
        _print_inventory(op_inventory(pth))
    return 0


def _compare(args) -> int:
    require_known(args.expect, COMPARE_FIGURES)  # a misspelt name fails before the exports
    resolve_name(args.model)
    check_img_size(args.img_size)
    results_path(args.results_dir, "")
    res = inventory_vs_timm(args.model, args.out_dir, args.img_size, args.precision)
    print(format_inventory_table(res["rows"]))
    print(f"non-const ops: swiftlib / timm = {res['ratio_non_const']:.2f} (timm bare: "
          f"{res['ratio_non_const_bare']:.2f}); tile in swiftlib's export: {res['tile'] or 'none'}; ops slow on "
          f"the Neural Engine: {res['ops_slow_on_ne']}")
    res["expectations"] = check_expectations(args.expect, {k: res[k] for k in COMPARE_FIGURES})
    print_expectations(res["expectations"])
    print(f"wrote {write_inventory_results(res, args.results_dir)} and .csv")
    return 0


def _onnx_time(args) -> int:
    batches = args.batch_size or [1]
    names = [resolve_name(m) for m in args.model]
    figures = [f"ratio@{m}" if b == 1 else f"ratio@{m}@{b}" for m in names for b in batches]
    require_known(args.expect, figures)  # before the exports
    check_img_size(args.img_size)
    results_path(args.results_dir, "")
    res = onnx_latency(names, args.img_size, threads=args.threads, rounds=args.rounds, min_run_time=args.min_run_time,
                       batch_sizes=batches)
    for r in res["rows"]:
        print(f"{r['model']} batch {r['batch']}: swiftlib {r['swiftlib_ms']:.2f} ms, timm {r['timm_ms']:.2f} ms, "
              f"ratio {r['ratio']:.3f} (rounds {min(r['round_ratios']):.3f}..{max(r['round_ratios']):.3f}; ONNX "
              f"Runtime CPU, {args.threads} thread(s), same run)")
    ratios = {(f"ratio@{r['model']}" if r["batch"] == 1 else f"ratio@{r['model']}@{r['batch']}"): r["ratio"]
              for r in res["rows"]}
    res["expectations"] = check_expectations(args.expect, ratios)
    print_expectations(res["expectations"])
    print(f"wrote {write_onnx_latency(res, args.results_dir)}")
    return 0


def _onnx(args) -> int:
    if args.time:
        if args.out:
            raise ValueError("--out applies to an export, not to --time (which writes data/results/)")
        return _onnx_time(args)
    if not args.out or len(args.model) != 1:
        raise ValueError("export needs one --model and --out PATH.onnx (or --time for the latency table)")
    if args.expect:
        raise ValueError("--expect applies to --time (the latency ratios)")
    if args.batch_size is not None and (len(args.batch_size) != 1 or args.batch_size[0] < 1):
        raise ValueError(f"--batch-size of an export is one positive number (or none: a dynamic batch axis), got "
                         f"{args.batch_size}")
    _check_model_flags(args, ".onnx")
    batch = args.batch_size[0] if args.batch_size else None
    model, _ = resolve_model(args.model[0], checkpoint=args.checkpoint, num_classes=args.num_classes)
    out = to_onnx(model, args.out, args.img_size, opset=args.opset, batch_size=batch, exporter=args.exporter)
    _, normed = sample_images(args.img_size)                          # [4, 3, S, S]
    if batch:  # a fixed batch: the photos repeated to fill it
        normed = normed.repeat(-(-batch // len(normed)), 1, 1, 1)[:batch]
    res = check_onnx(out, model, normed)
    print(f"wrote {out} ({args.exporter} exporter, opset {args.opset}, batch {batch or 'dynamic'}); onnx.checker "
          f"passed; ONNX Runtime vs torch on {res['images']} images: max abs diff {res['max_abs_diff']:.2e} "
          f"(largest logit {res['max_abs_logit']:.2e}), top-1 agreement {res['top1_agreement']:.0%}")
    return 0


def _check_on_macos(args) -> None:
    """Core ML's own ``predict`` and compute plan, where Core ML runs; one line saying so elsewhere."""
    if not coreml_runtime()[0]:
        print(f"Core ML predict and MLComputePlan (the compute device of each op) need macOS (this machine: "
              f"{sys.platform}); the numbers above come from the package's ML program itself")
        return
    program, torch_model, _, _ = reference_model(args.mlpackage, args.model, args.checkpoint, args.img_size)
    if any(op.type == "classify" for op in program.ops) and program.image_inputs:
        side = next(iter(program.image_inputs.values()))["width"]
        print(f"Core ML predict (CPU_ONLY) vs torch: {check_coreml(args.mlpackage, torch_model, side)}")
    print(f"MLComputePlan: {compute_plan(args.mlpackage)}")


def _check(args) -> int:
    if args.img_size is not None:
        check_img_size(args.img_size)
    if args.checkpoint is not None:
        checkpoint_num_classes(args.checkpoint)  # missing, unreadable or refused: before the interpreter runs
    res = check_mlpackage(args.mlpackage, args.model, args.checkpoint, args.img_size)
    for line in format_check(res):
        print(line)
    _check_on_macos(args)
    return 0 if res["passed"] else 1


_COMMANDS = {"coreml": _coreml, "block": _block, "sweep": _sweep, "inventory": _inventory, "compare": _compare,
             "onnx": _onnx, "check": _check}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (``check``: 1 when the package disagrees with torch).

    Bad flags exit 2 with one usage line (argparse); errors of the run propagate (ValueError,
    FileNotFoundError, ...); :func:`cli` answers them in one line."""
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.cmd](args)


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m swiftlib.export``: :func:`main` with every user error answered in one line, exit status 2."""
    return run(main, argv, prog=PROG)
