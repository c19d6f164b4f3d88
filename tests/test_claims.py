"""The README and the committed notebooks quote the same measured figures as ``data/results/``.

Every figure is read from the committed JSON, formatted as each document writes it, and looked up in
the README's results table (the row that names it) and in the committed outputs (or prose) of the
notebook that prints it. A re-recorded benchmark therefore fails here until the README and the
notebooks are brought up to date with it; a figure typed into either by hand fails when it drifts.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results"
N_FIRST = "3136"  # SwiftFormer's first stage at 224 px: the token count the goals are stated at


def result(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def readme_row(first_cell: str) -> str:
    """The row of the README's results table whose first cell contains ``first_cell``."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and first_cell in line.split(" | ")[0]]
    assert len(rows) == 1, f"expected one README results row naming {first_cell!r}, found {len(rows)}"
    return rows[0]


def notebook_text(name: str, outputs: bool = True) -> str:
    """All committed stream / text outputs of a notebook (``outputs``), or all its markdown."""
    nb = json.loads((ROOT / "notebooks" / name).read_text())
    parts = []
    for cell in nb["cells"]:
        if outputs and cell["cell_type"] == "code":
            for out in cell.get("outputs", []):
                parts.append("".join(out.get("text") or out.get("data", {}).get("text/plain", "")))
        elif not outputs and cell["cell_type"] == "markdown":
            parts.append("".join(cell["source"]))
    return "\n".join(parts)


def assert_quoted(figures: list[str], where: str, text: str) -> None:
    missing = [f for f in figures if f not in text]
    assert not missing, f"{where} does not quote {missing} (from data/results/)"


def measured_settings(argv: list[str]) -> tuple[str, ...]:
    """A benchmark's command line without where it wrote (--json) and what it checked (--expect)."""
    out, skip = [], False
    for a in argv:
        if not skip and a not in ("--json", "--expect"):
            out.append(a)
        skip = a in ("--json", "--expect")
    return tuple(out)


# --------------------------------------------------------------------------- attention sweep
def test_attention_ratios_at_the_first_stage():
    r = result("attention_cpu.json")
    pooled, paired, fastest = (r[k]["additive_inference_over_timm_additive"][N_FIRST]
                               for k in ("ratios", "ratios_paired", "ratios_min"))
    ref = [r[k]["additive_over_timm_additive"][N_FIRST] for k in ("ratios", "ratios_paired", "ratios_min")]
    floor = r["ratios"]["additive_matmuls_over_timm_additive"][N_FIRST]
    row = readme_row("additive attention / timm's")
    assert_quoted([f"{pooled:.2f}x pooled median", f"{paired:.2f}x round by round", f"{fastest:.2f}x fastest",
                   " / ".join(f"{v:.2f}x" for v in ref), f"alone: {floor:.2f}x",
                   f"round by round: inference form {paired:.2f} /"], "README", row)
    assert_quoted([f"{pooled:.2f}x of pooled medians, {paired:.2f}x round by round, {fastest:.2f}x of the fastest",
                   f"{ref[0]:.2f}x of pooled medians, {ref[1]:.2f}x round by round, {ref[2]:.2f}x of the fastest",
                   f"(the floor): {floor:.2f}x of pooled medians"],
                  "notebook 02", notebook_text("02_attention_costs.ipynb"))
    goals = {e["name"]: e for e in r["expectations"]}
    assert goals[f"additive_inference_over_timm_additive@{N_FIRST}:paired"]["value"] == 0.8
    assert "<= 0.8x round by round" in row


