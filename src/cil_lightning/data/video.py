"""Clip decoding: open a video (``video_handles.py``), pick frames, crop, resize.

A clip is ``num_frames`` frames taken every ``stride`` source frames from a random start. The
stride comes either from a target frame rate (``stride = round(source_fps / fps)``, SVD's ~3 fps
sampling) or from a range drawn uniformly (DynamiCrafter draws 1-6 and conditions on the fps it
implies); either way the clip's frame rate is ``source_fps / stride``. Frames are resized so the
short side covers H x W, cropped (centre or random), optionally flipped and mapped to [-1, 1],
or kept as uint8 (``ClipSpec.uint8``: a quarter of the bytes between DataLoader processes and to
the device, where ``to_unit_range`` maps them to [-1, 1]).

Decoding failures of any kind raise :class:`VideoError` so data sets can skip the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .video_handles import (  # noqa: F401  (re-exported: the names data sets import from here)
    BACKENDS,
    VIDEO_EXTENSIONS,
    DecordHandle,
    NaiveHandle,
    PyAVHandle,
    SequentialHandle,
    Source,
    VideoError,
    VideoHandle,
    VideoTooShortError,
    _describe,
    open_video,
)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (), generator=generator))


def choose_stride(
    source_fps: float,
    num_source_frames: int,
    num_frames: int,
    fps: float | None = None,
    stride: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """The frame stride of one clip.

    Exactly one of ``fps`` (target rate: ``max(1, round(source_fps / fps))``) and ``stride`` (an
    int, or an inclusive ``[lo, hi]`` range drawn uniformly, then lowered towards ``lo`` if the
    video is too short for it) is given. Raises VideoTooShortError if even the smallest allowed
    stride does not fit ``num_frames`` frames.
    """
    if (fps is None) == (stride is None):
        raise ValueError("give exactly one of fps and stride")
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        lo = hi = s = max(1, round(source_fps / fps))
    else:
        lo, hi = (int(stride), int(stride)) if isinstance(stride, int) else map(int, stride)
        if not 1 <= lo <= hi:
            raise ValueError(f"stride range must satisfy 1 <= lo <= hi, got {stride}")
        s = _randint(lo, hi, generator)
    fits = (num_source_frames - 1) // (num_frames - 1) if num_frames > 1 else num_source_frames
    if fits < lo or num_source_frames < num_frames:
        raise VideoTooShortError(
            f"{num_source_frames} frames cannot hold {num_frames} frames at stride {lo}"
        )
    return min(s, fits)


def clip_indices(
    num_source_frames: int,
    num_frames: int,
    stride: int,
    start: str = "random",
    generator: torch.Generator | None = None,
) -> list[int]:
    """Source frame indices ``start + stride * k``, k < num_frames; start: random, center, first."""
    span = (num_frames - 1) * stride + 1
    room = num_source_frames - span
    if room < 0:
        raise VideoTooShortError(f"{num_source_frames} frames < span {span}")
    if start == "random":
        s = _randint(0, room, generator)
    elif start == "center":
        s = room // 2
    elif start == "first":
        s = 0
    else:
        raise ValueError(f"start must be 'random', 'center' or 'first', got {start!r}")
    return [s + stride * k for k in range(num_frames)]


@dataclass(frozen=True)
class CropBox:
    """A crop in source pixels (top, left, height, width) and the scale source -> output."""

    top: int
    left: int
    height: int
    width: int
    scale: float


def crop_box(
    size: tuple[int, int],
    height: int,
    width: int,
    crop: str = "center",
    generator: torch.Generator | None = None,
) -> CropBox:
    """The source region that, resized by ``scale``, fills ``height x width`` (short-side cover)."""
    h, w = size
    scale = max(height / h, width / w)
    ch, cw = min(h, math.ceil(height / scale - 1e-6)), min(w, math.ceil(width / scale - 1e-6))
    if crop == "center":
        top, left = (h - ch) // 2, (w - cw) // 2
    elif crop == "random":
        top, left = _randint(0, h - ch, generator), _randint(0, w - cw, generator)
    else:
        raise ValueError(f"crop must be 'center' or 'random', got {crop!r}")
    return CropBox(top, left, ch, cw, scale)


def to_unit_range(x: Tensor) -> Tensor:
    """uint8 frames (any shape) -> float32 in [-1, 1]; float frames are returned as they are."""
    if x.dtype != torch.uint8:
        return x
    return x.float().div_(127.5).sub_(1.0)


def frames_to_tensor(
    frames: np.ndarray, box: CropBox, height: int, width: int, uint8: bool = False
) -> Tensor:
    """uint8 [F, h, w, 3] -> float [F, 3, height, width] in [-1, 1], cropped then resized.

    With ``uint8`` the result stays uint8 in [0, 255], resized by torch's uint8 bilinear kernel
    (anti-aliased as the float one, within one grey level of it rounded).
    """
    x = torch.from_numpy(
        np.ascontiguousarray(
            frames[:, box.top : box.top + box.height, box.left : box.left + box.width]
        )
    )
    x = x.permute(0, 3, 1, 2)
    if uint8:
        if (box.height, box.width) != (height, width):
            x = F.interpolate(x.contiguous(), size=(height, width), mode="bilinear", antialias=True)
        return x.contiguous()
    x = x.float()
    if (box.height, box.width) != (height, width):
        x = F.interpolate(
            x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0)


@dataclass
class ClipSpec:
    """How to turn a video into a training clip.

    Args:
        num_frames, height, width: output clip size [F, 3, H, W].
        fps: target frame rate (stride = round(source fps / fps)); or
        stride: a fixed stride or an inclusive [lo, hi] range drawn per clip (DynamiCrafter 1-6).
        start: ``random`` (training) or ``center`` / ``first`` (evaluation).
        crop: ``center`` or ``random``.
        flip: probability of a horizontal flip.
        cond_frame: which frame of the clip is the condition: ``first`` (SVD, I2VGen-XL, Wan,
            evaluation) or ``random`` (uniform over the clip's frames: DynamiCrafter's training
            ``rand_cond_frame``; the reference draws one index per batch, we draw one per clip from
            the item's generator so the draw survives resumption and any worker count).
        backend: ``decord``, ``pyav``, ``sequential`` (no seek) or ``naive`` (whole file).
        num_threads: decoder threads per open video (1 inside DataLoader workers).
        uint8: clips stay uint8 in [0, 255] (4x fewer bytes through workers and to the GPU);
            the LightningModule maps them to [-1, 1] on the device (``to_unit_range``).
    """

    num_frames: int = 16
    height: int = 320
    width: int = 512
    fps: float | None = None
    stride: int | Sequence[int] | None = None
    start: str = "random"
    crop: str = "center"
    flip: float = 0.0
    cond_frame: str = "first"
    backend: str = "decord"
    num_threads: int = 1
    uint8: bool = False

    def __post_init__(self) -> None:
        if self.fps is None and self.stride is None:
            self.stride = 1
        if self.fps is not None and self.stride is not None:
            raise ValueError("ClipSpec takes fps or stride, not both")
        if self.stride is not None and not isinstance(self.stride, int):
            self.stride = tuple(int(s) for s in self.stride)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown video backend {self.backend!r}; choose one of {BACKENDS}")
        if self.cond_frame not in ("first", "random"):
            raise ValueError(f"cond_frame must be first or random, got {self.cond_frame!r}")


def load_clip(source: Source, spec: ClipSpec, generator: torch.Generator | None = None) -> dict:
    """Decode one clip of ``source`` as ``spec`` says.

    Returns a dict: ``video`` float [F, 3, H, W] in [-1, 1] (uint8 in [0, 255] with
    ``spec.uint8``), ``cond_frame`` [3, H, W] (frame ``cond_index``: 0, or drawn with
    ``spec.cond_frame="random"``), ``cond_index`` (int tensor), ``fps`` (float tensor, the
    clip's rate source_fps / stride), ``stride`` (int tensor), ``indices`` (list of source frame
    indices), ``flipped`` (bool) and ``scale`` (source -> output pixels). Raises VideoError
    (VideoTooShortError) for any unusable video.
    """
    with open_video(source, spec.backend, spec.num_threads) as handle:
        if handle.fps <= 0:
            raise VideoError(f"no frame rate in {_describe(source)}")
        stride = choose_stride(
            handle.fps, handle.num_frames, spec.num_frames, spec.fps, spec.stride, generator
        )
        indices = clip_indices(handle.num_frames, spec.num_frames, stride, spec.start, generator)
        box = crop_box(handle.size, spec.height, spec.width, spec.crop, generator)
        frames = handle.get(indices)
        src_fps = handle.fps
    if frames.shape[1:3] != tuple(handle.size):
        raise VideoError(f"frame size {frames.shape[1:3]} != stream size {handle.size}")
    video = frames_to_tensor(frames, box, spec.height, spec.width, spec.uint8)
    flipped = spec.flip > 0 and float(torch.rand((), generator=generator)) < spec.flip
    if flipped:
        video = video.flip(-1)
    # drawn last: the "first" clips keep the draws (start, crop, flip) they had before this option
    cond_index = 0
    if spec.cond_frame == "random":
        cond_index = int(torch.randint(0, spec.num_frames, (), generator=generator))
    return {
        "video": video,
        "cond_frame": video[cond_index].clone(),
        "cond_index": torch.tensor(cond_index),
        "fps": torch.tensor(src_fps / stride, dtype=torch.float32),
        "stride": torch.tensor(stride),
        "indices": indices,
        "flipped": flipped,
        "scale": box.scale,
    }
