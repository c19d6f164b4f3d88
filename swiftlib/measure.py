"""The measurement core: latency, interleaving, paired ratios, peak memory, machine info, power-law fits.

Everything a performance claim in swiftlib rests on, and nothing about what is measured:

* :func:`time_module` -- latency of ``fn(*inputs)`` with ``torch.utils.benchmark`` (warm-up, then
  median / IQR over timed blocks), threads recorded; :func:`time_interleaved` times several
  callables in alternating rounds so that a shared, noisy machine slows all of them alike, and
  :func:`paired_ratio` takes the ratio of two of them round by round.
* :func:`peak_memory` -- peak bytes of one call. CUDA: ``torch.cuda.max_memory_allocated``
  above the memory in use before the call. CPU: a ``TorchDispatchMode`` that tracks the storages
  the ops of the call create (see :class:`LiveTensorMemory` for exactly what it counts).
* :func:`machine_info` -- CPU model, cores, threads, torch/timm versions, GPU name.
* :func:`steady_allocator` -- keep freed memory in the process (glibc), so that timings measure
  the kernels rather than the page faults of fresh allocations.
* :func:`resolve_device` -- the one device resolver of swiftlib (``"cpu"``, ``"cuda[:i]"``, ``"auto"``).
* :func:`fit_exponent` -- least-squares slope of ``log t`` against ``log n`` (``np.polyfit``).

The benchmark applications built on it live in :mod:`swiftlib.bench`; :mod:`swiftlib.export` uses it
to time ONNX Runtime. Every performance claim is a ratio against a peer timed in the same run.
"""
from __future__ import annotations

import ctypes
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torch.utils import benchmark as tbench
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "machine_info",
    "steady_allocator",
    "MALLOC_MODES",
    "resolve_device",
    "sync",
    "CLOCKS",
    "time_module",
    "time_interleaved",
    "paired_ratio",
    "peak_memory",
    "LiveTensorMemory",
    "fit_exponent",
]


# =================================================================== machine and device
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a result depends on: CPU model, cores, torch threads, versions, GPU name (or None)."""
    device = torch.device(device)
    cuda = torch.cuda.is_available()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device if device.type == "cuda" else 0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
    }


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MODES = ("default", "steady")


def steady_allocator(mmap_threshold: int = 256 * 2**20, trim_threshold: int = 2**30) -> str:
    """Make glibc's ``malloc`` keep and reuse freed memory for the rest of the process.

    By default glibc serves blocks above a moving threshold (128 KiB at start) with fresh
    ``mmap`` pages and returns the top of the heap to the system once 128 KiB or more is free.
    A ``[3136, 48]`` float tensor is 588 KiB, so whether a forward's tensors fault in new pages on
    every call depends on what the process allocated before, and the same module times 1x or 2-3x
    from one run to the next. With both thresholds raised, a timed loop reuses the same pages.
    Returns the setting in words (recorded with the results); where ``mallopt`` is missing (not
    glibc) nothing changes and the text says so.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "default (mallopt not available: not glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # some glibc versions cap the mmap threshold at 32 MiB (HEAP_MAX_SIZE / 2): fall back to the cap
    mmap = next((m for m in dict.fromkeys((int(mmap_threshold), 32 * 2**20)) if mallopt(_M_MMAP_THRESHOLD, m) == 1), None)
    if mmap is None or mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) != 1:
        return "default (mallopt refused the thresholds)"
    return f"steady (glibc mallopt: mmap threshold {mmap // 2**20} MiB, trim threshold {trim_threshold // 2**20} MiB)"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"cpu"``, ``"cuda[:i]"`` or ``"auto"`` (CUDA where available, else the CPU) as a ``torch.device``;
    a ValueError naming the problem if it is not usable here. The one device resolver of swiftlib."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu' or 'cuda[:index]' (or 'auto'), got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:index]' (or 'auto'), got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False on this machine")
    return dev


