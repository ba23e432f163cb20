"""A deterministic, resumable, rank-sharded batch sampler.

Each epoch draws one seeded permutation of the whole set; every global batch of `batch_size × world_size`
indices is split into contiguous per-rank slices, so rank r's batch is exactly rows r·B … (r+1)·B of the
batch a single process would see with batch_size × world_size. Resuming skips the batches already done.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        start_batch: int = 0,
    ) -> None:
        if length < batch_size * world_size:
            raise ValueError(
                f"the dataset has {length} pairs, fewer than one global batch "
                f"({batch_size} × {world_size} ranks): lower batch_size"
            )
        self.length, self.batch_size, self.rank, self.world_size = length, batch_size, rank, world_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch

    def __len__(self) -> int:
        return self.length // (self.batch_size * self.world_size) - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator)
        global_batch = self.batch_size * self.world_size
        for b in range(self.start_batch, self.length // global_batch):
            start = b * global_batch + self.rank * self.batch_size
            yield order[start : start + self.batch_size].tolist()
