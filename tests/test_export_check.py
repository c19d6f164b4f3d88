"""``swiftlib.export.check_mlpackage`` and ``python -m swiftlib.export check`` on whole packages.

* A whole SwiftFormer-XS package exported by swiftlib, run by the reference interpreter
  (:mod:`swiftlib.export.mil`, its ops tested one by one in tests/test_mil.py) against the torch model it
  was exported from; damaged weights in the same package are caught.
* The ``check`` command: exit 0 on fresh packages (a seed-0 XS, one with a trained 10-class head,
  single blocks), 1 on a damaged one, 2 on bad input; an op the interpreter lacks is a clear error.

The whole-model packages are exported once per module.
"""
from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Fn, randomize_  # randomize_: weights that make every path matter

import swiftlib.export as E
from swiftlib.export import mil
from swiftlib.export.coreml import quiet_coremltools
from swiftlib.models import create_model, save_checkpoint


# --------------------------------------------------------------------------- a whole SwiftFormer package
def damage_package(mlpackage, how: str) -> str:
    """Damage the weights of a saved package in place; returns what was done.

    ``zero_4k`` / ``flip_4k``: zero (or invert the bits of) 4096 bytes of weight data, at the middle
    (or a third) of ``weight.bin``; ``scale_conv_1.5``: multiply the weights of the middle convolution
    by 1.5; ``scale_stem_1.1``: the first convolution's weights by 1.1.
    """
    path = Path(mlpackage) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(path.read_bytes())
    blobs = _blobs(data)  # [(metadata offset, data offset, size)]
    if how in ("zero_4k", "flip_4k"):
        target = len(data) // 2 if how == "zero_4k" else len(data) // 3
        meta, start, size = next(b for b in blobs if b[1] + b[2] > target)
        start = max(start, min(target, start + size - 4096))
        for i in range(start, min(start + 4096, start + size)):
            data[i] = 0 if how == "zero_4k" else data[i] ^ 0xFF
        what = f"{how[:4]} bytes {start}..{start + 4096} of {path.name}"
    elif how in ("scale_conv_1.5", "scale_stem_1.1"):
        convs = _conv_weight_offsets(mlpackage)
        name, meta = convs[len(convs) // 2] if how == "scale_conv_1.5" else convs[0]
        _, start, size = next(b for b in blobs if b[0] == meta)
        factor = float(how.rsplit("_", 1)[1])
        w = np.frombuffer(bytes(data[start:start + size]), np.float16) * np.float16(factor)
        data[start:start + size] = w.astype(np.float16).tobytes()
        what = f"weights of {name} x {factor}"
    else:
        raise ValueError(f"unknown damage {how!r}")
    path.write_bytes(bytes(data))
    return what


def _blobs(data: bytes) -> list[tuple[int, int, int]]:
    """The blobs of a weight file: 64-byte header (count, version), then per blob 64 bytes of metadata
    (sentinel 0xDEADBEEF, dtype, size in bytes, data offset) followed by the data, 64-byte aligned."""
    count, offset, out = struct.unpack_from("<I", data, 0)[0], 64, []
    for _ in range(count):
        sentinel, _dtype, size, start = struct.unpack_from("<IIQQ", data, offset)
        assert sentinel == 0xDEADBEEF, f"no blob metadata at byte {offset}"
        out.append((offset, start, size))
        offset = (start + size + 63) // 64 * 64
    return out


def _conv_weight_offsets(mlpackage) -> list[tuple[str, int]]:
    """(name, blob metadata offset) of each conv's weight, in program order."""
    with quiet_coremltools() as ct:
        spec = ct.models.MLModel(str(mlpackage), skip_model_load=True).get_spec()
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    offsets = {op.outputs[0].name: op.attributes["val"].blobFileValue.offset for op in block.operations
               if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"}
    return [(op.inputs["weight"].arguments[0].name, offsets[op.inputs["weight"].arguments[0].name])
            for op in block.operations if op.type == "conv" and op.inputs["weight"].arguments[0].name in offsets]


def _run_cli(argv, capsys):
    """``python -m swiftlib.export ARGV`` in-process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(E.cli(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


@pytest.fixture(scope="module")
def trained_xs(tmp_path_factory):
    """SwiftFormer-XS with a trained-looking 10-class head (randomised weights), saved as swiftlib's training
    checkpoints are (with class_names) and exported by the command line from that checkpoint:
    ``(package, torch model, checkpoint, class names)``."""
    root = tmp_path_factory.mktemp("xs10")
    model = randomize_(create_model("swiftformer_xs", num_classes=10))
    names = [f"class_{i}" for i in range(10)]
    ckpt = save_checkpoint(model, root / "best.pth", class_names=names)
    out = root / "xs10.mlpackage"
    assert E.main(["coreml", "--model", "xs", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    return out, model, ckpt, names


@pytest.fixture(scope="module")
def fresh_xs(tmp_path_factory):
    """``python -m swiftlib.export coreml --model swiftformer_xs`` (seed-0 weights, 1000 classes)."""
    out = tmp_path_factory.mktemp("xs") / "xs.mlpackage"
    assert E.main(["coreml", "--model", "swiftformer_xs", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_xs_package_matches_torch(trained_xs):
    path, model, _, names = trained_xs
    pixels, _ = E.sample_images(224)
    res = mil.check_package(path, model, pixels)
    assert res["passed"], res
    assert res["top1_agreement"] == 1.0 and res["rel_diff"] < mil.FP16_RTOL / 2, res
    program = mil.load_program(path)
    assert {op.outputs[0].dtype for op in program.ops if op.type == "conv"} == {"FLOAT16"}
    assert program.image_preprocessing["image"]["bias"] == pytest.approx([-255 * m for m in (0.485, 0.456, 0.406)],
                                                                         rel=1e-6)
    assert mil.run_program(program, {"image": pixels[0].numpy()})["classLabel"] in names  # labels: the checkpoint's


@pytest.mark.slow
@pytest.mark.parametrize("how", ["zero_4k", "flip_4k", "scale_conv_1.5"])
def test_damaged_weights_are_caught(trained_xs, how, tmp_path):
    path, model, _, _ = trained_xs
    pixels, _ = E.sample_images(224)
    bad = tmp_path / "bad.mlpackage"
    shutil.copytree(path, bad)
    damage_package(bad, how)
    res = mil.check_package(bad, model, pixels)
    assert not res["passed"], res
    assert not res["rel_diff"] <= 2 * mil.FP16_RTOL, res  # clearly: NaN or well beyond the tolerance


# --------------------------------------------------------------------------- python -m swiftlib.export check
@pytest.mark.slow
def test_check_cli_passes_a_fresh_xs_and_fails_a_damaged_one(fresh_xs, tmp_path, capsys):
    code, out, err = _run_cli(["check", "--mlpackage", str(fresh_xs), "--model", "xs"], capsys)
    assert code == 0 and not err, err
    lines = out.splitlines()
    assert "swiftformer_xs image classifier, 224 px, 1000 classes" in lines[0]
    assert lines[1].startswith("  photos (4): max abs diff of the logits") and "top-1 agreement 100%" in lines[1]
    assert lines[2].startswith("  random (4):") and "top-1 agreement 100%" in lines[2]
    assert lines[3].startswith("tolerance: ratio <= 0.01 (fp16") and lines[4].startswith("PASSED")
    if sys.platform != "darwin":
        assert len(lines) == 6 and "need macOS" in lines[5]
    for how in ("flip_4k", "scale_stem_1.1"):  # damage that moves a seed-0 XS (see FP16_RTOL)
        bad = tmp_path / f"{how}.mlpackage"
        shutil.copytree(fresh_xs, bad)
        damage_package(bad, how)
        code, out, _ = _run_cli(["check", "--mlpackage", str(bad)], capsys)  # --model from the metadata
        assert code == 1 and "FAILED: the package disagrees with the torch model" in out, out


@pytest.mark.slow
def test_check_cli_with_the_checkpoint_of_a_trained_head(trained_xs, capsys):
    path, _, ckpt, _ = trained_xs
    code, out, _ = _run_cli(["check", "--mlpackage", str(path), "--model", "xs", "--checkpoint", str(ckpt)], capsys)
    assert code == 0 and "10 classes" in out and "PASSED" in out, out
    code, _, err = _run_cli(["check", "--mlpackage", str(path), "--model", "xs"], capsys)
    assert code == 2 and "pass --checkpoint" in err and len(err.splitlines()) == 1
    code, _, err = _run_cli(["check", "--mlpackage", str(path), "--checkpoint", str(ckpt), "--img-size", "256"], capsys)
    assert code == 2 and "takes 224 x 224" in err


@pytest.mark.parametrize("variant", ["additive", "self", "transposed", "separable"])
def test_check_cli_on_block_packages(variant, tmp_path, capsys):
    """Sweep blocks (tensor x -> y) are checked against the torch block rebuilt from their metadata."""
    paths = [E.to_coreml_block(tmp_path / "attn.mlpackage", variant, n=49, d=56),
             E.to_coreml_block(tmp_path / "enc.mlpackage", variant, kind="encoder", d=56, hw=(7, 7))]
    for path, what in zip(paths, (f"{variant} attention block, input [1, 49, 56]",
                                  f"{variant} encoder block, input [1, 56, 7, 7]")):
        code, out, _ = _run_cli(["check", "--mlpackage", str(path)], capsys)
        assert code == 0 and what in out and "seed-0 example (1)" in out and "PASSED" in out, out


def test_check_cli_bad_input_is_one_line(tmp_path, capsys):
    code, _, err = _run_cli(["check", "--mlpackage", str(tmp_path / "none.mlpackage")], capsys)
    assert code == 2 and "no such Core ML package" in err and len(err.splitlines()) == 1
    x = torch.randn(1, 5)
    path = E.to_coreml_module(Fn(lambda t: torch.cumsum(t, dim=1)).eval(), x, tmp_path / "cumsum.mlpackage",
                              metadata={"swiftlib.kind": "attention", "swiftlib.attention": "additive"})
    code, _, err = _run_cli(["check", "--mlpackage", str(path)], capsys)
    assert code == 2 and "'cumsum'" in err and "not implemented" in err and "Traceback" not in err, err
