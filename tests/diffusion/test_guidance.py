"""Guidance rescale on x0 predictions against diffusers' ``rescale_noise_cfg`` applied in the
network's own output space (v, eps, flow velocity), computed independently here."""

import pytest
import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from cil_lightning.diffusion.guidance import rescaled_guidance
from cil_lightning.diffusion.samplers import classifier_free_guidance
from cil_lightning.diffusion.schedules import FlowSchedule, VPSchedule

g = torch.Generator().manual_seed(0)
X, X0_C, X0_U = (torch.randn(2, 4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
X0_U = 0.3 * X0_U + X0_C  # an unconditional prediction near the conditional one


def _guided(schedule, t, scale, phi):
    return rescaled_guidance(lambda x, t: X0_C, lambda x, t: X0_U, scale, phi, schedule)(X, t)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_vp_rescale_is_diffusers_in_the_output_space(prediction):
    schedule = VPSchedule(rescale_zero_terminal_snr=prediction == "v", prediction=prediction)
    t = torch.tensor([500.0, 800.0], dtype=torch.float64)
    alpha, sigma = (v.view(-1, 1, 1, 1, 1) for v in schedule.alpha_sigma(t))

    def out(x0):  # the network's output for this x0 at (X, t)
        eps = (X - alpha * x0) / sigma
        return alpha * eps - sigma * x0 if prediction == "v" else eps

    cfg = out(X0_U) + 7.5 * (out(X0_C) - out(X0_U))
    ref = rescale_noise_cfg(cfg, out(X0_C), guidance_rescale=0.7)
    x0_ref = alpha * X - sigma * ref if prediction == "v" else (X - sigma * ref) / alpha
    torch.testing.assert_close(_guided(schedule, t, 7.5, 0.7), x0_ref)


def test_flow_rescale_is_diffusers_on_the_velocity():
    schedule = FlowSchedule(shift=3.0)
    t = torch.tensor([0.3, 0.9], dtype=torch.float64)
    tt = t.view(-1, 1, 1, 1, 1)
    scale = torch.linspace(1.0, 3.0, 4, dtype=torch.float64)  # a per-frame ramp

    def out(x0):
        return (X - x0) / tt  # u = eps - x0 with x_t = (1 - t) x0 + t eps

    w = scale.view(1, -1, 1, 1, 1)
    ref = rescale_noise_cfg(out(X0_U) + w * (out(X0_C) - out(X0_U)), out(X0_C), 0.5)
    torch.testing.assert_close(_guided(schedule, t, scale, 0.5), X - tt * ref)


def test_phi_zero_is_plain_guidance_and_phi_one_matches_the_conditional_std():
    schedule = VPSchedule(prediction="v", rescale_zero_terminal_snr=True)
    t = torch.tensor([700.0, 700.0], dtype=torch.float64)
    plain = classifier_free_guidance(lambda x, t: X0_C, lambda x, t: X0_U, 5.0)(X, t)
    torch.testing.assert_close(_guided(schedule, t, 5.0, 0.0), plain)
    assert not torch.allclose(_guided(schedule, t, 5.0, 0.7), plain)


def test_the_sampler_applies_the_rescale_when_asked():
    """Sampler(guidance_rescale=phi) runs ``rescaled_guidance``: phi = 0 gives plain guidance's
    sample, phi = 0.7 another one, equal to a DDIM run driven by the rescaled denoiser."""
    from dataclasses import dataclass, replace

    from cil_lightning.diffusion.samplers import ddim_sample
    from cil_lightning.sampling import Sampler

    @dataclass
    class Cond:
        latent: torch.Tensor
        k: float = 1.0

        def unconditional(self):
            return replace(self, k=0.3)

    class Stub:
        schedule = VPSchedule(prediction="v", rescale_zero_terminal_snr=True)

        def __call__(self, x, t, cond):
            return torch.tanh(cond.k * x + 0.1 * t.view(-1, 1, 1, 1, 1) / 1000)

        def decode_video(self, z):
            return z

    cond = Cond(torch.zeros(1, 2, 4, 4))

    def run(phi):
        sampler = Sampler(
            step="ddim", num_steps=3, min_guidance=4.0, max_guidance=4.0, guidance_rescale=phi
        )
        return sampler(Stub(), cond, 3, torch.Generator().manual_seed(1)).latents

    plain, rescaled = run(0.0), run(0.7)
    assert not torch.allclose(plain, rescaled)
    x = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    stub, uncond = Stub(), cond.unconditional()
    fn = rescaled_guidance(
        lambda x, t: stub(x, t, cond), lambda x, t: stub(x, t, uncond), 4.0, 0.7, stub.schedule
    )
    expected = ddim_sample(fn, stub.schedule, x, stub.schedule.sampling_times(3)).sample
    torch.testing.assert_close(rescaled, expected)
