"""``python -m swiftlib.export`` with broken input, as a new user types it: every mistake is one
``error:`` line naming the problem (exit status 2, no traceback), found before any export starts;
a checkpoint is read without running anything in it; a checkpoint of another class count exports
that classifier, labelled by its own class names or by ``--labels``.
"""
import builtins
import re

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import swiftlib.export as E
from swiftlib.models import create_model, save_checkpoint

PROG = "python -m swiftlib.export"


def run_cli(argv, capsys):
    """``python -m swiftlib.export ARGV`` in-process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(E.cli(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def assert_one_line_error(argv, capsys, *needles):
    code, out, err = run_cli(argv, capsys)
    assert code == 2, (code, out, err)
    assert re.match(rf"{PROG}( \w+)?: error: ", err) and len(err.splitlines()) == 1, err  # argparse names the subcommand
    assert "Traceback" not in err and not out, (out, err)
    for needle in needles:
        assert needle in err, (needle, err)
    return err


class RunsCode:
    """A pickle that, if loaded with code execution allowed, creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A labels file of two names, a file where a folder should be, a garbage checkpoint, a checkpoint
    whose unpickling would run code, an S checkpoint and a 10-class XS checkpoint without class names."""
    root = tmp_path_factory.mktemp("faults")
    (root / "two.txt").write_text("cat\ndog\n")
    (root / "empty.txt").write_text("\n\n")
    (root / "a_file").write_text("not a folder")
    (root / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}, "args": RunsCode(root / "marker")}, root / "evil.pth")
    save_checkpoint(create_model("swiftformer_s"), root / "s.pth")
    torch.manual_seed(0)
    xs10 = create_model("swiftformer_xs", num_classes=10).eval()
    save_checkpoint(xs10, root / "xs10.pth")
    (root / "ten.txt").write_text("".join(f"label {i}\n" for i in range(10)))
    return root, xs10


@pytest.mark.parametrize("extra, needles", [
    (["--img-size", "100"], ["multiple of 32", "got 100"]),
    (["--img-size", "16"], ["multiple of 32", "got 16"]),
    (["--img-size", "x"], ["--img-size", "invalid int"]),
])
def test_coreml_bad_image_size(files, extra, needles, capsys):
    root, _ = files
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "m.mlpackage"), *extra], capsys, *needles)


def test_bad_output_paths(files, capsys):
    root, _ = files
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "missing" / "m.mlpackage")], capsys,
                          "missing", "does not exist")
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "a_file" / "m.mlpackage")], capsys,
                          "a_file", "is a file")
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "a_file")], capsys, "must end with '.mlpackage'")
    (root / "taken.mlpackage").write_text("a file, not a package")
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "taken.mlpackage")], capsys,
                          "taken.mlpackage", "exists and is a file")
    (root / "taken.onnx").mkdir()
    assert_one_line_error(["onnx", "--model", "xs", "--out", str(root / "taken.onnx")], capsys, "exists and is a folder")
    assert_one_line_error(["onnx", "--model", "xs", "--out", str(root / "missing" / "m.onnx")], capsys, "does not exist")
    assert_one_line_error(["onnx", "--model", "xs"], capsys, "--out PATH.onnx")
    assert_one_line_error(["coreml", "--model", "xs"], capsys, "--out")  # argparse: a required flag


def test_unknown_model_everywhere(files, capsys):
    root, _ = files
    for argv in (["coreml", "--model", "xxl", "--out", str(root / "m.mlpackage")],
                 ["onnx", "--model", "xxl", "--out", str(root / "m.onnx")],
                 ["onnx", "--model", "xxl", "--time"], ["compare", "--model", "xxl"],
                 ["sweep", "--model", "xxl", "--out-dir", str(root)]):
        assert_one_line_error(argv, capsys, "unknown model 'xxl'")


def test_labels_file_missing_empty_or_of_the_wrong_count(files, capsys):
    root, _ = files
    out = ["--out", str(root / "m.mlpackage")]
    assert_one_line_error(["coreml", "--model", "xs", *out, "--labels", str(root / "none.txt")], capsys,
                          "--labels", "none.txt", "does not exist")
    assert_one_line_error(["coreml", "--model", "xs", *out, "--labels", str(root / "empty.txt")], capsys,
                          "holds no class names")
    assert_one_line_error(["coreml", "--model", "xs", *out, "--labels", str(root / "two.txt")], capsys,
                          "has 2 names", "1000 classes")
    assert_one_line_error(["coreml", "--model", "xs", *out, "--checkpoint", str(root / "xs10.pth"), "--labels",
                           str(root / "two.txt")], capsys, "has 2 names", "10 classes")


def test_bad_checkpoints(files, capsys):
    root, _ = files
    for cmd, out in (("coreml", "m.mlpackage"), ("onnx", "m.onnx")):
        argv = [cmd, "--model", "xs", "--out", str(root / out), "--checkpoint"]
        assert_one_line_error(argv + [str(root / "none.pth")], capsys, "none.pth", "not found")
        assert_one_line_error(argv + [str(root / "garbage.pth")], capsys, "garbage.pth")
        assert_one_line_error(argv + [str(root), ], capsys, "directory")
        assert_one_line_error(argv + [str(root / "xs10.pth"), "--num-classes", "5"], capsys, "--num-classes 5",
                              "10 classes")
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "m.mlpackage"), "--checkpoint",
                           str(root / "s.pth")], capsys, "does not fit")
    assert_one_line_error(["coreml", "--model", "xs", "--out", str(root / "m.mlpackage"), "--num-classes", "0"],
                          capsys, "--num-classes must be >= 1")


def test_a_checkpoint_that_would_run_code_never_runs(files, capsys):
    """Every export entry point reads --checkpoint with weights_only=True: the pickle's code never runs."""
    root, _ = files
    evil = str(root / "evil.pth")
    for argv in (["coreml", "--model", "xs", "--out", str(root / "m.mlpackage"), "--checkpoint", evil],
                 ["onnx", "--model", "xs", "--out", str(root / "m.onnx"), "--checkpoint", evil],
                 ["check", "--mlpackage", str(root / "m.mlpackage"), "--checkpoint", evil]):
        assert_one_line_error(argv, capsys, "evil.pth", "open")
        assert not (root / "marker").exists()
    with pytest.raises(ValueError, match="refused"):
        E.to_onnx("xs", root / "m.onnx", checkpoint=evil)
    assert not (root / "marker").exists()


