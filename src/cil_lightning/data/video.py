"""Clip decoding: open a video with decord, PyAV or a naive full decode, pick frames, crop.

A clip is ``num_frames`` frames taken every ``stride`` source frames from a random start. The
stride comes either from a target frame rate (``stride = round(source_fps / fps)``, SVD's ~3 fps
sampling) or from a range drawn uniformly (DynamiCrafter draws 1-6 and conditions on the fps it
implies); either way the clip's frame rate is ``source_fps / stride``. Frames are resized so the
short side covers H x W, cropped (centre or random), optionally flipped and mapped to [-1, 1].

Decoding failures of any kind raise :class:`VideoError` so data sets can skip the file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

BACKENDS = ("decord", "pyav", "naive")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".gif")


class VideoError(RuntimeError):
    """A video that cannot be used: missing, empty, unreadable, truncated or too short."""


class VideoTooShortError(VideoError):
    """The video has fewer frames than the clip needs at the smallest allowed stride."""


Source = str | Path | bytes


def _describe(source: Source) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source)


def _check_nonempty(source: Source) -> None:
    if isinstance(source, bytes):
        if not source:
            raise VideoError("empty video bytes")
        return
    path = Path(source)
    if not path.is_file():
        raise VideoError(f"no such video file: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"zero-byte video file: {path}")


class VideoHandle:
    """An open video: ``num_frames``, ``fps``, ``size`` (H, W) and ``get(indices)``.

    ``get`` returns uint8 frames [F, H, W, 3] (RGB).
    """

    num_frames: int
    fps: float
    size: tuple[int, int]

    def get(self, indices: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> VideoHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DecordHandle(VideoHandle):
    """decord's frame-accurate random access (seeks to the key frame before each run of frames)."""

    def __init__(self, source: Source, num_threads: int = 1) -> None:
        try:
            import decord
        except ImportError as e:  # decord has wheels for x86-64 only
            raise ImportError("decord is not installed; use backend=pyav") from e

        _check_nonempty(source)
        src = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        try:
            # num_threads=1: decoding runs inside DataLoader workers, which are the parallelism.
            self._vr = decord.VideoReader(src, ctx=decord.cpu(0), num_threads=num_threads)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
            h, w = self._vr[0].shape[:2] if self.num_frames else (0, 0)
        except Exception as e:  # decord raises its own DECORDError and RuntimeErrors
            raise VideoError(f"decord cannot open {_describe(source)}: {e}") from e
        self.size = (int(h), int(w))
        self._source = source

    def get(self, indices: Sequence[int]) -> np.ndarray:
        try:
            frames = self._vr.get_batch(list(indices)).asnumpy()
        except Exception as e:
            raise VideoError(f"decord cannot decode {_describe(self._source)}: {e}") from e
        if frames.shape[0] != len(indices):
            raise VideoError(f"decord returned {frames.shape[0]} of {len(indices)} frames")
        return frames

    def close(self) -> None:
        self._vr = None


class PyAVHandle(VideoHandle):
    """PyAV: seek to the key frame before the first index, then decode forward to the last."""

    def __init__(self, source: Source, num_threads: int = 1) -> None:
        import av

        _check_nonempty(source)
        self._source = source
        try:
            self._container = av.open(
                io.BytesIO(source) if isinstance(source, bytes) else str(source)
            )
            stream = self._container.streams.video[0]
            stream.thread_count = num_threads
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            self._tb = float(stream.time_base)
            self._start = stream.start_time or 0
            n = stream.frames
            if not n and stream.duration and self.fps:
                n = int(round(stream.duration * self._tb * self.fps))
            if not n and self._container.duration and self.fps:
                n = int(self._container.duration / 1e6 * self.fps)
            self.num_frames = int(n)
            self.size = (stream.codec_context.height, stream.codec_context.width)
            self._stream = stream
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"PyAV cannot open {_describe(source)}: {e}") from e
        if self.fps <= 0 or self.num_frames <= 0:
            raise VideoError(f"PyAV finds no frames or frame rate in {_describe(source)}")

    def _index(self, frame) -> int:
        if frame.pts is None:
            raise VideoError(f"frame without timestamp in {_describe(self._source)}")
        return int(round((frame.pts - self._start) * self._tb * self.fps))

    def get(self, indices: Sequence[int]) -> np.ndarray:
        wanted = sorted(set(int(i) for i in indices))
        found: dict[int, np.ndarray] = {}
        try:
            target = self._start + int(wanted[0] / self.fps / self._tb)
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            for frame in self._container.decode(self._stream):
                i = self._index(frame)
                if i in found or i not in wanted:
                    if i > wanted[-1]:
                        break
                    continue
                found[i] = frame.to_ndarray(format="rgb24")
                if len(found) == len(wanted):
                    break
        except VideoError:
            raise
        except Exception as e:
            raise VideoError(f"PyAV cannot decode {_describe(self._source)}: {e}") from e
        missing = [i for i in wanted if i not in found]
        if missing:
            raise VideoError(
                f"PyAV decoded no frame {missing[:4]} of {_describe(self._source)} (truncated?)"
            )
        return np.stack([found[int(i)] for i in indices])

    def close(self) -> None:
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None


