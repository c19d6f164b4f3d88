"""``python -m swiftlib.export {coreml,block,sweep,inventory,compare,onnx,check} ...`` (``--help`` on each).

Bad input is answered with one line ``error: <message>`` on stderr and exit status 2. ``compare`` and
``onnx --time`` take ``--expect 'NAME<=VALUE'`` (or ``>=``; repeatable): after the run each
expectation on a computed figure is printed as met / NOT met and recorded under ``"expectations"``
in the results JSON (the exit status does not change).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swiftlib.attention import VARIANTS
from swiftlib.export.common import PRECISIONS, RESULTS_DIR, resolve_model, results_path, sample_images
from swiftlib.export.coreml import to_coreml, to_coreml_block
from swiftlib.export.inventory import (OpInventory, format_inventory_table, inventory_vs_timm, op_inventory,
                                       write_inventory_results)
from swiftlib.export.onnx import check_onnx, onnx_latency, to_onnx, write_onnx_latency
from swiftlib.export.runtime import check_coreml, time_coreml
from swiftlib.export.sweep import MANIFEST_COLUMNS, export_sweep
from swiftlib.io import read_csv, write_csv
from swiftlib.models import resolve_name

__all__ = ["build_parser", "main", "parse_expectation", "check_expectations"]

# ============================================================================ --expect
_EXPECTATION = re.compile(r"^\s*(?P<name>\S+?)\s*(?P<op><=|>=)\s*(?P<value>\S+)\s*$")


def parse_expectation(text: str) -> dict[str, Any]:
    """argparse type: ``"ratio_non_const<=0.8"`` -> ``{"name": "ratio_non_const", "op": "<=", "value": 0.8}``."""
    m = _EXPECTATION.match(text)
    try:
        value = float(m["value"])
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected NAME<=VALUE or NAME>=VALUE with a number, e.g. "
                                         f"'ratio_non_const<=0.8', got {text!r}")
    return {"name": m["name"], "op": m["op"], "value": value}


def _require_known(expectations: Sequence[dict[str, Any]], names) -> None:
    unknown = [e["name"] for e in expectations if e["name"] not in names]
    if unknown:
        raise ValueError(f"--expect names {unknown} are not computed here; choose from {sorted(names)}")


def check_expectations(expectations: Sequence[dict[str, Any]], figures: dict[str, float]) -> list[dict[str, Any]]:
    """Each expectation with the computed figure and whether it holds: ``{"name", "op", "value", "actual", "met"}``."""
    _require_known(expectations, figures)
    checked = []
    for e in expectations:
        actual = figures[e["name"]]
        holds = actual <= e["value"] if e["op"] == "<=" else actual >= e["value"]
        checked.append({**e, "actual": actual, "met": bool(holds)})
    return checked


def _print_expectations(checked: list[dict[str, Any]]) -> None:
    for e in checked:
        print(f"expect {e['name']} {e['op']} {e['value']:g}: {e['actual']:.4g} {'met' if e['met'] else 'NOT met'}")


# ============================================================================ parser
def _add_export_commands(sub) -> None:
    c = sub.add_parser("coreml", help="export a model to a Core ML .mlpackage")
    c.add_argument("--model", required=True, help="swiftformer_xs | swiftformer_s | swiftformer_l1 | swiftformer_l3 "
                                                  "(or xs | s | l1 | l3)")
    c.add_argument("--out", required=True, help="output path ending in .mlpackage")
    c.add_argument("--img-size", type=int, default=224)
    c.add_argument("--precision", choices=PRECISIONS, default="fp16")
    c.add_argument("--checkpoint", default=None, help="weights (official, timm or swiftlib layout)")
    c.add_argument("--num-classes", type=int, default=1000)
    c.add_argument("--labels", default=None, help="text file with one class name per line (needed unless 1000 classes)")
    c.add_argument("--attention", choices=sorted(VARIANTS), default="additive")
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
    def expect(figures: str) -> dict[str, Any]:
        return dict(action="append", default=[], type=parse_expectation, metavar="'NAME<=VALUE'",
                    help=f"print whether a computed figure holds the bound (repeatable; or >=); {figures}")

    i = sub.add_parser("inventory", help="MIL op inventory and Neural Engine lint of .mlpackage files")
    i.add_argument("paths", nargs="+")

    k = sub.add_parser("compare", help="op inventory of swiftlib's export vs timm's; writes data/results/")
    k.add_argument("--model", default="swiftformer_xs")
    k.add_argument("--img-size", type=int, default=224)
    k.add_argument("--precision", choices=PRECISIONS, default="fp16")
    k.add_argument("--out-dir", default=None, help="keep the two .mlpackage files here")
    k.add_argument("--results-dir", default=str(RESULTS_DIR))
    k.add_argument("--expect", **expect("figures: ratio_non_const (swiftlib / timm non-const ops), tile"))

    o = sub.add_parser("onnx", help="export to ONNX, check against torch; --time: ORT latency vs timm's export")
    o.add_argument("--model", required=True, nargs="+", help="one model to export; one or more with --time")
    o.add_argument("--out", default=None, help="output .onnx path (export only)")
    o.add_argument("--img-size", type=int, default=224)
    o.add_argument("--checkpoint", default=None)
    o.add_argument("--time", action="store_true", help="latency table vs timm's export (writes data/results/)")
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--results-dir", default=str(RESULTS_DIR))
    o.add_argument("--expect", **expect("with --time; figures: ratio@<model>, e.g. ratio@swiftformer_xs"))

    m = sub.add_parser("check", help="Core ML predict vs torch and latency per compute unit (macOS only)")
    m.add_argument("--mlpackage", required=True)
    m.add_argument("--model", required=True)
    m.add_argument("--img-size", type=int, default=224)
    m.add_argument("--checkpoint", default=None, help="the weights the package was exported with")
    m.add_argument("--runs", type=int, default=50)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m swiftlib.export",
                                description="Export SwiftFormer to Core ML (.mlpackage) and ONNX, and inspect it.")
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_export_commands(sub)
    _add_check_commands(sub)
    return p


# ============================================================================ subcommands
def _print_inventory(inv: OpInventory) -> None:
    print(f"{inv.path}: {inv.non_const} non-const ops ({inv.total} with const), weights {inv.weight_precision}")
    print("  " + ", ".join(f"{k} {v}" for k, v in inv.counts.items()))
    for x in inv.lint:
        print(f"  [{x['severity']}] {x['op']} x{x['count']}: {x['reason']}")


def _read_labels(path: str | None) -> list[str] | None:
    if not path:
        return None
    lp = Path(path)
    if not lp.is_file():
        raise FileNotFoundError(f"labels file {str(lp)!r} does not exist")
    return [ln.strip() for ln in lp.read_text().splitlines() if ln.strip()]


def _coreml(args) -> None:
    out = to_coreml(args.model, args.out, args.img_size, args.precision, image_input=not args.tensor_input,
                    class_labels=_read_labels(args.labels), checkpoint=args.checkpoint, num_classes=args.num_classes,
                    attention=args.attention)
    _print_inventory(op_inventory(out))


def _block(args) -> None:
    out = to_coreml_block(args.out, args.attention, args.kind, n=args.n, d=args.d,
                          hw=tuple(args.hw) if args.hw else None, precision=args.precision)
    _print_inventory(op_inventory(out))


def _sweep(args) -> None:
    model = resolve_name(args.model)
    man = export_sweep(args.out_dir, model, args.attention, args.stages, args.kind, args.img_size, args.precision)
    rows = read_csv(man)
    print(f"wrote {len(rows)} packages and {man}")
    if args.results_dir:
        recorded = results_path(args.results_dir, f"export_sweep_{args.kind}_{model}.csv")
        print(f"recorded {write_csv(recorded, rows, MANIFEST_COLUMNS)}")


def _inventory(args) -> None:
    for pth in args.paths:
        _print_inventory(op_inventory(pth))


_COMPARE_FIGURES = ("ratio_non_const", "tile")  # what `compare --expect` can name


def _compare(args) -> None:
    _require_known(args.expect, _COMPARE_FIGURES)  # a misspelt name fails before the exports
    res = inventory_vs_timm(args.model, args.out_dir, args.img_size, args.precision)
    print(format_inventory_table(res["rows"]))
    print(f"non-const ops: swiftlib / timm = {res['ratio_non_const']:.2f}; tile in swiftlib's export: "
          f"{res['tile'] or 'none'}")
    res["expectations"] = check_expectations(args.expect, {k: res[k] for k in _COMPARE_FIGURES})
    _print_expectations(res["expectations"])
    print(f"wrote {write_inventory_results(res, args.results_dir)} and .csv")


def _onnx_time(args) -> None:
    _require_known(args.expect, [f"ratio@{resolve_name(m)}" for m in args.model])  # before the exports
    res = onnx_latency(args.model, args.img_size, threads=args.threads)
    for r in res["rows"]:
        print(f"{r['model']}: swiftlib {r['swiftlib_ms']:.2f} ms, timm {r['timm_ms']:.2f} ms, "
              f"ratio {r['ratio']:.2f} (ONNX Runtime CPU, {args.threads} thread(s), same run)")
    res["expectations"] = check_expectations(args.expect, {f"ratio@{r['model']}": r["ratio"] for r in res["rows"]})
    _print_expectations(res["expectations"])
    print(f"wrote {write_onnx_latency(res, args.results_dir)}")


def _onnx(args) -> None:
    if args.time:
        _onnx_time(args)
        return
    if not args.out or len(args.model) != 1:
        raise ValueError("export needs one --model and --out PATH.onnx (or --time for the latency table)")
    if args.expect:
        raise ValueError("--expect applies to --time (the latency ratios)")
    model, _ = resolve_model(args.model[0], checkpoint=args.checkpoint)
    out = to_onnx(model, args.out, args.img_size)
    _, normed = sample_images(args.img_size)
    res = check_onnx(out, model, normed)
    print(f"wrote {out}; onnx.checker passed; ONNX Runtime vs torch on {res['images']} images: max abs diff "
          f"{res['max_abs_diff']:.2e} (largest logit {res['max_abs_logit']:.2e}), "
          f"top-1 agreement {res['top1_agreement']:.0%}")


def _check(args) -> None:
    res = check_coreml(args.mlpackage, args.model, args.img_size, checkpoint=args.checkpoint)
    if res["status"] == "skipped":
        print(res["reason"])
        return
    print(json.dumps(res, indent=1))
    print(json.dumps(time_coreml(args.mlpackage, runs=args.runs), indent=1))


_COMMANDS = {"coreml": _coreml, "block": _block, "sweep": _sweep, "inventory": _inventory, "compare": _compare,
             "onnx": _onnx, "check": _check}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input prints ``error: <message>`` on stderr and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        _COMMANDS[args.cmd](args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
