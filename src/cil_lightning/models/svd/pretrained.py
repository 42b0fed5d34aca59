"""The real Stable Video Diffusion: CLIP image conditioning, a local diffusers-layout folder in, a
diffusers ``StableVideoDiffusionPipeline`` out, and FSDP wrapping of its UNet."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ...diffusion.schedules import EDMSchedule
from .denoiser import SVDDenoiser


class CLIPImageEmbedder(nn.Module):
    """SVD's image conditioning: CLIP image embedding of the condition frame, [B, 1, D].

    Preprocessing as diffusers' ``StableVideoDiffusionPipeline._encode_image``: anti-aliased
    resize to the CLIP input size, then CLIP's mean / std normalisation, all in torch.

    Args:
        clip: a transformers ``CLIPVisionModelWithProjection``.
        image_mean, image_std: the image processor's normalisation (3 values each).
    """

    def __init__(self, clip: nn.Module, image_mean, image_std) -> None:
        super().__init__()
        self.clip = clip
        self.size = int(clip.config.image_size)
        self.register_buffer("mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = _resize_with_antialiasing(image.float(), (self.size, self.size))
        image = ((image + 1.0) / 2.0 - self.mean) / self.std
        dtype = next(self.clip.parameters()).dtype
        return self.clip(image.to(dtype)).image_embeds[:, None]


def tiny_clip_vision(projection: bool = True, seed: int | None = None) -> nn.Module:
    """A tiny random CLIP vision tower of the real transformers classes (as diffusers' pipeline
    tests build it: 2 layers of width 4 on 32 x 32 images, one token per pixel):
    ``CLIPVisionModelWithProjection`` (image embeddings) or ``CLIPVisionModel`` (tokens)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=4,
        projection_dim=4,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        intermediate_size=16,
        patch_size=1,
    )
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return (CLIPVisionModelWithProjection if projection else CLIPVisionModel)(config)


# CLIP's image normalisation (OpenAI CLIP's image processor).
CLIP_MEAN, CLIP_STD = [0.481, 0.458, 0.408], [0.269, 0.261, 0.276]


# Files a diffusers-layout SVD folder must hold (weights may also be the ``.fp16`` variant).
SVD_LAYOUT = {
    "unet": ("config.json", "diffusion_pytorch_model.safetensors"),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
    "image_encoder": ("config.json", "model.safetensors"),
    "feature_extractor": ("preprocessor_config.json",),
}


def check_svd_folder(path: str | Path) -> str | None:
    """Check a local SVD folder; return the weights variant (None or ``"fp16"``).

    Raises FileNotFoundError naming the first missing file and the layout expected.
    """
    root = Path(path).expanduser()
    layout = "\n".join(f"  {sub}/{', '.join(files)}" for sub, files in SVD_LAYOUT.items())
    expected = (
        f"expected a diffusers-layout Stable Video Diffusion folder (as "
        f"stabilityai/stable-video-diffusion-img2vid or -img2vid-xt, downloaded beforehand) with:\n"
        f"{layout}\n(weights may be the .fp16.safetensors variant); set model.pretrained_path"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"model.pretrained_path={str(path)!r} is not a folder; {expected}")
    variant = None
    for sub, files in SVD_LAYOUT.items():
        for name in files:
            file = root / sub / name
            fp16 = file.with_name(name.replace(".safetensors", ".fp16.safetensors"))
            if file.is_file():
                continue
            if name.endswith(".safetensors") and fp16.is_file():
                variant = "fp16"
                continue
            raise FileNotFoundError(f"missing {file}; {expected}")
    return variant


def load_svd(
    pretrained_path: str,
    schedule: EDMSchedule | None = None,
    dtype: str = "float32",
    **kwargs,
) -> SVDDenoiser:
    """Load SVD (UNet, temporal VAE, CLIP image encoder) from a local diffusers-layout folder.

    Offline only: ``local_files_only=True``; a missing file fails with the path and the layout.
    ``kwargs`` go to :class:`SVDDenoiser` (fps, motion_bucket_id, cfg_dropout, ...).
    """
    variant = check_svd_folder(pretrained_path)
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    torch_dtype = getattr(torch, dtype)
    common = {"local_files_only": True, "variant": variant, "torch_dtype": torch_dtype}
    unet = UNetSpatioTemporalConditionModel.from_pretrained(
        pretrained_path, subfolder="unet", **common
    )
    vae = AutoencoderKLTemporalDecoder.from_pretrained(pretrained_path, subfolder="vae", **common)
    clip = CLIPVisionModelWithProjection.from_pretrained(
        pretrained_path, subfolder="image_encoder", **common
    )
    processor = CLIPImageProcessor.from_pretrained(
        pretrained_path, subfolder="feature_extractor", local_files_only=True
    )
    return SVDDenoiser(
        unet=unet,
        image_encoder=CLIPImageEmbedder(clip, processor.image_mean, processor.image_std),
        schedule=schedule if schedule is not None else EDMSchedule(sigma_max=700.0),
        vae=vae,
        **kwargs,
    )


def to_pipeline(denoiser: SVDDenoiser, unet: nn.Module | None = None):
    """A diffusers ``StableVideoDiffusionPipeline`` built from the adapter's own components.

    ``unet`` replaces the adapter's (e.g. its EMA copy). The scheduler is SVD's: Euler with
    Karras sigmas between the schedule's sigma_min and sigma_max, v-prediction.
    """
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from transformers import CLIPImageProcessor

    if denoiser.vae is None or not isinstance(denoiser.image_encoder, CLIPImageEmbedder):
        raise ValueError("only a latent-space SVD adapter with a CLIP image encoder exports")
    enc = denoiser.image_encoder
    schedule = denoiser.schedule
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=schedule.sigma_max,
        sigma_min=schedule.sigma_min,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    processor = CLIPImageProcessor(
        crop_size=enc.size,
        size=enc.size,
        image_mean=enc.mean.flatten().tolist(),
        image_std=enc.std.flatten().tolist(),
    )
    return StableVideoDiffusionPipeline(
        vae=denoiser.vae,
        image_encoder=enc.clip,
        unet=unet if unet is not None else denoiser.unet,
        scheduler=scheduler,
        feature_extractor=processor,
    )


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
