"""Moving textures with a known velocity, and motion measured by phase correlation.

A clip is a crop of a grey-scale scikit-image photo translated at a constant velocity
v = speed (cos theta, sin theta) px/frame, speed ~ U[speed_lo, speed_hi], theta ~ U[0, 2 pi),
drawn independently of the photo and the crop position, so each clip's true motion is known and
the law of motion does not depend on the first frame. Frames are bilinear samples of the photo
(downscaled by ``zoom``) at sub-pixel positions; values in [-1, 1]; layout [B, F, 1, H, W].

Motion is measured without a learned flow network: the shift by
phase correlation between consecutive frames (Hann window, parabolic sub-pixel peak), averaged
over the F - 1 pairs (``velocity``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

TRAIN_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "clock", "astronaut", "coffee")
EVAL_PHOTOS = ("chelsea", "rocket")  # held out: conditions at evaluation come from these


def load_photo(name: str, zoom: int) -> Tensor:
    """A scikit-image photo (offline: shipped with the package), grey, in [-1, 1], area-downscaled
    by ``zoom``: [H, W] float32."""
    import skimage.data
    from skimage.color import rgb2gray

    img = getattr(skimage.data, name)()
    img = rgb2gray(img[..., :3]) if img.ndim == 3 else img / 255.0
    x = torch.as_tensor(img, dtype=torch.float32)[None, None]
    x = nnf.avg_pool2d(x, zoom) if zoom > 1 else x
    return (x[0, 0] * 2.0 - 1.0).contiguous()


@dataclass(frozen=True)
class MovingTextures:
    """The clip law. ``min_std``: crops whose first frame has a smaller std are redrawn (flat sky
    cannot show motion); the test is on the crop alone, so it is independent of the velocity."""

    size: int = 16
    frames: int = 5
    zoom: int = 4
    speed_lo: float = 0.5
    speed_hi: float = 1.5
    min_std: float = 0.08
    photos: tuple[str, ...] = TRAIN_PHOTOS

    def __post_init__(self) -> None:
        object.__setattr__(self, "_images", [load_photo(p, self.zoom) for p in self.photos])

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(clips [n, F, 1, H, W] in [-1, 1], velocities [n, 2] as (vx, vy) px/frame)."""
        clips, vels = [], []
        while len(clips) < n:
            k = int(torch.randint(len(self._images), (1,), generator=generator))
            img = self._images[k]
            u = torch.rand(3, generator=generator, dtype=torch.float64)
            speed = self.speed_lo + (self.speed_hi - self.speed_lo) * float(u[0])
            theta = 2 * math.pi * float(u[1])
            v = (speed * math.cos(theta), speed * math.sin(theta))
            span = self.size + speed * (self.frames - 1) + 2
            H, W = img.shape
            pos = torch.rand(2, generator=generator, dtype=torch.float64)
            x0 = span / 2 + float(pos[0]) * (W - span)  # the clip's centre stays inside the photo
            y0 = span / 2 + float(pos[1]) * (H - span)
            clip = self._render(
                img, x0 - v[0] * (self.frames - 1) / 2, y0 - v[1] * (self.frames - 1) / 2, v
            )
            if float(clip[0].std()) < self.min_std:
                continue
            clips.append(clip)
            vels.append(v)
        return torch.stack(clips), torch.tensor(vels, dtype=torch.float32)

    def _render(self, img: Tensor, cx: float, cy: float, v: tuple[float, float]) -> Tensor:
        """Frames [F, 1, S, S]: frame f is the S x S window centred at (cx, cy) + f v (pixels).

        The content moves by +v per frame, so the window moves by -v over the photo."""
        H, W = img.shape
        S, F = self.size, self.frames
        r = torch.arange(S, dtype=torch.float64) - (S - 1) / 2
        grids = []
        for f in range(F):
            px = cx - f * v[0] + r  # [S] columns
            py = cy - f * v[1] + r  # [S] rows
            gx = (2 * px + 1) / W - 1
            gy = (2 * py + 1) / H - 1
            gy2, gx2 = torch.meshgrid(gy, gx, indexing="ij")
            grids.append(torch.stack([gx2, gy2], dim=-1))
        grid = torch.stack(grids).float()  # [F, S, S, 2]
        out = nnf.grid_sample(
            img[None, None].expand(F, 1, H, W), grid, mode="bilinear", align_corners=False
        )
        return out  # [F, 1, S, S]


