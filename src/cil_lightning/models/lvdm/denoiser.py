"""DynamiCrafter adapter: the lvdm UNet + Resampler as a denoiser on a VP schedule.

The adapter alone knows the parameterisation (DESIGN principle 5). Loss and samplers call

    x0_hat = denoiser(x_t, t, cond)        # x_t [B, F, C, h, w], t [B] integer VP steps

with x_t = alpha_t x0 + sigma_t eps (``VPSchedule``). The network predicts eps (DynamiCrafter 256)
or v = alpha eps - sigma x0 (512 / 1024), fixed by ``schedule.prediction``:

    eps: x0_hat = (x_t - sigma eps_hat) / alpha        v: x0_hat = alpha x_t - sigma v_hat

(with the 512/1024 models' dynamic rescale the data is s_t x0, ``schedule.py``; v then gives
x0_hat = (alpha x_t - sigma v_hat) / s_t with the unscaled alpha).

Conditioning as ``lvdm.models.ddpm3d.LatentVisualDiffusion`` (hybrid): the condition frame's scaled
latent repeated over frames and concatenated on channels; cross-attention context = 77 text tokens
then the Resampler's output for the CLIP image tokens (the text: each sample's caption through the
frozen open_clip text encoder, the empty prompt's context for an empty one); fps or frame stride
(``fs_kind``) added to the time embedding. Training as the reference (METHOD.md section 7):
condition noise on the concat latent after the repeat (independent per frame copy), CFG dropout
5 % text only, 5 % both, 5 % image only (the image branch sees a zero image's tokens; the concat
latent is kept, as the reference does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ...diffusion.cond_noise import CondNoise
from ...diffusion.rng import Generator, rand, randn
from ...diffusion.schedules import VPSchedule
from .resampler import Resampler
from .unet import LvdmUNet


@dataclass
class LvdmCondition:
    """What the lvdm UNet is conditioned on, besides x_t and t.

    Attributes:
        latent: scaled condition-frame latent [B, C, h, w].
        text: text context [B, 77, D] of each sample's caption (``null_text`` for an empty one).
        tokens: CLIP image tokens [B, N, E] (before the Resampler).
        null_text, null_tokens: the unconditional text context and a zero image's tokens, same
            shapes (the reference's ``uncond_type: empty_seq`` and zero-image embedding).
        fs: fps or frame stride [B] (long).
        concat: per-frame concat latent [B, F, C, h, w] once condition noise has been drawn;
            None repeats ``latent`` over the frames.
        image_noise: [B, Q, D] added to the Resampler's output (training with ``image_noise=
            "timenoise"``), or None.
        image_replace: [B, Q, D] used in place of the Resampler's output (``"replace"``), or None.
    """

    latent: Tensor
    text: Tensor
    tokens: Tensor
    null_text: Tensor
    null_tokens: Tensor
    fs: Tensor
    concat: Tensor | None = None
    image_noise: Tensor | None = None
    image_replace: Tensor | None = None

    def unconditional(self) -> LvdmCondition:
        """Guidance's null condition: empty text and zero-image tokens; the concat latent stays
        (DynamiCrafter's inference script keeps ``c_concat`` in the unconditional branch)."""
        return replace(self, text=self.null_text, tokens=self.null_tokens)

    def repeat(self, n: int) -> LvdmCondition:
        """Each sample repeated ``n`` times along the batch."""
        return LvdmCondition(
            *(None if v is None else v.repeat_interleave(n, dim=0) for v in vars(self).values())
        )


class LvdmNetwork(nn.Module):
    """The trained network: UNet and Resampler, named as the official checkpoint's prefixes
    (``diffusion_model`` <- ``model.diffusion_model``, ``image_proj_model``)."""

    def __init__(self, diffusion_model: LvdmUNet, image_proj_model: Resampler):
        super().__init__()
        self.diffusion_model, self.image_proj_model = diffusion_model, image_proj_model

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        text: Tensor,
        tokens: Tensor,
        fs: Tensor,
        image_noise: Tensor | None = None,
        image_replace: Tensor | None = None,
    ) -> Tensor:
        """x [B, C_in, F, h, w], t [B], text [B, 77, D], tokens [B, N, E], fs [B]
        -> [B, C, F, h, w]. ``image_noise`` is added to / ``image_replace`` replaces the
        Resampler's output [B, Q, D] (the reference's ``clip_type`` 1 / 2)."""
        if image_replace is not None:
            image = image_replace.to(x.dtype)
        else:
            image = self.image_proj_model(tokens.to(x.dtype))
            if image_noise is not None:
                image = image + image_noise.to(x.dtype)
        context = torch.cat([text.to(x.dtype), image], dim=1)
        return self.diffusion_model(x, t, context, fs=fs)