def test_attention_spread_over_the_repeated_sweeps():
    runs = [result("attention_cpu.json")] + [json.loads(p.read_text()) for p in
                                             sorted((RESULTS / "attention_cpu_repeats").glob("sweep*.json"))]
    assert len(runs) == 4 and len({r["created_unix"] for r in runs}) == 4
    assert len({measured_settings(r["argv"]) for r in runs}) == 1  # the same sweep each time
    paired = [r["ratios_paired"]["additive_inference_over_timm_additive"][N_FIRST] for r in runs]
    ref = [r["ratios_paired"]["additive_over_timm_additive"][N_FIRST] for r in runs]
    self_ratio = [1 / r["ratios"]["additive_over_self"][N_FIRST] for r in runs[1:]]
    row = readme_row("additive attention / timm's")
    met = sum(v <= 0.8 for v in paired)
    how_often = f"({['no', 'one', 'two', 'three'][met]} sweeps of four" if met < 4 else "(all four sweeps"
    assert_quoted([f"inference form {' / '.join(f'{v:.2f}' for v in paired)}x",
                   f"reference {' / '.join(f'{v:.2f}' for v in ref)}x", how_often], "README", row)
    assert all(v <= 1.05 for v in ref) == ("met in all four" in row)
    assert_quoted([f"{min(self_ratio):.0f}-{max(self_ratio):.0f}x in the other three sweeps"], "README",
                  readme_row("self-attention / additive"))


def test_self_over_additive_and_exponents():
    r = result("attention_cpu.json")
    pooled = 1 / r["ratios"]["additive_over_self"][N_FIRST]
    exps = r["exponents"]
    assert_quoted([f"{pooled:.0f}x (pooled medians"], "README", readme_row("self-attention / additive"))
    order = ("additive", "separable", "transposed", "self")
    assert_quoted([" / ".join(f"{exps[v]:.2f}" for v in order)], "README", readme_row("fitted exponent"))
    nb = notebook_text("02_attention_costs.ipynb")
    assert_quoted([f"{pooled:.1f}x of pooled medians", f"self {exps['self']:.2f}, transposed {exps['transposed']:.2f}, "
                   f"separable {exps['separable']:.2f}, additive {exps['additive']:.2f}"], "notebook 02", nb)


# --------------------------------------------------------------------------- whole models
def test_fused_xs_against_timm():
    r = result("models_cpu.json")["ratios"]
    row = readme_row("fused SwiftFormer-XS / timm")
    assert_quoted([f"{r['1']['swiftlib_fused_over_timm']:.2f}x / {r['32']['swiftlib_fused_over_timm']:.2f}x",
                   f"unfused: {r['1']['swiftlib_over_timm']:.2f}x / {r['32']['swiftlib_over_timm']:.2f}x"], "README", row)
    assert_quoted([f"{r['1']['swiftlib_fused_compiled_over_timm']:.2f}x / {r['32']['swiftlib_fused_compiled_over_timm']:.2f}x"],
                  "README", readme_row("fused + torch.compile"))
    onnx = "swiftlib_fused_onnxruntime_over_timm_onnxruntime"
    assert_quoted([f"{r['1'][onnx]:.2f}x / {r['32'][onnx]:.2f}x"], "README", readme_row("ONNX Runtime: swiftlib's file"))
    nb = notebook_text("03_swiftformer.ipynb")
    for b in ("1", "32"):
        assert_quoted([f"fused, channels-last (the default)   {r[b]['swiftlib_fused_over_timm']:.2f}x",
                       f"fused + torch.compile                {r[b]['swiftlib_fused_compiled_over_timm']:.2f}x",
                       f"swiftlib's file / timm's file: {r[b][onnx]:.2f}x"], f"notebook 03 (batch {b})", nb)


def test_onnx_latency_per_model_and_batch():
    rec = result("export_onnx_latency.json")
    rows = {(x["model"], x["batch"]): x["ratio"] for x in rec["rows"]}
    models = ("swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3")
    row = readme_row("same, XS / S / L1 / L3")
    assert_quoted([f"{rec['threads']} threads, {rec['rounds']} alternating rounds"], "README", row)
    assert_quoted([" / ".join(f"{rows[m, b]:.2f}" for m in models) + "x" for b in (1, 32)], "README", row)
    nb = notebook_text("05_export_coreml.ipynb")
    assert_quoted([f"{m:<15} batch {b:>2}: swiftlib / timm {rows[m, b]:.2f}" for m in models for b in (1, 32)],
                  "notebook 05", nb)


