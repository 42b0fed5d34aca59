"""Samplers: Gaussian oracle, parity with diffusers' steps, guidance, per-sample generators.

Oracle: per element x0 ~ N(MU, VAR), so E[x0 | x_t] = MU + a VAR / (a^2 VAR + s^2) (x_t - a MU) for
every family, and the probability-flow ODE transports x_t = a MU + sqrt(a^2 VAR + s^2) z to
x0 = MU + sqrt(VAR) z (per dimension, the monotone affine map), sample by sample.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from cil_lightning.diffusion.rng import per_sample_generators, randn
from cil_lightning.diffusion.samplers import (
    SAMPLERS,
    SamplerOutput,
    classifier_free_guidance,
    ddim_sample,
    euler_sample,
    flow_euler_sample,
    get_sampler,
    heun_sample,
    svd_guidance_scale,
)
from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule

N, DIM = 4096, 8
MU = torch.linspace(-1.0, 1.0, DIM)
VAR = torch.linspace(0.25, 2.0, DIM)


def gaussian_denoiser(schedule):
    """Closed-form E[x0 | x_t] for x0 ~ N(MU, diag(VAR)); x [B, DIM], t [B]."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],)
        a, s = schedule.alpha_sigma(t)
        a, s = a.to(x.dtype)[:, None], s.to(x.dtype)[:, None]
        return MU + a * VAR / (a**2 * VAR + s**2) * (x - a * MU)

    return denoise


def exact_start(schedule, t0, generator, n=N):
    """x_t0 drawn from the exact marginal N(a MU, a^2 VAR + s^2), and its standardised z."""
    a, s = schedule.alpha_sigma(torch.as_tensor(t0, dtype=torch.float64))
    a, s = a.float(), s.float()
    z = randn((n, DIM), generator)
    return a * MU + (a**2 * VAR + s**2).sqrt() * z, z


