"""The full-size DynamiCrafter networks and VAE, built and loaded from an official ``.ckpt``.

Sizes as ``configs/inference_{256,512,1024}_v1.0.yaml`` of ``Doubiiu/DynamiCrafter``: the same
UNet and Resampler except 256's learnable image-attention gate and the default fps / frame stride.
The VAE is the LDM KL-f8 (4 latent channels, scale 0.18215), built as diffusers'
``AutoencoderKL`` and filled through diffusers' LDM key conversion of ``first_stage_model.*``.
The open_clip ViT-H-14 text and image towers come from the same file (``cond_stage_model.*``,
``embedder.*``). Everything is built on the meta device and takes the file's tensors (no random
initialisation of 2.6 B parameters first).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ...diffusion.schedules import VPSchedule
from .denoiser import LvdmDenoiser, LvdmNetwork
from .encoders import OpenCLIPImageTokens, OpenCLIPTextContext
from .official import check_keys, load_official, read_state_dict
from .resampler import Resampler
from .unet import LvdmUNet

#: LvdmUNet arguments per official size (the class defaults are the 512 model's)
UNET_SIZES: dict[int, dict] = {
    256: {"image_scale_learnable": True, "default_fs": 3},  # fs = frame stride
    512: {"default_fs": 24},  # fs = fps
    1024: {"default_fs": 10},
}

#: the batch field each size is conditioned on (``fps_condition_type``: the 256 model's class
#: default 'fs' = frame stride, ``configs/training_{512,1024}_v1.0/config.yaml`` 'fps')
FS_KINDS = {256: "stride", 512: "fps", 1024: "fps"}

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


def load_official_vae(
    vae: nn.Module, state: Mapping[str, Tensor], where: str, assign: bool = False
) -> nn.Module:
    """Fill ``vae`` from an official state dict strictly; errors name the key and ``where``."""
    converted = vae_state_from_official(state)

    def name(key: str) -> str:
        return f"{key} (diffusers name of a first_stage_model.* entry)"

    check_keys(vae.state_dict(), converted, where, name)
    vae.load_state_dict(converted, strict=True, assign=assign)
    return vae


def lvdm_encoders() -> tuple[OpenCLIPTextContext, OpenCLIPImageTokens]:
    """The two ViT-H-14 encoders on the meta device (open_clip's bundled config, no download)."""
    import open_clip
    from open_clip.model import CLIP

    cfg = open_clip.get_model_config("ViT-H-14")
    with torch.device("meta"):
        text_clip, image_clip = CLIP(**cfg), CLIP(**cfg)
    return OpenCLIPTextContext(text_clip), OpenCLIPImageTokens(image_clip)


#: official prefix of each encoder's ``model.*`` entries
ENCODER_PREFIXES = {"text": "cond_stage_model.", "image": "embedder."}


def load_official_encoders(
    text: OpenCLIPTextContext,
    image: OpenCLIPImageTokens,
    state: Mapping[str, Tensor],
    where: str,
    assign: bool = True,
) -> None:
    """Fill both encoders from ``cond_stage_model.*`` and ``embedder.*`` strictly."""
    for module, prefix in ((text, ENCODER_PREFIXES["text"]), (image, ENCODER_PREFIXES["image"])):
        got = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        check_keys(module.state_dict(), got, where, lambda k, p=prefix: p + k)
        module.load_state_dict(got, strict=True, assign=assign)
    # the causal mask is a non-persistent buffer: rebuild it off the meta device
    n = text.model.positional_embedding.shape[0]
    text.model.attn_mask = torch.full((n, n), float("-inf")).triu_(1)


#: weight files of an open_clip folder (as ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` ships them)
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def read_open_clip(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """(the encoders' entries in the official checkpoints' names, the file read) of a local
    open_clip ViT-H-14 (``laion2b_s32b_b79k``): a weights file or a folder holding one of
    :data:`OPEN_CLIP_FILES`. The text tower is the CLIP without ``visual.*``
    (``cond_stage_model.model.*``), the image tower the CLIP without the text ``transformer.*``
    (``embedder.model.*``), as the official checkpoints store them."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in OPEN_CLIP_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(
                f"no open_clip weights in {path}: expected {' or '.join(OPEN_CLIP_FILES)} (the "
                "files of laion/CLIP-ViT-H-14-laion2B-s32B-b79K, downloaded beforehand)"
            )
        path = found[0]
    return encoder_state_from_open_clip(read_state_dict(path)), str(path)


def encoder_state_from_open_clip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An open_clip CLIP state dict in the official checkpoints' encoder names (text: all but
    ``visual.*``; image: all but the text ``transformer.*``)."""
    text, image = ENCODER_PREFIXES["text"] + "model.", ENCODER_PREFIXES["image"] + "model."
    mapped = {text + k: v for k, v in state.items() if not k.startswith("visual.")}
    mapped.update({image + k: v for k, v in state.items() if not k.startswith("transformer.")})
    return mapped


def load_encoders(
    state: Mapping[str, Tensor], where: str, open_clip: str | Path | None = None
) -> tuple[OpenCLIPTextContext, OpenCLIPImageTokens]:
    """The two ViT-H-14 encoders, strictly loaded from an official state dict or, when
    ``open_clip`` names a local open_clip file or folder, from there."""
    if open_clip is not None:
        state, where = read_open_clip(open_clip)
    text, image = lvdm_encoders()
    load_official_encoders(text, image, state, where)
    return text, image


def load_dynamicrafter(
    ckpt: str | Path | Mapping[str, Tensor], size: int = 512, open_clip: str | Path | None = None
) -> tuple[LvdmNetwork, nn.Module, OpenCLIPTextContext, OpenCLIPImageTokens]:
    """Network, VAE, text and image encoder of an official DynamiCrafter ``.ckpt`` (or its state
    dict; the encoders from a local open_clip file or folder when ``open_clip`` is given), each
    loaded strictly; fails before any training, naming the first missing or unexpected key and
    the file."""
    where = str(ckpt) if isinstance(ckpt, (str, Path)) else "the given state dict"
    state = read_state_dict(ckpt) if isinstance(ckpt, (str, Path)) else ckpt
    with torch.device("meta"):
        network, vae = lvdm_network(size), lvdm_vae()
    load_official(network, state, name=where, assign=True)
    load_official_vae(vae, state, where, assign=True)
    text, image = load_encoders(state, where, open_clip)
    return network, vae, text, image


def dynamicrafter(
    ckpt: str | Path,
    size: int = 512,
    schedule: VPSchedule | None = None,
    num_frames: int = 16,
    fps: float | None = None,
    fs_kind: str | None = None,
    gradient_checkpointing: bool = False,
    open_clip: str | Path | None = None,
    **kwargs,
) -> LvdmDenoiser:
    """An official DynamiCrafter checkpoint as our adapter (``kwargs``: :class:`LvdmDenoiser`).

    ``schedule`` defaults to the size's (``conf/model/schedule/vp_dynamicrafter*.yaml``),
    ``fps`` (the default ``fs``) and ``fs_kind`` (fps or frame stride) to the size's. The text
    encoder stays in the adapter (frozen) for the captions; the unconditional text context is the
    empty caption's. ``open_clip``: a local open_clip ViT-H-14 file or folder to take both
    encoders from instead of ``ckpt`` (:func:`read_open_clip`).
    """
    from .schedule import DynamicRescaleVPSchedule

    network, vae, text, image = load_dynamicrafter(ckpt, size, open_clip)
    network.diffusion_model.gradient_checkpointing = bool(gradient_checkpointing)
    if schedule is None:
        if size == 256:
            schedule = VPSchedule(prediction="eps")
        else:
            base = 0.7 if size == 512 else 0.3
            schedule = DynamicRescaleVPSchedule(
                base_scale=base, rescale_zero_terminal_snr=True, prediction="v"
            )
    return LvdmDenoiser(
        unet=network,
        vae=vae,
        image_encoder=image,
        null_text=None,
        schedule=schedule,
        num_frames=num_frames,
        fps=UNET_SIZES[size]["default_fs"] if fps is None else fps,
        text_encoder=text,
        fs_kind=FS_KINDS[size] if fs_kind is None else fs_kind,
        **kwargs,
    )
