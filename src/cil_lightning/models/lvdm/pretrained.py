"""The full-size DynamiCrafter networks and VAE, built and loaded from an official ``.ckpt``.

Sizes as ``configs/inference_{256,512,1024}_v1.0.yaml`` of ``Doubiiu/DynamiCrafter``: the same
UNet and Resampler except 256's learnable image-attention gate and the default fps / frame stride.
The VAE is the LDM KL-f8 (4 latent channels, scale 0.18215), built as diffusers'
``AutoencoderKL`` and filled through diffusers' LDM key conversion of ``first_stage_model.*``.
The open_clip encoders are not here yet (README, "DynamiCrafter").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from .denoiser import LvdmNetwork
from .official import check_keys, load_official, read_state_dict
from .resampler import Resampler
from .unet import LvdmUNet

#: LvdmUNet arguments per official size (the class defaults are the 512 model's)
UNET_SIZES: dict[int, dict] = {
    256: {"image_scale_learnable": True, "default_fs": 3},  # fs = frame stride
    512: {"default_fs": 24},  # fs = fps
    1024: {"default_fs": 10},
}

#: diffusers AutoencoderKL config of the lvdm / Stable Diffusion KL-f8 VAE (``ddconfig``)
VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


def lvdm_network(size: int = 512, **kwargs) -> LvdmNetwork:
    """UNet + Resampler of an official size (random weights; build under ``torch.device("meta")``
    to get the layout without memory). ``kwargs`` go to :class:`LvdmUNet`."""
    if size not in UNET_SIZES:
        raise ValueError(f"DynamiCrafter sizes are {sorted(UNET_SIZES)}, got {size}")
    return LvdmNetwork(LvdmUNet(**UNET_SIZES[size], **kwargs), Resampler())


def lvdm_vae() -> nn.Module:
    """The lvdm KL-f8 VAE as a diffusers ``AutoencoderKL`` (random weights)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def vae_state_from_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``first_stage_model.*`` of an official state dict in diffusers' ``AutoencoderKL`` names."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    ldm = {k: v for k, v in state.items() if k.startswith("first_stage_model.")}
    return convert_ldm_vae_checkpoint(ldm, VAE_CONFIG)


def load_official_vae(vae: nn.Module, state: Mapping[str, Tensor], where: str) -> nn.Module:
    """Fill ``vae`` from an official state dict strictly; errors name the key and ``where``."""
    converted = vae_state_from_official(state)

    def name(key: str) -> str:
        return f"{key} (diffusers name of a first_stage_model.* entry)"

    check_keys(vae.state_dict(), converted, where, name)
    vae.load_state_dict(converted, strict=True)
    return vae


def load_dynamicrafter(ckpt: str | Path, size: int = 512) -> tuple[LvdmNetwork, nn.Module]:
    """The network and VAE of an official DynamiCrafter ``.ckpt``, both loaded strictly.

    Returns (network, vae). Fails before any training, naming the first missing or unexpected
    key and the file.
    """
    state = read_state_dict(ckpt)
    network = load_official(lvdm_network(size), state, name=str(ckpt))
    vae = load_official_vae(lvdm_vae(), state, str(ckpt))
    return network, vae
