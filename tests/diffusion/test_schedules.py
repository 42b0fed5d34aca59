"""Schedules: parity with diffusers' schedulers, training-time laws, ladders, validation."""

from __future__ import annotations

import math
import re

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler
from scipy import stats

from cil_lightning.diffusion.rng import per_sample_generators
from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule

# --------------------------------------------------------------------------------------------------
# VP


@pytest.mark.parametrize(
    ("beta_schedule", "rescale"),
    [("scaled_linear", False), ("linear", False), ("scaled_linear", True), ("linear", True)],
)
def test_vp_betas_and_alphas_cumprod_match_diffusers(beta_schedule, rescale):
    kw = dict(beta_schedule=beta_schedule, beta_start=0.00085, beta_end=0.012)
    ours = VPSchedule(rescale_zero_terminal_snr=rescale, **kw)
    ref = DDIMScheduler(num_train_timesteps=1000, rescale_betas_zero_snr=rescale, **kw)
    assert torch.equal(ours.betas, ref.betas)
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod)
    if rescale:
        assert ours.alphas_cumprod[-1].item() == 0.0
        alpha, sigma = ours.alpha_sigma(torch.tensor([999.0]))
        assert alpha.item() == 0.0 and sigma.item() == 1.0
    else:
        assert ours.alphas_cumprod[-1].item() > 0.0


def test_vp_alpha_sigma_values_and_clean_time():
    sch = VPSchedule()
    t = torch.tensor([0, 1, 500, 999, -1])
    alpha, sigma = sch.alpha_sigma(t)
    abar = sch.alphas_cumprod.double()
    expect_a = torch.cat([abar[[0, 1, 500, 999]].sqrt(), torch.ones(1, dtype=torch.float64)])
    torch.testing.assert_close(alpha.double(), expect_a, rtol=1e-6, atol=0)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(5), rtol=1e-6, atol=1e-6)
    assert alpha[-1].item() == 1.0 and sigma[-1].item() == 0.0
    # float and integer native times index the same step; floats round to the nearest step
    torch.testing.assert_close(sch.alpha_sigma(t.float())[0], alpha)
    near = sch.alpha_sigma(torch.tensor([0.4, 499.7, 998.6, -0.8]))[0]
    torch.testing.assert_close(near, alpha[[0, 2, 3, 4]])
    # diffusers' final_alpha_cumprod when set_alpha_to_one=False
    sch0 = VPSchedule(set_alpha_to_one=False)
    a0, _ = sch0.alpha_sigma(torch.tensor([-1]))
    ref = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False
    )
    assert a0.item() == pytest.approx(ref.final_alpha_cumprod.sqrt().item(), rel=1e-7)


@pytest.mark.parametrize("M", [1000, 940])
@pytest.mark.parametrize("n", [1, 7, 25, 50])
def test_vp_sampling_times_start_at_M_minus_one(M, n):
    sch = VPSchedule()
    times = sch.sampling_times(n, M)
    assert times.shape == (n + 1,)
    assert times[0].item() == M - 1 == sch.start_time(M)
    assert times[-1].item() == -1
    assert torch.all(times[1:] < times[:-1])  # strictly decreasing
    assert torch.equal(times, times.round())  # integer steps
    assert times[-2].item() >= 0


def test_vp_sampling_times_match_diffusers_trailing():
    sch = VPSchedule()
    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    checked_full = 0  # n = 672, 720: numpy's accumulated arange rounds ties differently
    for n in [1, 2, 3, 7, 10, 25, 50, 61, 100, 250, 333, 672, 720, 999, 1000]:
        ref.set_timesteps(n)
        ours = sch.sampling_times(n).long()
        # numpy's arange sometimes returns n + 1 entries (n = 61: a spurious trailing -1 in
        # diffusers); the first n always agree, including half-to-even rounding.
        assert torch.equal(ours[:n], ref.timesteps[:n]), n
        if len(ref.timesteps) == n:
            checked_full += 1
    assert checked_full >= 10
    assert sch.start_time() == 999.0


