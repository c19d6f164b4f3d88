"""swiftlib.measure, the measurement core: machine info, the device resolver, timing (shape of results
and budgets, never a speed), paired ratios, memory accounting checked by hand, the allocator setting,
the exponent fit."""
import statistics
import time

import pytest
import torch

from swiftlib import measure


# --------------------------------------------------------------------------- machine / device
def test_machine_info_names_what_results_depend_on():
    info = measure.machine_info()
    for key in ("cpu_model", "cpu_count", "torch_threads", "torch", "timm", "gpu_name", "device"):
        assert key in info
    assert info["torch"] == torch.__version__
    assert info["torch_threads"] == torch.get_num_threads()


def test_resolve_device_errors():
    assert measure.resolve_device("cpu") == torch.device("cpu")
    assert measure.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'cpu' or 'cuda"):
        measure.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda.is_available"):
            measure.resolve_device("cuda")


def test_steady_allocator_sets_glibc_thresholds():
    text = measure.steady_allocator()
    assert text.startswith("steady") or "not glibc" in text
    assert "default" in measure.MALLOC_MODES and "steady" in measure.MALLOC_MODES


# --------------------------------------------------------------------------- latency (shape of results only)
def test_time_module_reports_median_iqr_runs_and_threads():
    m = torch.nn.Linear(16, 16)
    r = measure.time_module(m, torch.randn(4, 16), min_run_time=0.05, threads=1)
    assert set(r) >= {"median_ms", "iqr_ms", "runs", "threads", "device"}
    assert r["threads"] == 1 and r["runs"] >= 1
    assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["iqr_ms"] >= 0
    with pytest.raises(ValueError, match="min_run_time"):
        measure.time_module(m, torch.randn(4, 16), min_run_time=0)
    with pytest.raises(ValueError, match="threads"):
        measure.time_module(m, torch.randn(4, 16), threads=0)
    with pytest.raises(TypeError, match="callable"):
        measure.time_module(42)


def test_time_module_restores_thread_count():
    before = torch.get_num_threads()
    measure.time_module(lambda: None, min_run_time=0.01, threads=1)
    assert torch.get_num_threads() == before


def test_time_interleaved_times_slow_callables_as_single_calls():
    """A 40 ms callable with a 0.2 s budget: single calls in min(rounds, max(3, 0.2 / 0.04)) rounds."""
    calls = {"slow": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.04)

    r = measure.time_interleaved({"slow": slow, "fast": lambda: None}, rounds=4, min_run_time=0.04,
                                 max_seconds=0.2, warmup=1)
    assert r["slow"]["runs"] == 4
    assert calls["slow"] == 1 + 4  # warm-up + one call per timed round
    assert r["slow"]["min_ms"] >= 40  # sleep(0.04) never returns early
    assert r["fast"]["runs"] >= 4
    assert len(r["slow"]["round_medians_ms"]) == len(r["fast"]["round_medians_ms"]) == 4
    assert min(r["slow"]["round_medians_ms"]) >= 40 > max(r["fast"]["round_medians_ms"])
    with pytest.raises(ValueError, match="at least one"):
        measure.time_interleaved({})


def test_paired_ratio_follows_load_that_changes_between_rounds():
    """a takes half of b's time in every round while the machine slows down 10x after round 1: both
    ratios are 0.5. When load also hits b alone in one round, the round-by-round ratio stays 0.5
    and the ratio of the pooled medians drops to 1 / 20."""
    a, b = [1.0, 10.0, 10.0], [2.0, 20.0, 20.0]
    assert measure.paired_ratio(a, b) == 0.5
    assert statistics.median(a) / statistics.median(b) == 0.5
    a, b = [1.0, 1.0, 10.0], [2.0, 20.0, 20.0]         # one round of b disturbed: the median pair wins
    assert measure.paired_ratio(a, b) == 0.5
    assert statistics.median(a) / statistics.median(b) == 0.05
    assert measure.paired_ratio([3.0, 4.0], [1.0]) == 3.0  # rounds only one of them has are left out
    with pytest.raises(ValueError, match="at least one round"):
        measure.paired_ratio([], [1.0])


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

    r = measure.peak_memory(f, x)
    assert r["peak_bytes"] == 8000
    assert r["allocated_bytes"] == 12000
    assert r["output_bytes"] == 4000
    assert r["tensors"] == 3


def test_live_tensor_memory_ignores_views_and_in_place_on_inputs():
    x = torch.randn(256)
    r = measure.peak_memory(lambda x: x.view(16, 16).t().add_(1), x)
    assert r["allocated_bytes"] == 0


def test_live_tensor_memory_as_a_mode():
    """The dispatch mode on its own: a 2 x 3 float result (24 bytes) and a temporary freed inside."""
    x = torch.randn(2, 3)
    with measure.LiveTensorMemory() as mode:
        y = (x * 2).relu()   # x * 2 (24 bytes), then relu (24 bytes); the first is freed at once
    assert (mode.peak, mode.allocated, mode.count) == (48, 48, 2)
    assert mode.live == 24 and y.shape == (2, 3)


# --------------------------------------------------------------------------- fitting
def test_fit_exponent_recovers_power_laws():
    ns = [196, 784, 3136, 12544]
    assert measure.fit_exponent(ns, [3.0 * n ** 1.5 for n in ns]) == pytest.approx(1.5)
    assert measure.fit_exponent(ns, [0.1 * n for n in ns]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        measure.fit_exponent([1], [1])
    with pytest.raises(ValueError, match="positive"):
        measure.fit_exponent([1, 2], [0, 1])
    with pytest.raises(ValueError, match="as many values"):
        measure.fit_exponent([1, 2, 3], [1, 2])
