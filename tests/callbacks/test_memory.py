"""The memory check: activations counted in closed form, a run that cannot fit stopped before its
first step with the estimate, the limit and the knobs, and an out-of-memory step leaving a
checkpoint of the last good step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from cil_lightning.callbacks.memory import MemoryCheck, saved_activation_bytes

from ..conftest import compose

SIZE = ["clip.num_frames=4", "clip.height=16", "clip.width=16", "data.batch_size=2"]


def test_saved_activations_are_counted_in_closed_form():
    """Linear -> ReLU -> Linear on a batch of 10: the first layer saves its input (10 x 64), ReLU
    its output (10 x 128), which the second layer saves again (one storage); weights excluded."""
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
    x = torch.randn(10, 64)
    got = saved_activation_bytes(lambda: net(x).sum(), list(net.parameters()))
    assert got == (10 * 64 + 10 * 128) * 4


def _module(tmp_path, extra=()):
    cfg = compose("train", [*SIZE, *extra], tmp_path)
    return cfg, instantiate(cfg.module)(run_config={})


def test_probe_extrapolates_to_the_full_step(tmp_path):
    """The probe (one clip of 2 frames) scaled to batch 2 x 4 frames is within 15 % of the
    activations counted directly on a full batch of the tiny SVD-class model."""
    _, module = _module(tmp_path)
    check = MemoryCheck(num_frames=4, height=16, width=16, batch_size=2)
    estimate = check.estimate_bytes(module)
    video = torch.zeros(2, 4, 3, 16, 16)
    batch = {"video": video, "cond_frame": video[:, 0]}
    params = [p for p in module.parameters() if p.requires_grad]
    full = saved_activation_bytes(
        lambda: module._loss(batch, torch.Generator().manual_seed(0)).mean(), params
    )
    assert abs(estimate["activations"] - full) / full < 0.15, (estimate["activations"], full)
    weights = sum(p.numel() * p.element_size() for p in params)
    assert estimate["gradients"] == weights and estimate["optimizer"] == 2 * weights


def _trainer(tmp_path, callback, **kwargs):
    return L.Trainer(
        callbacks=[callback],
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_a_step_that_cannot_fit_stops_before_the_first_step(tmp_path):
    cfg, module = _module(tmp_path)
    before = [p.detach().clone() for p in module.denoiser.unet.parameters()]
    check = MemoryCheck(num_frames=4, height=16, width=16, batch_size=2, limit_bytes=2**20)
    with pytest.raises(MemoryError) as info:
        _trainer(tmp_path, check).fit(module, datamodule=instantiate(cfg.data))
    message = str(info.value)
    assert "a training step needs at least" in message and "1.00 MiB" not in message
    assert "0.00 GiB is free" in message  # the limit given (1 MiB)
    for knob in ("data.batch_size", "clip.num_frames", "model.gradient_checkpointing"):
        assert knob in message
    after = list(module.denoiser.unet.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # no step was taken

    # The same run with room to spare trains.
    check = MemoryCheck(num_frames=4, height=16, width=16, batch_size=2, limit_bytes=2**40)
    trainer = _trainer(tmp_path, check)
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert trainer.global_step == 2


def test_out_of_memory_leaves_a_checkpoint_of_the_last_good_step(tmp_path, capsys):
    cfg, module = _module(tmp_path)
    step = type(module).training_step

    def failing_step(self, batch, batch_idx):
        if self.global_step == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return step(self, batch, batch_idx)

    module.training_step = failing_step.__get__(module)
    check = MemoryCheck(
        num_frames=4, height=16, width=16, batch_size=2, limit_bytes=2**40, dirpath=str(tmp_path)
    )
    with pytest.raises(torch.OutOfMemoryError):
        _trainer(tmp_path, check, max_epochs=-1).fit(module, datamodule=instantiate(cfg.data))
    saved = torch.load(tmp_path / "oom_step1.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 1
    weights = {k: v for k, v in saved["state_dict"].items() if k.startswith("denoiser.unet.")}
    current = {f"denoiser.unet.{k}": v for k, v in module.denoiser.unet.state_dict().items()}
    assert weights.keys() == current.keys()
    assert all(torch.equal(weights[k], current[k]) for k in weights)
    err = capsys.readouterr().err
    assert "out of memory at step 1" in err and "data.batch_size" in err


def test_large_runs_are_extrapolated_from_small_probes(tmp_path):
    """Past ``probe_pixels`` the probes are smaller than the run (they must not take the memory
    they predict), and the extrapolation agrees with a direct count within 30 %."""
    _, module = _module(tmp_path)
    assert MemoryCheck(2, 512, 512, 1).probe_sizes() == [(128, 128), (64, 64)]
    assert MemoryCheck(2, 320, 512, 1).probe_sizes() == [(64, 128), (64, 64)]
    check = MemoryCheck(2, 128, 128, 1, probe_pixels=32 * 32, probe_multiple=16)
    assert check.probe_sizes() == [(32, 32), (16, 16)]
    estimate = check.estimate_bytes(module)["activations"]
    video = torch.zeros(1, 2, 3, 128, 128)
    params = [p for p in module.parameters() if p.requires_grad]
    full = saved_activation_bytes(
        lambda: module._loss({"video": video, "cond_frame": video[:, 0]}).mean(), params
    )
    assert abs(estimate - full) / full < 0.3, (estimate, full)