def test_vp_training_time_uniform_integers_and_per_sample_generators():
    sch = VPSchedule()
    t = sch.sample_training_time(50_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.float32 and t.shape == (50_000,)
    assert torch.equal(t, t.round())
    assert t.min().item() == 0 and t.max().item() == 999
    counts = torch.bincount(t.long(), minlength=1000).double()
    chi2 = ((counts - 50.0) ** 2 / 50.0).sum().item()
    assert stats.chi2.sf(chi2, df=999) > 1e-3
    # per-sample generators: sample i does not depend on the batch it is in
    batch = sch.sample_training_time(4, generator=per_sample_generators([1, 2, 3, 4]))
    alone = sch.sample_training_time(1, generator=per_sample_generators([1]))
    assert batch[0] == alone[0]
    torch.testing.assert_close(
        sch.normalized_time(torch.tensor([0.0, 500.0, 999.0, -1.0])),
        torch.tensor([0.0, 0.5, 0.999, 0.0]),
    )


def test_vp_validation():
    sch = VPSchedule()
    for bad_M in (0, 1001, 940.5, -3):
        with pytest.raises(ValueError, match=r"M must be .*\(0, T\]"):
            sch.sampling_times(10, bad_M)
        with pytest.raises(ValueError, match="M must be"):
            sch.start_time(bad_M)
    with pytest.raises(ValueError, match="num_steps"):
        sch.sampling_times(0)
    with pytest.raises(ValueError, match="num_steps"):
        sch.sampling_times(11, 10)
    with pytest.raises(ValueError, match="beta_schedule"):
        VPSchedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match="prediction"):
        VPSchedule(prediction="x0")


# --------------------------------------------------------------------------------------------------
# EDM


def test_edm_karras_ladder_ends_and_start_M():
    sch = EDMSchedule()
    for M in (700.0, 100.0):
        times = sch.sampling_times(25, M)
        assert times.shape == (26,)
        assert times[0].item() == pytest.approx(M, rel=1e-6)
        assert times[-2].item() == pytest.approx(0.002, rel=1e-5)
        assert times[-1].item() == 0.0
        assert torch.all(times[1:] < times[:-1])


@pytest.mark.parametrize("n", [1, 25, 50])
def test_edm_karras_ladder_matches_diffusers_svd_config(n):
    # The SVD scheduler config (stabilityai/stable-video-diffusion-img2vid-xt). With sigma_min and
    # sigma_max given, diffusers' _convert_to_karras ignores the beta-derived sigmas.
    # from_config, like from_pretrained, drops the keys EulerDiscreteScheduler does not take.
    svd_config = dict(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        interpolation_type="linear",
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        steps_offset=1,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        clip_sample=False,
    )
    ref = EulerDiscreteScheduler.from_config(svd_config)
    assert ref.config.use_karras_sigmas and ref.config.sigma_max == 700.0
    ref.set_timesteps(n)
    ours = EDMSchedule().sampling_times(n, 700.0)
    torch.testing.assert_close(ours, ref.sigmas, rtol=1e-6, atol=0)


def test_edm_normalized_time_uniform_under_training_law():
    sch = EDMSchedule()
    sigma = sch.sample_training_time(20_000, generator=torch.Generator().manual_seed(0))
    u = sch.normalized_time(sigma).double().numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # reference mode: sigma / 700, clamped; nearly all training sigmas map below 0.05
    ref = EDMSchedule(time_mode="reference")
    s = torch.tensor([0.0, 7.0, 350.0, 700.0, 2000.0])
    torch.testing.assert_close(ref.normalized_time(s), torch.tensor([0.0, 0.01, 0.5, 1.0, 1.0]))
    assert (ref.normalized_time(sigma) < 0.05).float().mean().item() > 0.999


# --------------------------------------------------------------------------------------------------
# Flow


def test_flow_alpha_sigma_and_ladder():
    sch = FlowSchedule()
    t = torch.rand(100, generator=torch.Generator().manual_seed(0))
    alpha, sigma = sch.alpha_sigma(t)
    torch.testing.assert_close(alpha + sigma, torch.ones(100))
    torch.testing.assert_close(sigma, t)
    assert sch.start_time() == 1.0 and sch.start_time(0.9) == 0.9
    torch.testing.assert_close(sch.sampling_times(10), torch.linspace(1, 0, 11))
    times = sch.sampling_times(10, 0.9)
    torch.testing.assert_close(times, torch.linspace(0.9, 0.0, 11))
    assert times[0].item() == pytest.approx(0.9) and times[-1].item() == 0.0


