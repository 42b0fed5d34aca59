"""The LightningModule: glue between an adapter, a condition-noise law and the loss."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

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
        val_seed: seed of the fixed noise and times that make ``val/loss`` comparable across
            evaluations.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        cond_noise: CondNoise,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        weighting: str = "edm",
        val_seed: int = 1234,
    ) -> None:
        super().__init__()
        self.denoiser, self.cond_noise = denoiser, cond_noise
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.weighting, self.val_seed = weighting, val_seed

    def _loss(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        x0 = self.denoiser.encode_video(batch["video"])
        cond = self.denoiser.encode_condition(batch["cond_frame"], fps=batch.get("fps"))
        return denoising_loss(
            self.denoiser, self.denoiser.schedule, x0, cond, self.cond_noise,
            weighting=self.weighting, generator=generator,
        )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._loss(batch).mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(self.val_seed + batch_idx)
        loss = self._loss(batch, generator).mean()
        self.log("val/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.denoiser.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
