"""Random number generators: save, seed and restore Python's, NumPy's and torch's together.

No tensors in or out: the states are the generators' own objects (``torch.get_rng_state()`` is a
uint8 ``[5056]`` tensor). :func:`seeded` runs a block under a seed and leaves the caller's stream
as it was; :class:`~swiftlib.data.datasets.SeededTransformDataset` and training's fresh start use it.
"""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["rng_state", "set_rng_state", "seed_everything", "seeded"]


def rng_state(device: torch.device | None = None) -> dict:
    """The states of Python's, NumPy's and torch's CPU generators (and of ``device``'s, a CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore generator states saved by :func:`rng_state` (the CUDA one where ``device`` is CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device is not None and torch.device(device).type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch's on every device) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int):
    """Python's, NumPy's and torch's CPU generators seeded with ``seed`` for the block; the states they
    had before are restored after it, so the caller's random stream is untouched."""
    saved = rng_state()
    try:
        # the CPU generators only, the ones rng_state() saves: torch.manual_seed would also reseed (and
        # leave changed) every accelerator's, and costs several times more (it runs once per item)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        yield
    finally:
        set_rng_state(saved)
