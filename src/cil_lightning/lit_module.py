"""The LightningModule: glue between an adapter and the loss, with EMA and the NaN policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from .data.video import to_unit_range
from .diffusion.cond_noise import CondNoise
from .diffusion.loss import DenoisingLoss
from .ema import build_ema
from .models.checkpoint import CONDITIONING_KEY


class I2VLitModule(L.LightningModule):
    """Trains an image-to-video denoiser with a condition-noise strategy (TimeNoise by default).

    Args:
        denoiser: a model adapter from ``models/`` (owns schedule, preconditioning, conditioning).
        cond_noise: the law of the condition-noise level beta; the loss (``DenoisingLoss``) draws
            it at each sample's time. Time law, noising and loss weight are the denoiser's
            schedule's, so they always belong to one family.
        optimizer: partial optimiser, called with the trainable parameters.
        lr_scheduler: partial scheduler, called with the optimiser; stepped every step.
        ema_decay: keep an exponential moving average of the UNet weights with this decay
            (torch's ``AveragedModel``; SVD reference: 0.9999); None keeps none.
        ema_warmup: warm the EMA decay up as diffusers' ``EMAModel`` (the SVD reference) does,
            min((1 + s) / (10 + s), ema_decay) at update s + 1 (``ema.py``); False: constant.
        seed: base seed of the training draws (t, condition noise, eps, CFG dropout, VAE
            posterior). Each step draws from a generator seeded by (seed, rank, step), so ranks
            draw differently and a resumed run draws exactly what the uninterrupted run drew.
        nan_policy: a non-finite loss ``stop``s the run (after saving ``nan_step<N>.ckpt`` for
            debugging) or ``skip``s the batch (the weights do not move; the step counter, LR
            schedule and EMA still advance); every rank takes the same decision. With a fused
            optimiser (``fused=True``) the check costs no host sync: a device flag makes the
            optimiser skip the step (its ``found_inf``, as under ``GradScaler``), the bad steps
            are recorded on the device and read at the logging interval, at the end of each epoch
            and of the fit; ``stop`` then keeps skipping every step until the read, so the weights
            saved are those before the first bad step. A micro-batch's non-finite loss skips its
            whole optimiser step. Other optimisers read the loss on the host every step.
        val_seed: seed of the fixed noise and times that make ``val/loss`` comparable across
            evaluations.
        run_config: the resolved run config, stored in every checkpoint so that ``sample`` and
            ``export`` can rebuild the model from the checkpoint alone.
        compile_unet: ``torch.compile`` the UNet in place (``nn.Module.compile``: parameter names
            and checkpoints unchanged; the EMA copy stays eager). Pays off on a GPU for long runs
            of fixed shapes; the first steps (and any new shape) pay the compilation.
    """

    def __init__(
        self,
        denoiser: nn.Module,
        cond_noise: CondNoise,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        ema_decay: float | None = None,
        ema_warmup: bool = True,
        seed: int = 0,
        nan_policy: str = "stop",
        val_seed: int = 1234,
        run_config: dict | None = None,
        compile_unet: bool = False,
    ) -> None:
        super().__init__()
        self.denoiser, self.loss = denoiser, DenoisingLoss(cond_noise)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.val_seed, self.run_config = val_seed, run_config
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {nan_policy!r}")
        self.seed, self.nan_policy = int(seed), nan_policy
        self.skipped_batches = 0
        # Device-side non-finite record (fused optimisers): the optimiser's skip flag for the
        # current step, and [first bad step, last bad step, bad micro-batches] since the last read.
        self._found_inf: Tensor | None = None
        self._bad: Tensor | None = None
        self._bad_loss: Tensor | None = None
        self.compile_unet = bool(compile_unet)
        # Sums of the fps and motion bucket fed in training, and their count: the checkpoint
        # records their means so that sampling defaults to the conditioning the model was trained
        # with. A device tensor (not a buffer: DDP would broadcast it), so recording costs no sync.
        self.conditioning_sums: Tensor | None = None
        self.ema = None
        if ema_decay is not None:
            self.ema = build_ema(denoiser.unet, ema_decay, warmup=ema_warmup)

    def step_generator(self, batch_idx: int) -> torch.Generator:
        """The generator of one training micro-batch, seeded by (seed, rank, step, micro-batch).

        Lives on the module's device, so no noise crosses from the host each step.
        """
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        key = [self.seed, self.global_rank, self.global_step, batch_idx % accumulate]
        state = int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator(device=self.device).manual_seed(state)

    def _loss(self, batch: dict, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample loss [B] of a batch: encode video and condition frame, record the
        conditioning fed in training, call the loss. The VAE posterior draw comes first.

        uint8 clips (``ClipSpec.uint8``: a quarter of float32's bytes through the workers and to
        the device) become [-1, 1] floats here, on the device."""
        video = to_unit_range(batch["video"])
        x0 = self.denoiser.encode_video(video, names=batch.get("name"), generator=generator)
        cond = self.denoiser.encode_condition(
            to_unit_range(batch["cond_frame"]),
            fps=batch.get("fps"),
            num_frames=video.shape[1],
            stride=batch.get("stride"),
            caption=batch.get("caption"),
        )
        if self.training:
            self._record_conditioning(cond)
        return self.loss(self.denoiser, x0, cond, generator)

    def _record_conditioning(self, cond) -> None:
        fps, bucket = getattr(cond, "fps", None), getattr(cond, "motion_bucket_id", None)
        if fps is None or bucket is None:
            return
        with torch.no_grad():
            step = torch.stack([fps.double().sum(), bucket.double().sum()])
            step = torch.cat([step, step.new_full((1,), fps.numel())])
            sums = self.conditioning_sums
            self.conditioning_sums = step if sums is None else sums.to(step.device) + step

    def training_conditioning(self) -> dict[str, float] | None:
        """Mean fps and motion bucket fed in training so far (None before any step)."""
        if self.conditioning_sums is None:
            return None
        fps_sum, bucket_sum, n = self.conditioning_sums.tolist()
        return {"fps": fps_sum / n, "motion_bucket_id": bucket_sum / n}

    def configure_model(self) -> None:
        if self.compile_unet and not getattr(self, "_unet_compiled", False):
            self.denoiser.unet.compile()
            self._unet_compiled = True

    def on_train_start(self) -> None:
        optimizers = self.trainer.optimizers
        if len(optimizers) == 1 and optimizers[0].defaults.get("fused"):
            device = self.device
            self._found_inf = torch.zeros((), device=device)
            self._bad = torch.tensor([-1, -1, 0], device=device)
            self._bad_loss = torch.zeros((), device=device)
            # Fused torch optimisers skip the whole update (parameters, moments, step count)
            # where this is 1, without a host sync; read after the closure has run.
            optimizers[0].found_inf = self._found_inf

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        loss = self._loss(batch, self.step_generator(batch_idx)).mean()
        if self._found_inf is not None:
            self._flag_non_finite(loss.detach(), batch_idx)
        else:
            # One host sync per step for the check; every rank takes the same decision, or DDP's
            # gradient all-reduce would hang on the ranks that skip.
            bad = not bool(torch.isfinite(loss))
            if self._trainer is not None:
                bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
            if bad:
                return self._on_non_finite(loss)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def _flag_non_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Record a non-finite loss [] on the device and set the optimiser's skip flag."""
        bad = (~torch.isfinite(loss)).float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # A device collective, not a host sync: every rank skips, as every rank's gradients
            # are averaged with the bad one.
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        accumulate = self.trainer.accumulate_grad_batches
        sticky = self.nan_policy == "stop" or batch_idx % accumulate != 0
        self._found_inf.copy_(torch.maximum(self._found_inf, bad) if sticky else bad)
        first, last, count = self._bad.unbind()
        newly = bad > 0
        step = self.global_step
        self._bad_loss.copy_(torch.where(newly & (first < 0), loss.float(), self._bad_loss))
        self._bad.copy_(
            torch.stack(
                [
                    torch.where(newly & (first < 0), step, first),
                    torch.where(newly, step, last),
                    count + newly.long(),
                ]
            )
        )

    def check_non_finite(self, log: bool = True) -> None:
        """Read the device record of non-finite losses (one host sync) and apply ``nan_policy``.

        Called at the logging interval, at each epoch's end and at the fit's end.
        """
        if self._bad is None:
            return
        first, last, count = self._bad.tolist()
        if count == 0:
            return
        if self.nan_policy == "skip":
            self._bad.copy_(torch.tensor([-1, -1, 0]))
            self.skipped_batches += count
            if log:
                self.log("train/skipped_batches", float(self.skipped_batches))
            rank_zero_warn(
                f"{count} non-finite loss(es) at steps {first} to {last} (first "
                f"{self._bad_loss.item()}): those optimiser steps were skipped"
            )
            return
        self._raise_non_finite(self._bad_loss.item(), first)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self._bad is not None and self.global_step % self.trainer.log_every_n_steps == 0:
            self.check_non_finite()

    def on_train_epoch_end(self) -> None:
        self.check_non_finite()

    def on_train_end(self) -> None:
        self.check_non_finite(log=False)

    def _on_non_finite(self, loss: Tensor) -> None:
        step = self.global_step
        if self.nan_policy == "skip":
            self.skipped_batches += 1
            self.log("train/skipped_batches", float(self.skipped_batches))
            rank_zero_warn(f"non-finite loss ({loss.item()}) at step {step}: batch skipped")
            return None
        self._raise_non_finite(loss.item(), step)

    def _raise_non_finite(self, loss: float, step: int) -> None:
        path = Path(self.trainer.default_root_dir) / "checkpoints" / f"nan_step{step:06d}.ckpt"
        self.trainer.save_checkpoint(path)
        raise FloatingPointError(
            f"non-finite training loss ({loss}) at step {step}; the model weights before this "
            f"step are saved to {path} for debugging (nan_policy=skip skips such batches)"
        )

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: checkpoint callbacks run before that hook, and a
        # checkpoint must hold the EMA of the very weights it holds.
        if self.ema is not None:
            self.ema.update_parameters(self.denoiser.unet)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["cil_lightning_config"] = self.run_config
        if self.conditioning_sums is not None:
            checkpoint[CONDITIONING_KEY] = {
                "sums": self.conditioning_sums.tolist(),
                "mean": self.training_conditioning(),
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(CONDITIONING_KEY)
        if saved is not None:
            self.conditioning_sums = torch.tensor(saved["sums"], dtype=torch.float64)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator(device=self.device).manual_seed(self.val_seed + batch_idx)
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
