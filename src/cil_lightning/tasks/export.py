"""``python -m cil_lightning export ckpt=... out=...``: a trained model in its family's layouts.

What is written depends on the checkpoint's adapter (:data:`EXPORTS`):

* SVD (``format=diffusers``): the (EMA) UNet with ``save_pretrained`` together with the VAE, CLIP
  image encoder, image processor and SVD's scheduler, so
  ``StableVideoDiffusionPipeline.from_pretrained(out)`` loads it unchanged.
* Wan and I2VGen-XL (``format=diffusers``): ``WanImageToVideoPipeline`` / ``I2VGenXLPipeline``
  folders without text encoder (they take ``prompt_embeds``).
* lvdm, DynamiCrafter and VideoCrafter1 (``format=both``, ``official`` or ``safetensors``):
  ``out/model.ckpt`` in the official layout, its VAE, text encoder and schedule buffers copied
  from ``source`` (default: the run config's ``model.ckpt``); and our safetensors folder
  (``out/config.json`` and ``out/<module>.safetensors``), see ``models/lvdm/export.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import ConfigError, validate
from . import run_hydra_task


def _diffusers(family: str) -> Callable[..., list[str]]:
    """The export of a model diffusers ships: the family module's ``to_pipeline`` saved with
    ``save_pretrained`` (Wan and I2VGen-XL pipelines hold no text encoder: they are called with
    ``prompt_embeds``, see ``models/prompt_embeds.py``)."""

    def write(denoiser, run_cfg: DictConfig, cfg: DictConfig, fmt: str) -> list[str]:
        from importlib import import_module

        pipeline = import_module(f"..models.{family}", __package__).to_pipeline(denoiser)
        pipeline.save_pretrained(cfg.out, safe_serialization=True)
        return [f"wrote a {type(pipeline).__name__} folder to {cfg.out}"]

    return write


def _lvdm(denoiser, run_cfg: DictConfig, cfg: DictConfig, fmt: str) -> list[str]:
    from ..models.lvdm.export import write_official, write_safetensors

    out, lines = Path(cfg.out), []
    if fmt in ("official", "both"):
        source = _official_source(cfg, run_cfg)
        missing = write_official(denoiser, out / "model.ckpt", source)
        lines.append(f"wrote an official-layout checkpoint {out / 'model.ckpt'}")
        if source is None:
            lines.append(
                "  the run's model was not built from an official checkpoint (no model.ckpt in "
                "its config): it holds only this model's own weights and lacks "
                + "; ".join(missing)
                + ", so the official scripts cannot load it with strict=True"
            )
        elif missing:
            lines.append("  not exported: " + "; ".join(missing))
    if fmt in ("safetensors", "both"):
        model_cfg = OmegaConf.to_container(run_cfg.model, resolve=True)
        write_safetensors(denoiser, out, model_cfg)
        lines.append(f"wrote a safetensors folder (config.json, *.safetensors) to {out}")
    return lines


def _official_source(cfg: DictConfig, run_cfg: DictConfig) -> str | None:
    """The official checkpoint the non-network entries come from: ``source=``, else the run
    config's ``model.ckpt`` (None when the model has none, e.g. a tiny random one)."""
    if cfg.get("source"):
        return str(cfg.source)
    path = OmegaConf.select(run_cfg, "model.ckpt", default=None)
    return None if path is None else str(path)


#: adapter class (or base class) name -> (its export, the formats it writes, default first)
EXPORTS: dict[str, tuple[Callable[..., list[str]], tuple[str, ...]]] = {
    "SVDDenoiser": (_diffusers("svd"), ("diffusers",)),
    "WanDenoiser": (_diffusers("wan"), ("diffusers",)),
    "I2VGenXLDenoiser": (_diffusers("i2vgen_xl"), ("diffusers",)),
    "LvdmDenoiser": (_lvdm, ("both", "official", "safetensors")),
}
FORMATS = tuple(dict.fromkeys(f for _, formats in EXPORTS.values() for f in formats))


def export(cfg: DictConfig) -> Path:
    validate(cfg, inputs=True)  # a ckpt that is not a training checkpoint fails here
    if not cfg.get("ckpt"):
        raise ConfigError("ckpt=PATH is required: the training checkpoint to export")
    if not cfg.get("out"):
        raise ConfigError("out=DIR is required: where the exported model goes")
    fmt = cfg.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(
            f"invalid config values:\n  format={fmt!r} is out of range; allowed: null (the "
            f"model's default) or {', '.join(FORMATS)}"
        )
    from ..models.checkpoint import load_denoiser

    denoiser, run_cfg = load_denoiser(cfg.ckpt, use_ema=cfg.use_ema)
    names = [cls.__name__ for cls in type(denoiser).__mro__]
    kind = next((name for name in names if name in EXPORTS), None)
    if kind is None:
        raise ConfigError(
            f"export writes {' and '.join(EXPORTS)} models; this checkpoint's model is a {names[0]}"
        )
    write, formats = EXPORTS[kind]
    if fmt is not None and fmt not in formats:
        raise ConfigError(f"format={fmt!r}: a {kind} model exports as {', '.join(formats)}")
    for line in write(denoiser, run_cfg, cfg, fmt or formats[0]):
        print(f"cil_lightning export: {line}")
    return Path(cfg.out)


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, export)
