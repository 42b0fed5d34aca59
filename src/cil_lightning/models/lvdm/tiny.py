"""A tiny random DynamiCrafter-class model for CPU runs and tests: our lvdm UNet and Resampler at
small sizes, diffusers' ``AutoencoderKL`` (the lvdm VAE's class) with two levels, a small
patch encoder in place of open_clip's ViT-H-14 image tower (same output layout: tokens [B, N, E])
and the real text-context code (``OpenCLIPTextContext``, open_clip's bundled tokenizer) over a
small random open_clip text tower, so captions take the full model's path."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ...diffusion.schedules import VPSchedule
from ..tiny import _seeded
from .denoiser import LvdmDenoiser, LvdmNetwork
from .encoders import OpenCLIPTextContext
from .resampler import Resampler
from .unet import LvdmUNet


class TinyTokenEncoder(nn.Module):
    """Frames [B, 3, H, W] in [-1, 1] -> patch tokens [B, (H/patch) * (W/patch), E]."""

    def __init__(self, embed_dim: int = 48, patch: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch, stride=patch)

    def forward(self, image: Tensor) -> Tensor:
        return self.proj(image).flatten(2).transpose(1, 2)


def tiny_text_encoder(width: int = 32, layers: int = 2) -> OpenCLIPTextContext:
    """A random open_clip text tower of ``width`` (the context dim) and ``layers`` blocks (the
    penultimate is used) with the real tokenizer's 49408-token vocabulary (77 tokens)."""
    from open_clip.model import CLIP

    text_cfg = {"context_length": 77, "vocab_size": 49408, "width": width, "heads": 2}
    # the smallest vision tower open_clip builds: OpenCLIPTextContext drops it at once
    vision_cfg = {"image_size": 16, "patch_size": 16, "width": 16, "layers": 1, "head_width": 16}
    clip = CLIP(embed_dim=8, vision_cfg=vision_cfg, text_cfg={**text_cfg, "layers": layers})
    return OpenCLIPTextContext(clip)


def tiny_dynamicrafter(
    schedule: VPSchedule | None = None,
    model_channels: int = 64,
    channel_mult: Sequence[int] = (1, 1),
    attention_resolutions: Sequence[int] = (2,),
    num_head_channels: int = 16,
    context_dim: int = 32,
    clip_dim: int = 48,
    num_frames: int = 8,
    seed: int | None = 0,
    **kwargs,
) -> LvdmDenoiser:
    """Tiny random DynamiCrafter: 4 latent channels, VAE downsampling 2 (32x32 -> 16x16).

    64 channels at every level: the lvdm blocks normalise with GroupNorm(32), which over 32
    channels is one channel per group and cancels the per-channel time embedding entirely.

    The Resampler gives 4 tokens per frame for ``num_frames`` frames (the per-frame image
    context of DynamiCrafter 512). ``kwargs`` go to :class:`LvdmDenoiser`; the small image
    encoder trains unless ``freeze_image_encoder=True``; the text encoder is frozen.
    """
    from diffusers import AutoencoderKL

    with _seeded(seed):
        unet = LvdmUNet(
            in_channels=8,
            out_channels=4,
            model_channels=model_channels,
            channel_mult=channel_mult,
            num_res_blocks=1,
            attention_resolutions=attention_resolutions,
            num_head_channels=num_head_channels,
            context_dim=context_dim,
            default_fs=round(kwargs.get("fps", 24)),
            image_tokens_per_frame=4,
        )
        resampler = Resampler(
            dim=context_dim, depth=1, dim_head=8, heads=4, num_queries=4,
            embedding_dim=clip_dim, output_dim=context_dim, video_length=num_frames,
        )  # fmt: skip
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
        )
        encoder = TinyTokenEncoder(clip_dim)
        text_encoder = tiny_text_encoder(context_dim)
    kwargs.setdefault("freeze_image_encoder", False)
    return LvdmDenoiser(
        unet=LvdmNetwork(unet, resampler),
        vae=vae,
        image_encoder=encoder,
        null_text=None,
        schedule=schedule if schedule is not None else VPSchedule(prediction="v"),
        num_frames=num_frames,
        text_encoder=text_encoder,
        **kwargs,
    )