def test_other_subcommands_check_their_flags(files, capsys):
    root, _ = files
    assert_one_line_error(["compare", "--results-dir", str(root / "missing")], capsys, "results directory", "missing")
    assert_one_line_error(["onnx", "--model", "xs", "--time", "--results-dir", str(root / "missing")], capsys,
                          "results directory")
    assert_one_line_error(["onnx", "--model", "xs", "--out", str(root / "m.onnx"), "--batch-size", "0"], capsys,
                          "--batch-size")
    assert_one_line_error(["onnx", "--model", "xs", "--out", str(root / "m.onnx"), "--exporter", "tf"], capsys,
                          "--exporter")
    assert_one_line_error(["sweep", "--out-dir", str(root / "missing")], capsys, "does not exist")
    assert_one_line_error(["sweep", "--out-dir", str(root), "--stages", "5"], capsys, "stages are numbered 1..4")
    assert_one_line_error(["block", "--out", str(root / "b.mlpackage"), "--kind", "encoder", "--d", "8"], capsys,
                          "map size")
    assert_one_line_error(["inventory", str(root / "none.mlpackage")], capsys, "does not exist")
    assert_one_line_error(["check", "--mlpackage", str(root / "none.mlpackage")], capsys, "no such Core ML package")
    assert_one_line_error(["check", "--mlpackage", str(root)], capsys, "not a Core ML package")
    assert_one_line_error(["check", "--mlpackage", str(root / "none.mlpackage"), "--img-size", "33"], capsys,
                          "multiple of 32")
    assert not (root / "marker").exists() and not (root / "m.onnx").exists() and not (root / "b.mlpackage").exists()


def test_debug_shows_the_traceback(files, capsys):
    root, _ = files
    with pytest.raises(ValueError, match="multiple of 32"):
        E.cli(["coreml", "--model", "xs", "--out", str(root / "m.mlpackage"), "--img-size", "100", "--debug"])


@pytest.mark.slow
def test_onnx_of_a_checkpoint_with_another_class_count_exports_that_head(files, tmp_path, capsys):
    root, xs10 = files
    out = tmp_path / "xs10.onnx"
    code, printed, err = run_cli(["onnx", "--model", "xs", "--checkpoint", str(root / "xs10.pth"), "--out", str(out)],
                                 capsys)
    assert code == 0 and "top-1 agreement 100%" in printed, err
    assert onnx.load(str(out)).graph.output[0].type.tensor_type.shape.dim[1].dim_value == 10
    _, photos = E.sample_images(224, names=("chelsea", "coffee"))
    assert E.check_onnx(out, xs10, photos)["max_abs_diff"] < 1e-4   # the checkpoint's head, not a random one


@pytest.mark.slow
def test_coreml_of_a_checkpoint_without_class_names_needs_labels(files, tmp_path, capsys):
    root, _ = files
    argv = ["coreml", "--model", "xs", "--checkpoint", str(root / "xs10.pth"), "--out", str(tmp_path / "xs10.mlpackage")]
    assert_one_line_error(argv, capsys, "10 classes", "--labels")
    code, _, err = run_cli(argv + ["--labels", str(root / "ten.txt")], capsys)
    assert code == 0, err
    inv = E.op_inventory(tmp_path / "xs10.mlpackage")
    assert inv.class_labels == [f"label {i}" for i in range(10)] and inv.metadata["swiftlib.num_classes"] == "10"


