"""Callbacks that tests inject into CLI runs with `+callbacks.NAME._target_=tests.probes...`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
import torch


class DenoiserInputs(L.Callback):
    """Writes what this rank fed its denoiser at each training step to ``{dirpath}/fed_rank{r}.pt``.

    Wraps the adapter's forward, so it sees the draws the loss actually used, whatever generator
    they came from: per training call, sigma [B], the condition-noise level beta [B] (the
    condition's ``noise_level``) and the noise eps = (x_t - alpha x0) / sigma [B, F, C, H, W],
    with x0 the batch's video (a pixel-space model: ``encode_video`` is the identity).
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.fed: dict[str, list] = {"sigma": [], "beta": [], "eps": []}
        self._x0 = None

    def on_fit_start(self, trainer, pl_module) -> None:
        denoiser = pl_module.denoiser
        forward = denoiser.forward

        def recording(x_t, t, cond):
            if trainer.training:
                alpha, sigma = denoiser.schedule.alpha_sigma(t)
                shape = (-1,) + (1,) * (x_t.ndim - 1)
                eps = (x_t - alpha.view(shape) * self._x0) / sigma.view(shape)
                for key, value in (("sigma", t), ("beta", cond.noise_level), ("eps", eps)):
                    self.fed[key].append(value.detach().cpu().clone())
            return forward(x_t, t, cond)

        denoiser.forward = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._x0 = batch["video"]

    def on_train_end(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        fed = {key: torch.stack(values) for key, values in self.fed.items()}
        torch.save(fed, self.dirpath / f"fed_rank{trainer.global_rank}.pt")


class SendSignal(L.Callback):
    """Sends ``signame`` to this process once, at the end of a micro-batch of step ``at_step``.

    ``micro_batch`` None: the first batch end at ``global_step == at_step`` (right after that
    optimiser step); k: the batch end whose index in its accumulation window is k (with
    ``accumulate_grad_batches`` > 1, k < accumulate - 1 falls between two micro-batches).
    """

    def __init__(self, at_step: int, signame: str = "SIGUSR1", micro_batch: int | None = None):
        self.at_step, self.signum = at_step, getattr(signal, signame)
        self.micro_batch, self.sent = micro_batch, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.sent or trainer.global_step != self.at_step:
            return
        if (
            self.micro_batch is None
            or batch_idx % trainer.accumulate_grad_batches == self.micro_batch
        ):
            self.sent = True
            os.kill(os.getpid(), self.signum)
