"""No host-device sync in a training step, and the non-finite-loss policy without one."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode

import cil_lightning
from cil_lightning.diffusion.cond_noise import TimeNoise
from cil_lightning.lit_module import I2VLitModule
from cil_lightning.models.tiny import tiny_svd

from ..conftest import compose
from ..test_reliability import TINY, _module, _poisoned, _trainer

PROJECT = str(Path(cil_lightning.__file__).resolve().parent)
TORCH = str(Path(torch.__file__).resolve().parent)
# Tensor methods that wait for the device (or copy to the host).
SYNCS = {"item", "__bool__", "tolist", "cpu", "numpy", "__float__", "__int__"}


def _to_cpu(args, kwargs) -> bool:
    """``.to("cpu")`` spelled out (on a CPU run ``.to(x.device)`` is a no-op, not a copy back)."""
    targets = [*args[1:], kwargs.get("device")]
    return any(isinstance(a, str) and a.startswith("cpu") for a in targets)


class SyncCounter(TorchFunctionMode):
    """Counts the host syncs called from the project's code (the first caller outside torch)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in SYNCS or (name == "to" and _to_cpu(args, kwargs)):
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.startswith(TORCH):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(PROJECT):
                self.calls.append(f"{name} at {frame.f_code.co_filename}:{frame.f_lineno}")
        return func(*args, **kwargs)


class StepWindow(L.Callback):
    """Runs the counter from a batch's arrival to the end of its optimiser step (EMA included);
    the module's own batch-end hook (where the logging-interval check lives) runs after this."""

    def __init__(self) -> None:
        self.counter = SyncCounter()
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.counter.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.counter.__exit__(None, None, None)
        self.steps += 1


def _batches(n: int = 4, batch: int = 2, frames: int = 4, size: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        video = torch.rand(batch, frames, 3, size, size, generator=g) * 2 - 1
        out.append({"video": video, "cond_frame": video[:, 0], "fps": torch.full((batch,), 7.0)})
    return out


def _count_syncs(tmp_path, fused: bool, steps: int = 2) -> StepWindow:
    module = I2VLitModule(
        tiny_svd(seed=0, cfg_dropout=0.1),
        TimeNoise(beta_m=15.0, a=5.0),
        optimizer=partial(torch.optim.AdamW, lr=1e-4, fused=fused),
        ema_decay=0.999,
    )
    window = StepWindow()
    loader = torch.utils.data.DataLoader(_batches(steps), batch_size=None)
    trainer = _trainer(tmp_path, steps, [window], gradient_clip_val=1.0, log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=loader)
    assert window.steps == steps
    return window


def test_a_training_step_makes_no_host_sync(tmp_path):
    window = _count_syncs(tmp_path, fused=True)
    assert window.counter.calls == []


def test_the_counter_sees_the_per_step_check_of_unfused_optimisers(tmp_path):
    """The negative control: the host-side check (unfused optimisers) is one sync a step."""
    window = _count_syncs(tmp_path, fused=False)
    assert len(window.counter.calls) == window.steps == 2
    assert all(c.startswith("__bool__ at ") and "lit_module.py" in c for c in window.counter.calls)


def _fused():
    return partial(torch.optim.AdamW, lr=1e-3, fused=True)


def test_fused_stop_names_the_first_bad_step_and_saves_the_weights_before_it(tmp_path):
    cfg = compose("train", TINY, tmp_path)
    module = _module(cfg)
    module.optimizer_factory = _fused()
    before = [p.detach().clone() for p in module.denoiser.parameters()]
    with pytest.raises(FloatingPointError, match=r"\(nan\) at step 0;"):
        _trainer(tmp_path, 3).fit(module, datamodule=_poisoned(cfg))
    ckpt = torch.load(tmp_path / "checkpoints" / "nan_step000000.ckpt", weights_only=False)
    saved = [v for k, v in ckpt["state_dict"].items() if k.startswith("denoiser.")]
    assert len(saved) >= len(before)
    assert all(torch.equal(a, b) for a, b in zip(before, module.denoiser.parameters()))


def test_fused_skip_leaves_weights_and_optimiser_state_and_counts(tmp_path):
    cfg = compose("train", TINY, tmp_path)
    module = _module(cfg, nan_policy="skip")
    module.optimizer_factory = _fused()
    before = [p.detach().clone() for p in module.denoiser.parameters()]
    trainer = _trainer(tmp_path, 2, max_epochs=2)
    with pytest.warns(UserWarning, match="non-finite loss"):
        trainer.fit(module, datamodule=_poisoned(cfg))
    assert trainer.global_step == 2 and module.skipped_batches == 2
    assert all(torch.equal(a, b) for a, b in zip(before, module.denoiser.parameters()))
    state = trainer.optimizers[0].state
    assert all(float(s["step"]) == 0 for s in state.values())  # no update was counted either


def test_fused_skip_lets_good_steps_through(tmp_path):
    """The skip flag is per step: a finite loss after a bad one updates the weights."""
    cfg = compose("train", TINY, tmp_path)
    module = _module(cfg, nan_policy="skip")
    module.optimizer_factory = _fused()
    dm = instantiate_poisoned_once(cfg)
    trainer = _trainer(tmp_path, 2, max_epochs=2)
    with pytest.warns(UserWarning, match="at steps 0 to 0"):
        trainer.fit(module, datamodule=dm)
    assert module.skipped_batches == 1
    state = trainer.optimizers[0].state
    assert all(float(s["step"]) == 1 for s in state.values())


def instantiate_poisoned_once(cfg):
    """The poisoned data module whose item 0 is NaN in the first epoch only."""
    dm = _poisoned(cfg)
    poisoned = dm.train_set

    class FirstEpochOnly:
        def __init__(self):
            self.calls = 0

        def __len__(self):
            return len(poisoned)

        def __getitem__(self, i):
            self.calls += 1
            source = poisoned if self.calls <= len(poisoned) else poisoned.dataset
            return source[i]

    dm.train_set = FirstEpochOnly()
    return dm