def test_flow_shift_ladder():
    sch = FlowSchedule(shift=3.0)
    u = torch.linspace(1, 0, 21, dtype=torch.float64)
    expect = 3.0 * u / (1.0 + 2.0 * u)  # SD3 shift of the full uniform ladder
    torch.testing.assert_close(sch.sampling_times(20).double(), expect, rtol=1e-6, atol=1e-7)
    times = sch.sampling_times(20, 0.8)
    assert times[0].item() == pytest.approx(0.8, rel=1e-6) and times[-1].item() == 0.0
    assert torch.all(times[1:] < times[:-1])
    # shift > 1 spends more of the ladder at high noise than the unshifted one
    assert (times > 0.4).sum() > (FlowSchedule().sampling_times(20, 0.8) > 0.4).sum()
    torch.testing.assert_close(sch.unshift_time(sch.shift_time(u)), u)


def test_flow_training_time_is_logit_normal():
    sch = FlowSchedule()
    t = sch.sample_training_time(20_000, generator=torch.Generator().manual_seed(1))
    assert 0 < t.min().item() and t.max().item() < 1
    logit = torch.logit(t.double()).numpy()
    assert stats.kstest(logit, "norm").pvalue > 1e-3
    torch.testing.assert_close(sch.normalized_time(t), t)


def test_flow_validation():
    sch = FlowSchedule()
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"M must be .*\(0, 1\]"):
            sch.sampling_times(10, bad)
    with pytest.raises(ValueError, match="num_steps"):
        sch.sampling_times(0)
    with pytest.raises(ValueError, match="shift"):
        FlowSchedule(shift=0.0)


def test_families_and_alpha_sigma_consistency():
    """x_t = alpha x0 + sigma eps: sigma / alpha increases along every training-range time."""
    for sch, t in [
        (VPSchedule(), torch.arange(0, 1000, 37).float()),
        (EDMSchedule(), torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0])),
        (FlowSchedule(), torch.tensor([0.01, 0.3, 0.6, 0.99])),
    ]:
        alpha, sigma = sch.alpha_sigma(t)
        ratio = sigma / alpha
        assert torch.all(ratio[1:] > ratio[:-1]), sch.family
        assert not math.isnan(ratio.sum().item())
    families = [s.family for s in (VPSchedule(), EDMSchedule(), FlowSchedule())]
    assert families == ["vp", "edm", "flow"]


# --------------------------------------------------------------------------------------------------
# sigma-space: sigma/alpha and its inverse (the diagnostic's noise levels)


@pytest.mark.parametrize("rescale", [False, True])
def test_vp_sigma_over_alpha_and_its_inverse(rescale):
    sch = VPSchedule(rescale_zero_terminal_snr=rescale)
    t = torch.arange(1000, dtype=torch.float64)
    abar = sch.alphas_cumprod.double()
    s = sch.sigma_over_alpha(t)
    finite = abar > 0
    torch.testing.assert_close(s[finite], ((1 - abar[finite]) / abar[finite]).sqrt())
    assert torch.isinf(s[999]).item() == rescale  # zero terminal SNR: alpha = 0, pure noise
    assert torch.equal(sch.time_for_sigma(s), t)  # every step round-trips
    # between two steps: the nearer one in log space; beyond the ends: the end steps
    s_mid = (s[10] * s[11]).sqrt()
    assert sch.time_for_sigma(s_mid * 0.99).item() == 10 and sch.time_for_sigma(s_mid * 1.01) == 11
    ends = sch.time_for_sigma(torch.tensor([1e-6, math.inf]))
    assert ends.tolist() == [0.0, 999.0]