class LvdmDenoiser(nn.Module):
    """A DynamiCrafter-class model exposed as D(x_t; t, cond).

    Args:
        unet: the :class:`LvdmNetwork` (trained; the EMA and checkpoints follow this slot).
        vae: a diffusers ``AutoencoderKL`` (per-frame, as ``perframe_ae``); its
            ``config.scaling_factor`` scales latents (lvdm: 0.18215).
        image_encoder: condition frames [B, 3, H, W] in [-1, 1] -> tokens [B, N, E] (open_clip
            ViT-H-14 all 257 tokens for the real model; a small stand-in for the tiny one).
        null_text: [77, D] text context of the empty prompt; None: ``text_encoder([""])``.
        schedule: a ``VPSchedule`` with the model's prediction (eps or v).
        num_frames: frames per clip when ``encode_condition`` is not told (temporal length).
        fps: default ``fs`` when a batch has none (DynamiCrafter 256: stride 3; 512: fps 24;
            1024: fps 10); the tasks read it as ``denoiser.fps``.
        uncond_prob: the reference's ``uncond_prob`` p: text dropped for u < 2p, image for
            p <= u < 3p (u uniform per sample), so 5 % each of text only, both, image only.
        image_noise: what training does to the image context (the Resampler's output), as the
            TimeNoise reference's ``clip_type``: ``"none"``; ``"timenoise"`` (1: the condition
            noise law with its own draw of beta); ``"replace"`` (2: pure N(0, I) in place of it
            in a fraction ``replace_prob`` of batches, one draw per batch; the 512 reference).
        replace_prob: that fraction (reference: 0.95).
        text_encoder: captions (B strings) -> [B, 77, D], e.g. ``OpenCLIPTextContext``; frozen,
            as the reference's ``cond_stage_trainable: false``. None: every sample gets
            ``null_text`` (captions ignored).
        fs_kind: the batch field fed as ``fs``: ``"fps"`` (DynamiCrafter 512 / 1024) or
            ``"stride"`` (the frame stride: DynamiCrafter 256).
    """

    #: no motion bucket in lvdm; the sample and diagnose tasks read the attribute
    motion_bucket_id = 0.0
    #: the condition latent repeated and concatenated on channels (VideoCrafter1: False, image
    #: through cross-attention only; ``videocrafter.py``)
    concat_condition = True

    def __init__(
        self,
        unet: LvdmNetwork,
        vae: nn.Module,
        image_encoder: nn.Module,
        null_text: Tensor,
        schedule: VPSchedule,
        num_frames: int = 16,
        fps: float = 24,
        uncond_prob: float = 0.05,
        image_noise: str = "none",
        replace_prob: float = 0.95,
        freeze_vae: bool = True,
        freeze_image_encoder: bool = True,
        text_encoder: nn.Module | None = None,
        fs_kind: str = "fps",
    ) -> None:
        super().__init__()
        if not isinstance(schedule, VPSchedule):
            raise TypeError(f"lvdm models use a VPSchedule, got {type(schedule).__name__}")
        if schedule.prediction == "eps" and schedule.rescale_zero_terminal_snr:
            raise ValueError("eps prediction cannot reach x0 at zero terminal SNR (alpha = 0)")
        if not 0.0 <= uncond_prob <= 1.0 / 3.0:
            raise ValueError(f"uncond_prob must be in [0, 1/3], got {uncond_prob}")
        if fs_kind not in ("fps", "stride"):
            raise ValueError(f"fs_kind must be fps or stride, got {fs_kind!r}")
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.text_encoder, self.fs_kind = text_encoder, fs_kind
        if text_encoder is not None:
            text_encoder.requires_grad_(False).eval()
        if null_text is None:
            with torch.no_grad():
                null_text = text_encoder([""])[0].float()
        self.register_buffer("null_text", null_text.detach().clone(), persistent=False)
        self.schedule = schedule
        self.num_frames, self.fps = int(num_frames), float(fps)
        if image_noise not in ("none", "timenoise", "replace"):
            raise ValueError(f"image_noise must be none, timenoise or replace, got {image_noise!r}")
        if not 0.0 <= replace_prob <= 1.0:
            raise ValueError(f"replace_prob must be in [0, 1], got {replace_prob}")
        self.uncond_prob, self.image_noise = float(uncond_prob), image_noise
        self.replace_prob = float(replace_prob)
        if freeze_vae:
            vae.requires_grad_(False).eval()
        if freeze_image_encoder:
            image_encoder.requires_grad_(False).eval()

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser owns (frozen VAE and encoders excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in (self.vae, self.image_encoder, self.text_encoder):  # frozen: eval mode
            if module is not None and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    @torch.no_grad()
    def encode_video(
        self, video: Tensor, names: list[str] | None = None, generator: Generator = None
    ) -> Tensor:
        """Frames [B, F, 3, H, W] in [-1, 1] -> scaled latents [B, F, C, h, w] (posterior draw)."""
        B, F = video.shape[:2]
        dist = self.vae.encode(video.flatten(0, 1).to(self.vae.dtype)).latent_dist
        z = dist.mean + dist.std * randn(
            dist.mean.shape, generator, device=dist.mean.device, dtype=dist.mean.dtype
        )
        return (z * self.scaling_factor).unflatten(0, (B, F)).float()

    @torch.no_grad()
    def decode_video(self, latents: Tensor) -> Tensor:
        """Scaled latents [B, F, C, h, w] -> frames [B, F, 3, H, W] in [-1, 1], frame by frame."""
        z = (latents / self.scaling_factor).flatten(0, 1).to(self.vae.dtype)
        frames = self.vae.decode(z).sample
        return frames.unflatten(0, latents.shape[:2]).float().clamp(-1, 1)

    def encode_condition(
        self,
        cond_frame: Tensor,
        fps: Tensor | None = None,
        generator: Generator = None,
        num_frames: int | None = None,
        stride: Tensor | None = None,
        caption: list[str] | None = None,
        **_,
    ) -> LvdmCondition:
        """Clean condition for frames [B, 3, H, W] in [-1, 1]. ``fps`` / ``stride`` [B]: the
        clips' fps and frame stride; ``fs`` is the one ``fs_kind`` names (None: the default
        ``self.fps``). ``caption``: B strings (None: all empty). ``num_frames`` is accepted for
        the shared adapter interface and unused (lvdm has no temporal compression)."""
        B, device = cond_frame.shape[0], cond_frame.device
        with torch.no_grad():
            dist = self.vae.encode(cond_frame.to(self.vae.dtype)).latent_dist
            # the reference conditions on a posterior sample of the clip's own frame; the mode
            # here keeps the clean condition deterministic
            latent = (dist.mode() * self.scaling_factor).float()
        frozen = not any(p.requires_grad for p in self.image_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            both = self.image_encoder(torch.cat([cond_frame, torch.zeros_like(cond_frame)]))
        tokens, null_tokens = both.float().chunk(2)
        fs = stride if self.fs_kind == "stride" else fps
        fs = torch.full((B,), self.fps) if fs is None else torch.as_tensor(fs)
        null_text = self.null_text[None].expand(B, -1, -1).to(device)
        return LvdmCondition(
            latent=latent,
            text=self.text_context(caption, null_text),
            tokens=tokens,
            null_text=null_text,
            null_tokens=null_tokens,
            # the reference feeds its batch's 'frame_stride' (fps_condition_type 'fs', the 256
            # model) or 'fps' = source fps // stride, unclipped (fps_max unset in
            # configs/training_*_v1.0/config.yaml), as .long(): lvdm/models/ddpm3d.py
            # get_batch_input, lvdm/data/webvid.py. So the floor, not the nearest integer.
            fs=fs.double().floor().long().to(device).expand(B).clone(),
        )

    def text_context(self, caption: list[str] | None, null_text: Tensor) -> Tensor:
        """Captions (B strings or None) -> [B, 77, D]: the frozen text encoder's context, the
        empty prompt's ``null_text`` [B, 77, D] for empty ones (what the encoder gives for "").
        Each distinct caption is encoded once (sampling and validation repeat one per seed)."""
        if caption is None or self.text_encoder is None:
            return null_text
        if len(caption) != null_text.shape[0]:
            raise ValueError(f"{len(caption)} captions for {null_text.shape[0]} condition frames")
        distinct = list(dict.fromkeys(c for c in caption if c))
        if not distinct:
            return null_text
        with torch.no_grad():
            encoded = self.text_encoder(distinct).float().to(null_text.device)
        index = {c: i for i, c in enumerate(distinct)}
        rows = [i for i, c in enumerate(caption) if c]
        text = null_text.clone()
        text[rows] = encoded[[index[caption[i]] for i in rows]]
        return text

    def sampling_condition(
        self,
        cond_frame: Tensor,
        fps: Tensor | None = None,
        generator: Generator = None,
        num_frames: int | None = None,
        **conditioning,
    ) -> LvdmCondition:
        """The sampling condition: clean (DynamiCrafter adds no inference noise augmentation);
        ``conditioning``: ``stride``, ``caption`` as ``encode_condition``."""
        return self.encode_condition(cond_frame, fps, **conditioning)

    def training_condition(
        self,
        cond: LvdmCondition,
        t_norm: Tensor,
        cond_noise: CondNoise,
        generator: Generator = None,
    ) -> LvdmCondition:
        """Condition noise on the repeated concat latent (one draw per frame copy), optionally on
        the CLIP tokens, then the reference's CFG dropout."""
        concat = None
        if self.concat_condition:
            repeated = cond.latent[:, None].expand(-1, self.num_frames, -1, -1, -1)
            concat, _ = cond_noise.apply(repeated, t_norm, generator=generator)
        tokens, image_noise, image_replace = cond.tokens, None, None
        device = cond.latent.device
        if self.image_noise != "none":
            proj = self.unet.image_proj_model
            shape = (cond.latent.shape[0], proj.latents.shape[1], proj.norm_out.normalized_shape[0])
            zeros = torch.zeros(shape, device=device)
            if self.image_noise == "timenoise":
                image_noise, _ = cond_noise.apply(zeros, t_norm, generator=generator)
            elif float(rand((1,), _first(generator), device=device)) < self.replace_prob:
                image_replace = randn(shape, generator, device=device)
        text = cond.text
        if self.uncond_prob > 0:
            p, B = self.uncond_prob, cond.latent.shape[0]
            u = rand((B,), generator, device=device)
            drop_text = (u < 2 * p).view(-1, 1, 1)
            drop_image = ((u >= p) & (u < 3 * p)).view(-1, 1, 1)
            text = torch.where(drop_text, cond.null_text, text)
            tokens = torch.where(drop_image, cond.null_tokens, tokens)
        return replace(
            cond,
            concat=concat,
            text=text,
            tokens=tokens,
            image_noise=image_noise,
            image_replace=image_replace,
        )

    def forward(self, x: Tensor, t: Tensor, cond: LvdmCondition) -> Tensor:
        """x0 prediction [B, F, C, h, w] for x_t [B, F, C, h, w] at integer VP steps t [B]."""
        F = x.shape[1]
        concat = cond.concat
        if concat is None:
            concat = cond.latent[:, None].expand(-1, F, -1, -1, -1)
        elif concat.shape[1] != F:
            raise ValueError(
                f"the condition was noised for {concat.shape[1]} frames (num_frames), x has {F}"
            )
        channels = [x, concat.to(x.dtype)] if self.concat_condition else [x]
        inp = torch.cat(channels, dim=2).transpose(1, 2)  # [B, C_in, F, h, w]
        image = (cond.image_noise, cond.image_replace)
        out = self.unet(inp, t.to(x.dtype), cond.text, cond.tokens, cond.fs, *image).transpose(1, 2)
        alpha, sigma = self.schedule.alpha_sigma(t.to(x.dtype))
        alpha, sigma = alpha.view(-1, 1, 1, 1, 1), sigma.view(-1, 1, 1, 1, 1)
        if self.schedule.prediction == "eps":
            return (x - sigma * out) / alpha
        # v of the (dynamically rescaled) data s x0: alpha here is alpha_t s_t (schedule.py)
        s = self._data_scale(t).to(x.dtype).view(-1, 1, 1, 1, 1)
        return ((alpha / s) * x - sigma * out) / s

    def _data_scale(self, t: Tensor) -> Tensor:
        """s_t of a ``DynamicRescaleVPSchedule`` (ones for a plain VP schedule). [B]."""
        data_scale = getattr(self.schedule, "data_scale", None)
        return torch.ones_like(t, dtype=torch.float32) if data_scale is None else data_scale(t)


def _first(generator: Generator) -> Generator:
    """The generator of a per-batch draw: the first of per-sample generators."""
    return generator[0] if isinstance(generator, (list, tuple)) else generator
