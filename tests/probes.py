"""Callbacks that tests inject into CLI runs with `+callbacks.NAME._target_=tests.probes...`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch


class DrawProbe(L.Callback):
    """Writes the training times each rank draws at each step to ``{dirpath}/draws_rank{r}.pt``.

    It replays ``step_generator`` before the step runs: for a pixel-space model the loss's first
    draw from that generator is the batch's training times.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath, self.draws = Path(dirpath), []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        g = pl_module.step_generator(batch_idx)
        B = batch["video"].shape[0]
        self.draws.append(pl_module.denoiser.schedule.sample_training_time(B, generator=g))

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        torch.save(torch.stack(self.draws), self.dirpath / f"draws_rank{trainer.global_rank}.pt")


class SendSignal(L.Callback):
    """Sends ``signame`` to this process at the end of step ``at_step``."""

    def __init__(self, at_step: int, signame: str = "SIGUSR1") -> None:
        self.at_step, self.signum = at_step, getattr(signal, signame)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
