"""The samples a probe trains on, as a torch IterableDataset of its own module.

DataLoader workers are started from a fork server, not forked from the trainer: a
process that holds a Spark gateway (a notebook, a test session, a driver that
trains) must not hand its py4j sockets to children, whose exit would write into
them. Workers then unpickle this class by its module.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import torch.utils.data

from lakecurate.dataset import ShardDataset


class TrainStream(torch.utils.data.IterableDataset):
    """A version's samples, one epoch per iteration: each worker takes its shards in a
    seeded order that changes every epoch and shuffles samples in a buffer; samples the
    `decode` function turns into None are skipped."""

    def __init__(self, path: str, decode: Callable[[dict], Any], seed: int, buffer: int):
        super().__init__()
        self.ds = ShardDataset(path, transform=decode)
        self.seed, self.buffer = seed, buffer
        self.epoch = 0  # each (persistent) worker counts its own epochs alike

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else info.id
        rng = random.Random(f"{self.seed}-{self.epoch}-{wid}")
        self.epoch += 1
        shards = self.ds.my_shards()
        rng.shuffle(shards)
        buf: list = []
        for item in self.ds.samples(shards):
            if item is None:
                continue
            buf.append(item)
            if len(buf) >= self.buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf
