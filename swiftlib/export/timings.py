"""Phone numbers: latencies measured on an iPhone (Xcode's Core ML Performance Report) and the paper's.

:func:`load_device_timings` reads a filled copy of ``data/device_timings_template.csv``
(:data:`DEVICE_TIMING_COLUMNS`, one row per model x device x compute units; block rows also carry the
token shape ``n`` x ``d`` of their ``[1, N, D]`` input); :func:`paper_latency` gives the paper's
Table 2 iPhone 14 Neural Engine latencies to compare with.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import swiftlib
from swiftlib.export.common import ALL_COMPUTE_UNITS
from swiftlib.io import read_csv
from swiftlib.models import PAPER_NAMES

__all__ = ["DEVICE_TIMING_COLUMNS", "load_device_timings", "paper_latency"]

#: Columns of ``data/device_timings_template.csv`` (one row per model x device x compute units).
DEVICE_TIMING_COLUMNS = ["model", "mlpackage", "kind", "attention", "n", "d", "img_size", "precision", "device",
                         "ios", "xcode", "coremltools", "compute_units", "median_ms", "min_ms", "max_ms",
                         "ops_ne", "ops_gpu", "ops_cpu", "date", "notes"]
_REQUIRED_TIMING_COLUMNS = ["model", "device", "ios", "compute_units", "median_ms"]
#: (column, type, what it must be): latencies are positive floats, shapes and op counts integers.
_NUMBER_COLUMNS = ([(c, float, "a number of milliseconds") for c in ("median_ms", "min_ms", "max_ms")]
                   + [(c, int, "an integer") for c in ("n", "d", "img_size", "ops_ne", "ops_gpu", "ops_cpu")])


def _header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def _parse_row(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """One CSV row with empty cells as None, the required cells checked and the numbers parsed."""
    row: dict[str, Any] = {k: ((v.strip() or None) if isinstance(v, str) else v) for k, v in raw.items() if k}
    for k in _REQUIRED_TIMING_COLUMNS:
        if row.get(k) is None:
            raise ValueError(f"{where}: column {k!r} is empty")
    if row["compute_units"] not in ALL_COMPUTE_UNITS:
        raise ValueError(f"{where}: compute_units must be one of {ALL_COMPUTE_UNITS}, got {row['compute_units']!r}")
    for k, kind, what in _NUMBER_COLUMNS:
        if row.get(k) is None:
            continue
        try:
            row[k] = kind(row[k])
        except ValueError:
            raise ValueError(f"{where}: {k} must be {what}, got {row[k]!r}") from None
        if kind is float and not row[k] > 0:
            raise ValueError(f"{where}: {k} must be > 0 ms, got {row[k]}")
    return row


def load_device_timings(path) -> list[dict[str, Any]]:
    """Read a filled copy of ``data/device_timings_template.csv``: one dict per non-empty row, numbers
    parsed (``median_ms`` etc. as float, op counts as int, empty cells as None).

    Raises FileNotFoundError for a missing file and ValueError naming the column and row for a missing
    required column (``model, device, ios, compute_units, median_ms``), an unknown compute unit or a
    latency that is not a positive number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"device timings CSV {str(path)!r} does not exist "
                                f"(start from data/device_timings_template.csv)")
    raw_rows = read_csv(path)
    got = _header(path)
    missing = [c for c in _REQUIRED_TIMING_COLUMNS if c not in got]
    if missing:
        raise ValueError(f"{path.name}: missing columns {missing}; expected at least {_REQUIRED_TIMING_COLUMNS} "
                         f"(template columns: {DEVICE_TIMING_COLUMNS}), got {got}")
    return [_parse_row(raw, f"{path.name} line {i}") for i, raw in enumerate(raw_rows, start=2)  # line 1: header
            if any((v or "").strip() for v in raw.values() if isinstance(v, str))]


def paper_latency(path=None) -> dict[str, float]:
    """Paper Table 2 iPhone 14 Neural Engine latencies (ms) from ``data/paper_table2.csv``, keyed by the
    paper's model names; SwiftFormer rows also under swiftlib's names (``"swiftformer_xs"`` ...)."""
    rows = read_csv(path or swiftlib.DATA_DIR / "paper_table2.csv")
    out = {r["model"]: float(r["iphone14_ne_latency_ms"]) for r in rows}
    out.update({k: out[v] for k, v in PAPER_NAMES.items() if v in out})
    return out
