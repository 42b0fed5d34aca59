"""Stable Video Diffusion adapter: diffusers' ``UNetSpatioTemporalConditionModel`` as a denoiser.

The adapter is the only place that knows SVD's parameterisation (DESIGN principle 5, k-diffusion
``external.py`` / EDM ``EDMPrecond`` habit). Loss and samplers call it as

    x0_hat = denoiser(x_t, sigma, cond)        # x_t [B, F, C, h, w], sigma [B]

SVD is an EDM (variance-exploding) model with v-prediction and sigma_data = 1, preconditioned as in
the ``sgm`` ``VScaling`` wrapper that SVD was trained with:

    c_skip = sd^2 / (sigma^2 + sd^2)     c_out = -sigma * sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)    c_noise = ln(sigma) / 4

(the minus sign of c_out is SVD's; diffusers' ``EulerDiscreteScheduler`` with ``v_prediction``
applies the same). Conditioning as SVD expects: the condition frame's latent concatenated on
channels to every frame, an image embedding through cross-attention, and
``added_time_ids = [fps - 1, motion_bucket_id, noise level]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..diffusion.cond_noise import CondNoise
from ..diffusion.rng import Generator
from ..diffusion.schedules import EDMSchedule


@dataclass
class SVDCondition:
    """Everything the UNet is conditioned on, besides x_t and sigma.

    Attributes:
        latent: condition-frame latent [B, C, h, w], repeated over frames inside the adapter.
        embed: image embedding [B, 1, D] for cross-attention.
        fps: frames per second of the clip [B] (SVD feeds fps - 1).
        motion_bucket_id: SVD's motion conditioning [B].
        noise_level: condition-noise level beta [B] (the third ``added_time_ids`` entry).
    """

    latent: Tensor
    embed: Tensor
    fps: Tensor
    motion_bucket_id: Tensor
    noise_level: Tensor

    def unconditional(self) -> SVDCondition:
        """The null condition of classifier-free guidance: latent and embedding zeroed together."""
        return replace(self, latent=torch.zeros_like(self.latent), embed=torch.zeros_like(self.embed))

    def repeat(self, n: int) -> SVDCondition:
        """Each sample repeated ``n`` times along the batch (several seeds per condition)."""
        return SVDCondition(*(v.repeat_interleave(n, dim=0) for v in vars(self).values()))


class SVDDenoiser(nn.Module):
    """An SVD-class UNet with its encoders, exposed as D(x; sigma, cond).

    Args:
        unet: a ``UNetSpatioTemporalConditionModel`` with ``in_channels = 2 * latent channels``.
        image_encoder: maps the condition frame [B, 3, H, W] in [-1, 1] to [B, 1, D].
        schedule: the EDM schedule (its ``sigma_data`` is the preconditioning's).
        vae: maps frames to latents and back; None means the model works in pixel space.
        fps: default fps fed when a batch carries none (SVD: 7).
        motion_bucket_id: default motion bucket (SVD default 127; the reference fine-tunes at 20).
        cfg_dropout: probability that a training sample's condition latent and embedding are both
            zeroed (classifier-free guidance; METHOD.md section 5 uses 0.1 for SVD).
        noise_embed: also noise the image embedding, with its own draw (the reference SVD does not).
    """

    def __init__(
        self,
        unet: nn.Module,
        image_encoder: nn.Module,
        schedule: EDMSchedule,
        vae: nn.Module | None = None,
        fps: float = 7.0,
        motion_bucket_id: float = 127.0,
        cfg_dropout: float = 0.1,
        noise_embed: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
        self.unet, self.image_encoder, self.vae = unet, image_encoder, vae
        self.schedule = schedule
        self.fps, self.motion_bucket_id = float(fps), float(motion_bucket_id)
        self.cfg_dropout, self.noise_embed = float(cfg_dropout), bool(noise_embed)

    @property
    def sigma_data(self) -> float:
        return self.schedule.sigma_data

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser owns: everything but a frozen VAE."""
        skip = set() if self.vae is None else {id(p) for p in self.vae.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def encode_video(self, video: Tensor) -> Tensor:
        """Frames [B, F, 3, H, W] in [-1, 1] -> latents [B, F, C, h, w]."""
        if self.vae is None:
            return video
        raise NotImplementedError("latent-space SVD arrives with the SVD adapter issue")

    def decode_video(self, latents: Tensor) -> Tensor:
        """Latents [B, F, C, h, w] -> frames [B, F, 3, H, W] in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        raise NotImplementedError("latent-space SVD arrives with the SVD adapter issue")

    def encode_condition(
        self, cond_frame: Tensor, fps: Tensor | None = None, motion_bucket_id: Tensor | None = None
    ) -> SVDCondition:
        """Clean condition for frames [B, 3, H, W] in [-1, 1]."""
        B, device = cond_frame.shape[0], cond_frame.device
        latent = self.encode_video(cond_frame[:, None])[:, 0]

        def _per_sample(v: Tensor | None, default: float) -> Tensor:
            v = torch.full((B,), default) if v is None else v
            return v.to(device=device, dtype=torch.float32).reshape(B)

        return SVDCondition(
            latent=latent,
            embed=self.image_encoder(cond_frame),
            fps=_per_sample(fps, self.fps),
            motion_bucket_id=_per_sample(motion_bucket_id, self.motion_bucket_id),
            noise_level=torch.zeros(B, device=device),
        )

    def training_condition(
        self, cond: SVDCondition, t_norm: Tensor, cond_noise: CondNoise, generator: Generator = None
    ) -> SVDCondition:
        """Condition noise (TimeNoise or another law) and CFG dropout, as used in training.

        The level beta goes into the noise slot of ``added_time_ids``, as the reference SVD does.
        """
        latent, beta = cond_noise.apply(cond.latent, t_norm, generator=generator)
        embed = cond.embed
        if self.noise_embed:
            embed, _ = cond_noise.apply(embed, t_norm, generator=generator)
        if self.cfg_dropout > 0:
            keep = _bernoulli_keep(latent.shape[0], 1.0 - self.cfg_dropout, generator, latent.device)
            latent = latent * keep.view(-1, *[1] * (latent.ndim - 1)).to(latent.dtype)
            embed = embed * keep.view(-1, *[1] * (embed.ndim - 1)).to(embed.dtype)
        return replace(cond, latent=latent, embed=embed, noise_level=beta)

    def forward(self, x: Tensor, sigma: Tensor, cond: SVDCondition) -> Tensor:
        """x0 prediction [B, F, C, h, w] for noisy latents x [B, F, C, h, w] at levels sigma [B]."""
        sd = self.sigma_data
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = -s * sd / (s**2 + sd**2).sqrt()
        c_in = 1.0 / (s**2 + sd**2).sqrt()
        c_noise = sigma.to(x.dtype).clamp_min(1e-20).log() / 4

        frames = x.shape[1]
        cond_latent = cond.latent[:, None].expand(-1, frames, -1, -1, -1).to(x.dtype)
        added_time_ids = torch.stack(
            [cond.fps - 1, cond.motion_bucket_id, cond.noise_level], dim=1
        ).to(x.dtype)
        v = self.unet(
            torch.cat([c_in * x, cond_latent], dim=2),
            c_noise,
            encoder_hidden_states=cond.embed.to(x.dtype),
            added_time_ids=added_time_ids,
            return_dict=False,
        )[0]
        return c_skip * x + c_out * v


def _bernoulli_keep(n: int, p_keep: float, generator: Generator, device) -> Tensor:
    """[n] float mask of ones with probability p_keep, drawn from the injected generator."""
    if generator is None or isinstance(generator, torch.Generator):
        g_device = device if generator is None else generator.device
        u = torch.rand(n, generator=generator, device=g_device)
    else:
        u = torch.stack([torch.rand((), generator=g, device=g.device) for g in generator])
    return (u.to(device) < p_keep).float()


def fsdp_auto_wrap_policy():
    """FSDP wraps the UNet block by block (down, mid and up blocks of the SVD UNet)."""
    from diffusers.models.unets.unet_3d_blocks import (
        CrossAttnDownBlockSpatioTemporal,
        CrossAttnUpBlockSpatioTemporal,
        DownBlockSpatioTemporal,
        UNetMidBlockSpatioTemporal,
        UpBlockSpatioTemporal,
    )
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy(
        {
            CrossAttnDownBlockSpatioTemporal,
            DownBlockSpatioTemporal,
            UNetMidBlockSpatioTemporal,
            CrossAttnUpBlockSpatioTemporal,
            UpBlockSpatioTemporal,
        }
    )
