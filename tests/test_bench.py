"""swiftlib.bench: the timing/memory core, the analytic activation memory against a measurement,
the `attention` CLI, and notebook 02's plots (headless). No test asserts a speed."""
import json
import os
import statistics
import time

import matplotlib
import pytest
import torch

import swiftlib.attention as A
from swiftlib import bench, viz

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- machine / device
def test_machine_info_names_what_results_depend_on():
    info = bench.machine_info()
    for key in ("cpu_model", "cpu_count", "torch_threads", "torch", "timm", "gpu_name", "device"):
        assert key in info
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()


def test_resolve_device_errors():
    assert bench.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'cpu' or 'cuda"):
        bench.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda.is_available"):
            bench.resolve_device("cuda")


# --------------------------------------------------------------------------- latency (shape of results only)
def test_time_module_reports_median_iqr_runs_and_threads():
    m = torch.nn.Linear(16, 16)
    r = bench.time_module(m, torch.randn(4, 16), min_run_time=0.05, threads=1)
    assert set(r) >= {"median_ms", "iqr_ms", "runs", "threads", "device"}
    assert r["threads"] == 1 and r["runs"] >= 1
    assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["iqr_ms"] >= 0
    with pytest.raises(ValueError, match="min_run_time"):
        bench.time_module(m, torch.randn(4, 16), min_run_time=0)
    with pytest.raises(ValueError, match="threads"):
        bench.time_module(m, torch.randn(4, 16), threads=0)
    with pytest.raises(TypeError, match="callable"):
        bench.time_module(42)


def test_time_module_restores_thread_count():
    before = torch.get_num_threads()
    bench.time_module(lambda: None, min_run_time=0.01, threads=1)
    assert torch.get_num_threads() == before


def test_time_interleaved_times_slow_callables_as_single_calls():
    """A 40 ms callable with a 0.2 s budget: single calls in min(rounds, max(3, 0.2 / 0.04)) rounds."""
    calls = {"slow": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.04)

    r = bench.time_interleaved({"slow": slow, "fast": lambda: None}, rounds=4, min_run_time=0.04,
                               max_seconds=0.2, warmup=1)
    assert r["slow"]["runs"] == 4
    assert calls["slow"] == 1 + 4  # warm-up + one call per timed round
    assert r["slow"]["min_ms"] >= 40  # sleep(0.04) never returns early
    assert r["fast"]["runs"] >= 4
    assert len(r["slow"]["round_medians_ms"]) == len(r["fast"]["round_medians_ms"]) == 4
    assert min(r["slow"]["round_medians_ms"]) >= 40 > max(r["fast"]["round_medians_ms"])
    with pytest.raises(ValueError, match="at least one"):
        bench.time_interleaved({})


def test_paired_ratio_follows_load_that_changes_between_rounds():
    """a takes half of b's time in every round while the machine slows down 10x after round 1: both
    ratios are 0.5. When load also hits b alone in one round, the round-by-round ratio stays 0.5
    and the ratio of the pooled medians drops to 1 / 20."""
    a, b = [1.0, 10.0, 10.0], [2.0, 20.0, 20.0]
    assert bench.paired_ratio(a, b) == 0.5
    assert statistics.median(a) / statistics.median(b) == 0.5
    a, b = [1.0, 1.0, 10.0], [2.0, 20.0, 20.0]         # one round of b disturbed: the median pair wins
    assert bench.paired_ratio(a, b) == 0.5
    assert statistics.median(a) / statistics.median(b) == 0.05
    assert bench.paired_ratio([3.0, 4.0], [1.0]) == 3.0  # rounds only one of them has are left out
    with pytest.raises(ValueError, match="at least one round"):
        bench.paired_ratio([], [1.0])


# --------------------------------------------------------------------------- memory accounting, by hand
def test_live_tensor_memory_by_hand():
    x = torch.randn(1000)  # 4000 bytes, an input: not counted

    def f(x):
        a = x + 1          # +4000 live
        b = a * 2          # +4000 -> 8000 live
        del a              # -4000
        c = b.view(10, 100).t()  # a view: no new storage
        d = c + 1          # +4000 -> 8000 live again
        return d

    r = bench.peak_memory(f, x)
    assert r["peak_bytes"] == 8000
    assert r["allocated_bytes"] == 12000
    assert r["output_bytes"] == 4000
    assert r["tensors"] == 3