def _hann(size: int) -> Tensor:
    w = torch.hann_window(size, periodic=False, dtype=torch.float64)
    return torch.outer(w, w)


def _parabolic(c_m: Tensor, c_0: Tensor, c_p: Tensor) -> Tensor:
    den = c_m - 2 * c_0 + c_p
    return torch.where(den.abs() > 1e-12, 0.5 * (c_m - c_p) / den, torch.zeros_like(den)).clamp(
        -0.5, 0.5
    )


def phase_shift(a: Tensor, b: Tensor) -> Tensor:
    """Translation (dx, dy) in pixels that maps images a onto b (b(x) = a(x - d)), by phase
    correlation. a, b: [N, H, W]. Returns [N, 2] float64."""
    return phase_correlation(a, b)[0]


def phase_correlation(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """(shift [N, 2] float64 as in ``phase_shift``, peak [N]): the peak height of the normalised
    cross-power spectrum's inverse, near 1 for a clean translation and small for noise."""
    a = a.double()
    b = b.double()
    win = _hann(a.shape[-1]).to(a) if a.shape[-1] == a.shape[-2] else 1.0
    A = torch.fft.fft2((a - a.mean((-1, -2), keepdim=True)) * win)
    B = torch.fft.fft2((b - b.mean((-1, -2), keepdim=True)) * win)
    R = B * A.conj()
    R = R / R.abs().clamp_min(1e-12)
    corr = torch.fft.ifft2(R).real  # [N, H, W], peak at the shift
    N, H, W = corr.shape
    flat = corr.flatten(1).argmax(1)
    iy, ix = flat // W, flat % W
    n = torch.arange(N)

    def at(dy: int, dx: int) -> Tensor:
        return corr[n, (iy + dy) % H, (ix + dx) % W]

    sx = _parabolic(at(0, -1), at(0, 0), at(0, 1))
    sy = _parabolic(at(-1, 0), at(0, 0), at(1, 0))
    dx = torch.where(ix > W // 2, ix - W, ix).double() + sx
    dy = torch.where(iy > H // 2, iy - H, iy).double() + sy
    return torch.stack([dx, dy], dim=1), at(0, 0)


def velocity(clips: Tensor) -> Tensor:
    """Measured velocity [B, 2] (px/frame) of clips [B, F, 1, H, W]: the mean of the shifts
    between consecutive frames (small shifts keep most of the window's overlap)."""
    B, F = clips.shape[:2]
    a = clips[:, :-1, 0].reshape(-1, *clips.shape[-2:])
    b = clips[:, 1:, 0].reshape(-1, *clips.shape[-2:])
    return phase_shift(a, b).view(B, F - 1, 2).mean(1).float()


def coherence(clips: Tensor) -> Tensor:
    """Mean phase-correlation peak [B] over consecutive pairs of clips [B, F, 1, H, W]: how much
    the frames look like one translated image (noise measured as "motion" scores low)."""
    B, F = clips.shape[:2]
    a = clips[:, :-1, 0].reshape(-1, *clips.shape[-2:])
    b = clips[:, 1:, 0].reshape(-1, *clips.shape[-2:])
    return phase_correlation(a, b)[1].view(B, F - 1).mean(1).float()


def speed(clips: Tensor) -> Tensor:
    """Measured speed |v| [B] in px/frame (the lab's motion score)."""
    return velocity(clips).norm(dim=1)