def test_edm_and_flow_sigma_over_alpha_and_its_inverse():
    edm, flow = EDMSchedule(), FlowSchedule(shift=3.0)
    sig = torch.tensor([0.002, 0.5, 80.0, 700.0], dtype=torch.float64)
    assert torch.equal(edm.sigma_over_alpha(sig), sig) and torch.equal(edm.time_for_sigma(sig), sig)
    t = torch.tensor([0.0, 0.25, 0.5, 0.999, 1.0], dtype=torch.float64)
    s = flow.sigma_over_alpha(t)
    torch.testing.assert_close(s[:4], t[:4] / (1 - t[:4]))
    assert math.isinf(s[4].item())  # x_1 = eps
    torch.testing.assert_close(flow.time_for_sigma(s), t)


# --------------------------------------------------------------------------------------------------
# Owned by the schedule: forward noising and the start point M's range (also the config's rule)


@pytest.mark.parametrize("sch", [VPSchedule(), EDMSchedule(), FlowSchedule()], ids=str)
def test_add_noise_is_the_forward_process(sch):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    t = sch.sample_training_time(3, generator=g)
    alpha, sigma = sch.alpha_sigma(t)
    expect = alpha[:, None, None] * x0 + sigma[:, None, None] * eps
    assert torch.equal(sch.add_noise(x0, t, eps), expect)
    assert sch.add_noise(x0.double(), t, eps.double()).dtype == torch.float64


@pytest.mark.parametrize(
    "sch, good, bad, words",
    [
        (VPSchedule(T=1000), [1, 940, 1000, 940.0], [0, 1001, 940.5, -3], "(0, T] = (0, 1000]"),
        (VPSchedule(T=50), [1, 50], [51], "(0, T] = (0, 50]"),
        (
            EDMSchedule(sigma_min=0.002),
            [0.0021, 100.0, 700.0, 5000.0],
            [0.002, 0.001, 0.0, -1.0],
            "> sigma_min = 0.002",
        ),
        (EDMSchedule(sigma_min=30.0, sigma_max=80.0), [30.5, 80.0], [22.4], "sigma_min = 30.0"),
        (FlowSchedule(), [1e-6, 0.5, 1.0, 1], [0.0, 1.5, -0.1], "a flow time in (0, 1]"),
    ],
)
def test_check_start_accepts_the_familys_range_and_names_it(sch, good, bad, words):
    assert words in sch.start_range
    sch.check_start(None)  # the full start
    for M in good:
        sch.check_start(M)
        assert sch.start_time(M) == pytest.approx(sch.sampling_times(1, M)[0].item(), rel=1e-6)
    for M in [*bad, math.nan, math.inf, True, "100"]:
        with pytest.raises(ValueError, match=r"M must be .*" + re.escape(words)):
            sch.check_start(M)
        with pytest.raises(ValueError, match="M must be"):
            sch.start_time(M)


def test_config_rule_for_M_is_the_schedules():
    """``validate`` asks the model's schedule: each family's range, and no copy of it."""
    from omegaconf import OmegaConf

    from cil_lightning.config.checks import ConfigError, validate

    def cfg(schedule: dict, M):
        target = f"cil_lightning.diffusion.schedules.{schedule.pop('name')}"
        return OmegaConf.create(
            {"model": {"schedule": {"_target_": target, **schedule}}, "sampler": {"M": M}}
        )

    validate(cfg({"name": "VPSchedule", "T": 1000}, 940))
    validate(cfg({"name": "FlowSchedule"}, 0.9))
    validate(cfg({"name": "EDMSchedule"}, None))  # null: the full start
    for schedule, M, allowed in [
        ({"name": "VPSchedule", "T": 500}, 940, "(0, T] = (0, 500]"),
        ({"name": "VPSchedule"}, 940.5, "(0, T] = (0, 1000]"),
        ({"name": "FlowSchedule"}, 1.5, "a flow time in (0, 1]"),
        ({"name": "EDMSchedule", "sigma_min": 0.01}, 0.005, "> sigma_min = 0.01"),
    ]:
        with pytest.raises(ConfigError) as err:
            validate(cfg(schedule, M))
        assert f"sampler.M={M!r} is out of range; allowed: " in str(err.value)
        assert allowed in str(err.value)
    with pytest.raises(ConfigError, match="model.schedule cannot be built: .*sigma_min"):
        validate(cfg({"name": "EDMSchedule", "sigma_min": 900.0}, 100.0))
