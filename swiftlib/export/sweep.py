"""Core ML sweep: every attention variant at the shape of every SwiftFormer stage, plus a manifest CSV.

A stage ``i`` (1-based) of a SwiftFormer at ``S`` pixels works on a map ``[1, C, H, W]`` with
``H = W = S / 2 ** (i + 1)``, i.e. tokens ``[1, N, D]`` with ``N = H * W`` and ``D = C``
(:func:`stage_shapes`, from :func:`swiftlib.models.stage_shapes`). :func:`export_sweep` writes one
``.mlpackage`` per (variant, stage) -- an attention on tokens or an Encoder on the map -- and
``manifest.csv`` (:data:`MANIFEST_COLUMNS`) for timing on a phone.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from swiftlib.attention import VARIANTS, attention_macs
from swiftlib.export.common import check_img_size
from swiftlib.export.coreml import to_coreml_block
from swiftlib.export.inventory import op_inventory
from swiftlib.io import read_csv, write_csv
from swiftlib.models import resolve_name
from swiftlib.models import stage_shapes as model_stage_shapes

__all__ = ["stage_shapes", "MANIFEST_COLUMNS", "export_sweep"]

#: Columns of a sweep's ``manifest.csv`` (one row per ``.mlpackage``).
MANIFEST_COLUMNS = ["file", "kind", "attention", "stage", "n", "d", "h", "w", "input_shape", "precision",
                    "attention_macs", "non_const_ops", "ops_off_ne", "ops_slow_on_ne"]


def stage_shapes(model: str = "swiftformer_xs", img_size: int = 224) -> list[dict[str, int]]:
    """``[{"stage", "h", "w", "n", "d"}]`` of the four SwiftFormer Encoders of ``model`` at ``img_size``
    (a multiple of 32): :func:`swiftlib.models.stage_shapes` under the short keys of the export manifest.

    Stage ``i`` (0-based) works at stride ``2 ** (i + 2)``: 56, 28, 14, 7 pixels per side at 224.
    """
    model = resolve_name(model)
    img_size = check_img_size(img_size)
    return [{"stage": r["stage"], "h": r["height"], "w": r["width"], "n": r["tokens"], "d": r["channels"]}
            for r in model_stage_shapes(model, img_size)]


def _package_name(kind: str, variant: str, sh: dict[str, int], precision: str) -> str:
    return f"{kind}_{variant}_s{sh['stage']}_n{sh['n']}_d{sh['d']}_{precision}.mlpackage"


def _export_one(out_dir: Path, kind: str, variant: str, sh: dict[str, int], precision: str) -> dict[str, Any]:
    """Export one (variant, stage shape) block and return its manifest row."""
    name = _package_name(kind, variant, sh, precision)
    to_coreml_block(out_dir / name, variant=variant, kind=kind, d=sh["d"], hw=(sh["h"], sh["w"]), precision=precision)
    inv = op_inventory(out_dir / name)
    shape = [1, sh["n"], sh["d"]] if kind == "attention" else [1, sh["d"], sh["h"], sh["w"]]
    return {"file": name, "kind": kind, "attention": variant, "stage": sh["stage"], "n": sh["n"], "d": sh["d"],
            "h": sh["h"], "w": sh["w"], "input_shape": "x".join(map(str, shape)), "precision": precision,
            "attention_macs": attention_macs(variant, sh["n"], sh["d"]), "non_const_ops": inv.non_const,
            "ops_off_ne": inv.lint_count("off_ne"), "ops_slow_on_ne": inv.lint_count("slow_on_ne")}


def export_sweep(out_dir, model: str = "swiftformer_xs", variants: Sequence[str] = tuple(VARIANTS),
                 stages: Sequence[int] = (1, 2, 3, 4), kind: str = "attention", img_size: int = 224,
                 precision: str = "fp16", progress: bool = True) -> Path:
    """Export every ``variant`` at the shape of every ``stage`` of ``model`` into ``out_dir`` and write
    ``out_dir/manifest.csv`` (one row per ``.mlpackage``: shape, analytic MACs, op counts, lint).

    Resumable: a package already in the folder and in the manifest is kept. Returns the manifest path.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {str(out_dir)!r} does not exist (create it first)")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown attention {bad}; choose from {sorted(VARIANTS)}")
    shapes = {r["stage"]: r for r in stage_shapes(model, img_size)}
    bad = [s for s in stages if s not in shapes]
    if bad:
        raise ValueError(f"stages are numbered 1..{len(shapes)}, got {bad}")
    manifest = out_dir / "manifest.csv"
    done = {r["file"]: r for r in read_csv(manifest)} if manifest.is_file() else {}
    rows = []
    for v, sh in tqdm([(v, shapes[s]) for s in stages for v in variants], desc=f"Core ML sweep ({kind})",
                      disable=not progress):
        name = _package_name(kind, v, sh, precision)
        if name in done and (out_dir / name).is_dir():
            rows.append(done[name])
            continue
        rows.append(_export_one(out_dir, kind, v, sh, precision))
        ours = {x["file"] for x in rows}
        write_csv(manifest, rows + [r for f, r in done.items() if f not in ours], MANIFEST_COLUMNS)
    ours = {r["file"] for r in rows}
    kept = [r for f, r in done.items() if f not in ours and (out_dir / f).is_dir()]  # earlier sweeps' packages
    return write_csv(manifest, rows + kept, MANIFEST_COLUMNS)
