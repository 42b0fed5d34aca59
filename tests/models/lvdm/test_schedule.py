"""lvdm dynamic rescale: the schedule of scaled data against the reference's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cil_lightning.diffusion.samplers import ddim_update
from cil_lightning.models.lvdm.denoiser import LvdmCondition, LvdmDenoiser
from cil_lightning.models.lvdm.schedule import DynamicRescaleVPSchedule
from cil_lightning.models.lvdm.tiny import tiny_dynamicrafter


def _reference(base_scale=0.7):
    """abar (diffusers DDIMScheduler, zero terminal SNR) and the lvdm scale_arr, independently."""
    from diffusers import DDIMScheduler

    abar = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        rescale_betas_zero_snr=True,
    ).alphas_cumprod.double()  # fmt: skip
    arr = np.concatenate([np.linspace(1.0, base_scale, 400), np.full(1000, base_scale)])
    return abar, torch.tensor(arr, dtype=torch.float32).double()


@pytest.mark.parametrize("base_scale", [0.7, 0.3])
def test_noising_is_the_reference_process_of_scaled_data(base_scale):
    sched = DynamicRescaleVPSchedule(
        base_scale=base_scale, rescale_zero_terminal_snr=True, prediction="v"
    )
    abar, arr = _reference(base_scale)
    t = torch.tensor([0.0, 150.0, 399.0, 400.0, 998.0])
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g).double(), torch.randn(5, 3, generator=g).double()
    i = t.long()
    expected = (abar[i].sqrt() * arr[i])[:, None] * x0 + (1 - abar[i]).sqrt()[:, None] * eps
    torch.testing.assert_close(sched.add_noise(x0, t.double(), eps), expected)
    torch.testing.assert_close(sched.data_scale(t).double(), arr[i])
    assert float(sched.data_scale(torch.tensor([-1.0]))) == 1.0  # clean time: unscaled data


def _oracle_adapter(sched, v_of):
    class Net(torch.nn.Module):
        def forward(self, inp, t, text, tokens, fs, *image):
            return v_of(t).transpose(1, 2)

    tiny = tiny_dynamicrafter(num_frames=2)
    return LvdmDenoiser(Net(), tiny.vae, tiny.image_encoder, tiny.null_text, sched)


def test_v_prediction_of_scaled_data_gives_back_x0_and_the_loss_weight_is_the_v_loss():
    sched = DynamicRescaleVPSchedule(rescale_zero_terminal_snr=True, prediction="v")
    abar, arr = _reference()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 2, 4, 4, 4, generator=g), torch.randn(3, 2, 4, 4, 4, generator=g)
    t = torch.tensor([20.0, 300.0, 700.0])
    a, s = abar[t.long()].sqrt().float(), arr[t.long()].float()
    sig = (1 - a**2).sqrt()
    view = (-1, 1, 1, 1, 1)
    v_true = a.view(view) * eps - sig.view(view) * s.view(view) * x0  # the reference's target
    x_t = sched.add_noise(x0, t, eps)
    z = torch.zeros(3, 1, 1)
    cond = LvdmCondition(torch.zeros(3, 4, 4, 4), z, z, z, z, fs=torch.zeros(3))
    d = _oracle_adapter(sched, lambda _: v_true)
    torch.testing.assert_close(d(x_t, t, cond), x0, atol=2e-5, rtol=1e-4)
    # a wrong v: the reference's v-loss equals our weight times the x0-space error
    v_hat = v_true + 0.1 * torch.randn(v_true.shape, generator=g)
    x0_hat = _oracle_adapter(sched, lambda _: v_hat)(x_t, t, cond)
    v_loss = (v_hat - v_true).square().flatten(1).sum(1)
    x0_loss = (x0_hat - x0).square().flatten(1).sum(1)
    torch.testing.assert_close(sched.loss_weight(t) * x0_loss, v_loss, rtol=1e-3, atol=1e-5)


def test_ddim_step_is_the_reference_rescaled_step():
    """Reference (eta = 0): pred_x0 *= s_prev / s_t; x_prev = sqrt(abar_prev) pred_x0
    + sqrt(1 - abar_prev) e_t, with pred_x0 and e_t from v on the scaled data."""
    sched = DynamicRescaleVPSchedule(rescale_zero_terminal_snr=True, prediction="v")
    abar, arr = _reference()
    g = torch.Generator().manual_seed(2)
    x_t, v = torch.randn(4, generator=g).double(), torch.randn(4, generator=g).double()
    t, prev = 379, 359
    a_t, s_t = abar[t].sqrt(), arr[t]
    pred_x0 = a_t * x_t - (1 - abar[t]).sqrt() * v
    e_t = a_t * v + (1 - abar[t]).sqrt() * x_t
    expected = abar[prev].sqrt() * pred_x0 * (arr[prev] / s_t) + (1 - abar[prev]).sqrt() * e_t
    # ours: x0_hat of the unscaled data, one DDIM step through the schedule's (alpha, sigma)
    x0_hat = pred_x0 / float(sched.data_scale(torch.tensor(float(t))))
    (at, st), (ap, sp) = (
        [float(c) for c in sched.alpha_sigma(torch.tensor(float(u), dtype=torch.float64))]
        for u in (t, prev)
    )
    torch.testing.assert_close(ddim_update(x_t, x0_hat, at, st, ap, sp), expected)
