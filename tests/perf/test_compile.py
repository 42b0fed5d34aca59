"""``compile_unet``: the UNet compiled in place, numerically the eager one at fp32 on the CPU."""

from __future__ import annotations

import shutil

import pytest
import torch

from cil_lightning.diffusion.cond_noise import TimeNoise
from cil_lightning.lit_module import I2VLitModule
from cil_lightning.models.tiny import tiny_svd


def _module(compile_unet: bool) -> I2VLitModule:
    return I2VLitModule(
        tiny_svd(seed=0, cfg_dropout=0.0),
        TimeNoise(beta_m=15.0, a=5.0),
        optimizer=torch.optim.AdamW,
        ema_decay=0.9,
        compile_unet=compile_unet,
    )


def test_compile_is_in_place_and_keeps_the_checkpoint_layout():
    eager, compiled = _module(False), _module(True)
    compiled.configure_model()
    compiled.configure_model()  # Lightning may call the hook again: compiled once
    assert compiled.denoiser.unet._compiled_call_impl is not None
    assert eager.denoiser.unet._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert compiled.ema.module._compiled_call_impl is None  # the EMA copy stays eager


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="inductor on the CPU needs a C compiler")
def test_compiled_unet_matches_eager_at_fp32():
    """Loss and every gradient of one training loss agree with eager (inductor, CPU, fp32)."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 4, 3, 16, 16, generator=g) * 2 - 1
    batch = {"video": video, "cond_frame": video[:, 0], "fps": torch.full((2,), 7.0)}
    results = []
    for compile_unet in (False, True):
        module = _module(compile_unet)
        module.configure_model()
        module.train()
        loss = module._loss(batch, torch.Generator().manual_seed(1)).mean()
        loss.backward()
        grads = [p.grad.clone() for p in module.denoiser.unet.parameters()]
        results.append((loss.detach(), grads))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
