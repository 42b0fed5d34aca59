"""The step progress bar: step / max_steps on one bar across epochs, stock bar otherwise."""

import lightning as L
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from torch.utils.data import DataLoader

from cil_lightning.callbacks import StepProgressBar


class _TwoBatches(BoringModel):
    def train_dataloader(self):
        return DataLoader(torch.randn(8, 32), batch_size=4)  # 2 batches: 5 steps span 3 epochs


def _fit(**trainer_kwargs) -> StepProgressBar:
    bar = StepProgressBar()
    trainer = L.Trainer(
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(_TwoBatches())
    return bar


def test_step_based_run_counts_steps_on_one_bar():
    bar = _fit(max_steps=5, max_epochs=-1)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.total, task.completed) == (5, 5)
    assert "step 5/5" in task.description and "Epoch" not in task.description
    # One train bar for the whole run, not one per epoch.
    assert sum("step" in t.description for t in bar.progress.tasks) == 1


def test_epoch_based_run_keeps_the_stock_bar():
    bar = _fit(max_epochs=2)
    task = bar.progress.tasks[bar.train_progress_bar_id]
    assert (task.total, task.completed) == (2, 2)
    assert "Epoch 1/1" in task.description
