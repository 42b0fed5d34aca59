"""Counting skipped videos across DataLoader workers.

Workers are separate processes, so a plain attribute incremented inside ``__getitem__`` would be
lost. :class:`SkipCounter` keeps its state in shared-memory tensors created in the main process
(forked and spawned workers both inherit them): a flag per entry of a map-style data set (so a
bad file is decoded once and counted once) and one event slot per worker (no two processes write
the same slot, so no lock is needed).
"""

from __future__ import annotations

import torch

# Slot 0 is the main process; worker w writes slot w + 1. Workers beyond this share the last slot.
MAX_SLOTS = 257


def _slot() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else min(info.id + 1, MAX_SLOTS - 1)


class SkipCounter:
    """Shared-memory record of unusable videos.

    Args:
        size: number of entries of a map-style data set (0 for streams without indices).
    """

    def __init__(self, size: int = 0) -> None:
        self.bad = torch.zeros(max(size, 0), dtype=torch.uint8).share_memory_()
        self.events = torch.zeros(MAX_SLOTS, dtype=torch.int64).share_memory_()

    def mark(self, index: int | None = None) -> None:
        """Record one skipped video (``index`` flags the entry as known bad)."""
        if index is not None and 0 <= index < len(self.bad):
            self.bad[index] = 1
        self.events[_slot()] += 1

    def is_bad(self, index: int) -> bool:
        return bool(self.bad[index]) if 0 <= index < len(self.bad) else False

    @property
    def num_bad(self) -> int:
        """Distinct entries found unusable (map-style data sets)."""
        return int(self.bad.sum())

    @property
    def num_events(self) -> int:
        """Skips so far, repeats included (the count for streams)."""
        return int(self.events.sum())

    def bad_indices(self) -> list[int]:
        return torch.nonzero(self.bad).flatten().tolist()


def skipped_videos(dataset) -> int:
    """Unusable videos a data set has met: distinct files (map-style) or skip events (streams)."""
    counter = getattr(dataset, "skips", None)
    if counter is None:
        return 0
    return counter.num_bad if len(counter.bad) else counter.num_events
