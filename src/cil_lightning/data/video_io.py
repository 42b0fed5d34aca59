"""Writing videos and frames to disk (mp4 through PyAV, gif and png through Pillow)."""

from __future__ import annotations

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
    """Encode frames [F, 3, H, W] in [-1, 1] (or uint8 [F, H, W, 3]) as H.264.

    Falls back to MPEG-4 part 2 where no H.264 encoder exists. ``options`` go to the encoder
    (e.g. ``{"crf": "12"}`` for near-lossless H.264).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video = frames if isinstance(frames, np.ndarray) else to_uint8(frames)
    # yuv420p needs even sides; pad by edge replication rather than crop, so nothing is lost.
    h, w = video.shape[1:3]
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=round(fps), options=options or {})
        except (av.codec.codec.UnknownCodecError, ValueError):
            stream = container.add_stream("mpeg4", rate=round(fps))
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