# --------------------------------------------------------------------------- Core ML export
@pytest.mark.parametrize("model", ["swiftformer_xs", "swiftformer_s", "swiftformer_l1", "swiftformer_l3"])
def test_export_inventories(model):
    r = result(f"export_inventory_{model}.json")
    ours, theirs = r["swiftlib"]["non_const"], r["timm"]["non_const"]
    assert r["tile"] == 0 and r["swiftlib"]["counts"].get("tile", 0) == 0
    row = readme_row("Core ML export")
    nb = notebook_text("05_export_coreml.ipynb")
    if model == "swiftformer_xs":
        assert_quoted([f"{ours} vs {theirs} ({r['ratio_non_const']:.2f}x; {r['ratio_non_const_bare']:.2f}x against "
                       f"timm's bare model, {r['timm_bare']['non_const']} ops)"], "README", row)
        assert_quoted([f"{ours} MIL ops against {theirs} in timm's export of the same network "
                       f"({r['ratio_non_const']:.2f}x)"], "notebook 05 summary", notebook_text("05_export_coreml.ipynb", False))
        assert_quoted([f"non-const ops, swiftlib / timm: {ours} / {theirs} = {r['ratio_non_const']:.2f}"], "notebook 05", nb)
    else:
        size = model.rsplit("_", 1)[1].upper()
        assert_quoted([f"{size} {ours} vs {theirs}"], "README", row)
    assert_quoted([f"{model:<15} swiftlib {ours:>4} ops, timm {theirs:>4} ops, ratio {r['ratio_non_const']:.2f}"],
                  "notebook 05", nb)


# --------------------------------------------------------------------------- training
def test_training_loop_and_data_loading():
    bench = {e["name"]: e["actual"] for e in result("train_bench.json")["expectations"]}
    assert_quoted([" / ".join(f"{bench[f'train_ratio@{px}']:.2f}" for px in (64, 160, 224)) + "x"], "README",
                  readme_row("training loop / plain"))
    data = result("train_data_loading.json")["data"]
    row = readme_row("data loading")
    assert_quoted([f"{data['ratio_batch']:.1f}x with batch augmentation", f"{data['ratio']:.1f}x with timm's",
                   f"{data['load_only']['ratio']:.0f}x for image access"], "README", row)
    met = {e["name"]: e["met"] for e in result("train_data_loading.json")["expectations"]}
    assert ("(not met" in row) == (not met["data_ratio_batch"])
    assert_quoted([f"({data['load_only']['ratio']:.0f}x)", f"({data['ratio']:.1f}x)", f"({data['ratio_batch']:.1f}x)"],
                  "notebook 04", notebook_text("04_train_on_imagenet_subsets.ipynb"))


def test_fashion_mnist_run():
    r = result("train_fashion_mnist_xs.json")
    top1 = r["test_top1_per_epoch"]
    assert r["best_test_top1"] == max(top1)
    row = readme_row("Fashion-MNIST")
    assert_quoted([f"{r['best_test_top1']:.2f} % test top-1 after {r['train_loop_seconds']:.0f} s",
                   " / ".join(f"{v:.1f}" for v in top1) + " % by epoch"], "README", row)
    assert_quoted([" / ".join(f"{v:.1f}" for v in top1) + f" %, {r['train_loop_seconds'] / 60:.1f} min"], "notebook 04",
                  notebook_text("04_train_on_imagenet_subsets.ipynb"))
    seeds = r["over_seeds"]
    for s, acc, secs in zip(seeds["seeds"][1:], seeds["test_top1"][1:], seeds["train_loop_seconds"][1:]):
        assert f"{acc:.2f} % after {secs:.0f} s" in row, f"seed {s}"
    rerun = r["rerun_final_code"]
    assert rerun["best_test_top1"] == max(rerun["test_top1_per_epoch"])
    assert_quoted([f"{rerun['best_test_top1']:.2f} % after {rerun['train_loop_seconds']:.0f} s of training, at "
                   f"{min(rerun['img_per_s_per_epoch']):.0f}-{max(rerun['img_per_s_per_epoch']):.0f} img/s",
                   f"{rerun['train_loop_seconds'] / 60:.1f} min"], "README", row)
