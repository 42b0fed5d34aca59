"""I2VGen-XL adapter: diffusers' ``I2VGenXLUNet`` as a VP denoiser (Zhang et al. 2023).

The one VP-family image-to-video model diffusers ships, and where our VP path (DDIM from M, VP
Analytic-Init, TimeNoise at t / T) meets a stock pipeline. Loss and samplers call it as

    x0_hat = denoiser(x_t, t, cond)        # x_t [B, F, C, h, w], t [B] integer steps

The schedule (betas, zero terminal SNR, prediction type) is read from the weights' scheduler
configuration (``vp_schedule_from_config``). Conditioning as ``I2VGenXLPipeline``: the first
frame's VAE latent followed by F - 1 frame-position masks ((i + 1) / (F - 1)) as ``image_latents``,
the CLIP image embedding, the text context and the target fps. Classifier-free guidance is the
pipeline's: the negative prompt and a zero image embedding, the same image latents. TimeNoise
noises the first-frame latent (never the position masks), and with ``noise_embed`` the image
embedding with its own draw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ...diffusion.cond_noise import CondNoise
from ...diffusion.rng import Generator, randn
from ...diffusion.schedules import VPSchedule
from ..prompt_embeds import register_prompts
from ..svd.denoiser import _bernoulli_keep


@dataclass
class I2VGenXLCondition:
    """Everything the UNet is conditioned on, besides x_t and t.

    Attributes:
        latent: the condition frame's scaled VAE latent [B, C, h, w].
        embed: CLIP image embedding [B, 1, D].
        text: text context [B, L, D]; negative_text: the unconditional one [B, L, D].
        fps: the target frame rate [B].
        noise_level: condition-noise level beta [B].
        image: the condition frame [B, 3, H, W] in [-1, 1].
    """

    latent: Tensor
    embed: Tensor
    text: Tensor
    negative_text: Tensor
    fps: Tensor
    noise_level: Tensor
    image: Tensor | None = None

    def unconditional(self) -> I2VGenXLCondition:
        """The pipeline's null condition: negative prompt, zero image embedding, same latents."""
        return replace(self, text=self.negative_text, embed=torch.zeros_like(self.embed))

    def repeat(self, n: int) -> I2VGenXLCondition:
        """Each sample repeated ``n`` times along the batch (several seeds per condition)."""
        return I2VGenXLCondition(
            *(None if v is None else v.repeat_interleave(n, dim=0) for v in vars(self).values())
        )


def vp_schedule_from_config(config: dict) -> VPSchedule:
    """A ``VPSchedule`` from a diffusers DDIM/DDPM scheduler configuration (the weights'
    ``scheduler/scheduler_config.json``). Raises ``ValueError`` naming an unsupported field."""
    beta_schedule = config.get("beta_schedule", "linear")
    if beta_schedule not in ("linear", "scaled_linear"):
        raise ValueError(
            f"scheduler beta_schedule={beta_schedule!r} is not supported (linear, scaled_linear)"
        )
    prediction = {"epsilon": "eps", "v_prediction": "v"}.get(config.get("prediction_type"))
    if prediction is None:
        raise ValueError(
            f"scheduler prediction_type={config.get('prediction_type')!r} is not supported "
            "(epsilon, v_prediction)"
        )
    return VPSchedule(
        T=int(config.get("num_train_timesteps", 1000)),
        beta_schedule=beta_schedule,
        beta_start=float(config.get("beta_start", 0.0001)),
        beta_end=float(config.get("beta_end", 0.02)),
        rescale_zero_terminal_snr=bool(config.get("rescale_betas_zero_snr", False)),
        prediction=prediction,
        set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
    )


