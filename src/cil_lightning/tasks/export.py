"""``python -m cil_lightning export ckpt=... out=...``: a diffusers pipeline folder.

Writes the (EMA) UNet with ``save_pretrained`` together with the VAE, CLIP image encoder, image
processor and SVD's scheduler, so ``StableVideoDiffusionPipeline.from_pretrained(out)`` loads it
unchanged.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from ..config.checks import ConfigError, validate
from . import run_hydra_task


def export(cfg: DictConfig) -> Path:
    validate(cfg, inputs=True)  # a ckpt that is not a training checkpoint fails here
    if not cfg.get("ckpt"):
        raise ConfigError("ckpt=PATH is required: the training checkpoint to export")
    if not cfg.get("out"):
        raise ConfigError("out=DIR is required: where the diffusers pipeline folder goes")
    from ..models.checkpoint import load_denoiser
    from ..models.svd import to_pipeline

    denoiser, _ = load_denoiser(cfg.ckpt, use_ema=cfg.use_ema)
    out = Path(cfg.out)
    to_pipeline(denoiser).save_pretrained(out, safe_serialization=True)
    print(f"cil_lightning export: wrote a StableVideoDiffusionPipeline folder to {out}")
    return out


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, export)
