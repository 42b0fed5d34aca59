"""The LightningModule: glue between an adapter, a condition-noise law and the loss."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .diffusion.cond_noise import CondNoise
from .diffusion.loss import denoising_loss


class I2VLitModule(L.LightningModule):
    """Trains an image-to-video denoiser with a condition-noise strategy (TimeNoise by default).

    Args:
        denoiser: a model adapter from ``models/`` (owns schedule, preconditioning, conditioning).
        cond_noise: the law of the condition-noise level beta.
        optimizer: partial optimiser, called with the trainable parameters.
        lr_scheduler: partial scheduler, called with the optimiser; stepped every step.
        weighting: loss weighting (``edm``, ``eps``, ``v``, ``flow``; see ``diffusion/loss.py``).
        ema_decay: keep an exponential moving average of the UNet weights with this decay
            (torch's ``AveragedModel``; SVD reference: 0.9999); None keeps none.
        val_seed: seed of the fixed noise and times that make ``val/loss`` comparable across
            evaluations.
        run_config: the resolved run config, stored in every checkpoint so that ``sample`` and
            ``export`` can rebuild the model from the checkpoint alone.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        cond_noise: CondNoise,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        weighting: str = "edm",
        ema_decay: float | None = None,
        val_seed: int = 1234,
        run_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.denoiser, self.cond_noise = denoiser, cond_noise
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.weighting, self.val_seed, self.run_config = weighting, val_seed, run_config
        self.ema = None
        if ema_decay is not None:
            if not 0.0 < ema_decay < 1.0:
                raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
            self.ema = AveragedModel(
                denoiser.unet, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)

    def _loss(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        x0 = self.denoiser.encode_video(batch["video"], names=batch.get("name"))
        cond = self.denoiser.encode_condition(batch["cond_frame"], fps=batch.get("fps"))
        return denoising_loss(
            self.denoiser,
            self.denoiser.schedule,
            x0,
            cond,
            self.cond_noise,
            weighting=self.weighting,
            generator=generator,
        )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._loss(batch).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: checkpoint callbacks run before that hook, and a
        # checkpoint must hold the EMA of the very weights it holds.
        if self.ema is not None:
            self.ema.update_parameters(self.denoiser.unet)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["cil_lightning_config"] = self.run_config

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(self.val_seed + batch_idx)
        loss = self._loss(batch, generator).mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.denoiser.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
