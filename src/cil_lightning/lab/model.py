"""A small conv-net adapter for the lab (EDM, or VP with v-prediction), in pixel space.

The interface of ``models/svd/denoiser.py::SVDDenoiser`` (docs/DESIGN.md, "Adding a model"):
``schedule``, ``encode_video``, ``decode_video``, ``encode_condition``, ``sampling_condition``,
``training_condition``, ``trainable_parameters`` and ``denoiser(x_t, t, cond) -> x0_hat``, so the
framework's ``DenoisingLoss``, ``Sampler`` and diagnostic run it unchanged.

The network sees the F noisy frames and the condition frame stacked on channels
([B, F + 1, H, W]), so a few dilated 3 x 3 convolutions reach every pixel of a 16 x 16 clip; the
noise level enters by FiLM. Preconditioning (the adapter owns it, DESIGN principle 5):

    EDM: x0 = c_skip x + c_out F(c_in x, ln(sigma) / 4),  c_* from sigma_data (Karras et al. 2022)
    VP : v  = F(x, t / T),  x0 = alpha_t x - sigma_t v    (v-prediction, Salimans & Ho 2022)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..diffusion.cond_noise import CondNoise
from ..diffusion.rng import Generator
from ..diffusion.schedules import EDMSchedule, Schedule, VPSchedule


@dataclass
class LatentCondition:
    """A condition that is only the first frame's latent [B, C, h, w] (pixel space here)."""

    latent: Tensor

    def unconditional(self) -> LatentCondition:
        return replace(self, latent=torch.zeros_like(self.latent))


class _Block(nn.Module):
    def __init__(self, width: int, dilation: int, emb: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(emb, 2 * width)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        z = self.norm(h) * (1 + scale) + shift
        z = self.conv2(nn.functional.silu(self.conv1(nn.functional.silu(z))))
        return h + z


class FrameStackNet(nn.Module):
    """F noisy frames + the condition frame on channels: [B, F + 1, H, W] -> [B, F, H, W]."""

    def __init__(self, frames: int, width: int = 32, dilations=(1, 2, 4, 8, 1), emb: int = 64):
        super().__init__()
        self.freqs = nn.Parameter(torch.randn(emb // 2) * 4.0, requires_grad=False)
        self.embed = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(frames + 1, width, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(width, d, emb) for d in dilations)
        self.out = nn.Conv2d(width, frames, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        f = 2 * math.pi * c_noise[:, None] * self.freqs[None]
        e = self.embed(torch.cat([f.cos(), f.sin()], dim=1))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, e)
        return self.out(nn.functional.silu(h))


class LabDenoiser(nn.Module):
    """Clips [B, F, 1, H, W] in [-1, 1] (pixel space: encode/decode are the identity).

    Args:
        schedule: an ``EDMSchedule`` (its ``sigma_data`` preconditions) or a ``VPSchedule`` with
            ``prediction="v"``.
        frames: F.
        width, dilations: the network's size.
    """

    def __init__(self, schedule: Schedule, frames: int, width: int = 32, dilations=(1, 2, 4, 8, 1)):
        super().__init__()
        if isinstance(schedule, VPSchedule) and schedule.prediction != "v":
            raise ValueError("the lab's VP adapter predicts v: use VPSchedule(prediction='v')")
        if not isinstance(schedule, (EDMSchedule, VPSchedule)):
            raise TypeError(f"LabDenoiser supports EDM and VP schedules, got {type(schedule)}")
        self.schedule, self.frames = schedule, int(frames)
        self.net = FrameStackNet(frames, width, dilations)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def encode_video(self, video: Tensor, names=None, generator: Generator = None) -> Tensor:
        return video

    def decode_video(self, latents: Tensor) -> Tensor:
        return latents.clamp(-1, 1)

    def encode_condition(self, cond_frame: Tensor, fps=None, **_) -> LatentCondition:
        """Frame [B, 1, H, W] -> the clean condition."""
        return LatentCondition(cond_frame)

    def sampling_condition(
        self, cond_frame: Tensor, fps=None, generator=None, **_
    ) -> LatentCondition:
        return self.encode_condition(cond_frame)  # clean at inference (no noise augmentation)

    def training_condition(
        self,
        cond: LatentCondition,
        t_norm: Tensor,
        cond_noise: CondNoise,
        generator: Generator = None,
    ) -> LatentCondition:
        latent, _ = cond_noise.apply(cond.latent, t_norm, generator=generator)
        return LatentCondition(latent)

    def forward(self, x: Tensor, t: Tensor, cond: LatentCondition) -> Tensor:
        """x0 prediction [B, F, 1, H, W] for x_t [B, F, 1, H, W] at native times t [B]."""
        B, F = x.shape[:2]
        view = (-1, 1, 1, 1)
        c = cond.latent.to(x.dtype)  # [B, 1, H, W]
        if isinstance(self.schedule, EDMSchedule):
            sd, s = self.schedule.sigma_data, t.to(x.dtype).view(view)
            c_in, c_skip = 1 / (s**2 + sd**2).sqrt(), sd**2 / (s**2 + sd**2)
            c_out = s * sd / (s**2 + sd**2).sqrt()
            c_noise = t.to(x.dtype).clamp_min(1e-20).log() / 4
            h = torch.cat([c_in * x[:, :, 0], c], dim=1)
            return (c_skip * x[:, :, 0] + c_out * self.net(h, c_noise)).unsqueeze(2)
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha, sigma = alpha.to(x.dtype).view(view), sigma.to(x.dtype).view(view)
        v = self.net(torch.cat([x[:, :, 0], c], dim=1), t.to(x.dtype) / self.schedule.T)
        return (alpha * x[:, :, 0] - sigma * v).unsqueeze(2)
