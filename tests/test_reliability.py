"""Distributed draws, signals, non-finite losses and resumption."""

import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from cil_lightning.callbacks import SignalCheckpoint
from cil_lightning.lit_module import I2VLitModule

from .conftest import ROOT, compose
from .probes import SendSignal

TINY = ["data.num_frames=4", "data.height=16", "data.width=16", "logger=csv"]


def test_two_ddp_ranks_train_and_draw_different_times(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cil_lightning",
            "train",
            "trainer.devices=2",
            "+trainer.strategy=ddp",
            "trainer.max_steps=3",
            "callbacks=none",
            *TINY,
            f"hydra.run.dir={tmp_path / 'run'}",
            "+callbacks.probe._target_=tests.probes.DrawProbe",
            f"+callbacks.probe.dirpath={tmp_path / 'draws'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r0 = torch.load(tmp_path / "draws" / "draws_rank0.pt")
    r1 = torch.load(tmp_path / "draws" / "draws_rank1.pt")
    assert r0.shape == r1.shape == (3, 4)
    assert not torch.isclose(r0, r1).any()  # no shared draws between ranks
    assert not torch.isclose(r0[0], r0[1]).any()  # nor between steps


def _module(cfg, **kwargs):
    return I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
        **kwargs,
    )


def _trainer(tmp_path, max_steps, callbacks=(), **kwargs):
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        default_root_dir=tmp_path,
        limit_val_batches=0,
        **kwargs,
    )


def test_sigusr1_writes_a_checkpoint_and_training_goes_on(tmp_path):
    cfg = compose("train", TINY, tmp_path)
    saver = SignalCheckpoint(dirpath=str(tmp_path / "checkpoints"))
    trainer = _trainer(tmp_path, 4, [SendSignal(at_step=2), saver], enable_checkpointing=True)
    trainer.fit(_module(cfg), datamodule=instantiate(cfg.data))
    assert trainer.global_step == 4
    assert saver.saved == [tmp_path / "checkpoints" / "last.ckpt"]
    ckpt = torch.load(saver.saved[0], map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2


class PoisonAt:
    """Wraps a datamodule's train set: the item at index `at` carries a NaN video."""

    def __init__(self, dataset, at):
        self.dataset, self.at = dataset, at

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        if i == self.at:
            item["video"] = item["video"].clone().fill_(float("nan"))
        return item


def _poisoned(cfg):
    dm = instantiate(cfg.data, batch_size=len(instantiate(cfg.data).train_set))
    dm.train_set = PoisonAt(dm.train_set, 0)  # every batch holds item 0: the first step is bad
    return dm


def test_non_finite_loss_stops_naming_the_step_and_saves(tmp_path):
    cfg = compose("train", TINY, tmp_path)
    trainer = _trainer(tmp_path, 3)
    with pytest.raises(FloatingPointError, match="at step 0"):
        trainer.fit(_module(cfg), datamodule=_poisoned(cfg))
    assert (tmp_path / "checkpoints" / "nan_step000000.ckpt").is_file()


def test_non_finite_loss_can_skip_the_batch(tmp_path):
    cfg = compose("train", TINY, tmp_path)
    module = _module(cfg, nan_policy="skip")
    before = [p.detach().clone() for p in module.denoiser.parameters()]
    trainer = _trainer(tmp_path, 2, max_epochs=1, limit_train_batches=3)
    trainer.fit(module, datamodule=_poisoned(cfg))
    assert module.skipped_batches == 1
    after = list(module.denoiser.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # no step was taken


def _losses(run_dir):
    rows = (run_dir / "loss_curve.csv").read_text().splitlines()[1:]
    return {int(step): float(loss) for step, loss in (r.split(",") for r in rows)}


def test_killed_and_resumed_run_reproduces_the_uninterrupted_losses(tmp_path):
    """SIGTERM mid-run, then ckpt_path=last: the same losses, bit for bit, on the CPU."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    common = [
        sys.executable,
        "-m",
        "cil_lightning",
        "train",
        *TINY,
        "trainer.max_steps=8",
        "trainer.log_every_n_steps=1",
        "trainer.check_val_every_n_epoch=1",
        "~callbacks.video_samples",
        "~callbacks.validation_metrics",
        "callbacks.model_checkpoint.every_n_train_steps=100",
    ]

    def run(run_dir, *extra):
        return subprocess.run(
            [*common, f"hydra.run.dir={run_dir}", *extra],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=ROOT,
        )

    full = run(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run(
        tmp_path / "resumed",
        "+callbacks.kill._target_=tests.probes.SendSignal",
        "+callbacks.kill.at_step=3",
        "+callbacks.kill.signame=SIGTERM",
    )
    # Lightning ends a SIGTERM'd fit with a graceful SystemExit: the run stops before finishing.
    assert "train finished" not in killed.stdout, killed.stdout[-2000:]
    ckpt = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    resumed = run(tmp_path / "resumed", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert sorted(expected) == sorted(got) == list(range(1, 9))
    assert got == expected
