"""Stable Video Diffusion adapter (``denoiser.py``) and the real model's loading and export
(``pretrained.py``); everything is importable from ``cil_lightning.models.svd``."""

from .denoiser import SVDCondition, SVDDenoiser
from .pretrained import (
    SVD_LAYOUT,
    CLIPImageEmbedder,
    check_svd_folder,
    fsdp_auto_wrap_policy,
    load_svd,
    to_pipeline,
)

__all__ = [
    "SVD_LAYOUT",
    "CLIPImageEmbedder",
    "SVDCondition",
    "SVDDenoiser",
    "check_svd_folder",
    "fsdp_auto_wrap_policy",
    "load_svd",
    "to_pipeline",
]
