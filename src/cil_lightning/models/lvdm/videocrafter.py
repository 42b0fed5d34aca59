"""VideoCrafter1-I2V (512): the lvdm UNet with the image through cross-attention only.

Facts from the TimeNoise reference's copy (``thu-ml/cond-image-leakage``, ``examples/VideoCrafter``:
``configs/inference_i2v_512_v1.0.yaml``, ``configs/train.yaml``,
``lvdm/models/ddpm3d_videocrafter_ve.py``, ``scripts/evaluation``); no code copied. Against
DynamiCrafter 512 (``denoiser.py``, ``pretrained.py``):

- UNet ``in_channels`` 4: x_t alone, no concat latent; ``fps_cond`` with default fps 16.
- Resampler with 16 queries and no per-frame ``video_length``: context = 77 text tokens + 16 image
  tokens, shared by all frames (the UNet repeats it over the frames).
- eps-prediction, no zero-terminal-SNR rescale (eps could not reach x0 there), the same
  ``scale_arr`` dynamic rescale (``use_scale``, ``scale_b`` 0.7, 400 ramp steps, 1400 entries of
  which steps 0..999 are read): ``DynamicRescaleVPSchedule(base_scale=0.7, prediction="eps")``.
- TimeNoise only on the image context, *after* the Resampler (the reference adds
  ``beta * randn_like(img_emb)`` to ``image_proj_model``'s output, one beta per sample): our
  ``image_noise="timenoise"``. The reference draws beta with ``mu_max = 4`` (``mu_t``'s default,
  the bug the DynamiCrafter copy fixes to 1); we use the paper's law, the configured ``CondNoise``
  (``mu_max`` 1); ``cond_noise.mu_max=4`` reproduces the reference's draw.
- CFG dropout: ``uncond_prob`` is not set in ``train.yaml``, so ``LatentDiffusion``'s default 0.2
  holds: text dropped for u < 0.4, a zero image for 0.2 <= u < 0.6 (20 % each of text only, both,
  image only); ``uncond_type: empty_seq`` (the empty caption's context).
- Training passes the clip's fps as ``fs=``, which the VideoCrafter1 UNet's ``forward(...,
  fps=16, **kwargs)`` drops, so the reference trains at fps 16 whatever the clip: ``train_fps``.
- Only the UNet is optimised (``configure_optimizers`` takes ``self.model.parameters()``; the
  Resampler is not in it): ``train_image_proj=False``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ...diffusion.cond_noise import CondNoise
from ...diffusion.rng import Generator
from ...diffusion.schedules import VPSchedule
from ..tiny import _seeded
from .denoiser import LvdmCondition, LvdmDenoiser, LvdmNetwork
from .official import load_official, read_state_dict
from .pretrained import load_encoders, load_official_vae, lvdm_vae
from .resampler import Resampler
from .schedule import DynamicRescaleVPSchedule
from .tiny import TinyTokenEncoder, tiny_text_encoder
from .unet import LvdmUNet

#: the UNet's default fps (``openaimodel3d_videocrafter.UNetModel.forward(fps=16)``)
DEFAULT_FPS = 16


class VideoCrafterDenoiser(LvdmDenoiser):
    """VideoCrafter1-I2V exposed as D(x_t; t, cond): :class:`LvdmDenoiser` without the concat
    latent (``cond.latent`` [B, C, h, w] is kept for the samplers' shapes and never fed).

    Args:
        train_fps: fps fed in training whatever the batch's (reference: 16, see the module
            docstring); None feeds the batch's fps.
        uncond_prob, image_noise, fps: as :class:`LvdmDenoiser`, with VideoCrafter1's defaults
            (0.2, TimeNoise on the image context, 16).
        **kwargs: the other :class:`LvdmDenoiser` arguments.
    """

    concat_condition = False

    def __init__(
        self,
        unet: LvdmNetwork,
        vae: nn.Module,
        image_encoder: nn.Module,
        null_text: Tensor | None,
        schedule: VPSchedule,
        fps: float = DEFAULT_FPS,
        uncond_prob: float = 0.2,
        image_noise: str = "timenoise",
        train_fps: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(
            unet, vae, image_encoder, null_text, schedule,
            fps=fps, uncond_prob=uncond_prob, image_noise=image_noise, **kwargs,
        )  # fmt: skip
        self.train_fps = None if train_fps is None else float(train_fps)

    def training_condition(
        self,
        cond: LvdmCondition,
        t_norm: Tensor,
        cond_noise: CondNoise,
        generator: Generator = None,
    ) -> LvdmCondition:
        """Condition noise on the image context only (``image_noise``), the reference's CFG
        dropout, and ``train_fps`` in place of the batch's fps."""
        out = super().training_condition(cond, t_norm, cond_noise, generator)
        if self.train_fps is None:
            return out
        return replace(out, fs=torch.full_like(out.fs, round(self.train_fps)))


