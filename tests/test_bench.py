"""swiftlib.bench: the attention sweep and its summaries, the CLI (shared flags, --json, --expect), the
training and data-loading benchmarks, and notebook 02's plots (headless). No test asserts a speed."""
import json
import os
import statistics
import subprocess
import sys
import tempfile

import matplotlib
import pytest
import torch

import swiftlib.attention as A
import swiftlib.bench.attention as bench_attention
import swiftlib.bench.train as bench_train
from swiftlib import bench, viz
from swiftlib.flops import count_macs
from swiftlib.io import atomic_write_json
from swiftlib.measure import steady_allocator

matplotlib.use("Agg")

#: the contenders of a sweep with its peers, by the names the JSON uses
SWEEP_CONTENDERS = {"self", "transposed", "separable", "additive", "timm_additive", "additive_inference",
                    "additive_matmuls"}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- sweep contenders
@pytest.mark.parametrize("batch,n,d", [(1, 49, 48), (2, 196, 32)])
def test_matmul_floor_does_the_attentions_matrix_products_and_nothing_else(batch, n, d):
    """fvcore on the floor module built from the inference module: the analytic 4nD^2 + 2nD MACs of
    the attention, and no elementwise work except the two bias adds (qk: 2D, the merged output
    product: D per token) and the traced shape product B * N (one scalar multiply)."""
    fast = A.EfficientAdditiveAttention(d).eval().reparameterize()
    floor = bench.AdditiveMatmuls(fast, batch, n).eval()
    c = count_macs(floor, torch.randn(batch, n, d))
    assert c["matmul"] == batch * A.attention_macs("additive", n, d)
    assert c["elementwise"] == batch * n * 3 * d + 1


def test_map_size_is_the_most_square_factorisation():
    assert bench.map_size(3136) == (56, 56)
    assert bench.map_size(12544) == (112, 112)
    assert bench.map_size(35) == (5, 7)
    assert bench.map_size(13) == (1, 13)
    with pytest.raises(ValueError, match=">= 1"):
        bench.map_size(0)


def test_timm_peer_computes_the_same_function():
    ours = A.EfficientAdditiveAttention(32).eval()
    peer = bench.TimmAdditiveOnTokens(ours).eval()
    x = torch.randn(2, 35, 32)
    with torch.no_grad():
        got = peer(x.transpose(1, 2).reshape(2, 32, 5, 7)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(got, ours(x))


# --------------------------------------------------------------------------- crossovers
def test_find_crossovers_of_power_laws():
    ns = [10, 100, 1000, 10000]
    quad = [n * n / 1000 for n in ns]   # n^2 / 1000
    lin = [n for n in ns]               # n: equal at n = 1000
    lin2 = [n / 10 for n in ns]         # crosses n^2/1000 at n = 100
    assert bench.find_crossovers(ns, quad, lin) == pytest.approx([1000])
    assert bench.find_crossovers(ns, quad, lin2) == pytest.approx([100])
    # between samples: n^2/1000 vs 5n cross at n = 5000, found exactly by log-log interpolation
    assert bench.find_crossovers(ns, quad, [5 * n for n in ns]) == pytest.approx([5000])
    assert bench.find_crossovers(ns, lin, [2 * n for n in ns]) == []
    pts = [{"variant": v, "n": n, "median_ms": y} for v, ys in (("self", quad), ("additive", lin2))
           for n, y in zip(ns, ys)]
    assert bench.sweep_crossovers(pts) == [{"a": "self", "b": "additive", "n": 100.0, "key": "median_ms"}]
    with pytest.raises(ValueError, match="equal lengths"):
        bench.find_crossovers(ns, quad, lin[:2])


# --------------------------------------------------------------------------- attention CLI
def test_attention_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "attention_cpu_test.json"
    threads = torch.get_num_threads()
    payload = bench.main(["attention", "--n", "16,64,256", "--d", "16", "--heads", "2", "--min-run-time", "0.03",
                          "--rounds", "2", "--threads", "1", "--json", str(out)])
    assert torch.get_num_threads() == threads  # --threads applies to the run only
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(payload))
    assert saved["machine"]["torch"] == torch.__version__ and "cpu_model" in saved["machine"]
    assert saved["machine"]["torch_threads"] == 1
    assert saved["config"]["n"] == [16, 64, 256]
    variants = {p["variant"] for p in saved["points"]}
    assert variants == SWEEP_CONTENDERS
    assert len(saved["points"]) == 7 * 3
    for p in saved["points"]:
        assert p["median_ms"] > 0 and p["runs"] >= 1 and p["threads"] == 1 and p["peak_bytes"] > 0
        base = "additive" if p["variant"] in ("timm_additive", "additive_inference", "additive_matmuls") \
            else p["variant"]
        assert p["analytic_macs"] == A.attention_macs(base, p["n"], 16, p["heads"])
    assert {p["heads"] for p in saved["points"] if p["variant"] == "self"} == {2}
    assert set(saved["exponents"]) == variants
    assert set(saved["ratios"]) == {"additive_over_timm_additive", "additive_inference_over_timm_additive",
                                    "additive_over_self", "additive_matmuls_over_timm_additive",
                                    "additive_matmuls_over_additive_inference"}
    assert set(saved["ratios_paired"]) == set(saved["ratios_min"]) == set(saved["ratios"])
    by_median = {(p["variant"], p["n"]): p["median_ms"] for p in saved["points"]}
    assert saved["ratios"]["additive_inference_over_timm_additive"]["64"] == round(
        by_median["additive_inference", 64] / by_median["timm_additive", 64], 4)
    for p in saved["points"]:  # the paired ratios come from the rounds of the same points
        assert len(p["round_medians_ms"]) == 2 and min(p["round_medians_ms"]) >= p["min_ms"]
    by = {(p["variant"], p["n"]): p["round_medians_ms"] for p in saved["points"]}
    assert saved["ratios_paired"]["additive_over_timm_additive"]["64"] == round(
        statistics.median([a / b for a, b in zip(by["additive", 64], by["timm_additive", 64])]), 4)
    assert max(saved["additive_inference_max_abs_diff"].values()) < 1e-5
    assert max(saved["peer_max_abs_diff"].values()) < 1e-5
    assert saved["machine"]["malloc"] == "default"
    assert not any({"additive_matmuls", "additive_inference"} & {c["a"], c["b"]} for c in saved["crossovers"])
    assert saved["expectations"] == [] and not any("target" in k or "goal" in k for k in saved)
    assert "additive_inference" in capsys.readouterr().out


