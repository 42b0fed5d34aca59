"""Rebuild a trained adapter from a Lightning checkpoint alone (for ``sample`` and ``export``).

``checkpoint_problem`` tells, without torch, why a file is not such a checkpoint; the config
checks call it before anything heavy is imported.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_KEY = "cil_lightning_config"
CONDITIONING_KEY = "cil_lightning_training_conditioning"  # written by I2VLitModule
EXPECTED = (
    "expected a training checkpoint written by `python -m cil_lightning train` (a Lightning .ckpt, "
    f"<run folder>/checkpoints/last.ckpt, holding the run config under {CONFIG_KEY!r}); make one "
    "with `python -m cil_lightning train` (e.g. `+debug=fast` for a tiny one)"
)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a training checkpoint, as ``"is ...; expected ..."`` (None: it looks
    like one). Reads only the archive's pickle, never the tensors, and imports no torch.

    ``torch.save`` (so Lightning) writes a zip archive whose ``<name>/data.pkl`` pickles the
    dict; a run config stored in it shows as the key string ``CONFIG_KEY`` in that pickle.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        why = "is a folder, not a file" if path.is_dir() else "does not exist"
        return f"{why}; {EXPECTED}"
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            data = archive.read(pickles[0]) if pickles else b""
    except (zipfile.BadZipFile, OSError):
        pickles, data = [], b""
    if not pickles:
        return f"is not a torch checkpoint (no torch.save archive); {EXPECTED}"
    if CONFIG_KEY.encode() not in data:
        return f"holds no run config (key {CONFIG_KEY!r}); {EXPECTED}"
    return None


def load_denoiser(ckpt_path: str | Path, use_ema: bool = True):
    """(denoiser, run_config) from a training checkpoint.

    The model is rebuilt from the run config stored in the checkpoint and its weights loaded;
    with ``use_ema`` and an EMA in the checkpoint, the UNet gets the EMA weights. The adapter's
    default ``fps`` and ``motion_bucket_id`` become the mean values fed in training.
    """
    import torch
    from hydra.utils import instantiate

    from ..config.checks import ConfigError

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt={str(ckpt_path)!r}: no such checkpoint file")
    problem = checkpoint_problem(path)
    if problem:
        raise ConfigError(f"ckpt={str(path)!r} {problem}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or CONFIG_KEY not in ckpt or "state_dict" not in ckpt:
        raise ConfigError(f"ckpt={str(path)!r} holds no run config and state_dict; {EXPECTED}")
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