CASES = {
    # name: (schedule, sampler, num_steps, M, extra kwargs)
    "vp_ddim_ztsnr": (VPSchedule(rescale_zero_terminal_snr=True), ddim_sample, 200, None, {}),
    "vp_ddim_M940": (VPSchedule(rescale_zero_terminal_snr=True), ddim_sample, 200, 940, {}),
    "vp_ddim_eps": (VPSchedule(), ddim_sample, 200, None, {}),
    "vp_ddim_eta1": (
        VPSchedule(rescale_zero_terminal_snr=True),
        ddim_sample,
        200,
        940,
        {"eta": 1.0},
    ),
    "edm_euler": (EDMSchedule(), euler_sample, 400, 700.0, {}),
    "edm_euler_M100": (EDMSchedule(), euler_sample, 200, 100.0, {}),
    "edm_heun": (EDMSchedule(), heun_sample, 50, 700.0, {}),
    "flow_euler": (FlowSchedule(), flow_euler_sample, 200, None, {}),
    "flow_euler_shift_M": (FlowSchedule(shift=3.0), flow_euler_sample, 200, 0.9, {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_samples_have_data_moments(name):
    schedule, sampler, n, M, kw = CASES[name]
    g = torch.Generator().manual_seed(0)
    times = schedule.sampling_times(n, M)
    x_start, _ = exact_start(schedule, times[0], g)
    out = sampler(gaussian_denoiser(schedule), schedule, x_start, times, generator=g, **kw)
    x = out.sample
    assert x.shape == (N, DIM) and torch.isfinite(x).all()
    # 5 standard errors of the Monte-Carlo estimates plus a small discretisation allowance
    mean_tol = 5 * (VAR / N).sqrt() + 0.01
    assert torch.all((x.mean(0) - MU).abs() < mean_tol), (x.mean(0), MU)
    var_tol = 5 * math.sqrt(2 / N) + 0.06
    assert torch.all((x.var(0) / VAR - 1).abs() < var_tol), (x.var(0), VAR)


@pytest.mark.parametrize(
    ("name", "tol"),
    [
        ("vp_ddim_ztsnr", 0.06),
        ("vp_ddim_M940", 0.06),
        ("edm_euler", 0.06),
        ("edm_heun", 0.08),
        ("flow_euler", 0.06),
        ("flow_euler_shift_M", 0.06),
    ],
)
def test_deterministic_samplers_follow_the_exact_transport(name, tol):
    schedule, sampler, n, M, kw = CASES[name]
    times = schedule.sampling_times(n, M)
    x_start, z = exact_start(schedule, times[0], torch.Generator().manual_seed(1), n=512)
    x = sampler(gaussian_denoiser(schedule), schedule, x_start, times, **kw).sample
    err = (x - (MU + VAR.sqrt() * z)).abs().max().item()
    assert err < tol, err


def test_heun_is_second_order_and_euler_first_order():
    schedule = EDMSchedule()
    x_start, z = exact_start(schedule, 80.0, torch.Generator().manual_seed(2), n=256)
    target = MU + VAR.sqrt() * z
    D = gaussian_denoiser(schedule)

    def err(sampler, n):
        x = sampler(D, schedule, x_start, schedule.sampling_times(n, 80.0)).sample
        return (x - target).abs().max().item()

    e_heun = err(heun_sample, 40) / err(heun_sample, 80)
    e_euler = err(euler_sample, 40) / err(euler_sample, 80)
    assert 3.0 < e_heun < 5.0, e_heun  # halving the step divides the error by ~4
    assert 1.6 < e_euler < 2.5, e_euler  # ... and by ~2


def test_intermediates():
    schedule = VPSchedule(rescale_zero_terminal_snr=True)
    times = schedule.sampling_times(10, 940)
    x_start, _ = exact_start(schedule, times[0], torch.Generator().manual_seed(3), n=16)
    D = gaussian_denoiser(schedule)
    out = ddim_sample(D, schedule, x_start, times, return_intermediates=True)
    assert isinstance(out, SamplerOutput)
    assert len(out.trajectory) == 11 and len(out.x0_predictions) == 10
    assert out.trajectory[0] is x_start and torch.equal(out.trajectory[-1], out.sample)
    # the last step lands on the clean time, so the sample is the last x0 prediction
    torch.testing.assert_close(out.sample, out.x0_predictions[-1])
    plain = ddim_sample(D, schedule, x_start, times)
    assert plain.trajectory is None and plain.x0_predictions is None
    torch.testing.assert_close(plain.sample, out.sample, rtol=0, atol=0)
    heun = heun_sample(
        D, EDMSchedule(), x_start, EDMSchedule().sampling_times(5, 10.0), return_intermediates=True
    )
    assert len(heun.trajectory) == 6 and len(heun.x0_predictions) == 5


# --------------------------------------------------------------------------------------------------
# Parity with diffusers


def test_edm_euler_matches_diffusers_euler_discrete():
    """SVD's scheduler with prediction_type="sample", so both sides consume the same x0."""
    ref = EulerDiscreteScheduler.from_config(
        dict(
            num_train_timesteps=1000,
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            prediction_type="sample",
            interpolation_type="linear",
            timestep_spacing="leading",
            use_karras_sigmas=True,
            sigma_min=0.002,
            sigma_max=700.0,
            steps_offset=1,
        )
    )
    ref.set_timesteps(25)
    ref.set_begin_index(0)  # above the beta sigmas the ladder's timesteps repeat; index by step
    schedule = EDMSchedule()
    times = schedule.sampling_times(25, 700.0)
    torch.testing.assert_close(times, ref.sigmas, rtol=1e-6, atol=0)
    x_start, _ = exact_start(schedule, times[0], torch.Generator().manual_seed(4), n=64)
    D = gaussian_denoiser(schedule)

    ours = euler_sample(D, schedule, x_start, times, return_intermediates=True)
    x = x_start
    for i, t in enumerate(ref.timesteps):
        x0 = D(x, ref.sigmas[i].expand(x.shape[0]))
        ref.scale_model_input(x, t)  # no effect on the step; silences diffusers' warning
        step = ref.step(x0, t, x)
        torch.testing.assert_close(step.pred_original_sample, ours.x0_predictions[i])
        x = step.prev_sample
        torch.testing.assert_close(x, ours.trajectory[i + 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x, ours.sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("rescale", [True, False])
def test_vp_ddim_matches_diffusers_ddim(eta, rescale):
    kw = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    ref = DDIMScheduler(
        num_train_timesteps=1000,
        rescale_betas_zero_snr=rescale,
        timestep_spacing="trailing",
        prediction_type="sample",
        clip_sample=False,
        set_alpha_to_one=True,
        **kw,
    )
    ref.set_timesteps(50)
    schedule = VPSchedule(rescale_zero_terminal_snr=rescale, **kw)
    times = schedule.sampling_times(50)
    assert torch.equal(times[:-1].long(), ref.timesteps)
    x_start, _ = exact_start(schedule, times[0], torch.Generator().manual_seed(5), n=64)
    D = gaussian_denoiser(schedule)

    ours = ddim_sample(
        D,
        schedule,
        x_start,
        times,
        eta=eta,
        generator=torch.Generator().manual_seed(6),
        return_intermediates=True,
    )
    noise_gen = torch.Generator().manual_seed(6)  # replays our per-step draws
    for i, t in enumerate(ref.timesteps):
        # one step each, from our own state, so errors cannot compound
        x = ours.trajectory[i]
        x0 = D(x, t.float().expand(x.shape[0]))
        torch.testing.assert_close(x0, ours.x0_predictions[i])
        noise = torch.randn(x.shape, generator=noise_gen) if eta > 0 else None
        if rescale and eta == 1.0 and i == 0:
            # diffusers returns NaN here: sqrt(1 - abar_s - std^2) of a rounding-negative 0 at
            # abar_t = 0. The exact step is x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) z.
            abar_s = schedule.alphas_cumprod[int(times[1])]
            expect = abar_s.sqrt() * x0 + (1 - abar_s).sqrt() * noise
        else:
            expect = ref.step(x0, int(t), x, eta=eta, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours.trajectory[i + 1], expect, rtol=1e-5, atol=1e-5)


def test_flow_euler_is_the_velocity_step():
    schedule = FlowSchedule()
    times = schedule.sampling_times(7, 0.8)
    x_start, _ = exact_start(schedule, times[0], torch.Generator().manual_seed(7), n=32)
    D = gaussian_denoiser(schedule)
    ours = flow_euler_sample(D, schedule, x_start, times, return_intermediates=True)
    x = x_start
    for i in range(7):
        t, s = times[i], times[i + 1]
        x0 = D(x, t.expand(x.shape[0]))
        v = (x - x0) / t  # v = eps - x0 with eps = (x - (1 - t) x0) / t
        x = x + (s - t) * v
        torch.testing.assert_close(x, ours.trajectory[i + 1], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Guidance


def test_svd_guidance_ramp_along_frame_dim():
    scale = svd_guidance_scale(5)
    torch.testing.assert_close(scale, torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    x = torch.randn(2, 5, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    t = torch.ones(2)
    cond = lambda x, t: torch.full_like(x, 2.0)  # noqa: E731
    uncond = lambda x, t: torch.full_like(x, 1.0)  # noqa: E731
    out = classifier_free_guidance(cond, uncond, scale)(x, t)
    for f in range(5):  # 1 + scale_f * (2 - 1)
        assert torch.all(out[:, f] == 1.0 + scale[f]), f
    # [B, C, F, H, W] layout: the ramp follows frame_dim
    x2 = x.transpose(1, 2)
    out2 = classifier_free_guidance(cond, uncond, scale, frame_dim=2)(x2, t)
    torch.testing.assert_close(out2, out.transpose(1, 2))
    with pytest.raises(ValueError, match="guidance scale has 5 entries"):
        classifier_free_guidance(cond, uncond, scale, frame_dim=2)(x, t)


def test_guidance_on_x0_equals_guidance_on_eps_and_v():
    g = torch.Generator().manual_seed(9)
    x_t, x0_c, x0_u = (torch.randn(4, 6, generator=g) for _ in range(3))
    a, s, w = 0.6, 0.8, 7.5
    guided = classifier_free_guidance(lambda x, t: x0_c, lambda x, t: x0_u, w)(x_t, None)

    def eps(x0):
        return (x_t - a * x0) / s

    def v(x0):
        return (a * x_t - x0) / s  # diffusers: x0 = a x_t - s v

    eps_g = eps(x0_u) + w * (eps(x0_c) - eps(x0_u))
    v_g = v(x0_u) + w * (v(x0_c) - v(x0_u))
    torch.testing.assert_close((x_t - s * eps_g) / a, guided, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a * x_t - s * v_g, guided, rtol=1e-5, atol=1e-5)
    # scale 1 is the conditional denoiser itself (one forward pass)
    cond = lambda x, t: x0_c  # noqa: E731
    assert classifier_free_guidance(cond, lambda x, t: x0_u, 1.0) is cond


# --------------------------------------------------------------------------------------------------
# Generators and validation


@pytest.mark.parametrize("sampler_kw", [("ddim", {"eta": 1.0}), ("euler", {})])
def test_per_sample_generators_make_samples_batch_independent(sampler_kw):
    name, kw = sampler_kw
    schedule = VPSchedule(rescale_zero_terminal_snr=True)
    times = schedule.sampling_times(20, 940)
    D = gaussian_denoiser(schedule)
    sampler = get_sampler(name)

    def run(seeds):
        gens = per_sample_generators(seeds)
        x_start = randn((len(seeds), DIM), gens)
        return sampler(D, schedule, x_start, times, generator=gens, **kw).sample

    batch, alone = run([10, 11, 12, 13]), run([10])
    torch.testing.assert_close(batch[:1], alone, rtol=0, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_stochastic_ddim_is_seeded():
    schedule = VPSchedule()
    times = schedule.sampling_times(10)
    D = gaussian_denoiser(schedule)
    x = torch.zeros(8, DIM)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return ddim_sample(D, schedule, x, times, eta=1.0, generator=gen).sample

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert not torch.allclose(run(0), run(1))
    # eta = 0 ignores the generator
    det = ddim_sample(D, schedule, x, times, generator=torch.Generator().manual_seed(0)).sample
    torch.testing.assert_close(det, ddim_sample(D, schedule, x, times).sample, rtol=0, atol=0)


def test_validation():
    vp, edm, flow = VPSchedule(), EDMSchedule(), FlowSchedule()
    x = torch.zeros(2, DIM)
    with pytest.raises(ValueError, match="EDM"):
        heun_sample(gaussian_denoiser(vp), vp, x, vp.sampling_times(5))
    with pytest.raises(ValueError, match="flow schedule"):
        flow_euler_sample(gaussian_denoiser(edm), edm, x, edm.sampling_times(5))
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(gaussian_denoiser(vp), vp, x, vp.sampling_times(5), eta=1.5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        ddim_sample(gaussian_denoiser(flow), flow, x, torch.tensor([0.2, 0.5, 0.0]))
    with pytest.raises(ValueError, match="sigma > 0"):
        ddim_sample(gaussian_denoiser(flow), flow, x, torch.tensor([0.5, 0.0, -0.5]))
    with pytest.raises(ValueError, match="1-D ladder"):
        ddim_sample(gaussian_denoiser(flow), flow, x, torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"allowed: \['ddim', 'euler', 'flow_euler', 'heun'\]"):
        get_sampler("dpm")
    assert set(SAMPLERS) == {"ddim", "euler", "heun", "flow_euler"}
    assert get_sampler("heun") is heun_sample
