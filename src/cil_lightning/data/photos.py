"""Photographs in motion, in memory: scikit-image's bundled photographs seen through a camera that
pans at a known number of pixels per frame (exact pixels, no codec), so the ground-truth motion is
known exactly: a model that copies its condition frame has motion 0, and motion metrics get an
oracle. The built mp4 variant is in ``shipped_build``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

# Photographs bundled in the scikit-image wheel (others need a download).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
# Pans in pixels per frame at the clip's resolution (dx, dy); (0, 0) is a still clip.
PANS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (1, 1), (-1, -1), (2, 1))


def load_photo(name: str, short_side: int) -> Tensor:
    """A scikit-image photograph as float [3, H, W] in [-1, 1], short side resized."""
    import skimage.data

    image = torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1).float()
    image = image[None] / 127.5 - 1.0
    h, w = image.shape[-2:]
    scale = short_side / min(h, w)
    size = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


class PannedPhotoClips(Dataset):
    """Clips [F, 3, H, W] in [-1, 1] panning over real photographs at known speeds.

    Each item is a dict with ``video`` [F, 3, H, W], ``cond_frame`` [3, H, W] (the first frame),
    ``fps`` (float), ``motion`` [2] (dx, dy in pixels per frame) and ``name`` (str).

    Args:
        split: ``"train"`` or ``"val"``; every ``val_every``-th clip goes to validation.
        num_frames, height, width: clip size.
        photo_short_side: the photographs' short side in pixels before cropping (the field of view).
        starts_per_pan: window start positions per photograph and pan.
        fps: the frame rate recorded for every clip.
    """

    def __init__(
        self,
        split: str = "train",
        num_frames: int = 8,
        height: int = 32,
        width: int = 32,
        photo_short_side: int = 64,
        starts_per_pan: int = 2,
        fps: float = 8.0,
        photos: tuple[str, ...] = PHOTOS,
        pans: tuple[tuple[int, int], ...] = PANS,
        val_every: int = 8,
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.num_frames, self.height, self.width, self.fps = num_frames, height, width, fps
        self.photos = {name: load_photo(name, photo_short_side) for name in photos}
        items = []
        for i, (name, pan, k) in enumerate(itertools.product(photos, pans, range(starts_per_pan))):
            if (i % val_every == val_every - 1) == (split == "val"):
                items.append((name, pan, k))
        self.items = items
        for name, pan, _ in items:
            self._window_range(name, pan)  # fail at construction if a pan does not fit

    def _window_range(self, name: str, pan: tuple[int, int]) -> tuple[int, int]:
        """Room left for the window start along y and x, after the whole pan."""
        _, H, W = self.photos[name].shape
        span_y = abs(pan[1]) * (self.num_frames - 1) + self.height
        span_x = abs(pan[0]) * (self.num_frames - 1) + self.width
        if span_y > H or span_x > W:
            raise ValueError(
                f"pan {pan} over {self.num_frames} frames of {self.height}x{self.width} does not "
                f"fit in photo {name!r} of {H}x{W}; raise photo_short_side"
            )
        return H - span_y, W - span_x

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, (dx, dy), k = self.items[index]
        room_y, room_x = self._window_range(name, (dx, dy))
        # Deterministic, spread-out start positions: the golden ratio walks the free room.
        frac = (k * 0.6180339887 + 0.25) % 1.0
        y0 = round(frac * room_y) + (abs(dy) * (self.num_frames - 1) if dy < 0 else 0)
        x0 = round((1 - frac) * room_x) + (abs(dx) * (self.num_frames - 1) if dx < 0 else 0)
        photo = self.photos[name]
        frames = [
            photo[
                :, y0 + f * dy : y0 + f * dy + self.height, x0 + f * dx : x0 + f * dx + self.width
            ]
            for f in range(self.num_frames)
        ]
        video = torch.stack(frames)
        return {
            "video": video,
            "cond_frame": video[0].clone(),
            "fps": torch.tensor(self.fps),
            "motion": torch.tensor([float(dx), float(dy)]),
            "name": f"{name}_dx{dx}_dy{dy}_{k}",
        }
