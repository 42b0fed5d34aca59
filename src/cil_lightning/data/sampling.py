"""Resumable, rank-aware training order: a sampler and a DataLoader whose position is saved in
Lightning checkpoints.

- :class:`ResumableSampler` is a :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps
  it under DDP instead of putting its own in front): the order of epoch ``e`` is the permutation
  drawn from ``torch.Generator().manual_seed(seed + e)``, the same on every rank (the very order
  of torch's ``DistributedSampler``), padded to a multiple of the world size and dealt out by rank
  (rank ``r`` takes positions ``r, r + W, ...``), so ranks see disjoint samples whose union is
  the epoch. It can start ``offset`` samples into the epoch's global order.
- It yields :class:`ItemKey` indices: ints that also carry the epoch and the seed, so a data set
  can draw an item's augmentation (start frame, crop, flip, stride) from ``(seed, epoch, index)``
  rather than from the worker's RNG; the draw then depends neither on the number of workers nor
  on where a run was resumed.
- :class:`ResumableDataLoader` counts the batches it has handed out (not those its workers have
  prefetched) and implements ``state_dict()`` / ``load_state_dict()``, which Lightning saves in
  every checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores before it first
  iterates the loader when ``trainer.fit(..., ckpt_path=...)`` resumes.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


def rank_and_world() -> tuple[int, int]:
    """(rank, world size): the process group's, else ``RANK`` (or ``LOCAL_RANK``) and
    ``WORLD_SIZE`` from the environment, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))
    return int(rank), int(os.environ.get("WORLD_SIZE", 1))


class ItemKey(int):
    """A data set index that also names the epoch and seed it was drawn for.

    It is an ``int`` (lists, arrays and ``dataset[i]`` code that knows nothing of it work
    unchanged); data sets that want resumable randomness read ``key.epoch`` and ``key.seed``.
    """

    epoch: int
    seed: int

    def __new__(cls, index: int, epoch: int, seed: int) -> ItemKey:
        key = super().__new__(cls, index)
        key.epoch, key.seed = int(epoch), int(seed)
        return key

    def __reduce__(self):  # pickled into worker processes' index queues
        return ItemKey, (int(self), self.epoch, self.seed)

    def __repr__(self) -> str:
        return f"ItemKey({int(self)}, epoch={self.epoch}, seed={self.seed})"

    def __str__(self) -> str:  # f"{key}" and str(key) read as the plain index
        return int.__repr__(self)


class ResumableSampler(DistributedSampler):
    """The shuffled order of each epoch, dealt out by rank, resumable at a sample offset.

    Args:
        dataset: a sized data set.
        num_replicas, rank: the world size and this process's rank (given explicitly: no process
            group is needed).
        shuffle: permute each epoch (``False``: the data set's order).
        seed: seed of the permutations (and of the items' randomness, through :class:`ItemKey`);
            the same on every rank.
        drop_last: drop the tail that does not divide by the world size instead of padding with
            the epoch's first samples.

    Attributes:
        epoch: the epoch whose order is served (``set_epoch``).
        offset: samples of the epoch's global order (all ranks together) to skip.
    """

    def __init__(
        self,
        dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.offset = 0

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` from its start (a call with the current epoch keeps the offset)."""
        if epoch != self.epoch:
            self.epoch, self.offset = epoch, 0

    def global_order(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s order over all ranks, padded or cut to ``total_size``."""
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            return order[: self.total_size]
        pad = self.total_size - len(order)
        if pad > 0:
            order += (order * math.ceil(pad / max(len(order), 1)))[:pad]
        return order

    def indices(self, epoch: int, offset: int = 0) -> list[int]:
        """This rank's indices of ``epoch`` from global position ``offset`` on."""
        return self.global_order(epoch)[offset:][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[ItemKey]:
        epoch, seed = self.epoch, self.seed
        return iter([ItemKey(i, epoch, seed) for i in self.indices(epoch, self.offset)])


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` whose place in the epoch is checkpointed.

    It counts the batches it has yielded in the current epoch. ``state_dict()`` returns
    ``{epoch, batches, batch_size, world_size, seed, dataset_size}``; ``load_state_dict()`` makes
    the next ``iter()`` continue right after the last batch yielded before the state was taken,
    with the same items and the same item randomness (the seed travels with the state). Each
    ``iter()`` continues the current epoch where it stands and starts the next epoch once all of
    its ``len(self)`` batches were yielded; ``sampler.set_epoch(e)`` (what Lightning calls at
    every epoch start) to another epoch restarts at the beginning of ``e``. With any other sampler
    (e.g. one Lightning put in for ``overfit_batches``) it is a plain DataLoader.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sampler = self._resumable
        self._epoch = sampler.epoch if sampler is not None else 0
        self._batches = 0

    @property
    def _resumable(self) -> ResumableSampler | None:
        sampler = self.sampler
        if isinstance(sampler, ResumableSampler) and self.batch_size is not None:
            return sampler
        return None

    def _position(self) -> tuple[int, int]:
        """(epoch, batches already yielded in it) where the next ``iter()`` begins."""
        sampler = self._resumable
        if sampler is not None and sampler.epoch != self._epoch:
            return sampler.epoch, 0  # set_epoch moved to another epoch
        if self._batches >= len(self):
            return self._epoch + 1, 0
        return self._epoch, self._batches

    def __iter__(self) -> Iterator:
        sampler = self._resumable
        if sampler is None:
            return super().__iter__()
        self._epoch, self._batches = self._position()
        sampler.epoch = self._epoch
        sampler.offset = self._batches * self.batch_size * sampler.num_replicas
        return self._counted(super().__iter__())

    def _counted(self, iterator: Iterator) -> Iterator:
        for batch in iterator:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler = self._resumable
        return {
            "epoch": self._epoch,
            "batches": self._batches,
            "batch_size": self.batch_size,
            "world_size": sampler.num_replicas if sampler is not None else 1,
            "seed": sampler.seed if sampler is not None else None,
            "dataset_size": len(self.dataset) if hasattr(self.dataset, "__len__") else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sampler = self._resumable
        epoch, batches = int(state_dict["epoch"]), int(state_dict["batches"])
        if sampler is None:
            warnings.warn(
                "this DataLoader has no ResumableSampler: it restarts its epoch from the beginning",
                stacklevel=2,
            )
            self._epoch, self._batches = epoch, 0
            return
        size = state_dict.get("dataset_size")
        if size is not None and size != len(self.dataset):
            warnings.warn(
                f"the checkpoint's data order was for {size} items, this data set has "
                f"{len(self.dataset)}: the resumed epoch is a different permutation",
                stacklevel=2,
            )
        geometry = (state_dict.get("batch_size"), state_dict.get("world_size"))
        if geometry != (self.batch_size, sampler.num_replicas):
            # Continue at the same place in the epoch's global order, at a batch boundary.
            samples = batches * int(geometry[0]) * int(geometry[1])
            batches = samples // (self.batch_size * sampler.num_replicas)
            warnings.warn(
                f"resuming a data order saved with batch size {geometry[0]} on {geometry[1]} "
                f"ranks with batch size {self.batch_size} on {sampler.num_replicas}: continuing "
                f"at sample {batches * self.batch_size * sampler.num_replicas} of {samples} "
                "(not an exact continuation)",
                stacklevel=2,
            )
        if state_dict.get("seed") is not None:
            sampler.seed = int(state_dict["seed"])
        self._epoch, self._batches = epoch, batches
        sampler.epoch, sampler.offset = epoch, 0
