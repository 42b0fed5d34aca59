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

from ...diffusion.cond_noise import CondNoise
from ...diffusion.rng import Generator, rand, randn
from ...diffusion.schedules import EDMSchedule


@dataclass
class SVDCondition:
    """Everything the UNet is conditioned on, besides x_t and sigma.

    Attributes:
        latent: condition-frame latent [B, C, h, w], repeated over frames inside the adapter.
        embed: image embedding [B, 1, D] for cross-attention.
        fps: frames per second of the clip [B] (SVD feeds fps - 1).
        motion_bucket_id: SVD's motion conditioning [B].
        noise_level: condition-noise level beta [B] (the third ``added_time_ids`` entry).
        image: the condition frame [B, 3, H, W] in [-1, 1], kept for pixel-space noising.
    """

    latent: Tensor
    embed: Tensor
    fps: Tensor
    motion_bucket_id: Tensor
    noise_level: Tensor
    image: Tensor | None = None

    def unconditional(self) -> SVDCondition:
        """The null condition of classifier-free guidance: latent and embedding zeroed together."""
        return replace(
            self, latent=torch.zeros_like(self.latent), embed=torch.zeros_like(self.embed)
        )

    def repeat(self, n: int) -> SVDCondition:
        """Each sample repeated ``n`` times along the batch (several seeds per condition)."""
        return SVDCondition(
            *(None if v is None else v.repeat_interleave(n, dim=0) for v in vars(self).values())
        )


