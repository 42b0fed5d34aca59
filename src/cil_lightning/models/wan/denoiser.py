"""Wan image-to-video adapter: diffusers' ``WanTransformer3DModel`` as a flow-matching denoiser.

The adapter is the only place that knows Wan's parameterisation (METHOD.md section 8). Loss and
samplers call it as

    x0_hat = denoiser(x_t, t, cond)        # x_t [B, f, C, h, w] (our layout), t [B] flow time

Wan is a rectified flow x_t = (1 - t) x0 + t eps whose transformer predicts the velocity
v = eps - x0 at timestep 1000 t, so x0_hat = x_t - t v. Latents are the Wan VAE's, normalised by
its per-channel ``latents_mean`` / ``latents_std`` as diffusers' ``WanImageToVideoPipeline`` does;
the VAE compresses time by 4 (f = (F - 1) / 4 + 1 latent frames for F frames).

Two conditioning styles:

- ``"concat"`` (Wan 2.1 I2V, Wan 2.2-A14B): the transformer's input is [x_t, mask, y] on channels,
  y the latent of [image, zeros ...] (F frames) and mask 4 channels that mark the first frame;
  Wan 2.1 adds the CLIP tokens of the image (``hidden_states[-2]``, 257 tokens) to the context.
  TimeNoise noises y only, never the mask.
- ``"replace"`` (Wan 2.2 TI2V-5B, ``expand_timesteps``): the first latent frame of x_t is replaced
  by the image latent and its tokens get timestep 0. TimeNoise here is bounded: the replaced frame
  is (1 - s) c + s eps at token timestep s (s = beta / (1 + beta), the flow time of the noise
  level beta), so the model is told how noisy the condition is, as SVD is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ...diffusion.cond_noise import CondNoise
from ...diffusion.rng import Generator, randn
from ...diffusion.schedules import FlowSchedule
from ..prompt_embeds import register_prompts
from ..svd.denoiser import _bernoulli_keep

STYLES = ("concat", "replace")


@dataclass
class WanCondition:
    """Everything the transformer is conditioned on, besides x_t and t.

    Attributes:
        latent: the image's latent [B, C, h, w] (normalised), the first latent frame.
        video_latent: ``"concat"``: the latent of [image, zeros ...] [B, f, C, h, w]; else None.
        text: prompt embeddings [B, L, D] (the T5 context; precomputed, never encoded here).
        negative_text: the unconditional context [B, L, D] of classifier-free guidance.
        image_embeds: CLIP image tokens [B, 257, D_clip] (Wan 2.1) or None.
        noise_level: the condition-noise level beta [B] (0 when clean).
        image: the condition frame [B, 3, H, W] in [-1, 1].
    """

    latent: Tensor
    video_latent: Tensor | None
    text: Tensor
    negative_text: Tensor
    image_embeds: Tensor | None
    noise_level: Tensor
    image: Tensor | None = None

    def unconditional(self) -> WanCondition:
        """The null condition of classifier-free guidance: the negative prompt, the same image
        (as ``WanImageToVideoPipeline`` guides on text only)."""
        return replace(self, text=self.negative_text)

    def repeat(self, n: int) -> WanCondition:
        """Each sample repeated ``n`` times along the batch (several seeds per condition)."""
        return WanCondition(
            *(None if v is None else v.repeat_interleave(n, dim=0) for v in vars(self).values())
        )


class WanDenoiser(nn.Module):
    """A Wan transformer with its VAE (and CLIP image encoder), exposed as D(x; t, cond).

    Args:
        unet: a ``WanTransformer3DModel`` (the trained network; the slot name is every adapter's).
            ``"concat"`` needs ``in_channels = 2 * C + 4``, ``"replace"`` ``in_channels = C``.
        vae: an ``AutoencoderKLWan`` (frozen).
        schedule: the flow schedule (its ``shift`` is the model's ``flow_shift``).
        prompt_embeds: the text context [L, D] every sample gets unless a batch brings its own
            (precomputed T5 embeddings; training never loads the text encoder).
        negative_prompt_embeds: the unconditional context [L, D] (default: zeros).
        image_encoder: ``CLIPImageTokens`` for Wan 2.1, else None.
        style: ``"concat"`` or ``"replace"`` (see the module docstring).
        fps: the frame rate of the model's videos (Wan: 16); written with samples, not fed.
        cfg_dropout: probability that a training sample's text context is replaced by the
            negative one (classifier-free guidance on text, as the pipeline guides).
        noise_clip: also noise the CLIP image tokens, with their own draw.
        num_train_timesteps: the transformer's timestep scale (diffusers: 1000).
        gradient_checkpointing: recompute transformer activations in the backward pass.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        schedule: FlowSchedule,
        prompt_embeds: Tensor,
        negative_prompt_embeds: Tensor | None = None,
        image_encoder: nn.Module | None = None,
        style: str = "concat",
        fps: float = 16.0,
        cfg_dropout: float = 0.1,
        noise_clip: bool = False,
        num_train_timesteps: int = 1000,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"model.style must be one of {STYLES}, got {style!r}")
        if not 0.0 <= cfg_dropout < 1.0:
            raise ValueError(f"model.cfg_dropout must be in [0, 1), got {cfg_dropout}")
        if schedule.family != "flow":
            raise ValueError(f"Wan is a flow model; model.schedule is {schedule.family!r}")
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.schedule, self.style = schedule, style
        self.fps, self.cfg_dropout = float(fps), float(cfg_dropout)
        self.noise_clip = bool(noise_clip)
        self.num_train_timesteps = int(num_train_timesteps)
        register_prompts(self, prompt_embeds, negative_prompt_embeds)
        z = int(vae.config.z_dim)
        self.register_buffer(
            "latents_mean", torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1), False
        )
        self.register_buffer(
            "latents_std", torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1), False
        )
        self.temporal_factor = 2 ** sum(bool(d) for d in vae.config.temperal_downsample)
        expected = 2 * z + 4 if style == "concat" else z
        if int(unet.config.in_channels) != expected:
            raise ValueError(
                f"style {style!r} needs a transformer with in_channels = {expected} "
                f"(latent channels {z}), got {unet.config.in_channels}"
            )
        vae.requires_grad_(False).eval()
        if image_encoder is not None:
            image_encoder.requires_grad_(False).eval()
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()

    # ---------------------------------------------------------------------------------------------
    # Shapes and the VAE

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The transformer's parameters (the VAE and the image encoder are frozen)."""
        return [p for p in self.unet.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen encoders stay in eval mode whatever Lightning asks
        if self.image_encoder is not None:
            self.image_encoder.eval()
        return self

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames f of a clip of F frames: (F - 1) / 4 + 1 (F must be 4k + 1)."""
        if (num_frames - 1) % self.temporal_factor:
            raise ValueError(
                f"Wan clips have {self.temporal_factor} k + 1 frames (e.g. 17, 33, 81), got "
                f"{num_frames}"
            )
        return (num_frames - 1) // self.temporal_factor + 1

    def latent_shape(self, cond: WanCondition, num_frames: int) -> tuple[int, ...]:
        """Shape [B, f, C, h, w] of the latents of ``num_frames`` frames of this condition."""
        return (cond.latent.shape[0], self.latent_frames(num_frames), *cond.latent.shape[1:])

    def _normalise(self, z: Tensor) -> Tensor:
        """VAE latents [B, C, f, h, w] -> normalised latents in our layout [B, f, C, h, w]."""
        z = (z.float() - self.latents_mean) / self.latents_std
        return z.transpose(1, 2)

    def _vae_encode(
        self, video: Tensor, sample: bool = False, generator: Generator = None
    ) -> Tensor:
        """Frames [B, F, 3, H, W] in [-1, 1] -> normalised latents [B, f, C, h, w]: the posterior
        mode (the pipeline's condition), or a posterior sample drawn from ``generator``."""
        self.latent_frames(video.shape[1])
        dist = self.vae.encode(video.transpose(1, 2).to(self.vae.dtype)).latent_dist
        z = dist.mode()
        if sample:
            z = z + dist.std * randn(z.shape, generator, device=z.device, dtype=z.dtype)
        return self._normalise(z)

    @torch.no_grad()
    def encode_video(
        self, video: Tensor, names: list[str] | None = None, generator: Generator = None
    ) -> Tensor:
        """Frames [B, F, 3, H, W] in [-1, 1] -> normalised latents [B, f, C, h, w] (a posterior
        sample drawn from ``generator``)."""
        return self._vae_encode(video, sample=True, generator=generator)

    @torch.no_grad()
    def decode_video(self, latents: Tensor) -> Tensor:
        """Normalised latents [B, f, C, h, w] -> frames [B, F, 3, H, W] in [-1, 1]."""
        z = latents.transpose(1, 2).float() * self.latents_std + self.latents_mean
        video = self.vae.decode(z.to(self.vae.dtype)).sample
        return video.transpose(1, 2).float().clamp(-1, 1)

    # ---------------------------------------------------------------------------------------------
    # Conditions

    @torch.no_grad()
    def encode_condition(
        self,
        cond_frame: Tensor,
        num_frames: int,
        fps: Tensor | None = None,
        text: Tensor | None = None,
        **unused,
    ) -> WanCondition:
        """The clean condition of frames [B, 3, H, W] in [-1, 1] for clips of ``num_frames``.

        ``fps`` and other micro-conditioning of other models are accepted and unused: Wan is not
        conditioned on them. ``text`` [B, L, D] overrides the adapter's prompt embeddings.
        """
        B, device = cond_frame.shape[0], cond_frame.device
        if self.style == "concat":
            frames = torch.zeros(
                B, num_frames, *cond_frame.shape[1:], device=device, dtype=cond_frame.dtype
            )
            frames[:, 0] = cond_frame
            video_latent = self._vae_encode(frames)
            latent = video_latent[:, 0]
        else:
            video_latent = None
            latent = self._vae_encode(cond_frame[:, None])[:, 0]
        if text is None:
            text = self.prompt_embeds.expand(B, -1, -1)
        image_embeds = None
        if self.image_encoder is not None:
            image_embeds = self.image_encoder(cond_frame).float()
        return WanCondition(
            latent=latent,
            video_latent=video_latent,
            text=text.to(device).float(),
            negative_text=self.negative_prompt_embeds.expand(B, -1, -1).to(device),
            image_embeds=image_embeds,
            noise_level=torch.zeros(B, device=device),
            image=cond_frame,
        )

    def sampling_condition(
        self, cond_frame: Tensor, num_frames: int, generator: Generator = None, **conditioning
    ) -> WanCondition:
        """The condition used for sampling: the clean one (Wan's pipeline adds no noise to it;
        ``generator`` is not drawn from)."""
        return self.encode_condition(cond_frame, num_frames, **conditioning)

    def training_condition(
        self, cond: WanCondition, t_norm: Tensor, cond_noise: CondNoise, generator: Generator = None
    ) -> WanCondition:
        """Condition noise at each sample's normalised time, then CFG dropout of the text.

        Draws, in order: the condition noise of the image latent (``"concat"``: all of y's
        frames, never the mask; ``"replace"``: the replaced frame), the CLIP tokens' with
        ``noise_clip``, the dropout mask.
        """
        source = cond.video_latent if self.style == "concat" else cond.latent
        noisy, beta = cond_noise.apply(source, t_norm, generator=generator)
        if self.style == "concat":
            cond = replace(cond, video_latent=noisy, latent=noisy[:, 0], noise_level=beta)
        else:
            # Bounded form: c + beta eps rescaled to the flow point (1 - s) c + s eps, s the flow
            # time of beta (x0 + beta eps = x_s / (1 - s) with s = beta / (1 + beta)).
            s = (beta / (1.0 + beta)).view(-1, 1, 1, 1).to(noisy.dtype)
            cond = replace(cond, latent=(1.0 - s) * noisy, noise_level=beta)
        if self.noise_clip and cond.image_embeds is not None:
            cond = replace(
                cond, image_embeds=cond_noise.apply(cond.image_embeds, t_norm, generator)[0]
            )
        if self.cfg_dropout > 0:
            keep = _bernoulli_keep(
                cond.text.shape[0], 1 - self.cfg_dropout, generator, cond.text.device
            )
            keep = keep.view(-1, 1, 1).to(cond.text.dtype)
            cond = replace(cond, text=keep * cond.text + (1 - keep) * cond.negative_text)
        return cond

    # ---------------------------------------------------------------------------------------------
    # The network

    def forward(self, x: Tensor, t: Tensor, cond: WanCondition) -> Tensor:
        """x0 prediction [B, f, C, h, w] for noisy latents x [B, f, C, h, w] at flow times t [B]."""
        dtype = next(self.unet.parameters()).dtype
        B, f = x.shape[:2]
        timestep = t.to(x.dtype).expand(B) * self.num_train_timesteps
        if self.style == "concat":
            mask = torch.zeros(B, 4, f, *x.shape[-2:], device=x.device, dtype=x.dtype)
            mask[:, :, 0] = 1.0
            inp = torch.cat([x.transpose(1, 2), mask, cond.video_latent.transpose(1, 2)], dim=1)
        else:
            x = x.clone()
            x[:, 0] = cond.latent.to(x.dtype)
            inp = x.transpose(1, 2)
            # Per-token timesteps: the condition frame's tokens at its noise level's flow time.
            p_t, p_h, p_w = self.unet.config.patch_size
            tokens = torch.ones(
                B, f // p_t, x.shape[-2] // p_h, x.shape[-1] // p_w, device=x.device
            )
            s = cond.noise_level.to(x.device) / (1.0 + cond.noise_level.to(x.device))
            per_token = tokens * timestep.view(-1, 1, 1, 1)
            per_token[:, 0] = (s * self.num_train_timesteps).view(-1, 1, 1)
            timestep = per_token.flatten(1)
        v = self.unet(
            inp.to(dtype),
            timestep=timestep,
            encoder_hidden_states=cond.text.to(dtype),
            encoder_hidden_states_image=(
                None if cond.image_embeds is None else cond.image_embeds.to(dtype)
            ),
            return_dict=False,
        )[0]
        x0 = x - t.to(x.dtype).view(-1, 1, 1, 1, 1) * v.transpose(1, 2).to(x.dtype)
        if self.style == "replace":
            x0[:, 0] = cond.latent.to(x.dtype)
        return x0
