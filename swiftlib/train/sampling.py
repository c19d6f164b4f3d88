"""Which process sees which sample, in which order, with which augmentation seed.

* :class:`ResumableSampler` (training): a seeded permutation per epoch, repeated augmentation,
  sharded over DDP ranks, able to start mid-epoch; it yields ``(index, sample_seed)`` pairs that
  :class:`swiftlib.data.SeededTransformDataset` turns into ``(image [3, H, W], label)``.
* :class:`ShardSampler` (evaluation): rank r takes indices r, r + world, ... .
* :func:`sample_seed`: the augmentation seed of a global position in an epoch (per sample, or per
  batch for batch augmentation), so randomness never depends on workers, ranks or resumes.
* The distributed helpers: :func:`dist_info`, :func:`init_distributed`, :func:`all_reduce_sum`,
  :func:`all_gather`.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

__all__ = ["ResumableSampler", "ShardSampler", "sample_seed", "dist_info", "init_distributed", "all_reduce_sum",
           "all_gather"]


# =========================================================================== distributed helpers
def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def dist_info() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` of this process; ``(0, 1, 0)`` outside a process group."""
    if _joined():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def init_distributed(device_kind: str) -> bool:
    """Join the torchrun process group if launched by torchrun (WORLD_SIZE > 1). Returns True if joined."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _joined():
        return False
    dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return True


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, in place (unchanged in a single process)."""
    if _joined():
        dist.all_reduce(t)
    return t


def all_gather(obj: Any) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process); every rank must call it."""
    if _joined():
        objs = [None] * dist.get_world_size()
        dist.all_gather_object(objs, obj)
        return objs
    return [obj]


# =========================================================================== samplers
def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of global ``position`` in ``epoch`` of a run seeded with ``seed``."""
    return (seed * 1_000_003 + epoch * 7_919 * 1_000_033 + position) % (2**62)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that yields ``(index, sample_seed)`` and can start mid-epoch.

    The epoch order is a permutation seeded by (seed, epoch), optionally with each index repeated
    ``repeats`` times (repeated augmentation, DeiT's RASampler: copies land on different ranks),
    trimmed to a multiple of the world size; rank r takes positions r, r + world, ... . ``start``
    skips that many of this rank's samples (set by resume). The sample seed depends on the global
    position, so augmentation is independent of workers, ranks and resumes.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, repeats: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.repeats, self.start = max(1, int(repeats)), 0
        self.num_samples = len(dataset) // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 10_007 + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        if self.repeats > 1:
            order = [i for i in order for _ in range(self.repeats)]
        positions = range(self.rank, self.total_size, self.num_replicas)
        for n, pos in enumerate(positions):
            if n >= self.start:
                yield order[pos], sample_seed(self.seed, self.epoch, pos)

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + world, ... (no padding, so counts add up exactly)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