def test_live_tensor_memory_ignores_views_and_in_place_on_inputs():
    x = torch.randn(256)
    r = bench.peak_memory(lambda x: x.view(16, 16).t().add_(1), x)
    assert r["allocated_bytes"] == 0


# --------------------------------------------------------------------------- analytic memory vs measured
# attention_memory counts the intermediate tensors of each algorithm as written in the papers (inputs and
# output excluded). The measurement (LiveTensorMemory) counts the storages the implementation's ops
# create. They agree exactly where the implementation materialises exactly those tensors; elsewhere the
# relation is stated and tested.
@pytest.mark.parametrize("n,d", [(49, 48), (196, 64), (512, 16), (100, 32)])
def test_separable_memory_formula_is_every_intermediate(n, d):
    m = A.SeparableAttention(d).eval()
    r = bench.peak_memory(m, torch.randn(2, n, d))
    assert r["allocated_bytes"] - r["output_bytes"] == A.attention_memory("separable", n, d, batch=2)


@pytest.mark.parametrize("n,d,h", [(196, 64, 2), (512, 16, 1), (100, 32, 4), (256, 48, 3)])
def test_self_attention_explicit_peak_is_qkv_plus_two_score_maps(n, d, h):
    """Explicit path: the peak is reached while qkv (3nD) and the scaled scores + softmax (2 h n^2) are
    alive; the formula also counts the context (nD), allocated after the maps are freed."""
    m = A.SelfAttention(d, num_heads=h).eval()
    r = bench.peak_memory(lambda x: m(x, return_attn=True)[0], torch.randn(1, n, d))
    assert r["peak_bytes"] == 4 * (3 * n * d + 2 * h * n * n)
    assert r["peak_bytes"] == A.attention_memory("self", n, d, h) - 4 * n * d


@pytest.mark.parametrize("n,d,h", [(196, 64, 2), (512, 16, 1), (1024, 32, 4)])
def test_self_attention_sdpa_path_never_materialises_the_score_maps(n, d, h):
    """Default path (fused SDPA kernel): everything the formula counts except the 2 h n^2 maps
    (the kernel works on blocks it allocates internally, invisible to op-level accounting)."""
    m = A.SelfAttention(d, num_heads=h).eval()
    r = bench.peak_memory(m, torch.randn(1, n, d))
    assert r["peak_bytes"] - r["output_bytes"] == A.attention_memory("self", n, d, h) - 4 * 2 * h * n * n
    assert r["peak_bytes"] < 4 * h * n * n  # not even one n x n map


@pytest.mark.parametrize("n,d,h", [(49, 48, 1), (196, 64, 2), (512, 16, 1), (100, 32, 4)])
def test_transposed_attention_allocates_the_formula_plus_its_temporaries(n, d, h):
    """Beyond the formula's tensors the implementation materialises, in elements: x^2 inside both
    L2 normalisations (2nD), the head-merge copy of the context (nD), the unscaled channel map
    (D^2/h), and the norm / clamp / rsqrt vectors of q and k (6D)."""
    m = A.TransposedAttention(d, num_heads=h).eval()
    r = bench.peak_memory(m, torch.randn(1, n, d))
    extra = 2 * n * d + n * d + d * d // h + 6 * d
    assert r["allocated_bytes"] - r["output_bytes"] == A.attention_memory("transposed", n, d, h) + 4 * extra


@pytest.mark.parametrize("n,d", [(49, 48), (196, 64), (512, 16), (100, 32), (16, 64), (1, 220)])
@pytest.mark.parametrize("reparameterized", [False, True])
def test_additive_attention_allocates_the_formula_minus_the_normalised_copies(n, d, reparameterized):
    """The formula counts the official algorithm's tensors (7nD + 2n + D). The forward scales [Q | K]
    in place (no normalised copy, -2nD). For n >= D, G scales the D x D weight of Proj instead of
    the keys (D^2 in place of G * K and Proj(G * K), -2nD + D^2); for n < D it scales the keys in
    place. Proj(G * K) + Q + b_p accumulates in place in Q's columns of [Q | K] (-nD). Beside
    G (D) the small tensors are 3n + 1 elements against the formula's 2n: the [N, 2] norms (clamped
    and inverted in place), the scores Q w_g (normalised in place into a) and their norm.
    Reparameterized, the one [N, 2D] @ [2D, D] product needs no nD intermediate at all; for n >= D
    its per-sample weight is 3 D^2 (W_f W_p diag(G) and the concatenation [W_f | W_f W_p diag(G)]),
    for n < D the keys are scaled in place by [1 | G] (3D: the ones and the concatenation)."""
    m = A.EfficientAdditiveAttention(d).eval()
    if reparameterized:
        m.reparameterize()
    r = bench.peak_memory(m, torch.randn(1, n, d))
    if n >= d:
        created = 2 * n * d + 3 * d * d if reparameterized else 2 * n * d + d * d
    else:
        created = 2 * n * d + 3 * d if reparameterized else 2 * n * d
    created += 3 * n + d + 1
    assert r["allocated_bytes"] - r["output_bytes"] == 4 * created
    assert r["allocated_bytes"] - r["output_bytes"] < A.attention_memory("additive", n, d)
    assert r["peak_bytes"] <= 4 * created + r["output_bytes"]