# --------------------------------------------------------------------------- --expect, timings, invalid files
def test_expect_names_and_syntax_are_checked_before_any_export(tmp_path, capsys):
    """A misspelt figure is refused at once (exit 2, the names that exist listed); bad syntax is argparse's."""
    argv = ["compare", "--model", "xs", "--results-dir", str(tmp_path), "--expect", "ratio<=0.8"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and err.startswith("python -m swiftlib.export: error: --expect names ['ratio']")
    assert "ratio_non_const" in err and "tile" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(["onnx", "--model", "xs", "--time", "--results-dir", str(tmp_path),
                         "--expect", "ratio@swiftformer_s<=1"], capsys)
    assert code == 2 and "ratio@swiftformer_xs" in err
    code, _, err = run_cli(["compare", "--expect", "ratio_non_const<0.8"], capsys)  # only <= and >=
    assert code == 2 and "NAME<=VALUE" in err
    assert not list(tmp_path.iterdir())


def test_check_onnx_refuses_an_invalid_graph(tmp_path):
    """A graph whose node reads a tensor nothing defines fails onnx.checker: a ValueError naming the file."""
    node = helper.make_node("Relu", ["undefined"], ["logits"])
    graph = helper.make_graph([node], "broken", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ValueError, match="broken.onnx is not a valid ONNX model"):
        E.check_onnx(path, nn.Identity().eval(), torch.zeros(1, 3))

def _write(tmp_path, text):
    p = tmp_path / "t.csv"
    p.write_text(text)
    return p


def test_load_device_timings_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.load_device_timings(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"missing columns \['compute_units', 'median_ms'\]"):
        E.load_device_timings(_write(tmp_path, "model,device,ios\nxs,iPhone 14,16.0\n"))
    head = "model,device,ios,compute_units,median_ms\n"
    with pytest.raises(ValueError, match="line 2: compute_units must be one of"):
        E.load_device_timings(_write(tmp_path, head + "xs,iPhone 14,16.0,NE,0.7\n"))
    with pytest.raises(ValueError, match="median_ms must be > 0"):
        E.load_device_timings(_write(tmp_path, head + "xs,iPhone 14,16.0,ALL,-1\n"))
    with pytest.raises(ValueError, match="median_ms must be a number"):
        E.load_device_timings(_write(tmp_path, head + "xs,iPhone 14,16.0,ALL,fast\n"))
    with pytest.raises(ValueError, match="column 'device' is empty"):
        E.load_device_timings(_write(tmp_path, head + "xs,,16.0,ALL,0.7\n"))
    rows = E.load_device_timings(_write(tmp_path, head + "xs,iPhone 14,16.0,ALL,0.7\n,,,,\n"))
    assert rows == [{"model": "xs", "device": "iPhone 14", "ios": "16.0", "compute_units": "ALL", "median_ms": 0.7}]


# --------------------------------------------------------------------------- the library's own errors
def test_bad_model_name_resolution_and_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'swiftformer_xxl'"):
        E.to_coreml("swiftformer_xxl", tmp_path / "m.mlpackage")
    with pytest.raises(ValueError, match="multiple of 32.*got 16"):
        E.to_coreml("swiftformer_xs", tmp_path / "m.mlpackage", img_size=16)
    with pytest.raises(ValueError, match="multiple of 32.*got 100"):
        E.to_onnx("swiftformer_xs", tmp_path / "m.onnx", img_size=100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.to_coreml("swiftformer_xs", tmp_path / "missing" / "m.mlpackage")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.to_onnx("swiftformer_xs", tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match=r"must end with '\.mlpackage'"):
        E.to_coreml("swiftformer_xs", tmp_path / "m.mlmodel")
    with pytest.raises(ValueError, match="precision must be one of"):
        E.to_coreml("swiftformer_xs", tmp_path / "m.mlpackage", precision="int8")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        E.op_inventory(tmp_path / "none.mlpackage")
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        E.to_coreml("swiftformer_xs", tmp_path / "m.mlpackage", checkpoint=tmp_path / "none.pth")


def test_training_mode_model_is_refused(tmp_path):
    model = create_model("swiftformer_xs")  # nn.Module starts in training mode
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        E.to_coreml(model, tmp_path / "m.mlpackage")
    with pytest.raises(ValueError, match="training mode"):
        E.to_onnx(model, tmp_path / "m.onnx")


def test_bad_block_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown attention 'linformer'"):
        E.to_coreml_block(tmp_path / "b.mlpackage", "linformer", n=49, d=56)
    with pytest.raises(ValueError, match="needs the map size"):
        E.to_coreml_block(tmp_path / "b.mlpackage", "additive", kind="encoder", d=56)
    with pytest.raises(ValueError, match="give the token count"):
        E.to_coreml_block(tmp_path / "b.mlpackage", "additive", d=56)
    with pytest.raises(ValueError, match="stages are numbered 1..4"):
        E.export_sweep(tmp_path, stages=[5])
    with pytest.raises(FileNotFoundError):
        E.export_sweep(tmp_path / "none")


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    code, _, err = run_cli(["coreml", "--model", "swiftformer_q", "--out", str(tmp_path / "q.mlpackage")], capsys)
    assert code == 2 and err.startswith("python -m swiftlib.export: error: unknown model 'swiftformer_q'")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="unknown model"):  # main itself raises; cli answers in one line
        E.main(["coreml", "--model", "swiftformer_q", "--out", str(tmp_path / "q.mlpackage")])
