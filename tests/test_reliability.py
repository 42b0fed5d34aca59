"""Distributed draws, signals, non-finite losses and resumption."""

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from cil_lightning.callbacks import SignalCheckpoint
from cil_lightning.lit_module import I2VLitModule

from .conftest import TINY, compose, run_cli
from .probes import SendSignal


def test_two_ddp_ranks_feed_their_denoisers_different_draws(tmp_path):
    """Each rank's training times, condition-noise levels and noise, read off the denoiser's
    input (not replayed from the generator), differ from the other rank's and between steps."""
    out = run_cli(
        "train",
        "trainer.devices=2",
        "+trainer.strategy=ddp",
        "trainer.max_steps=3",
        "callbacks=none",
        *TINY,
        f"hydra.run.dir={tmp_path / 'run'}",
        "+callbacks.probe._target_=tests.probes.DenoiserInputs",
        f"+callbacks.probe.dirpath={tmp_path / 'fed'}",
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    r0 = torch.load(tmp_path / "fed" / "fed_rank0.pt")
    r1 = torch.load(tmp_path / "fed" / "fed_rank1.pt")
    for key in ("sigma", "beta"):
        assert r0[key].shape == r1[key].shape == (3, 4)  # 3 steps of 4 clips
        assert not torch.isclose(r0[key], r1[key]).any(), key  # no shared draws between ranks
        assert not torch.isclose(r0[key][0], r0[key][1]).any(), key  # nor between steps
    assert r0["eps"].shape == r1["eps"].shape == (3, 4, 4, 3, 16, 16)
    e0, e1 = (r["eps"].flatten(2).double() for r in (r0, r1))
    # The recovered noise is standard normal (so the recovery is right) ...
    assert ((e0.std(dim=2) - 1).abs() < 0.15).all() and ((e1.std(dim=2) - 1).abs() < 0.15).all()
    # ... and uncorrelated between the ranks, sample by sample (1 if shared).
    assert ((e0 * e1).mean(dim=2).abs() < 0.2).all()


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


def _poisoned(cfg, size: int = 2):
    """The data module cut to its first ``size`` clips, one batch of all of them, item 0 NaN: every
    batch holds item 0, so every step is bad (a small set keeps each step cheap)."""
    dm = instantiate(cfg.data, batch_size=size)
    dm.train_set = PoisonAt(torch.utils.data.Subset(dm.train_set, range(size)), 0)
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
    common = [
        "train",
        *TINY,
        "trainer.max_steps=8",
        "trainer.log_every_n_steps=1",
        "trainer.check_val_every_n_epoch=1",
        "~callbacks.validation_metrics",
        "callbacks.model_checkpoint.every_n_train_steps=100",
    ]

    def run(run_dir, *extra):
        return run_cli(*common, f"hydra.run.dir={run_dir}", *extra)

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


def _fit_with_ema_and_accumulation(cfg, tmp_path, ckpt_path=None, callbacks=()):
    """3 optimiser steps of 2 micro-batches each, EMA 0.9 with warm-up, a checkpoint at step 2."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as the train task does
    module = _module(
        cfg,
        lr_scheduler=instantiate(cfg.lr_scheduler),
        ema_decay=0.9,
        ema_warmup=True,
        seed=cfg.seed,
    )
    saver = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", every_n_train_steps=2, save_top_k=-1, filename="{step}"
    )
    trainer = _trainer(
        tmp_path,
        3,
        [saver, *callbacks],
        enable_checkpointing=True,
        accumulate_grad_batches=2,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
    )
    trainer.fit(module, datamodule=instantiate(cfg.data), ckpt_path=ckpt_path)
    assert trainer.global_step == 3
    return module, trainer


def _assert_same_tensors(got, want, what: str) -> None:
    """Nested dicts/lists of tensors and numbers: equal, tensors bit for bit."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), what
        for key in want:
            _assert_same_tensors(got[key], want[key], f"{what}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_tensors(g, w, f"{what}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert torch.equal(got, want), what
    else:
        assert got == want, what


def test_resume_with_ema_and_accumulation_reproduces_weights_ema_and_optimiser(tmp_path):
    """Resumed from its step-2 checkpoint, a run with EMA (warm-up on) and 2 micro-batches per
    step ends with exactly the uninterrupted run's weights, EMA, EMA count, Adam moments and LR
    schedule. (The checkpoint comes from the uninterrupted run itself: saving does not change a
    run, and the kill-and-resume test above covers the interruption.) Two frames, two clips per
    micro-batch: a few seconds on the CPU."""
    small = ["data.num_frames=2", "data.height=16", "data.width=16", "data.batch_size=2"]
    cfg = compose("train", [*small, "logger=csv"], tmp_path)
    full, full_trainer = _fit_with_ema_and_accumulation(cfg, tmp_path / "full")
    ckpt = tmp_path / "full" / "checkpoints" / "step=2.ckpt"
    assert torch.load(ckpt, weights_only=False)["state_dict"]["ema.n_averaged"] == 2
    resumed, resumed_trainer = _fit_with_ema_and_accumulation(cfg, tmp_path / "resumed", ckpt)

    want, got = full.state_dict(), resumed.state_dict()
    assert int(want["ema.n_averaged"]) == 3  # one EMA update per optimiser step, not per batch
    assert any(k.startswith("ema.module.") for k in want)
    _assert_same_tensors(got, want, "state_dict")  # weights, EMA weights and n_averaged
    _assert_same_tensors(
        resumed_trainer.optimizers[0].state_dict(),
        full_trainer.optimizers[0].state_dict(),
        "optimizer",
    )
    _assert_same_tensors(
        resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict(),
        full_trainer.lr_scheduler_configs[0].scheduler.state_dict(),
        "lr_scheduler",
    )
    # Not vacuous: the EMA trails the weights.
    assert not torch.equal(want["ema.module.conv_in.weight"], want["denoiser.unet.conv_in.weight"])


def test_a_signal_between_micro_batches_still_resumes_exactly(tmp_path):
    """SIGUSR1 (SLURM's warning before the time limit) may come at any batch end; with 2
    micro-batches per step, here after the first micro-batch of step 3. SIGUSR1 saves and goes
    on, so the signalled run is itself the uninterrupted one."""
    small = ["data.num_frames=2", "data.height=16", "data.width=16", "data.batch_size=2"]
    cfg = compose("train", [*small, "logger=csv"], tmp_path)
    saver = SignalCheckpoint(dirpath=str(tmp_path / "signal"))
    signal_between = SendSignal(at_step=2, micro_batch=0)
    full, _ = _fit_with_ema_and_accumulation(
        cfg, tmp_path / "full", callbacks=[signal_between, saver]
    )
    assert signal_between.sent and len(saver.saved) == 1
    resumed, _ = _fit_with_ema_and_accumulation(cfg, tmp_path / "resumed", saver.saved[0])
    _assert_same_tensors(resumed.state_dict(), full.state_dict(), "state_dict")
