"""Export a trained lvdm adapter: an official-layout ``.ckpt`` and our own safetensors folder.

Official layout (``scripts/evaluation/inference.py`` of DynamiCrafter / the TimeNoise reference
load it with ``load_state_dict(strict=True)`` on ``LatentVisualDiffusion``): one ``state_dict``
holding the network (``model.diffusion_model.*``, ``image_proj_model.*``), the open_clip image
tower (``embedder.*``) where the adapter has it, and, copied from the official checkpoint the
model was built from, the VAE (``first_stage_model.*``), the text tower (``cond_stage_model.*``),
the schedule buffers and ``scale_arr``. Without that source (tiny models) only what we own is
written, and :func:`official_checkpoint` says what is missing.

Safetensors folder: ``config.json`` (format, the resolved model config that rebuilds the adapter,
its fps, which modules are stored) and one ``<module>.safetensors`` per trained module of the
adapter in our names (``unet`` always: the :class:`LvdmNetwork`; others, e.g. the tiny model's
image encoder, when they were trainable). :func:`load_safetensors_export` rebuilds the adapter.
Generic over the network: anything whose ``unet`` is an ``LvdmNetwork`` exports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from .encoders import OpenCLIPImageTokens
from .official import (
    check_keys,
    merge_official,
    official_state_from_network,
    read_state_dict,
    save_official,
)
from .pretrained import ENCODER_PREFIXES

#: the ``format`` values of ``python -m cil_lightning export`` for lvdm models
FORMATS = ("official", "safetensors", "both")
FOLDER_FORMAT = "cil_lightning.lvdm_export"
FOLDER_VERSION = 1
#: official entries that only the source checkpoint supplies (for the message without one)
FROM_SOURCE = (
    "first_stage_model.* (VAE)",
    "cond_stage_model.* (text encoder)",
    "the schedule buffers and scale_arr",
)


def owned_official_state(denoiser: nn.Module) -> dict[str, Tensor]:
    """The adapter's own weights in official names: the network, and the open_clip image tower
    (``embedder.*``) when the adapter's image encoder is it (it may have been trained)."""
    state = official_state_from_network(denoiser.unet)
    if isinstance(denoiser.image_encoder, OpenCLIPImageTokens):
        prefix = ENCODER_PREFIXES["image"]
        state |= {prefix + k: v for k, v in denoiser.image_encoder.state_dict().items()}
    return state


def official_checkpoint(
    denoiser: nn.Module, source: Mapping[str, Tensor] | None, where: str = "the source"
) -> tuple[dict[str, Tensor], list[str]]:
    """(official state dict, what it lacks). With ``source`` (the official state dict the model
    was built from, read from ``where``) the result has every key of ``source`` and lacks
    nothing; without, it is :func:`owned_official_state` and lacks :data:`FROM_SOURCE`."""
    ours = owned_official_state(denoiser)
    if source is None:
        missing = list(FROM_SOURCE)
        if not isinstance(denoiser.image_encoder, OpenCLIPImageTokens):
            missing.insert(2, "embedder.* (image encoder: this model's is not open_clip)")
        return ours, missing
    missing = []
    if any(p.requires_grad for p in denoiser.vae.parameters()):
        # no diffusers-to-LDM VAE conversion here: the source's VAE goes out unchanged
        missing.append("the trained VAE (first_stage_model.* is the source's)")
    return merge_official(source, ours, where), missing


def write_official(denoiser: nn.Module, out: str | Path, source: str | Path | None) -> list[str]:
    """Write the official-layout ``.ckpt`` to ``out``; returns what it lacks (see
    :func:`official_checkpoint`). Fails naming the key when ``source`` is another model's."""
    state, missing = official_checkpoint(
        denoiser, None if source is None else read_state_dict(source), str(source)
    )
    save_official(state, out)
    return missing


def trained_modules(denoiser: nn.Module) -> list[str]:
    """The adapter's children to store in the folder: ``unet``, and every other child with a
    trainable parameter (frozen encoders come back from the model config)."""
    return ["unet"] + [
        name
        for name, module in denoiser.named_children()
        if name != "unet" and any(p.requires_grad for p in module.parameters())
    ]


def write_safetensors(denoiser: nn.Module, out: str | Path, model_config: Mapping) -> Path:
    """Write our safetensors folder to ``out`` (see the module docstring); ``model_config`` is
    the resolved ``model`` node of the run config (a ``_target_`` node). Returns ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    modules = {}
    for name in trained_modules(denoiser):
        state = getattr(denoiser, name).state_dict()
        modules[name] = f"{name}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, out / modules[name])
    config = {
        "format": FOLDER_FORMAT,
        "version": FOLDER_VERSION,
        "model": dict(model_config),
        "fps": float(denoiser.fps),
        "modules": modules,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def load_safetensors_export(folder: str | Path) -> nn.Module:
    """The adapter a :func:`write_safetensors` folder holds, in eval mode: rebuilt from its model
    config (a full-size model reads its official checkpoint for the frozen parts), then every
    stored module loaded strictly; a missing or unexpected key fails naming it and the file."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: not an lvdm safetensors export")
    config = json.loads(path.read_text())
    if config.get("format") != FOLDER_FORMAT or config.get("version") != FOLDER_VERSION:
        raise ValueError(
            f"{path}: format {config.get('format')!r} version {config.get('version')!r}, "
            f"expected {FOLDER_FORMAT!r} version {FOLDER_VERSION}"
        )
    denoiser = instantiate(OmegaConf.create(config["model"]))
    for name, file in config["modules"].items():
        module, state = getattr(denoiser, name), load_file(folder / file)
        check_keys(module.state_dict(), state, str(folder / file))
        module.load_state_dict(state, strict=True)
    denoiser.fps = float(config["fps"])
    return denoiser.eval()