class NaiveHandle(VideoHandle):
    """The baseline: decode every frame of the file to RGB, then index (the benchmark's ratio 1)."""

    def __init__(self, source: Source, num_threads: int = 1) -> None:
        import av

        _check_nonempty(source)
        try:
            with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as c:
                stream = c.streams.video[0]
                stream.thread_count = num_threads
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 0.0
                self._frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        except Exception as e:
            raise VideoError(f"PyAV cannot decode {_describe(source)}: {e}") from e
        if not self._frames or self.fps <= 0:
            raise VideoError(f"no frames or frame rate in {_describe(source)}")
        self.num_frames = len(self._frames)
        self.size = self._frames[0].shape[:2]

    def get(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self._frames[int(i)] for i in indices])


def open_video(source: Source, backend: str = "decord", num_threads: int = 1) -> VideoHandle:
    """Open a video file (or its bytes) with ``backend`` in ``BACKENDS``; raises VideoError."""
    if backend == "decord":
        return DecordHandle(source, num_threads)
    if backend == "pyav":
        return PyAVHandle(source, num_threads)
    if backend == "naive":
        return NaiveHandle(source, num_threads)
    raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")


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


def frames_to_tensor(frames: np.ndarray, box: CropBox, height: int, width: int) -> Tensor:
    """uint8 [F, h, w, 3] -> float [F, 3, height, width] in [-1, 1], cropped then resized."""
    x = torch.from_numpy(
        np.ascontiguousarray(
            frames[:, box.top : box.top + box.height, box.left : box.left + box.width]
        )
    )
    x = x.permute(0, 3, 1, 2).float()
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
        backend: ``decord``, ``pyav`` or ``naive``.
        num_threads: decoder threads per open video (1 inside DataLoader workers).
    """

    num_frames: int = 16
    height: int = 320
    width: int = 512
    fps: float | None = None
    stride: int | Sequence[int] | None = None
    start: str = "random"
    crop: str = "center"
    flip: float = 0.0
    backend: str = "decord"
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.fps is None and self.stride is None:
            self.stride = 1
        if self.fps is not None and self.stride is not None:
            raise ValueError("ClipSpec takes fps or stride, not both")
        if self.stride is not None and not isinstance(self.stride, int):
            self.stride = tuple(int(s) for s in self.stride)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown video backend {self.backend!r}; choose one of {BACKENDS}")


def load_clip(source: Source, spec: ClipSpec, generator: torch.Generator | None = None) -> dict:
    """Decode one clip of ``source`` as ``spec`` says.

    Returns a dict: ``video`` float [F, 3, H, W] in [-1, 1], ``cond_frame`` [3, H, W] (the first
    frame), ``fps`` (float tensor, the clip's rate source_fps / stride), ``stride`` (int tensor),
    ``indices`` (list of source frame indices), ``flipped`` (bool) and ``scale`` (source -> output
    pixels). Raises VideoError (VideoTooShortError) for any unusable video.
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
    video = frames_to_tensor(frames, box, spec.height, spec.width)
    flipped = spec.flip > 0 and float(torch.rand((), generator=generator)) < spec.flip
    if flipped:
        video = video.flip(-1)
    return {
        "video": video,
        "cond_frame": video[0].clone(),
        "fps": torch.tensor(src_fps / stride, dtype=torch.float32),
        "stride": torch.tensor(stride),
        "indices": indices,
        "flipped": flipped,
        "scale": box.scale,
    }
