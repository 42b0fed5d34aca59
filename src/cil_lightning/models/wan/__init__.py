"""Wan image-to-video adapter (``denoiser.py``) and the real model's loading, tiny configurations
and pipeline export (``pretrained.py``); all importable from ``cil_lightning.models.wan``."""

from .denoiser import WanCondition, WanDenoiser
from .pretrained import (
    CLIPImageTokens,
    check_wan_folder,
    fsdp_auto_wrap_policy,
    load_prompt_embeds,
    load_wan,
    tiny_wan,
    to_pipeline,
)

__all__ = [
    "CLIPImageTokens",
    "WanCondition",
    "WanDenoiser",
    "check_wan_folder",
    "fsdp_auto_wrap_policy",
    "load_prompt_embeds",
    "load_wan",
    "tiny_wan",
    "to_pipeline",
]
