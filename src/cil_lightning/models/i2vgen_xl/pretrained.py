"""The real I2VGen-XL: a local diffusers-layout folder in (schedule from its scheduler config),
tiny random configurations of the same classes for the CPU, and an ``I2VGenXLPipeline`` out."""

from __future__ import annotations

from pathlib import Path

import torch

from ...diffusion.schedules import VPSchedule
from ..svd.pretrained import CLIP_MEAN, CLIP_STD, CLIPImageEmbedder, tiny_clip_vision
from .denoiser import I2VGenXLDenoiser, vp_schedule_from_config

I2VGENXL_LAYOUT = {
    "unet": ("config.json",),
    "vae": ("config.json",),
    "image_encoder": ("config.json",),
    "feature_extractor": ("preprocessor_config.json",),
    "scheduler": ("scheduler_config.json",),
}


def check_i2vgenxl_folder(path: str | Path) -> Path:
    """Raise FileNotFoundError naming the first missing file of a local I2VGen-XL folder."""
    root = Path(path).expanduser()
    listing = "\n".join(f"  {sub}/{', '.join(f)}" for sub, f in I2VGENXL_LAYOUT.items())
    expected = (
        "expected a diffusers-layout I2VGen-XL folder (ali-vilab/i2vgen-xl, downloaded "
        f"beforehand) with:\n{listing}\nplus each model's safetensors; set model.pretrained_path"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"model.pretrained_path={str(path)!r} is not a folder; {expected}")
    for sub, files in I2VGENXL_LAYOUT.items():
        for name in files:
            if not (root / sub / name).is_file():
                raise FileNotFoundError(f"missing {root / sub / name}; {expected}")
    return root


def load_i2vgenxl(
    pretrained_path: str, prompt_embeds: str, dtype: str = "float32", **adapter_kwargs
) -> I2VGenXLDenoiser:
    """An ``I2VGenXLDenoiser`` from a local diffusers-layout folder (offline). The schedule comes
    from ``scheduler/scheduler_config.json``; prompts from a safetensors file with
    ``prompt_embeds`` (and ``negative_prompt_embeds``), as ``models.wan.load_prompt_embeds``."""
    import json

    from diffusers import AutoencoderKL, I2VGenXLUNet
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from ..wan.pretrained import load_prompt_embeds

    root = check_i2vgenxl_folder(pretrained_path)
    kw = {"local_files_only": True}
    unet = I2VGenXLUNet.from_pretrained(
        root, subfolder="unet", torch_dtype=getattr(torch, dtype), **kw
    )
    vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **kw)
    clip = CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder", **kw)
    proc = CLIPImageProcessor.from_pretrained(root / "feature_extractor", **kw)
    config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    prompt, negative = load_prompt_embeds(prompt_embeds)
    return I2VGenXLDenoiser(
        unet,
        vae,
        CLIPImageEmbedder(clip, proc.image_mean, proc.image_std),
        vp_schedule_from_config(config),
        prompt,
        negative,
        **adapter_kwargs,
    )


def tiny_i2vgenxl(
    schedule: VPSchedule | None = None, text_len: int = 8, seed: int | None = 0, **adapter_kwargs
) -> I2VGenXLDenoiser:
    """Random tiny I2VGen-XL of the real classes, shrunk as diffusers' own I2VGen-XL tests shrink
    them, for the CPU and tests. ``schedule`` defaults to v-prediction, scaled-linear betas
    0.00085-0.012, zero terminal SNR."""
    from diffusers import AutoencoderKL, I2VGenXLUNet

    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        unet = I2VGenXLUNet(
            block_out_channels=(4, 8),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=4,
            attention_head_dim=4,
            num_attention_heads=None,
            norm_num_groups=2,
        )
        vae = AutoencoderKL(
            block_out_channels=(8,),
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D"],
            latent_channels=4,
            sample_size=32,
            norm_num_groups=2,
        )
        clip = tiny_clip_vision(projection=True)
    encoder = CLIPImageEmbedder(clip, CLIP_MEAN, CLIP_STD)
    schedule = schedule or VPSchedule(
        beta_schedule="scaled_linear", rescale_zero_terminal_snr=True, prediction="v"
    )
    prompt = torch.randn(text_len, 4, generator=gen)
    negative = torch.randn(text_len, 4, generator=gen)
    return I2VGenXLDenoiser(unet, vae, encoder, schedule, prompt, negative, **adapter_kwargs)


def to_pipeline(denoiser: I2VGenXLDenoiser, scheduler=None):
    """An ``I2VGenXLPipeline`` around the adapter's modules (no text encoder: call it with
    ``prompt_embeds``); ``scheduler`` defaults to DDIM with the adapter's schedule, trailing."""
    from diffusers import DDIMScheduler, I2VGenXLPipeline
    from transformers import CLIPImageProcessor

    s = denoiser.schedule
    if scheduler is None:
        scheduler = DDIMScheduler(
            num_train_timesteps=s.T,
            beta_schedule=s.beta_schedule,
            beta_start=s.beta_start,
            beta_end=s.beta_end,
            rescale_betas_zero_snr=s.rescale_zero_terminal_snr,
            prediction_type="v_prediction" if s.prediction == "v" else "epsilon",
            set_alpha_to_one=s.set_alpha_to_one,
            clip_sample=False,
            timestep_spacing="trailing",
        )
    encoder = denoiser.image_encoder
    size = int(encoder.clip.config.image_size)
    return I2VGenXLPipeline(
        vae=denoiser.vae,
        text_encoder=None,
        tokenizer=None,
        image_encoder=encoder.clip,
        feature_extractor=CLIPImageProcessor(
            crop_size={"height": size, "width": size},
            size={"shortest_edge": size},
            image_mean=encoder.mean.flatten().tolist(),
            image_std=encoder.std.flatten().tolist(),
        ),
        unet=denoiser.unet,
        scheduler=scheduler,
    )
