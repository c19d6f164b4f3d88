"""Argument checks shared by the benchmark applications and their command line.

Names picked from a table (attention variants, peer models), sizes given as integers (token counts
``N``, batch sizes ``B``, image sides ``H = W``), and the comma-separated integer lists of the CLI.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence

__all__ = ["known_names", "positive_sorted", "int_list"]


def known_names(names: Sequence[str] | None, table: Iterable[str], what: str) -> list[str]:
    """``names`` (every key of ``table`` when None), each checked to be a key of ``table``."""
    table = list(table)
    names = list(table) if names is None else list(names)
    for name in names:
        if name not in table:
            raise ValueError(f"unknown {what} {name!r}; choose from {sorted(table)}")
    return names


def positive_sorted(values: Iterable[int], what: str) -> list[int]:
    """Distinct ``values`` as sorted ints, all >= 1, or a ValueError naming ``what``."""
    out = sorted(set(int(v) for v in values))
    if not out or out[0] < 1:
        raise ValueError(f"{what} must be positive integers, got {out}")
    return out


def int_list(text: str) -> list[int]:
    """argparse type: ``"49,196,784"`` -> ``[49, 196, 784]`` (positive integers)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 49,196,784, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
