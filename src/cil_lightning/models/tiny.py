"""Tiny random-initialised configurations of the real SVD classes, for CPU runs and tests.

The UNet is diffusers' ``UNetSpatioTemporalConditionModel`` itself, shrunk the way diffusers' own
SVD pipeline tests shrink it (``block_out_channels=(32, 64)``), so every code path that runs here
runs unchanged on the full-size network.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..diffusion.schedules import EDMSchedule
from .svd import SVDDenoiser


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Random initialisation from ``seed`` without touching the global RNG (None: global RNG)."""
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def tiny_unet(
    latent_channels: int = 3,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    cross_attention_dim: int = 32,
    num_attention_heads: Sequence[int] = (2, 4),
    addition_time_embed_dim: int = 8,
):
    """A ``UNetSpatioTemporalConditionModel`` with SVD's block types, two levels deep."""
    from diffusers import UNetSpatioTemporalConditionModel

    return UNetSpatioTemporalConditionModel(
        in_channels=2 * latent_channels,  # noisy latent + condition latent, concatenated
        out_channels=latent_channels,
        # Attention only at the coarser level: at full resolution it would cost most of a CPU step.
        down_block_types=("DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"),
        up_block_types=("CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal"),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        num_attention_heads=tuple(num_attention_heads),
        addition_time_embed_dim=addition_time_embed_dim,
        # SVD feeds three added time ids: fps - 1, motion bucket, noise level.
        projection_class_embeddings_input_dim=3 * addition_time_embed_dim,
    )


class TinyImageEncoder(nn.Module):
    """A small trainable stand-in for SVD's CLIP image encoder: [B, 3, H, W] -> [B, 1, D]."""

    def __init__(self, embed_dim: int = 32, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, embed_dim),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)[:, None]


def tiny_pixel_svd(
    schedule: EDMSchedule | None = None,
    embed_dim: int = 32,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    num_attention_heads: Sequence[int] = (2, 4),
    addition_time_embed_dim: int = 8,
    seed: int | None = 0,
    **kwargs,
) -> SVDDenoiser:
    """The tiny SVD-class denoiser in pixel space (3 channels, no VAE).

    ``seed`` fixes the random initialisation independently of the global RNG state; ``kwargs``
    go to :class:`SVDDenoiser` (the small image encoder trains with the UNet unless
    ``freeze_image_encoder=True``).
    """
    with _seeded(seed):
        unet = tiny_unet(
            latent_channels=3,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            cross_attention_dim=embed_dim,
            num_attention_heads=num_attention_heads,
            addition_time_embed_dim=addition_time_embed_dim,
        )
        encoder = TinyImageEncoder(embed_dim=embed_dim)
    kwargs.setdefault("freeze_image_encoder", False)
    return SVDDenoiser(
        unet=unet,
        image_encoder=encoder,
        schedule=schedule if schedule is not None else EDMSchedule(),
        **kwargs,
    )


def tiny_svd(
    schedule: EDMSchedule | None = None,
    block_out_channels: Sequence[int] = (32, 64),
    layers_per_block: int = 1,
    num_attention_heads: Sequence[int] = (2, 4),
    clip_hidden_size: int = 32,
    clip_image_size: int = 32,
    seed: int | None = 0,
    **kwargs,
) -> SVDDenoiser:
    """Tiny random Stable Video Diffusion: the real UNet, temporal VAE and CLIP vision classes.

    Latent space with 4 channels and a VAE downsampling of 2 (diffusers' SVD test sizes), so a
    32x32 video has 16x16 latents. ``kwargs`` go to :class:`SVDDenoiser`.
    """
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from .svd import CLIPImageEmbedder

    with _seeded(seed):
        unet = tiny_unet(
            latent_channels=4,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            cross_attention_dim=clip_hidden_size,
            num_attention_heads=num_attention_heads,
        )
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
        )
        clip = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=clip_hidden_size,
                projection_dim=clip_hidden_size,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=clip_image_size,
                intermediate_size=37,
                patch_size=4,
            )
        )
    # OpenAI CLIP normalisation, as SVD's feature_extractor.
    embedder = CLIPImageEmbedder(
        clip, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    )
    return SVDDenoiser(
        unet=unet,
        image_encoder=embedder,
        schedule=schedule if schedule is not None else EDMSchedule(sigma_max=700.0),
        vae=vae,
        **kwargs,
    )
