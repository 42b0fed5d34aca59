"""LightningDataModule that serves any configured clip data set."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset


class VideoDataModule(L.LightningDataModule):
    """Train and validation loaders over data sets built by Hydra.

    Items are dicts with at least ``video`` [F, 3, H, W] in [-1, 1] and ``cond_frame`` [3, H, W].

    Args:
        train, val: the data sets (``val`` may be None).
        num_frames, height, width: the clip size the data sets produce; read by callbacks and
            validated against the model before training.
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
    ) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.num_frames, self.height, self.width = num_frames, height, width
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) >= batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