def videocrafter_network(**kwargs) -> LvdmNetwork:
    """UNet + Resampler at the ``inference_i2v_512_v1.0.yaml`` size (random weights; build under
    ``torch.device("meta")`` for the layout alone). ``kwargs`` go to :class:`LvdmUNet`."""
    unet = LvdmUNet(in_channels=4, default_fs=DEFAULT_FPS, **kwargs)
    return LvdmNetwork(unet, Resampler(num_queries=16, video_length=None))


def load_videocrafter(ckpt: str | Path | dict[str, Tensor], open_clip: str | Path | None = None):
    """Network, VAE, text and image encoder of an official VideoCrafter1 i2v_512 ``model.ckpt``
    (or its state dict): ``model.diffusion_model.*``, ``image_proj_model.*``,
    ``first_stage_model.*``, ``cond_stage_model.*``, ``embedder.*``, each loaded strictly; fails
    before any training naming the first missing or unexpected key and the file."""
    where = str(ckpt) if isinstance(ckpt, (str, Path)) else "the given state dict"
    state = read_state_dict(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
    with torch.device("meta"):
        network, vae = videocrafter_network(), lvdm_vae()
    load_official(network, state, name=where, assign=True)
    load_official_vae(vae, state, where, assign=True)
    text, image = load_encoders(state, where, open_clip)
    return network, vae, text, image


def videocrafter_schedule() -> DynamicRescaleVPSchedule:
    """eps-prediction, ``scale_b`` 0.7 (``conf/model/schedule/vp_videocrafter.yaml``)."""
    return DynamicRescaleVPSchedule(base_scale=0.7, turning_step=400, prediction="eps")


def videocrafter(
    ckpt: str | Path,
    schedule: VPSchedule | None = None,
    num_frames: int = 16,
    gradient_checkpointing: bool = False,
    train_image_proj: bool = False,
    open_clip: str | Path | None = None,
    **kwargs,
) -> VideoCrafterDenoiser:
    """An official VideoCrafter1-I2V checkpoint as our adapter (``kwargs``:
    :class:`VideoCrafterDenoiser`). The text encoder stays in the adapter (frozen) for the
    captions, the unconditional context is the empty caption's; ``train_image_proj=False``
    freezes the Resampler, as the reference; ``open_clip``: a local open_clip file or folder
    for both encoders instead of ``ckpt``."""
    network, vae, text, image = load_videocrafter(ckpt, open_clip)
    network.diffusion_model.gradient_checkpointing = bool(gradient_checkpointing)
    network.image_proj_model.requires_grad_(bool(train_image_proj))
    return VideoCrafterDenoiser(
        unet=network,
        vae=vae,
        image_encoder=image,
        null_text=None,
        text_encoder=text,
        schedule=schedule if schedule is not None else videocrafter_schedule(),
        num_frames=num_frames,
        **kwargs,
    )


def tiny_videocrafter(
    schedule: VPSchedule | None = None,
    model_channels: int = 64,
    context_dim: int = 32,
    clip_dim: int = 48,
    num_queries: int = 4,
    num_frames: int = 8,
    train_image_proj: bool = False,
    seed: int | None = 0,
    **kwargs,
) -> VideoCrafterDenoiser:
    """Tiny random VideoCrafter1-class model for the CPU: as ``tiny_dynamicrafter`` (two 64-channel
    levels, a two-level VAE, a patch encoder in place of ViT-H-14) with 4 input channels and
    ``num_queries`` image tokens shared by all frames and the tiny open_clip text tower (captions
    take the full model's path). ``kwargs``: :class:`VideoCrafterDenoiser`."""
    from diffusers import AutoencoderKL

    with _seeded(seed):
        unet = LvdmUNet(
            in_channels=4, out_channels=4, model_channels=model_channels, channel_mult=(1, 1),
            num_res_blocks=1, attention_resolutions=(2,), num_head_channels=16,
            context_dim=context_dim, default_fs=round(kwargs.get("fps", DEFAULT_FPS)),
            image_tokens_per_frame=num_queries,
        )  # fmt: skip
        resampler = Resampler(
            dim=context_dim, depth=1, dim_head=8, heads=4, num_queries=num_queries,
            embedding_dim=clip_dim, output_dim=context_dim, video_length=None,
        )  # fmt: skip
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
        )  # fmt: skip
        encoder = TinyTokenEncoder(clip_dim)
        text_encoder = tiny_text_encoder(context_dim)
    resampler.requires_grad_(bool(train_image_proj))
    kwargs.setdefault("freeze_image_encoder", True)
    return VideoCrafterDenoiser(
        unet=LvdmNetwork(unet, resampler),
        vae=vae,
        image_encoder=encoder,
        null_text=None,
        text_encoder=text_encoder,
        schedule=schedule if schedule is not None else videocrafter_schedule(),
        num_frames=num_frames,
        **kwargs,
    )
