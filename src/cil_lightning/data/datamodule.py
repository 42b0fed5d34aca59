"""LightningDataModule that serves any configured clip data set (shipped, folder, WebVid, UCF101,
shards), with a resumable, rank-sharded training order, worker seeding that differs across ranks
and a shared skip counter."""

from __future__ import annotations

import functools
import os
import random
import warnings

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .base import _mix
from .sampling import ItemKey, ResumableDataLoader, ResumableSampler, rank_and_world
from .skip_counter import skipped_videos

__all__ = [
    "ItemKey",
    "ResumableDataLoader",
    "ResumableSampler",
    "VideoDataModule",
    "seed_worker",
]


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: distinct seeds for every (rank, worker).

    A worker's ``torch.initial_seed()`` is base_seed + worker_id, with base_seed drawn from the
    rank's RNG; every rank seeded alike (``seed_everything``) would give rank 0's worker 0 the
    same seed as rank 1's worker 0 (the correlated-ranks bug of METHOD.md section 5). Mixing in
    the rank separates them; torch, numpy and ``random`` are all reseeded.
    """
    seed = _mix(torch.initial_seed(), rank)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _clip_size(dataset) -> tuple[int, int, int] | None:
    clip = getattr(dataset, "clip", None)
    if clip is not None:
        return clip.num_frames, clip.height, clip.width
    if all(hasattr(dataset, k) for k in ("num_frames", "height", "width")):
        return dataset.num_frames, dataset.height, dataset.width
    return None


class VideoDataModule(L.LightningDataModule):
    """Train and validation loaders over data sets built by Hydra.

    Items are dicts with at least ``video`` [F, 3, H, W] in [-1, 1], ``cond_frame`` [3, H, W],
    ``fps`` and ``name``.

    Training order (map-style sets): a :class:`ResumableSampler` permutes each epoch with
    ``seed + epoch`` (the same permutation on every rank) and deals it out by rank, so DDP ranks
    see disjoint samples; being a ``DistributedSampler``, Lightning keeps it rather than putting
    its own in front (no trainer setting needed). The train loader is a
    :class:`ResumableDataLoader`: Lightning saves its position (epoch, batches yielded, seed) in
    every checkpoint and ``trainer.fit(..., ckpt_path=...)`` restores it, so a resumed run sees
    exactly the batches the uninterrupted run would have seen, with the same augmentation:
    items draw their randomness from ``(seed, epoch, index)`` (see :class:`ItemKey`), not from
    worker RNG. Validation loaders are plain (Lightning shards them under DDP). Shard streams
    split their shards by rank (set in :meth:`setup`) and worker; they are not resumable
    mid-epoch (Lightning warns when one is resumed mid-epoch).

    Args:
        train, val: the data sets (``val`` may be None).
        num_frames, height, width: the clip size the data sets produce (checked here); read by
            callbacks and validated against the model before training.
        batch_size, val_batch_size: per-device batch sizes.
        num_workers: DataLoader worker processes; ``persistent_workers`` keeps them across
            epochs, ``prefetch_factor`` batches are queued per worker.
        pin_memory: page-locked batches for faster host-to-GPU copies.
        drop_last: drop the last incomplete training batch.
        root: where the data lives; not used here, configs interpolate it into the data sets so
            one override (``data.root=/videos``) moves both splits.
        seed: seed of the training order and augmentation; None takes the run's seed from
            ``seed_everything`` (``PL_GLOBAL_SEED``, the same on every rank), else 0. Read when
            the train loader is built; a resumed loader takes the checkpoint's.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        num_frames: int = 8,
        height: int = 32,
        width: int = 32,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = 2,
        drop_last: bool = True,
        root: str | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.num_frames, self.height, self.width = num_frames, height, width
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.drop_last, self.root, self.seed = drop_last, root, seed
        self._rank_world: tuple[int, int] | None = None
        self._dropped_val: Dataset | None = None  # a val set with nothing usable, kept for counts
        for split, ds in (("train", train), ("val", val)):
            size = _clip_size(ds) if ds is not None else None
            if size is not None and size != (num_frames, height, width):
                raise ValueError(
                    f"the {split} data set makes clips of {size} (frames, height, width) but the "
                    f"datamodule says {(num_frames, height, width)}"
                )

    @property
    def skipped(self) -> int:
        """Unusable videos met so far by this process's loaders (all their workers)."""
        return sum(skipped_videos(ds) for ds in self._sets() if ds is not None)

    def _sets(self) -> tuple[Dataset | None, ...]:
        return self.train_set, self.val_set, self._dropped_val

    def skipped_paths(self) -> list[str]:
        paths: list[str] = []
        for ds in self._sets():
            if ds is not None and hasattr(ds, "skipped_paths"):
                paths += ds.skipped_paths()
        return paths

    def set_rank(self, rank: int, world_size: int) -> None:
        """Serve the share of ``rank`` among ``world_size`` processes (called by :meth:`setup`
        with the trainer's; without either, the process group's or ``RANK``/``WORLD_SIZE``)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self._rank_world = (rank, world_size)
        for ds in (self.train_set, self.val_set):
            if hasattr(ds, "set_rank"):
                ds.set_rank(rank, world_size)

    def setup(self, stage: str | None = None) -> None:
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        self.set_rank(rank, world)
        self._drop_unusable_val()

    def _drop_unusable_val(self) -> None:
        """Skip validation, with a warning, when the val set has nothing to give: it is empty
        (a one-video folder), or every one of its videos is unreadable (found by loading its
        first item, which skips and counts bad videos as training does). Callbacks that draw
        conditions from the val set then take the training set's."""
        ds = self.val_set
        if ds is None or isinstance(ds, IterableDataset):
            return
        why = "the validation split is empty" if len(ds) == 0 else None
        if why is None:
            try:
                ds[0]
            except RuntimeError as err:
                if skipped_videos(ds) < len(ds):
                    raise  # some usable videos: a real error, not an empty split
                why = str(err)
        if why is not None:
            warnings.warn(f"validation skipped: {why}", stacklevel=2)
            self.val_set, self._dropped_val = None, ds

    def _rank_and_world(self) -> tuple[int, int]:
        if self._rank_world is not None:
            return self._rank_world
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return rank_and_world()

    def _order_seed(self) -> int:
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        iterable = isinstance(dataset, IterableDataset)
        rank, world = self._rank_and_world()
        workers = self.num_workers > 0
        kwargs = dict(
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers and self.persistent_workers,
            prefetch_factor=self.prefetch_factor if workers else None,
            worker_init_fn=functools.partial(seed_worker, rank=rank) if workers else None,
        )
        if not train or iterable:
            return DataLoader(dataset, shuffle=False, drop_last=train and self.drop_last, **kwargs)
        sampler = ResumableSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=self._order_seed()
        )
        drop_last = self.drop_last and len(sampler) >= batch_size
        return ResumableDataLoader(dataset, sampler=sampler, drop_last=drop_last, **kwargs)

    def train_dataloader(self) -> DataLoader:
        """A :class:`ResumableDataLoader` for map-style sets (a plain one for streams)."""
        return self._loader(self.train_set, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.val_batch_size, train=False)
