"""Video files and frames: writing (mp4 through PyAV, gif and png through Pillow), reading,
probing, and bringing frames to one size (``cover_center_crop``, the training clips' transform).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from torch import Tensor


def to_uint8(frames: Tensor) -> np.ndarray:
    """Frames [F, 3, H, W] (or [3, H, W]) in [-1, 1] -> uint8 [F, H, W, 3] (or [H, W, 3])."""
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    return x.movedim(-3, -1).numpy()


def write_mp4(
    path: str | Path, frames: Tensor | np.ndarray, fps: float = 8.0, options: dict | None = None
) -> Path:
    """Encode frames [F, 3, H, W] in [-1, 1] (or uint8 [F, H, W, 3]) as H.264 at ``fps``.

    A fractional ``fps`` is kept as a fraction (25 / 3 stays 25/3, not 8). Falls back to
    MPEG-4 part 2 where no H.264 encoder exists. ``options`` go to the encoder
    (e.g. ``{"crf": "12"}`` for near-lossless H.264).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = frames if isinstance(frames, np.ndarray) else to_uint8(frames)
    # yuv420p needs even sides; pad by edge replication rather than crop, so nothing is lost.
    h, w = video.shape[1:3]
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    # Denominator 1001 keeps NTSC rates (30000/1001) exact.
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=rate, options=options or {})
        except (av.codec.codec.UnknownCodecError, ValueError):
            stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_gif(path: str | Path, frames: Tensor, fps: float = 8.0, scale: int = 1) -> Path:
    """Write frames [F, 3, H, W] in [-1, 1] as a looping gif, optionally upscaled (nearest)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in to_uint8(frames)]
    if scale > 1:
        images = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
    )
    return path


def write_png(path: str | Path, image: Tensor, scale: int = 1) -> Path:
    """Write one image [3, H, W] in [-1, 1] as png, optionally upscaled (nearest)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(to_uint8(image))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)
    return path


def read_video(path: str | Path) -> Tensor:
    """Decode a whole video file to frames [F, 3, H, W] in [-1, 1] (for checks and tests)."""
    import av
    import torch

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def probe_video(path: str | Path) -> tuple[int, int, float | None]:
    """(height, width, fps) from a video file's header, without decoding; fps None if unknown."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        size = stream.codec_context.height, stream.codec_context.width
    return int(size[0]), int(size[1]), float(rate) if rate else None


RESIZE_POLICY = (
    "cover_center_crop: scale so the short side covers height x width, keep the centre "
    "(crop in source pixels, then bilinear resampling with antialias, "
    "torch.nn.functional.interpolate(mode='bilinear', antialias=True, align_corners=False)); "
    "the transform of the training clips (data.video.crop_box + frames_to_tensor)"
)


def cover_center_crop(frames: Tensor | np.ndarray, height: int, width: int) -> Tensor:
    """Bring frames to ``height x width``: short side scaled to cover, then centre crop.

    The one resize of the project's clips (``data.video.crop_box`` with ``crop="center"`` and
    ``frames_to_tensor``: crop in source pixels, then bilinear with antialias), so condition
    frames, exported reference clips and evaluated videos are all made alike.

    Args:
        frames: float [F, 3, h, w] or [3, h, w] in [-1, 1] (quantised to 8 bits first, which is
            exact for frames read from 8-bit files), or uint8 [F, h, w, 3] (decoder output).

    Returns:
        float [F, 3, height, width] (or [3, height, width]) in [-1, 1]; a float input already of
        that size is returned unchanged.
    """
    from .video import crop_box, frames_to_tensor

    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 frames [F, h, w, 3], got {frames.dtype} {frames.shape}"
            )
        box = crop_box(frames.shape[1:3], height, width, "center")
        return frames_to_tensor(frames, box, height, width)
    if frames.dim() not in (3, 4) or frames.shape[-3] != 3:
        raise ValueError(f"expected frames [F, 3, h, w] or [3, h, w], got {tuple(frames.shape)}")
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    single = frames.dim() == 3
    video = to_uint8(frames[None] if single else frames)
    out = cover_center_crop(video, height, width).to(frames.device)
    return out[0] if single else out