@pytest.mark.parametrize("batch,n,d", [(1, 49, 48), (2, 196, 32)])
def test_matmul_floor_does_the_attentions_matrix_products_and_nothing_else(batch, n, d):
    """fvcore on the floor module: the analytic 4nD^2 + 2nD MACs of the attention, and no
    elementwise work except the two bias adds (qk: 2D, final: D per token) and the traced shape
    product B * N (one scalar multiply)."""
    from swiftlib.flops import count_macs

    ours = A.EfficientAdditiveAttention(d).eval()
    floor = bench.AdditiveMatmuls(ours, batch, n).eval()
    c = count_macs(floor, torch.randn(batch, n, d))
    assert c["matmul"] == batch * A.attention_macs("additive", n, d)
    assert c["elementwise"] == batch * n * 3 * d + 1


def test_steady_allocator_sets_glibc_thresholds(tmp_path):
    text = bench.steady_allocator()
    assert text.startswith("steady") or "not glibc" in text
    out = tmp_path / "a.json"
    bench.main(["attention", "--n", "16,32", "--d", "8", "--variants", "additive", "--min-run-time", "0.02",
                "--rounds", "1", "--no-memory", "--malloc", "steady", "--json", str(out)])
    assert json.loads(out.read_text())["machine"]["malloc"] == text


def test_additive_attention_allocates_less_than_timm():
    """The same function as timm's module, with fewer full-size tensors created per forward."""
    ours = A.EfficientAdditiveAttention(48).eval()
    peer = bench.TimmAdditiveOnTokens(ours).eval()
    x = torch.randn(1, 784, 48)
    mine = bench.peak_memory(ours, x)
    theirs = bench.peak_memory(peer, x.transpose(1, 2).reshape(1, 48, 28, 28).contiguous())
    assert mine["allocated_bytes"] < 0.6 * theirs["allocated_bytes"]