class SVDDenoiser(nn.Module):
    """An SVD-class UNet with its encoders, exposed as D(x; sigma, cond).

    Args:
        unet: a ``UNetSpatioTemporalConditionModel`` with ``in_channels = 2 * latent channels``.
        image_encoder: maps the condition frame [B, 3, H, W] in [-1, 1] to [B, 1, D]
            (``CLIPImageEmbedder`` for real SVD, ``TinyImageEncoder`` for the pixel-space slice).
        schedule: the EDM schedule (its ``sigma_data`` is the preconditioning's).
        vae: an ``AutoencoderKLTemporalDecoder``; None means the model works in pixel space.
        fps: default fps fed when a batch carries none (SVD: 7).
        motion_bucket_id: default motion bucket (SVD default 127; the reference fine-tunes at 20).
        cfg_dropout: probability that a training sample's condition latent and embedding are both
            zeroed (classifier-free guidance; METHOD.md section 5 uses 0.1 for SVD).
        noise_embed: also noise the image embedding, with its own draw (the reference SVD does not).
        noise_space: ``"latent"`` noises the unscaled condition latent (TimeNoise as the reference
            SVD code does); ``"pixel"`` noises the condition frame before the VAE, as SVD's own
            augmentation does (the ``svd_svdaug`` baseline).
        noise_aug_strength: SVD's inference noise augmentation (``sampling_condition``): pixel
            noise of this std on the condition frame before the VAE, also fed as the third
            ``added_time_ids`` entry. diffusers' pipeline default 0.02 (the reference's own
            pipeline 0.002); 0 gives a clean condition.
        freeze_vae, freeze_image_encoder: keep those out of the optimiser (SVD fine-tuning does).
        gradient_checkpointing: recompute UNet activations in the backward pass.
        cache_latents: keep each clip's VAE posterior (mean, std) by clip name, so the VAE encoder
            runs once per clip; valid only when a name always decodes to the same frames (no
            random crops, flips or frame offsets).
        decode_chunk_size: frames decoded at once by the temporal VAE decoder; None decodes the
            whole clip at once (chunks leave a seam at their border, which flow-based metrics
            read as motion).
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
        noise_space: str = "latent",
        noise_aug_strength: float = 0.02,
        freeze_vae: bool = True,
        freeze_image_encoder: bool = True,
        gradient_checkpointing: bool = False,
        cache_latents: bool = False,
        decode_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
        self.unet, self.image_encoder, self.vae = unet, image_encoder, vae
        self.schedule = schedule
        self.fps, self.motion_bucket_id = float(fps), float(motion_bucket_id)
        if noise_space not in ("latent", "pixel"):
            raise ValueError(f"noise_space must be 'latent' or 'pixel', got {noise_space!r}")
        self.cfg_dropout, self.noise_embed = float(cfg_dropout), bool(noise_embed)
        self.noise_space = noise_space
        if not noise_aug_strength >= 0.0:
            raise ValueError(f"noise_aug_strength must be >= 0, got {noise_aug_strength}")
        self.noise_aug_strength = float(noise_aug_strength)
        self.cache_latents = bool(cache_latents)
        self.decode_chunk_size = None if decode_chunk_size is None else int(decode_chunk_size)
        self._latent_cache: dict[str, tuple[Tensor, Tensor]] = {}
        if vae is not None and freeze_vae:
            vae.requires_grad_(False).eval()
        if freeze_image_encoder:
            image_encoder.requires_grad_(False).eval()
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()

    @property
    def sigma_data(self) -> float:
        return self.schedule.sigma_data

    @property
    def scaling_factor(self) -> float:
        return 1.0 if self.vae is None else float(self.vae.config.scaling_factor)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser owns (frozen VAE and image encoder excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        # Frozen encoders stay in eval mode whatever Lightning asks of the module.
        for module in (self.vae, self.image_encoder):
            if module is not None and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def _posterior(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """VAE posterior (mean, std) of frames [N, 3, H, W] in [-1, 1], each [N, C, h, w]."""
        dist = self.vae.encode(frames.to(self.vae.dtype)).latent_dist
        return dist.mean, dist.std

    @torch.no_grad()
    def encode_video(
        self, video: Tensor, names: list[str] | None = None, generator: Generator = None
    ) -> Tensor:
        """Frames [B, F, 3, H, W] in [-1, 1] -> scaled latents [B, F, C, h, w].

        A sample of the VAE posterior times the VAE scaling factor (SVD training convention).
        With ``cache_latents`` and ``names``, each clip's posterior is computed once.
        """
        if self.vae is None:
            return video
        B, F = video.shape[:2]
        if self.cache_latents and names is not None:
            missing = [i for i, n in enumerate(names) if n not in self._latent_cache]
            if missing:
                mean, std = self._posterior(video[missing].flatten(0, 1))
                for j, i in enumerate(missing):
                    sl = slice(j * F, (j + 1) * F)
                    self._latent_cache[names[i]] = (mean[sl].cpu(), std[sl].cpu())
            mean = torch.stack([self._latent_cache[n][0] for n in names]).to(video.device)
            std = torch.stack([self._latent_cache[n][1] for n in names]).to(video.device)
            mean, std = mean.flatten(0, 1), std.flatten(0, 1)
        else:
            mean, std = self._posterior(video.flatten(0, 1))
        z = mean + std * randn(mean.shape, generator, device=mean.device, dtype=mean.dtype)
        return (z * self.scaling_factor).unflatten(0, (B, F)).float()

    @torch.no_grad()
    def decode_video(self, latents: Tensor) -> Tensor:
        """Scaled latents [B, F, C, h, w] -> frames [B, F, 3, H, W] in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        B, F = latents.shape[:2]
        z = (latents / self.scaling_factor).flatten(0, 1).to(self.vae.dtype)
        # Chunks run along the flattened batch: a chunk of F frames is one whole clip.
        chunk_size = F if self.decode_chunk_size is None else self.decode_chunk_size
        frames = []
        for i in range(0, z.shape[0], chunk_size):
            chunk = z[i : i + chunk_size]
            frames.append(self.vae.decode(chunk, num_frames=chunk.shape[0]).sample)
        return torch.cat(frames).unflatten(0, (B, F)).float().clamp(-1, 1)

    def encode_condition(
        self,
        cond_frame: Tensor,
        fps: Tensor | None = None,
        motion_bucket_id: Tensor | None = None,
        noise_aug_strength: float = 0.0,
        generator: Generator = None,
        num_frames: int | None = None,
        **_,
    ) -> SVDCondition:
        """Condition for frames [B, 3, H, W] in [-1, 1]; clean unless ``noise_aug_strength`` > 0.

        ``num_frames`` (the clip length, which adapters that encode the condition as a video
        need) is accepted and unused: SVD's condition is one frame's latent; so is any other
        adapter's conditioning (``stride``, ``caption``).

        The latent is the VAE posterior *mode*, unscaled (SVD's convention for the condition).
        ``noise_aug_strength`` adds pixel noise of that std (drawn from ``generator``) to the frame
        before the VAE, not before the image encoder, and feeds it as the noise level, as
        diffusers' ``StableVideoDiffusionPipeline`` does at inference. Training passes 0 and noises
        the condition in ``training_condition``. With a ``generator`` the noise is drawn even at
        strength 0, as the pipeline does, so a seed's later draws do not depend on the strength.
        """
        B, device = cond_frame.shape[0], cond_frame.device
        frame = cond_frame
        if noise_aug_strength > 0 or generator is not None:
            eps = randn(cond_frame.shape, generator, device=device, dtype=cond_frame.dtype)
            frame = cond_frame + noise_aug_strength * eps
        if self.vae is None:
            latent = frame
        else:
            with torch.no_grad():
                latent = self._posterior(frame)[0].float()

        def _per_sample(v: Tensor | None, default: float) -> Tensor:
            v = torch.full((B,), default) if v is None else torch.as_tensor(v)
            return v.to(device=device, dtype=torch.float32).expand(B).clone()

        frozen = not any(p.requires_grad for p in self.image_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            embed = self.image_encoder(cond_frame).float()
        return SVDCondition(
            latent=latent,
            embed=embed,
            fps=_per_sample(fps, self.fps),
            motion_bucket_id=_per_sample(motion_bucket_id, self.motion_bucket_id),
            noise_level=torch.full((B,), float(noise_aug_strength), device=device),
            image=cond_frame,
        )

    def sampling_condition(
        self,
        cond_frame: Tensor,
        fps: Tensor | None = None,
        motion_bucket_id: Tensor | None = None,
        generator: Generator = None,
        num_frames: int | None = None,
        **_,
    ) -> SVDCondition:
        """The condition used for sampling: ``encode_condition`` with the adapter's inference
        noise augmentation (``noise_aug_strength``), its draw taken from ``generator`` before the
        sampler's, in the stock pipeline's order."""
        return self.encode_condition(
            cond_frame, fps, motion_bucket_id, self.noise_aug_strength, generator
        )

    def training_condition(
        self, cond: SVDCondition, t_norm: Tensor, cond_noise: CondNoise, generator: Generator = None
    ) -> SVDCondition:
        """Condition noise (TimeNoise or another law) and CFG dropout, as used in training.

        The level beta goes into the noise slot of ``added_time_ids``, as the reference SVD does.
        """
        if self.noise_space == "pixel" and self.vae is not None:
            image, beta = cond_noise.apply(cond.image, t_norm, generator=generator)
            with torch.no_grad():
                latent = self._posterior(image)[0].float()
        else:
            latent, beta = cond_noise.apply(cond.latent, t_norm, generator=generator)
        embed = cond.embed
        if self.noise_embed:
            embed, _ = cond_noise.apply(embed, t_norm, generator=generator)
        if self.cfg_dropout > 0:
            keep = _bernoulli_keep(
                latent.shape[0], 1.0 - self.cfg_dropout, generator, latent.device
            )
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
    return (rand((n,), generator, device=device) < p_keep).float()