class I2VGenXLDenoiser(nn.Module):
    """An ``I2VGenXLUNet`` with its VAE and CLIP image encoder, exposed as D(x; t, cond).

    Args:
        unet: an ``I2VGenXLUNet`` (the trained network).
        vae: an ``AutoencoderKL`` (frozen; frames are encoded one by one).
        image_encoder: maps frames [B, 3, H, W] in [-1, 1] to [B, 1, D] (``CLIPImageEmbedder``).
        schedule: the VP schedule of the weights (``vp_schedule_from_config``).
        prompt_embeds, negative_prompt_embeds: text contexts [L, D] (precomputed: training never
            holds the text encoder); the negative one defaults to zeros.
        fps: target fps fed when a batch brings none (the pipeline's default 16).
        cfg_dropout: probability that a training sample gets the null condition (negative prompt
            and zero image embedding together, as the pipeline guides).
        noise_embed: also noise the image embedding, with its own draw.
        gradient_checkpointing: recompute UNet activations in the backward pass.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        image_encoder: nn.Module,
        schedule: VPSchedule,
        prompt_embeds: Tensor,
        negative_prompt_embeds: Tensor | None = None,
        fps: float = 16.0,
        cfg_dropout: float = 0.1,
        noise_embed: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"model.cfg_dropout must be in [0, 1), got {cfg_dropout}")
        if schedule.family != "vp":
            raise ValueError(f"I2VGen-XL is a VP model; its schedule is {schedule.family!r}")
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.schedule = schedule
        self.fps, self.cfg_dropout = float(fps), float(cfg_dropout)
        self.noise_embed = bool(noise_embed)
        register_prompts(self, prompt_embeds, negative_prompt_embeds)
        vae.requires_grad_(False).eval()
        image_encoder.requires_grad_(False).eval()
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.unet.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen encoders stay in eval mode whatever Lightning asks
        self.image_encoder.eval()
        return self

    def _posterior(self, frames: Tensor):
        return self.vae.encode(frames.to(self.vae.dtype)).latent_dist

    @torch.no_grad()
    def encode_video(
        self, video: Tensor, names: list[str] | None = None, generator: Generator = None
    ) -> Tensor:
        """Frames [B, F, 3, H, W] in [-1, 1] -> scaled latents [B, F, C, h, w] (a posterior
        sample drawn from ``generator``, times the VAE scaling factor)."""
        dist = self._posterior(video.flatten(0, 1))
        z = dist.mean + dist.std * randn(
            dist.mean.shape, generator, device=dist.mean.device, dtype=dist.mean.dtype
        )
        return (z * self.scaling_factor).unflatten(0, video.shape[:2]).float()

    @torch.no_grad()
    def decode_video(self, latents: Tensor) -> Tensor:
        """Scaled latents [B, F, C, h, w] -> frames [B, F, 3, H, W] in [-1, 1]."""
        z = (latents / self.scaling_factor).flatten(0, 1).to(self.vae.dtype)
        return self.vae.decode(z).sample.unflatten(0, latents.shape[:2]).float().clamp(-1, 1)

    @torch.no_grad()
    def encode_condition(
        self,
        cond_frame: Tensor,
        fps: Tensor | None = None,
        text: Tensor | None = None,
        num_frames: int | None = None,
        **unused,
    ) -> I2VGenXLCondition:
        """The clean condition of frames [B, 3, H, W] in [-1, 1]: the VAE posterior mode (the
        pipeline draws a posterior sample from the global RNG; the mode makes it a function of
        the image), the CLIP embedding, the prompt (``text`` [B, L, D] overrides the adapter's)
        and fps. Other models' micro-conditioning (motion bucket) is accepted and unused."""
        B, device = cond_frame.shape[0], cond_frame.device
        latent = self._posterior(cond_frame).mode().float() * self.scaling_factor
        fps = torch.full((B,), self.fps) if fps is None else torch.as_tensor(fps)
        text = self.prompt_embeds.expand(B, -1, -1) if text is None else text
        return I2VGenXLCondition(
            latent=latent,
            embed=self.image_encoder(cond_frame).float(),
            text=text.to(device).float(),
            negative_text=self.negative_prompt_embeds.expand(B, -1, -1).to(device),
            fps=fps.to(device=device, dtype=torch.float32).expand(B).clone(),
            noise_level=torch.zeros(B, device=device),
            image=cond_frame,
        )

    def sampling_condition(
        self, cond_frame: Tensor, generator: Generator = None, **conditioning
    ) -> I2VGenXLCondition:
        """The condition used for sampling: the clean one (``generator`` is not drawn from)."""
        return self.encode_condition(cond_frame, **conditioning)

    def training_condition(
        self,
        cond: I2VGenXLCondition,
        t_norm: Tensor,
        cond_noise: CondNoise,
        generator: Generator = None,
    ) -> I2VGenXLCondition:
        """Condition noise on the first-frame latent (and the embedding with ``noise_embed``) at
        each sample's normalised time t / T, then CFG dropout of text and embedding together."""
        latent, beta = cond_noise.apply(cond.latent, t_norm, generator=generator)
        embed = cond.embed
        if self.noise_embed:
            embed, _ = cond_noise.apply(embed, t_norm, generator=generator)
        text = cond.text
        if self.cfg_dropout > 0:
            keep = _bernoulli_keep(latent.shape[0], 1 - self.cfg_dropout, generator, latent.device)
            keep = keep.view(-1, 1, 1)
            embed = embed * keep.to(embed.dtype)
            text = keep * text + (1 - keep) * cond.negative_text
        return replace(cond, latent=latent, embed=embed, text=text, noise_level=beta)

    def image_latents(self, cond: I2VGenXLCondition, num_frames: int) -> Tensor:
        """The UNet's ``image_latents`` [B, C, F, h, w]: the condition latent, then the
        frame-position masks (i + 1) / (F - 1) for i = 0 .. F - 2."""
        first = cond.latent[:, :, None]
        positions = torch.arange(1, num_frames, device=first.device, dtype=first.dtype)
        masks = torch.ones_like(first).expand(-1, -1, num_frames - 1, -1, -1) * (
            positions / max(num_frames - 1, 1)
        ).view(1, 1, -1, 1, 1)
        return torch.cat([first, masks], dim=2)

    def forward(self, x: Tensor, t: Tensor, cond: I2VGenXLCondition) -> Tensor:
        """x0 prediction [B, F, C, h, w] for noisy latents x [B, F, C, h, w] at steps t [B]."""
        dtype = next(self.unet.parameters()).dtype
        out = self.unet(
            x.transpose(1, 2).to(dtype),
            t,
            fps=cond.fps.to(dtype),
            image_latents=self.image_latents(cond, x.shape[1]).to(dtype),
            image_embeddings=cond.embed.to(dtype),
            encoder_hidden_states=cond.text.to(dtype),
            return_dict=False,
        )[0]
        out = out.transpose(1, 2).to(x.dtype)
        alpha, sigma = self.schedule.alpha_sigma(t)
        alpha = alpha.to(x.dtype).view(-1, 1, 1, 1, 1)
        sigma = sigma.to(x.dtype).view(-1, 1, 1, 1, 1)
        if self.schedule.prediction == "v":
            return alpha * x - sigma * out
        return (x - sigma * out) / alpha