# --------------------------------------------------------------------------- fitting, crossovers, files
def test_fit_exponent_recovers_power_laws():
    ns = [196, 784, 3136, 12544]
    assert bench.fit_exponent(ns, [3.0 * n ** 1.5 for n in ns]) == pytest.approx(1.5)
    assert bench.fit_exponent(ns, [0.1 * n for n in ns]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        bench.fit_exponent([1], [1])
    with pytest.raises(ValueError, match="positive"):
        bench.fit_exponent([1, 2], [0, 1])


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


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "sub" / "r.json"
    bench.write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        bench.write_json(path, {"a": object()})  # not serialisable: the old file stays intact
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like a file opened with open(path, "w")


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


# --------------------------------------------------------------------------- CLI
def test_registry_rejects_duplicates():
    with pytest.raises(ValueError, match="registered twice"):
        bench.command("attention", help="again")(lambda args: {})


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
    assert variants == {"self", "transposed", "separable", "additive", "timm_additive", "additive_reparameterized",
                        "additive_matmuls"}
    assert len(saved["points"]) == 7 * 3
    for p in saved["points"]:
        assert p["median_ms"] > 0 and p["runs"] >= 1 and p["threads"] == 1 and p["peak_bytes"] > 0
        base = "additive" if p["variant"] in ("timm_additive", "additive_reparameterized", "additive_matmuls") \
            else p["variant"]
        assert p["analytic_macs"] == A.attention_macs(base, p["n"], 16, p["heads"])
    assert {p["heads"] for p in saved["points"] if p["variant"] == "self"} == {2}
    assert set(saved["exponents"]) == variants
    assert set(saved["ratios"]) == {"additive_over_timm_additive", "additive_reparameterized_over_timm_additive",
                                    "additive_over_self", "additive_matmuls_over_timm_additive",
                                    "additive_matmuls_over_additive_reparameterized"}
    assert set(saved["ratios_paired"]) == set(saved["ratios"])
    for p in saved["points"]:  # the paired ratios come from the rounds of the same points
        assert len(p["round_medians_ms"]) == 2 and min(p["round_medians_ms"]) >= p["min_ms"]
    by = {(p["variant"], p["n"]): p["round_medians_ms"] for p in saved["points"]}
    assert saved["ratios_paired"]["additive_over_timm_additive"]["64"] == round(
        statistics.median([a / b for a, b in zip(by["additive", 64], by["timm_additive", 64])]), 4)
    assert max(saved["reparameterized_max_abs_diff"].values()) < 1e-5
    assert saved["machine"]["malloc"] == "default"
    assert not any("additive_matmuls" in (c["a"], c["b"]) for c in saved["crossovers"])
    assert max(saved["peer_max_abs_diff"].values()) < 1e-5
    assert "additive" in capsys.readouterr().out


def test_attention_sweep_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "sweep.partial"
    kw = dict(d=16, min_run_time=0.01, rounds=1, threads=1, memory=False, progress=False, checkpoint=ckpt)
    first = bench.attention_sweep([16, 32], **kw)
    assert json.loads(ckpt.read_text())["points"] == json.loads(json.dumps(first["points"]))
    again = bench.attention_sweep([16, 32, 64], **kw)  # 16 and 32 are reused, 64 is measured
    assert [p for p in again["points"] if p["n"] < 64] == first["points"]
    assert {p["n"] for p in again["points"]} == {16, 32, 64}
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
    with pytest.raises(ValueError, match="unknown attention variant"):
        bench.main(["attention", "--n", "16", "--variants", "linformer", "--min-run-time", "0.01"])
    with pytest.raises(ValueError, match="not divisible"):
        bench.attention_sweep([16], d=30, heads=4)


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


def test_data_loading_benchmark_times_three_loaders_of_the_same_batches(tmp_path):
    out = tmp_path / "data.json"
    payload = bench.main(["train", "--skip-train", "--data-images", "20", "--workers", "0", "--json", str(out)])
    d = json.loads(out.read_text())["data"]
    assert d == json.loads(json.dumps(payload["data"])) and d["images"] == 20
    for k in ("jpeg_img_s", "cache_img_s", "cache_batch_img_s"):
        assert d[k] > 0
    assert d["ratio"] == pytest.approx(d["cache_img_s"] / d["jpeg_img_s"], rel=0.01)
    assert d["ratio_batch"] == pytest.approx(d["cache_batch_img_s"] / d["jpeg_img_s"], rel=0.01)
    assert set(d["rounds_img_s"]) == {"jpeg", "cache", "cache_batch"}


def test_training_loop_benchmark_runs_both_loops_interleaved(tmp_path, monkeypatch):
    """Both loops run every round on the same synthetic batches (fit's loop first in even rounds),
    and the row's ratio is the ratio of the medians."""
    calls = []
    real_fit, real_plain = bench._swiftlib_fit_img_s, bench._plain_loop_img_s
    monkeypatch.setattr(bench, "_swiftlib_fit_img_s", lambda *a: calls.append("fit") or real_fit(*a))
    monkeypatch.setattr(bench, "_plain_loop_img_s", lambda *a: calls.append("plain") or real_plain(*a))
    payload = bench.main(["train", "--skip-data", "--sizes", "32", "--batch", "4", "--steps", "2", "--rounds", "2",
                          "--threads", "1", "--json", str(tmp_path / "train.json")])
    assert calls == ["fit", "plain", "plain", "fit"]
    (row,) = payload["train"]
    assert (row["img_size"], row["batch"], row["device"], row["amp"]) == (32, 4, "cpu", None)
    assert len(row["swiftlib_rounds"]) == len(row["plain_rounds"]) == 2 and min(row["plain_rounds"]) > 0
    assert row["ratio"] == pytest.approx(statistics.median(row["swiftlib_rounds"])
                                         / statistics.median(row["plain_rounds"]), rel=0.01)
    assert payload["device"] == "cpu" and "data" not in payload


def test_training_loop_benchmark_names_a_missing_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        bench.main(["train", "--skip-data", "--device", "cuda"])
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err
