"""The training stream as a function of the step.

Batch ``s`` is drawn from seeds derived from ``(train.seed, s, rank)`` alone, so it is the same
whatever the number of DataLoader workers, a resumed run continues the stream exactly where it
stopped, and the workers (with their decoded-speech and RIR-spectrum caches) live for the whole
run instead of restarting at every checkpoint.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from .data import ReverbPairs
from .errors import DereverbError


class StepBatches(Dataset):
    """Map-style dataset whose item ``s`` is the collated batch of optimiser step ``s``.

    On-the-fly pairs (:class:`~dereverb.data.ReverbPairs`): ``batch_size`` fresh examples drawn
    with ``default_rng([seed, s, rank])``.  Indexed sources (paired folders, feature stores): the
    examples at global positions ``g = (s * world + rank) * batch_size + i`` of an endless
    sequence of passes, each pass a permutation seeded by ``(seed, pass)``; ``set_epoch(pass)``
    reseeds the source's random crops.  ``transform`` maps each collated batch (in the worker
    that made it).
    """

    def __init__(self, source, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 transform: Callable[[dict], dict] | None = None):
        self.source, self.batch_size, self.seed, self.transform = source, batch_size, seed, transform
        self.rank, self.world = rank, world
        if not isinstance(source, ReverbPairs) and len(source) < batch_size * world:
            raise DereverbError(f"the training source holds {len(source)} examples, fewer than "
                                f"train.batch_size={batch_size}" + (f" x {world} ranks" if world > 1 else ""))
        self._perm: tuple[int, np.ndarray] | None = None  # (pass, permutation), per worker

    def __len__(self) -> int:
        raise TypeError("an endless stream of steps has no length")

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        if isinstance(self.source, ReverbPairs):
            rng = np.random.default_rng([self.seed, step, self.rank])
            items = [self.source.item(rng) for _ in range(self.batch_size)]
        else:
            first = (step * self.world + self.rank) * self.batch_size
            items = [self._indexed(g) for g in range(first, first + self.batch_size)]
        batch = default_collate(items)
        return batch if self.transform is None else self.transform(batch)

    def _indexed(self, g: int) -> dict[str, torch.Tensor]:
        n = len(self.source)
        epoch, pos = divmod(g, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        self.source.set_epoch(epoch)
        return self.source[int(self._perm[1][pos])]


def step_loader(source, batch_size: int, seed: int, start: int, workers: int, rank: int = 0,
                world: int = 1, transform: Callable[[dict], dict] | None = None) -> DataLoader:
    """An endless DataLoader over the batches of steps ``start, start + 1, ...`` of ``source``."""
    if isinstance(source, IterableDataset) and not isinstance(source, ReverbPairs):
        raise TypeError(f"{type(source).__name__}: an iterable source cannot be indexed by step")
    return DataLoader(StepBatches(source, batch_size, seed, rank, world, transform), batch_size=None,
                      sampler=itertools.count(start), num_workers=workers,
                      worker_init_fn=_yield_to_training if workers else None)


def _yield_to_training(worker_id: int) -> None:
    """Run data workers at the lowest priority: they fill the cores the training step leaves idle
    (its single-threaded phases) instead of slowing its multi-threaded kernels."""
    os.nice(19)
