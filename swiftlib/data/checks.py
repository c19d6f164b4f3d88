"""Argument checks shared by the data modules: one clear ValueError naming the argument.

No tensors: plain values in, the same value out (or a ValueError that names the argument, what it
must be and what it got).
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

__all__ = ["check_int", "check_folder_arg"]


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False):
    """``value`` as an int if it is an integer ``>= minimum`` (or None when ``allow_none``), else ValueError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be >= {minimum} (an int{none}), got {value!r}")
    return int(value)


def check_folder_arg(name: str, value: str | os.PathLike) -> Path:
    """``value`` as a Path, unless it exists and is not a folder (then a ValueError naming ``name``)."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a folder, but {path} is a file")
    return path
