"""A progress bar that counts what a step-based run counts: optimiser steps out of max_steps."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, counting steps when the run is step-based.

    A run with ``trainer.max_steps`` set and no epoch limit (``max_epochs`` -1 or None: every
    config here) shows ``step <global_step>/<max_steps>`` on one bar that does not restart at
    each pass over the data, so the speed column and the time left refer to the whole run (the
    stock bar reads ``Epoch 0/-2`` and restarts every epoch). Epoch-based runs keep the stock bar.
    """

    def _step_based(self) -> bool:
        trainer = self.trainer
        return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    @property
    def total_train_batches(self):
        if self._step_based():
            return self.trainer.max_steps
        return super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._step_based():
            return super()._get_train_description(current_epoch)
        text = f"step {self.trainer.global_step}/{self.trainer.max_steps}"
        return f"{text:{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if not self._step_based() or self.train_progress_bar_id is None:
            return super().on_train_epoch_start(trainer, pl_module)
        # One bar for the whole run: keep counting instead of resetting at each epoch.
        self._update_step(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._step_based():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-run
        self._update_step(trainer)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _update_step(self, trainer) -> None:
        if self.progress is None or self.train_progress_bar_id is None:
            return
        description = self._get_train_description(trainer.current_epoch)
        if self.theme.description:
            description = f"[{self.theme.description}]{description}"
        self.progress.update(
            self.train_progress_bar_id, completed=trainer.global_step, description=description
        )
