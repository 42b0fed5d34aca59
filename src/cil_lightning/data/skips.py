"""Reporting skipped videos: a warning and a logged ``data/skipped`` at each epoch end."""

from __future__ import annotations

import warnings

import lightning as L

from .skip_counter import SkipCounter, skipped_videos

__all__ = ["SkipCounter", "SkippedVideosCallback", "skipped_videos"]


class SkippedVideosCallback(L.Callback):
    """Logs ``data/skipped`` and warns at each epoch end when videos were skipped.

    Reads ``trainer.datamodule.skipped`` (summed over train and validation sets) and
    ``trainer.datamodule.skipped_paths()``; the logged value is summed over DDP ranks.

    Args:
        max_paths: how many skipped paths the warning names.
    """

    def __init__(self, max_paths: int = 5) -> None:
        self.max_paths = max_paths
        self.reported = 0

    def _count(self, trainer) -> int:
        return int(getattr(trainer.datamodule, "skipped", 0) or 0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        total = self._count(trainer)
        pl_module.log(
            "data/skipped",
            float(total),
            on_step=False,
            on_epoch=True,
            reduce_fx="sum",
            sync_dist=trainer.world_size > 1,
        )
        if total > self.reported:
            paths = []
            if hasattr(trainer.datamodule, "skipped_paths"):
                paths = trainer.datamodule.skipped_paths()[: self.max_paths]
            named = "; e.g. " + ", ".join(map(str, paths)) if paths else ""
            warnings.warn(
                f"epoch {trainer.current_epoch}: {total - self.reported} unreadable, truncated, "
                f"empty or too-short videos skipped ({total} in total on rank "
                f"{trainer.global_rank}){named}",
                stacklevel=1,
            )
            self.reported = total
