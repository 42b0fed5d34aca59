"""The real Wan: a local diffusers-layout folder in, its CLIP image tokens, prompt embeddings read
from a safetensors file, tiny random configurations of the same classes for the CPU, and a
``WanImageToVideoPipeline`` out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ...diffusion.schedules import FlowSchedule
from ..svd.pretrained import CLIP_MEAN, CLIP_STD, CLIPImageEmbedder, tiny_clip_vision
from .denoiser import WanDenoiser

# Files a diffusers-layout Wan I2V folder must hold for training and sampling (the text encoder
# is not needed: prompts enter as precomputed embeddings).
WAN_LAYOUT = {
    "transformer": ("config.json",),
    "vae": ("config.json", "diffusion_pytorch_model.safetensors"),
}
CLIP_LAYOUT = {"image_encoder": ("config.json",), "image_processor": ("preprocessor_config.json",)}


class CLIPImageTokens(CLIPImageEmbedder):
    """Wan 2.1's image conditioning: the penultimate hidden states of a CLIP vision tower.

    [B, 3, H, W] in [-1, 1] -> [B, 1 + patches, D] (257 tokens for ViT-H/14 at 224). Preprocessed
    as ``CLIPImageProcessor`` does, in torch: the short side resized (bicubic, antialiased) to the
    tower's input size, a centre crop, the processor's mean / std.

    Args (as ``CLIPImageEmbedder``'s):
        clip: a transformers ``CLIPVisionModel`` or ``CLIPVisionModelWithProjection``.
        image_mean, image_std: the image processor's normalisation (3 values each).
    """

    def forward(self, image: Tensor) -> Tensor:
        H, W = image.shape[-2:]
        if min(H, W) != self.size:
            # As ``CLIPImageProcessor``: the short side to the input size, then a centre crop.
            scale = self.size / min(H, W)
            size = (max(self.size, round(H * scale)), max(self.size, round(W * scale)))
            image = nn.functional.interpolate(image.float(), size, mode="bicubic", antialias=True)
        top, left = (image.shape[-2] - self.size) // 2, (image.shape[-1] - self.size) // 2
        image = image[..., top : top + self.size, left : left + self.size]
        image = ((image + 1.0) / 2.0 - self.mean) / self.std
        dtype = next(self.clip.parameters()).dtype
        out = self.clip(image.to(dtype), output_hidden_states=True)
        return out.hidden_states[-2]


def load_prompt_embeds(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """(prompt_embeds [L, D], negative_prompt_embeds [L, D] or None) from a safetensors file.

    The file holds ``prompt_embeds`` and optionally ``negative_prompt_embeds`` (e.g. written once
    with the pipeline's ``encode_prompt`` on a machine that has the T5 encoder), read without
    running code.
    """
    from safetensors.torch import load_file

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"model.prompt_embeds={str(path)!r}: no such file; expected a safetensors file with "
            "'prompt_embeds' [L, D] (and optionally 'negative_prompt_embeds' [L, D]), the T5 "
            "context of the training prompt, e.g. saved from WanImageToVideoPipeline.encode_prompt"
        )
    tensors = load_file(str(file))
    if "prompt_embeds" not in tensors:
        raise KeyError(f"{file} has no 'prompt_embeds' (keys: {sorted(tensors)})")
    squeeze = lambda t: t[0] if t.ndim == 3 else t  # noqa: E731 - a saved batch of one
    negative = tensors.get("negative_prompt_embeds")
    return squeeze(tensors["prompt_embeds"]), None if negative is None else squeeze(negative)


def check_wan_folder(path: str | Path, clip: bool) -> None:
    """Raise FileNotFoundError naming the first missing file of a local Wan folder."""
    root = Path(path).expanduser()
    layout = {**WAN_LAYOUT, **(CLIP_LAYOUT if clip else {})}
    listing = "\n".join(f"  {sub}/{', '.join(files)}" for sub, files in layout.items())
    expected = (
        "expected a diffusers-layout Wan image-to-video folder (e.g. "
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers or Wan-AI/Wan2.2-TI2V-5B-Diffusers, downloaded "
        f"beforehand) with:\n{listing}\nplus the transformer's safetensors shards; set "
        "model.pretrained_path"
    )
    if not root.is_dir():
        raise FileNotFoundError(f"model.pretrained_path={str(path)!r} is not a folder; {expected}")
    for sub, files in layout.items():
        for name in files:
            if not (root / sub / name).is_file():
                raise FileNotFoundError(f"missing {root / sub / name}; {expected}")
    if not any((root / "transformer").glob("*.safetensors")):
        raise FileNotFoundError(f"no safetensors weights in {root / 'transformer'}; {expected}")


def load_wan(
    pretrained_path: str,
    prompt_embeds: str,
    style: str = "concat",
    schedule: FlowSchedule | None = None,
    clip: bool = True,
    dtype: str = "float32",
    **adapter_kwargs,
) -> WanDenoiser:
    """A ``WanDenoiser`` from a local diffusers-layout folder (offline; nothing is downloaded).

    Args:
        pretrained_path: the folder (see ``check_wan_folder``).
        prompt_embeds: the safetensors file of ``load_prompt_embeds``.
        style: ``"concat"`` (Wan 2.1 / 2.2-A14B) or ``"replace"`` (Wan 2.2 TI2V-5B).
        schedule: the flow schedule; its shift is the model's ``flow_shift`` (Wan 2.1 480p: 3.0,
            720p: 5.0; Wan 2.2 TI2V: 5.0). Default: shift 3.0.
        clip: load the CLIP image encoder (Wan 2.1 only).
        dtype: the transformer's weights dtype (``bfloat16`` for real runs).
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    check_wan_folder(pretrained_path, clip)
    root = Path(pretrained_path).expanduser()
    kw = {"local_files_only": True}
    unet = WanTransformer3DModel.from_pretrained(
        root, subfolder="transformer", torch_dtype=getattr(torch, dtype), **kw
    )
    vae = AutoencoderKLWan.from_pretrained(root, subfolder="vae", torch_dtype=torch.float32, **kw)
    image_encoder = None
    if clip:
        from transformers import CLIPImageProcessor, CLIPVisionModel

        proc = CLIPImageProcessor.from_pretrained(root / "image_processor", **kw)
        tower = CLIPVisionModel.from_pretrained(root / "image_encoder", **kw)
        image_encoder = CLIPImageTokens(tower, proc.image_mean, proc.image_std)
    prompt, negative = load_prompt_embeds(prompt_embeds)
    return WanDenoiser(
        unet,
        vae,
        schedule or FlowSchedule(shift=3.0),
        prompt,
        negative,
        image_encoder=image_encoder,
        style=style,
        **adapter_kwargs,
    )


def tiny_wan(
    style: str = "concat",
    clip: bool = True,
    schedule: FlowSchedule | None = None,
    text_len: int = 8,
    seed: int | None = 0,
    **adapter_kwargs,
) -> WanDenoiser:
    """Random tiny Wan of the real classes, shrunk as diffusers' own Wan I2V tests shrink them
    (two layers, head dim 12, a 3-channel-base VAE), for the CPU and tests.

    ``"concat"`` is a Wan 2.1 I2V (with a tiny CLIP tower when ``clip``), ``"replace"`` a Wan 2.2
    TI2V. Prompt embeddings are random [text_len, 32] from ``seed``. ``schedule`` defaults to
    flow with shift 3.0 (Wan 2.1 480p).
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        image_encoder = None
        if clip and style == "concat":
            tower = tiny_clip_vision(projection=False)
            image_encoder = CLIPImageTokens(tower, CLIP_MEAN, CLIP_STD)
        unet = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=36 if style == "concat" else 16,
            out_channels=16,
            text_dim=32,
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
            image_dim=4 if image_encoder is not None else None,
        )
    prompt = torch.randn(text_len, 32, generator=gen)
    negative = torch.randn(text_len, 32, generator=gen)
    return WanDenoiser(
        unet,
        vae,
        schedule or FlowSchedule(shift=3.0),
        prompt,
        negative,
        image_encoder=image_encoder,
        style=style,
        **adapter_kwargs,
    )


def to_pipeline(denoiser: WanDenoiser, scheduler=None):
    """A ``WanImageToVideoPipeline`` around the adapter's modules (no text encoder: call it with
    ``prompt_embeds``). ``scheduler`` defaults to flow Euler with the adapter's shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    if scheduler is None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=denoiser.schedule.shift)
    encoder = denoiser.image_encoder
    return WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=denoiser.vae,
        scheduler=scheduler,
        image_processor=None,
        image_encoder=None if encoder is None else encoder.clip,
        transformer=denoiser.unet,
        expand_timesteps=denoiser.style == "replace",
    )


def fsdp_auto_wrap_policy():
    """FSDP wraps the transformer block by block (``WanTransformerBlock``), as Wan's own FSDP
    training shards it."""
    from diffusers.models.transformers.transformer_wan import WanTransformerBlock
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy({WanTransformerBlock})
