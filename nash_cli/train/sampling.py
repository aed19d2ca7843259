"""The deterministic data order: which examples each process trains on at each optimiser step.

Epoch e visits the examples in `randperm(N, seed + e)` order (repeated cyclically to fill the
last global batch). Optimiser step s takes the global batch of `batch_size * grad_accum *
processes` examples at position s of that order, and each process takes its slice of it, one
micro-batch per accumulation step. The order depends only on the seed, the data and the global
batch, so a resumed run needs nothing but the step number to find its place.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Sequence

import torch

from nash_cli.data import Features


def features_fingerprint(features: Sequence[Features]) -> str:
    """sha256 of the token ids, so a resumed run can check it sees the same data."""
    digest = hashlib.sha256()
    for item in features:
        digest.update(array("q", [len(item.input_ids), len(item.labels)]).tobytes())
        for ids in (item.input_ids, item.labels):
            ids = ids if isinstance(ids, array) and ids.typecode == "i" else array("i", ids)
            digest.update(ids.tobytes())
    return digest.hexdigest()


class DataOrder:
    """The examples of every optimiser step, for one process of a (possibly) data-parallel run.

    Args:
        examples: Number of training examples.
        seed: Seed of the per-epoch permutations.
        batch_size: Examples per process per micro-batch.
        grad_accum: Micro-batches per optimiser step.
        processes: Number of processes (the world size).
        rank: This process's index.
    """

    def __init__(self, examples: int, *, seed: int, batch_size: int, grad_accum: int, processes: int = 1, rank: int = 0):
        self.examples = examples
        self.seed = seed
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.processes = processes
        self.rank = rank
        self.global_batch = batch_size * grad_accum * processes
        self.steps_per_epoch = math.ceil(examples / self.global_batch)
        self._orders: dict[int, torch.Tensor] = {}

    def order(self, epoch: int) -> torch.Tensor:
        """The example indices of `epoch`, exactly `steps_per_epoch * global_batch` of them."""
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.examples, generator=generator)
            needed = self.steps_per_epoch * self.global_batch
            self._orders = {epoch: order.repeat(math.ceil(needed / len(order)))[:needed]}
        return self._orders[epoch]

    def step_examples(self, step: int) -> tuple[list[list[int]], list[int]]:
        """This process's micro-batches for optimiser step `step`, and the whole global batch."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.global_batch
        batch = self.order(epoch)[start : start + self.global_batch].tolist()
        size = self.batch_size
        micro = []
        for m in range(self.grad_accum):
            offset = (m * self.processes + self.rank) * size
            micro.append(batch[offset : offset + size])
        return micro, batch


__all__ = ["DataOrder", "features_fingerprint"]
