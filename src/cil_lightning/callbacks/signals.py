"""Checkpoint on SIGUSR1 / SIGTERM (preemption), so ``ckpt_path=last`` resumes where it stopped."""

from __future__ import annotations

import signal
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class SignalCheckpoint(Checkpoint):
    """On SIGUSR1 or SIGTERM, write ``{dirpath}/last.ckpt`` at the end of the current step.

    The SIGUSR1 handler only sets a flag: the checkpoint is written at the next batch end that
    closes an optimiser step (with gradient accumulation, not between micro-batches), when model,
    optimiser, EMA and data position agree, on every rank (saving is collective). SIGUSR1
    (SLURM's warning before the time limit; ``--signal=USR1@90``) saves and goes on. SIGTERM is
    caught by Lightning itself, which stops the run with ``SIGTERMException`` right after this
    callback has saved. Under SLURM with Lightning's auto-requeue, Lightning owns SIGUSR1 (it
    saves an ``hpc_ckpt`` and requeues) and this callback leaves it alone.

    A ``Checkpoint`` subclass, so Lightning runs it after the other callbacks' batch-end hooks
    (whose state then reaches the checkpoint).

    Args:
        dirpath: the checkpoint folder (the ModelCheckpoint's, so ``ckpt_path=last`` finds it).
        sigusr1: handle SIGUSR1 (outside SLURM auto-requeue).
    """

    def __init__(self, dirpath: str, sigusr1: bool = True) -> None:
        self.dirpath, self.sigusr1 = Path(dirpath), sigusr1
        self.saved: list[Path] = []
        self._usr1 = False
        self._previous = None

    def _on_usr1(self, signum, frame) -> None:
        self._usr1 = True

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        if self.sigusr1 and not slurm_requeue and hasattr(signal, "SIGUSR1"):
            self._previous = signal.signal(signal.SIGUSR1, self._on_usr1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Agree across ranks: a signal may reach only some of them.
        local = self._usr1 or trainer.received_sigterm
        if not trainer.strategy.reduce_boolean_decision(local, all=False):
            return
        # Between two micro-batches of one optimiser step the gradient accumulated so far is in
        # no checkpoint: SIGUSR1 waits for the step boundary (the same decision on every rank).
        mid_step = trainer.fit_loop.epoch_loop._should_accumulate()
        if mid_step and not trainer.received_sigterm:
            return
        if mid_step:
            rank_zero_warn(
                f"SIGTERM between micro-batches of step {trainer.global_step}: the checkpoint "
                "holds the weights before this step, and the micro-batches already seen in it "
                "are not replayed on resume (gradient accumulation)"
            )
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        self.saved.append(path)
        what = "SIGTERM" if trainer.received_sigterm else "SIGUSR1"
        rank_zero_info(f"{what}: saved {path} at step {trainer.global_step}")
        self._usr1 = False

    def on_train_end(self, trainer, pl_module) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None
