"""Open a video and read frames by index: decord, PyAV (seek, then decode forward), a sequential
decode from the first frame that stops at the last frame needed, or a naive full decode.

``get`` returns uint8 RGB frames [F, H, W, 3]; every failure raises :class:`VideoError` so data
sets can skip the file. The clip logic (stride, start, crop, tensor) is in ``video.py``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BACKENDS = ("decord", "pyav", "sequential", "naive")
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

    def _seek(self, index: int) -> None:
        target = self._start + int(index / self.fps / self._tb)
        self._container.seek(target, stream=self._stream, backward=True, any_frame=False)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        wanted = sorted(set(int(i) for i in indices))
        found: dict[int, np.ndarray] = {}
        try:
            self._seek(wanted[0])
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


class SequentialHandle(PyAVHandle):
    """The fair naive baseline: decode from the first frame, no seek, stop at the last needed."""

    def _seek(self, index: int) -> None:
        pass


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
    if backend == "sequential":
        return SequentialHandle(source, num_threads)
    if backend == "naive":
        return NaiveHandle(source, num_threads)
    raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
