"""``python -m cil_lightning train``: fit a denoiser with Lightning, configured by Hydra."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import validate
from ..config.sweep import final_values, objective
from . import run_hydra_task


def train(cfg: DictConfig) -> dict:
    """Build everything from ``cfg`` and fit. Returns the paths of what the run wrote."""
    validate(cfg, inputs=True)  # before any heavy import or model build

    import lightning as L
    from hydra.utils import instantiate

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    run_config = OmegaConf.to_container(cfg, resolve=True)  # logged, and stored in checkpoints
    module = instantiate(cfg.module)(run_config=run_config)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in trainer.loggers:
        logger.log_hyperparams(run_config)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    value = objective(cfg, final_values(trainer, callbacks))  # None unless optimized_metric set

    outputs = {"output_dir": Path(cfg.paths.output_dir)}
    if trainer.checkpoint_callback is not None:
        outputs["checkpoint"] = trainer.checkpoint_callback.last_model_path or None
    for cb in callbacks:
        if getattr(cb, "written", None):
            outputs["videos"] = cb.written[0].parent
        if getattr(cb, "png_path", None):
            outputs["loss_curve"] = cb.png_path
    if trainer.is_global_zero:
        print("\ncil_lightning train finished; outputs:")
        for key, path in outputs.items():  # not `value`: that is the objective returned below
            print(f"  {key:<11} {path}")
    return outputs if value is None else value


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, train)
