"""The map-style clip data set that every file-based source (folder, WebVid, UCF101, shipped) uses.

A subclass only lists its entries (path, caption, optional extras); this class decodes clips,
skips unusable files (another entry takes their place), counts them in shared memory across
workers and stops with a clear error when nothing readable is left.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .sampling import ItemKey
from .skip_counter import SkipCounter
from .video import ClipSpec, VideoError, load_clip


class StringArray:
    """Strings packed in one numpy buffer.

    Millions of Python ``str`` objects in a data set get copied page by page into every forked
    worker as their reference counts change; one bytes buffer plus offsets does not.
    """

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.buffer[self.offsets[i] : self.offsets[i + 1]].tobytes().decode("utf-8")


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` (for splits that do not move when files are added)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def _mix(*values: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(values).encode(), digest_size=8).digest(), "big") & (
        2**63 - 1
    )


class VideoClipDataset(Dataset):
    """Clips decoded from video files; items are dicts.

    Each item has ``video`` [F, 3, H, W] in [-1, 1], ``cond_frame`` [3, H, W], ``fps`` (float
    tensor, the clip's rate), ``stride`` (int tensor), ``name`` (str), ``path`` (str), ``caption``
    (str, empty when unknown), ``index`` (the entry actually used, after skips) and any extras
    the subclass adds through :meth:`extras`.

    Randomness (start frame, crop, flip, stride, replacements of unusable videos): with
    ``deterministic=True`` (validation) each item's seed is a function of ``seed`` and the index,
    the same every epoch. With ``deterministic=False`` (training) and an
    :class:`~cil_lightning.data.sampling.ItemKey` index (what the datamodule's
    :class:`~cil_lightning.data.sampling.ResumableSampler` yields) it is a function of ``seed``,
    the key's seed and epoch and the index: the same whatever the workers and however the run was
    interrupted and resumed, and new every epoch. With a plain int index it is one draw from the
    global torch RNG (distinct per rank and worker through ``seed_everything(workers=True)`` and
    the datamodule's worker init).

    Args:
        clip: a :class:`ClipSpec` (or its fields as a dict).
        deterministic: fixed per-index randomness (validation).
        seed: the base seed of deterministic items and of replacement draws.
        max_retries: consecutive unusable videos tolerated for one item before giving up.
    """

    def __init__(
        self,
        clip: ClipSpec | dict,
        deterministic: bool = False,
        seed: int = 0,
        max_retries: int = 50,
    ) -> None:
        self.clip = clip if isinstance(clip, ClipSpec) else ClipSpec(**dict(clip))
        self.deterministic, self.seed, self.max_retries = deterministic, seed, max_retries
        self.paths: StringArray | None = None
        self.captions: StringArray | None = None
        self.skips = SkipCounter(0)
        self.root = ""

    # -- what subclasses provide -------------------------------------------------------------
    def _set_entries(self, paths: Sequence[str], captions: Sequence[str] | None = None) -> None:
        if captions is not None and len(captions) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(captions)} captions")
        self.paths = StringArray([str(p) for p in paths])
        self.captions = StringArray(list(captions)) if captions is not None else None
        self.skips = SkipCounter(len(self.paths))

    def extras(self, index: int, clip: dict) -> dict:
        """Extra fields for entry ``index`` given the decoded clip (e.g. label, known motion)."""
        return {}

    def name(self, index: int) -> str:
        return Path(self.paths[index]).stem

    # -- public ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self.paths is None else len(self.paths)

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames

    @property
    def skipped(self) -> int:
        """Distinct entries found unusable so far (all workers of this process's loaders)."""
        return self.skips.num_bad

    def skipped_paths(self) -> list[str]:
        return [self.paths[i] for i in self.skips.bad_indices()]

    def path(self, index: int) -> str:
        return self.paths[index]

    def _generator(self, index: int, key: int | None = None) -> torch.Generator:
        """The item's generator: fixed by ``(seed, index)`` when deterministic, by the key's
        ``(seed, epoch)`` and the index when ``key`` is an :class:`ItemKey`, else one draw from
        the global torch RNG."""
        if self.deterministic:
            seed = _mix(self.seed, index)
        elif isinstance(key, ItemKey):
            seed = _mix(self.seed, key.seed, key.epoch, index)
        else:
            seed = int(torch.randint(0, 2**62, ()))  # one global draw per item, however many tries
        return torch.Generator().manual_seed(seed)

    def _candidates(self, index: int, generator: torch.Generator):
        """The entry itself, then replacements in an order fixed by the item's generator."""
        yield index
        n = len(self)
        for _ in range(n * 4):
            yield int(torch.randint(0, n, (), generator=generator))

    def load(self, index: int, generator: torch.Generator | None = None) -> dict:
        """Decode entry ``index`` without skipping (raises VideoError)."""
        clip = load_clip(self.paths[index], self.clip, generator)
        item = {
            "video": clip["video"],
            "cond_frame": clip["cond_frame"],
            "cond_index": clip["cond_index"],
            "fps": clip["fps"],
            "stride": clip["stride"],
            "name": self.name(index),
            "path": self.paths[index],
            "caption": self.captions[index] if self.captions is not None else "",
            "index": index,
        }
        item.update(self.extras(index, clip))
        return item

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if n == 0:
            raise IndexError("empty video data set")
        key, index = index, int(index) % n
        generator = self._generator(index, key)
        failures: list[str] = []
        for candidate in self._candidates(index, generator):
            if self.skips.num_bad >= n:
                last = f"; last error: {failures[-1]}" if failures else ""
                raise RuntimeError(
                    f"every one of the {n} videos of this data set ({self.root or 'no root'}) is "
                    f"unreadable, empty or too short for {self.clip.num_frames} frames at "
                    f"{self._rate()}{last}"
                )
            if self.skips.is_bad(candidate):
                continue  # already counted, by this process or another worker
            # A fresh generator per candidate: a replacement clip does not depend on the failures.
            gen = torch.Generator().manual_seed(_mix(generator.initial_seed(), candidate))
            try:
                return self.load(candidate, gen)
            except VideoError as e:
                self.skips.mark(candidate)
                failures.append(str(e))
                warnings.warn(f"skipping unusable video: {e}", stacklevel=2)
            if len(failures) >= self.max_retries:
                raise RuntimeError(
                    f"{len(failures)} unusable videos in a row while loading item {index} of "
                    f"{self.root or 'this data set'}; last errors: {failures[-3:]}"
                )
        raise RuntimeError(f"no readable video found for item {index} of {self.root}")

    def _rate(self) -> str:
        return f"fps {self.clip.fps}" if self.clip.fps is not None else f"stride {self.clip.stride}"