def sync(device: torch.device) -> None:
    """Wait for the queued work of a CUDA ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# =================================================================== latency
def _stats(times_s: Sequence[float]) -> dict[str, Any]:
    ts = sorted(times_s)
    q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) > 1 else [ts[0]] * 3
    return {"median_ms": 1e3 * q[1], "iqr_ms": 1e3 * (q[2] - q[0]), "runs": len(ts),
            "min_ms": 1e3 * ts[0], "max_ms": 1e3 * ts[-1]}


#: Clocks for the timers: wall time, or the CPU time of this process (all its threads). On a shared
#: machine the CPU clock does not count the time the process waits for a core, so it is the
#: steadier basis for ratios; it is meaningless for CUDA (the GPU's work is not CPU time).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _clock(name: str, device: torch.device) -> Callable[[], float]:
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {name!r}")
    if name == "cpu" and device.type != "cpu":
        raise ValueError(f"clock='cpu' measures CPU time and cannot time device {device}; use clock='wall'")
    return CLOCKS[name]


def _time_one_call(fn: Callable, inputs: tuple, device: torch.device, clock: Callable[[], float]) -> float:
    """Seconds of one call, synchronised. (``Timer.timeit(1)`` would add two warm-up calls to each.)"""
    sync(device)
    t0 = clock()
    fn(*inputs)
    sync(device)
    return clock() - t0


def _as_callable(fn_or_module: Callable | nn.Module) -> Callable:
    if not callable(fn_or_module):
        raise TypeError(f"expected a module or a callable, got {type(fn_or_module).__name__}")
    return fn_or_module


def time_module(fn_or_module: Callable | nn.Module, *inputs: Any, device: str | torch.device = "cpu",
                min_run_time: float = 0.5, threads: int | None = None, warmup: int = 2,
                max_seconds: float | None = None, clock: str = "wall") -> dict[str, Any]:
    """Latency of ``fn_or_module(*inputs)`` under ``torch.no_grad()`` with ``torch.utils.benchmark``.

    ``warmup`` untimed calls first; then ``Timer.blocked_autorange(min_run_time)``: each
    measurement is the mean time of one block of calls. When one call takes so long that
    ``max_seconds`` would allow fewer than 5 blocks, the point is timed as single calls instead
    (``time.perf_counter`` around each synchronised call, at least 3 of them), so slow points
    stay affordable.

    ``clock``: ``"wall"`` (default) or ``"cpu"`` (process CPU time, see :data:`CLOCKS`).

    Returns ``{"median_ms", "iqr_ms", "runs", "min_ms", "max_ms", "threads", "device", "clock"}``;
    ``runs`` counts the timed measurements (blocks or single calls).
    """
    fn = _as_callable(fn_or_module)
    dev = resolve_device(device)
    clk = _clock(clock, dev)
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be > 0 seconds, got {min_run_time}")
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    timer = tbench.Timer(stmt="fn(*inputs)", globals={"fn": fn, "inputs": inputs}, num_threads=threads, timer=clk)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(max(1, warmup)):
                fn(*inputs)
            sync(dev)
            one_call = (time.perf_counter() - t0) / max(1, warmup)
            if max_seconds is not None and one_call * 5 > max_seconds:
                reps = max(3, int(max_seconds / max(one_call, 1e-9)))
                times = [_time_one_call(fn, inputs, dev, clk) for _ in range(reps)]
            else:
                budget = min_run_time if max_seconds is None else min(min_run_time, max_seconds)
                times = list(timer.blocked_autorange(min_run_time=budget).times)
    finally:
        torch.set_num_threads(prev)
    return {**_stats(times), "threads": threads, "device": str(dev), "clock": clock}


def time_interleaved(fns: dict[str, Callable], *inputs: Any, device: str | torch.device = "cpu",
                     rounds: int = 5, min_run_time: float = 0.5, threads: int | None = None,
                     warmup: int = 2, max_seconds: float | None = None,
                     clock: str = "wall") -> dict[str, dict[str, Any]]:
    """Time several callables on the same inputs in ``rounds`` alternating rounds.

    Each round gives every callable ``min_run_time / rounds`` seconds of ``blocked_autorange``
    (the order alternates between rounds); the block times of all rounds are pooled before taking
    median and IQR. On a shared machine, load that comes and goes then slows every contender alike,
    so their ratio stays meaningful. A callable whose warm-up call shows that ``rounds`` blocks
    would exceed ``max_seconds`` is timed as single synchronised calls in as many rounds
    as the budget allows, at least 3 (and at most ``rounds``).

    ``clock``: ``"wall"`` or ``"cpu"`` as in :func:`time_module`.

    Returns ``{name: {"median_ms", "iqr_ms", "runs", "min_ms", "max_ms", "round_medians_ms", "threads",
    "device", "clock"}}``; ``round_medians_ms`` holds the median of each round, for ratios of two callables
    taken round by round (:func:`paired_ratio`).
    """
    if not fns:
        raise ValueError("time_interleaved needs at least one callable")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be > 0 seconds, got {min_run_time}")
    dev = resolve_device(device)
    clk = _clock(clock, dev)
    threads = torch.get_num_threads() if threads is None else int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    timers = {k: tbench.Timer(stmt="fn(*inputs)", globals={"fn": _as_callable(f), "inputs": inputs},
                              num_threads=threads, timer=clk) for k, f in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    round_medians: dict[str, list[float]] = {k: [] for k in fns}
    single_calls: dict[str, int] = {}  # name -> rounds in which it is timed as one call
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            for k, f in fns.items():
                t0 = time.perf_counter()
                for _ in range(max(1, warmup)):
                    f(*inputs)
                sync(dev)
                one_call = (time.perf_counter() - t0) / max(1, warmup)
                if max_seconds is not None and one_call * rounds * 2 > max_seconds:
                    single_calls[k] = min(rounds, max(3, int(max_seconds / max(one_call, 1e-9))))
            for r in range(rounds):
                order = list(timers) if r % 2 == 0 else list(reversed(timers))
                for k in order:
                    if k in single_calls:
                        if r >= single_calls[k]:
                            continue
                        block = [_time_one_call(fns[k], inputs, dev, clk)]
                    else:
                        block = timers[k].blocked_autorange(min_run_time=min_run_time / rounds).times
                    times[k] += block
                    round_medians[k].append(1e3 * statistics.median(block))
    finally:
        torch.set_num_threads(prev)
    return {k: {**_stats(v), "round_medians_ms": round_medians[k], "threads": threads, "device": str(dev),
                "clock": clock} for k, v in times.items()}


def paired_ratio(a_rounds: Sequence[float], b_rounds: Sequence[float]) -> float:
    """Median over rounds of ``a_r / b_r``, for two callables timed in the same rounds of
    :func:`time_interleaved` (``round_medians_ms``; rounds only one of them has are left out).

    Load on a shared machine that changes between rounds moves both times of a round together, so
    the ratio round by round is steadier than the ratio of the pooled medians.
    """
    pairs = [x / y for x, y in zip(a_rounds, b_rounds) if y > 0]
    if not pairs:
        raise ValueError("paired_ratio needs at least one round timed for both callables")
    return statistics.median(pairs)


# =================================================================== memory
class LiveTensorMemory(TorchDispatchMode):
    """Byte accounting of the storages that the ATen ops of a region create (CPU or any device).

    Every tensor an op returns is looked at: if its storage was not seen before (not an input,
    a parameter or an earlier result -- views share their base's storage), its ``nbytes`` are added
    to ``live`` and to ``allocated``, and the storage is released when the last tensor viewing it is
    garbage collected. ``peak`` is the maximum of ``live``. What it counts: tensors materialised
    by ops, the region's output included. What it cannot see: workspaces a kernel allocates and
    frees inside itself (e.g. the blocks of a fused attention kernel, oneDNN scratch buffers).
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.allocated = 0
        self.count = 0
        self._storages: dict[int, list] = {}  # key -> [nbytes, live tensor count]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]

    def _track(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        if st.nbytes() == 0:
            return
        key = st.data_ptr()
        entry = self._storages.get(key)
        if entry is None:
            if t._base is not None:
                return  # a view of a tensor from outside the region (an input, a parameter)
            entry = self._storages[key] = [st.nbytes(), 0]
            self.live += st.nbytes()
            self.allocated += st.nbytes()
            self.count += 1
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen_inputs = {a.untyped_storage().data_ptr() for a in _flat_tensors((args, kwargs))
                       if a.untyped_storage().nbytes()}
        for t in _flat_tensors(out):
            if t.untyped_storage().data_ptr() in seen_inputs and t.untyped_storage().data_ptr() not in self._storages:
                continue  # a view of (or in-place result on) an input or a parameter: not a new allocation
            self._track(t)
        return out


def _flat_tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flat_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flat_tensors(v)]
    return []


def peak_memory(fn_or_module: Callable | nn.Module, *inputs: Any,
                device: str | torch.device = "cpu") -> dict[str, Any]:
    """Peak bytes of one ``fn_or_module(*inputs)`` under ``torch.no_grad()``, above what was in use.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
      memory allocated before the call (inputs and weights); the allocator's view, workspaces included.
    * CPU: :class:`LiveTensorMemory` (the CPU allocator keeps no statistics): peak live bytes of
      the tensors the ops create, output included; kernel-internal workspaces are not seen.

    Returns ``{"peak_bytes", "output_bytes", "method", "device"}`` (CPU adds ``"allocated_bytes"``,
    the sum of all op-created storages, and ``"tensors"``).
    """
    fn = _as_callable(fn_or_module)
    dev = resolve_device(device)
    with torch.no_grad():
        if dev.type == "cuda":
            sync(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            before = torch.cuda.memory_allocated(dev)
            out = fn(*inputs)
            sync(dev)
            peak = torch.cuda.max_memory_allocated(dev) - before
            out_bytes = sum(t.untyped_storage().nbytes() for t in _flat_tensors(out))
            return {"peak_bytes": int(peak), "output_bytes": int(out_bytes),
                    "method": "torch.cuda.max_memory_allocated", "device": str(dev)}
        mode = LiveTensorMemory()
        with mode:
            out = fn(*inputs)
        out_bytes = sum(t.untyped_storage().nbytes() for t in _flat_tensors(out))
        return {"peak_bytes": int(mode.peak), "allocated_bytes": int(mode.allocated),
                "output_bytes": int(out_bytes), "tensors": mode.count,
                "method": "TorchDispatchMode live-tensor accounting", "device": str(dev)}


# =================================================================== fitting
def fit_exponent(ns: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(ns)``: ``values ~ c * n**slope``."""
    if len(ns) != len(values):
        raise ValueError(f"fit_exponent needs as many values as sizes, got {len(ns)} sizes and {len(values)} values")
    if len(set(ns)) < 2:
        raise ValueError(f"fit_exponent needs at least 2 distinct sizes, got {list(ns)}")
    if min(ns) <= 0 or min(values) <= 0:
        raise ValueError("fit_exponent needs positive sizes and values (log-log fit)")
    slope, _ = np.polyfit(np.log(np.asarray(ns, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)
    return float(slope)