def test_attention_cli_records_the_allocator_setting(tmp_path):
    out = tmp_path / "a.json"
    bench.main(["attention", "--n", "16,32", "--d", "8", "--variants", "additive", "--min-run-time", "0.02",
                "--rounds", "1", "--no-memory", "--malloc", "steady", "--json", str(out)])
    assert json.loads(out.read_text())["machine"]["malloc"] == steady_allocator()  # the same setting, in words


def test_attention_sweep_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "sweep.partial"
    kw = dict(d=16, min_run_time=0.01, rounds=1, threads=1, memory=False, progress=False, checkpoint=ckpt)
    first = bench.attention_sweep([16, 32], **kw)
    assert json.loads(ckpt.read_text())["points"] == json.loads(json.dumps(first["points"]))
    again = bench.attention_sweep([16, 32, 64], **kw)  # 16 and 32 are reused, 64 is measured
    assert [p for p in again["points"] if p["n"] < 64] == first["points"]
    assert {p["n"] for p in again["points"]} == {16, 32, 64}
    assert set(again["additive_inference_max_abs_diff"]) == {"16", "32", "64"}
    other = bench.attention_sweep([16], **{**kw, "d": 32})  # other settings: nothing is reused
    assert {p["d"] for p in other["points"]} == {32}


def test_attention_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        bench.main(["attention", "--n", "49,abc"])
    assert "comma-separated integers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["attention", "--device", "tpu"])
    assert "'cpu' or 'cuda" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["attention", "--threads", "0"])
    assert "--threads" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # a usage error before anything is measured
        bench.main(["attention", "--n", "16", "--variants", "linformer", "--min-run-time", "0.01"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--variants" in err and "unknown attention variant 'linformer'" in err
    with pytest.raises(ValueError, match="not divisible"):
        bench.attention_sweep([16], d=30, heads=4)


def test_results_and_checkpoints_are_written_atomically(tmp_path):
    """--json and the sweep's checkpoint go through swiftlib.io.atomic_write_json: a payload that cannot
    be serialised leaves the previous file intact and no temporary behind; permissions as open(path, "w")."""
    path = tmp_path / "sub" / "r.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- --expect
_QUICK_SWEEP = ["attention", "--n", "16,32", "--d", "8", "--min-run-time", "0.02", "--rounds", "2", "--no-memory",
                "--threads", "1"]


def test_expect_prints_and_records_met_and_not_met(tmp_path, capsys):
    """An expectation no latency ratio of two small modules can miss (<= 1e6) and one none can meet
    (>= 1e6), on a ratio of pooled medians, a round-by-round ratio and a fastest-runs ratio."""
    out = tmp_path / "a.json"
    payload = bench.main([*_QUICK_SWEEP, "--json", str(out),
                          "--expect", "additive_inference_over_timm_additive@32<=1e6",
                          "--expect", "additive_over_self@16 >= 1e6",
                          "--expect", "additive_over_timm_additive@32:paired<=1e6",
                          "--expect", "additive_over_timm_additive@16:min>=1e6"])
    printed = capsys.readouterr().out
    got = [(e["name"], e["op"], e["value"], e["met"]) for e in json.loads(out.read_text())["expectations"]]
    assert got == [("additive_inference_over_timm_additive@32", "<=", 1e6, True),
                   ("additive_over_self@16", ">=", 1e6, False),
                   ("additive_over_timm_additive@32:paired", "<=", 1e6, True),
                   ("additive_over_timm_additive@16:min", ">=", 1e6, False)]
    measured = [e["actual"] for e in payload["expectations"]]
    assert measured == [payload["ratios"]["additive_inference_over_timm_additive"]["32"],
                        payload["ratios"]["additive_over_self"]["16"],
                        payload["ratios_paired"]["additive_over_timm_additive"]["32"],
                        payload["ratios_min"]["additive_over_timm_additive"]["16"]]
    lines = [ln for ln in printed.splitlines() if ln.startswith("expect ")]
    assert [ln.endswith(": met") for ln in lines] == [True, False, True, False]
    assert sum(ln.endswith("NOT met") for ln in lines) == 2


def test_expect_names_an_unknown_ratio_after_writing_the_results(tmp_path, capsys):
    out = tmp_path / "a.json"
    with pytest.raises(SystemExit) as err:
        bench.main([*_QUICK_SWEEP, "--json", str(out), "--expect", "additive_over_timm@32<=0.8",
                    "--expect", "exponent_additive<=1.1"])  # no exponent: every n is below the fit's range
    assert err.value.code == 2
    (msg,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # one line
    assert "--expect names ['additive_over_timm@32', 'exponent_additive']" in msg
    assert "did you mean additive_over_timm_additive@32" in msg  # the closest name that exists
    assert "additive_over_self@16" in msg  # and every name the run computes
    saved = json.loads(out.read_text())
    assert saved["points"] and [e["met"] for e in saved["expectations"]] == [None, None]


@pytest.mark.parametrize("bad", ["additive_over_self@16", "additive_over_self@16<0.8", "x<=abc", "<=0.8", "x>=nan"])
def test_expect_rejects_what_is_not_name_op_number(bad, capsys):
    with pytest.raises(SystemExit):
        bench.main(["attention", "--expect", bad])
    assert "NAME<=VALUE or NAME>=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("cmd,example", [("attention", "additive_inference_over_timm_additive@3136"),
                                         ("models", "swiftlib_fused_over_timm@1"), ("train", "train_ratio@224")])
def test_each_subcommand_documents_the_expectation_names(cmd, example, capsys):
    with pytest.raises(SystemExit) as done:
        bench.main([cmd, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    for flag in ("--expect", "--device", "--threads", "--json", "--malloc"):
        assert flag in text
    assert example in text


@pytest.mark.slow  # a fresh interpreter imports torch, timm and swiftlib
def test_python_m_swiftlib_bench_runs_the_cli():
    res = subprocess.run([sys.executable, "-m", "swiftlib.bench", "--help"], capture_output=True, text=True, check=True)
    assert all(cmd in res.stdout for cmd in ("attention", "models", "train"))


# --------------------------------------------------------------------------- notebook 02 plots, headless
def _fake_points():
    ns = [49, 196, 784, 3136]
    pts = []
    for v, f in (("self", lambda n: n * n * 1e-5), ("additive", lambda n: n * 1e-3), ("timm_additive", lambda n: n * 1.2e-3)):
        pts += [{"variant": v, "n": n, "median_ms": f(n), "iqr_ms": 0.1 * f(n), "peak_bytes": 40 * n} for n in ns]
    return pts


def test_plot_sweep_draws_both_panels_and_marks():
    pts = _fake_points()
    cross = bench.sweep_crossovers(pts)
    assert [(c["a"], c["b"]) for c in cross] == [("self", "additive"), ("self", "timm_additive")]
    fig = viz.plot_sweep(pts, cross)
    ax_t, ax_m = fig.axes
    assert ax_t.get_xscale() == ax_t.get_yscale() == "log" == ax_m.get_xscale()
    labels = [t.get_text() for t in ax_t.get_legend().get_texts()]
    assert "timm additive (peer)" in labels and len(labels) == 3
    texts = [t.get_text() for t in ax_t.texts]
    assert {"3136", "784", "196", "49"} <= set(texts)  # SwiftFormer's stage token counts
    assert any("self=additive" in t for t in texts)
    assert len(ax_m.get_lines()) >= 3
    matplotlib.pyplot.close(fig)
    fig = viz.plot_sweep([{k: v for k, v in p.items() if k != "peak_bytes"} for p in pts])
    assert len(fig.axes) == 1
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_sweep([])


def test_attention_bench_widget_redraws_on_change():
    calls = []

    def run(d, heads, batch, device):
        calls.append((d, heads, batch, device))
        return _fake_points(), []

    box = viz.attention_bench_widget(run, points=(_fake_points(), []))
    assert calls == []  # the first figure comes from the given points
    sliders = [w for row in box.children[:2] for w in row.children]
    d_slider = sliders[0]
    assert all(getattr(w, "continuous_update", False) is False for w in sliders if hasattr(w, "continuous_update"))
    d_slider.value = 32
    assert calls == [(32, 1, 1, "cpu")]
    sliders[1].value = 3  # 32 is not divisible by 3: no measurement
    assert len(calls) == 1


# --------------------------------------------------------------------------- train / data loading
def test_data_loading_benchmark_times_three_loaders_of_the_same_batches(tmp_path, monkeypatch):
    """Three loaders over the same 20 JPEGs; the JPEGs and the cache go to a temporary folder that is
    removed afterwards, never to the default cache root."""
    scratch, cache_root = tmp_path / "tmp", tmp_path / "cache_root"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("SWIFTLIB_CACHE", str(cache_root))
    out = tmp_path / "data.json"
    payload = bench.main(["train", "--skip-train", "--data-images", "20", "--workers", "0", "--json", str(out),
                          "--expect", "data_ratio>=0"])
    d = json.loads(out.read_text())["data"]
    assert d == json.loads(json.dumps(payload["data"])) and d["images"] == 20
    for k in ("jpeg_img_s", "cache_img_s", "cache_batch_img_s"):
        assert d[k] > 0
    assert d["ratio"] == pytest.approx(d["cache_img_s"] / d["jpeg_img_s"], rel=0.01)
    assert d["ratio_batch"] == pytest.approx(d["cache_batch_img_s"] / d["jpeg_img_s"], rel=0.01)
    assert set(d["rounds_img_s"]) == {"jpeg", "cache", "cache_batch"}
    assert [(e["actual"], e["met"]) for e in payload["expectations"]] == [(d["ratio"], True)]
    assert list(scratch.iterdir()) == [] and not cache_root.exists()


def test_training_loop_benchmark_runs_both_loops_interleaved(tmp_path, monkeypatch):
    """Both loops run every round on the same synthetic batches (fit's loop first in even rounds),
    and the row's ratio is the ratio of the medians."""
    calls = []
    real_fit, real_plain = bench_train._swiftlib_fit_img_s, bench_train._plain_loop_img_s
    monkeypatch.setattr(bench_train, "_swiftlib_fit_img_s", lambda *a: calls.append("fit") or real_fit(*a))
    monkeypatch.setattr(bench_train, "_plain_loop_img_s", lambda *a: calls.append("plain") or real_plain(*a))
    payload = bench.main(["train", "--skip-data", "--sizes", "32", "--batch", "4", "--steps", "2", "--rounds", "2",
                          "--threads", "1", "--json", str(tmp_path / "train.json"), "--expect", "train_ratio@32>=0"])
    assert calls == ["fit", "plain", "plain", "fit"]
    (row,) = payload["train"]
    assert (row["img_size"], row["batch"], row["device"], row["amp"]) == (32, 4, "cpu", None)
    assert len(row["swiftlib_rounds"]) == len(row["plain_rounds"]) == 2 and min(row["plain_rounds"]) > 0
    assert row["ratio"] == pytest.approx(statistics.median(row["swiftlib_rounds"])
                                         / statistics.median(row["plain_rounds"]), rel=0.01)
    assert payload["device"] == "cpu" and "data" not in payload and "goals" not in payload
    assert [(e["actual"], e["met"]) for e in payload["expectations"]] == [(row["ratio"], True)]


def test_training_loop_benchmark_names_a_missing_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        bench.main(["train", "--skip-data", "--device", "cuda"])
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_sweep_names_every_ratio_for_expect():
    """The names --expect reads, from a hand-made summary: RATIO@N, RATIO@N:min, RATIO@N:paired, exponent_V."""
    result = {"ratios": {"a_over_b": {"49": 0.5}}, "ratios_min": {"a_over_b": {"49": 0.4}},
              "ratios_paired": {"a_over_b": {"49": 0.6}}, "exponents": {"a": 1.0, "b": None},
              "exponents_min": {"a": 0.9}}
    assert bench_attention.named_ratios(result) == {"a_over_b@49": 0.5, "a_over_b@49:min": 0.4,
                                                    "a_over_b@49:paired": 0.6, "exponent_a": 1.0,
                                                    "exponent_a:min": 0.9}
