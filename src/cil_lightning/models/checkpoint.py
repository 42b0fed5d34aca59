"""Rebuild a trained adapter from a Lightning checkpoint alone (for ``sample`` and ``export``)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "cil_lightning_config"
CONDITIONING_KEY = "cil_lightning_training_conditioning"  # written by I2VLitModule


def load_denoiser(ckpt_path: str | Path, use_ema: bool = True):
    """(denoiser, run_config) from a training checkpoint.

    The model is rebuilt from the run config stored in the checkpoint and its weights loaded;
    with ``use_ema`` and an EMA in the checkpoint, the UNet gets the EMA weights. The adapter's
    default ``fps`` and ``motion_bucket_id`` become the mean values fed in training.
    """
    from hydra.utils import instantiate

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={str(ckpt_path)!r}: no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if CONFIG_KEY not in ckpt:
        raise ValueError(
            f"{path} holds no run config (key {CONFIG_KEY!r}); was it written by train?"
        )
    run_cfg: DictConfig = OmegaConf.create(ckpt[CONFIG_KEY])
    denoiser = instantiate(run_cfg.model)
    state = ckpt["state_dict"]
    own = {k.removeprefix("denoiser."): v for k, v in state.items() if k.startswith("denoiser.")}
    denoiser.load_state_dict(own)
    ema = {
        k.removeprefix("ema.module."): v for k, v in state.items() if k.startswith("ema.module.")
    }
    if use_ema and ema:
        denoiser.unet.load_state_dict(ema)
    # Sampling defaults to the conditioning the model was trained with (the data's fps, not the
    # adapter's config default), so a checkpoint samples as it was trained.
    trained = (ckpt.get(CONDITIONING_KEY) or {}).get("mean")
    for name, value in (trained or {}).items():
        if hasattr(denoiser, name):
            setattr(denoiser, name, float(value))
    return denoiser.eval(), run_cfg
