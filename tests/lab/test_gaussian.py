"""Exact Gaussian lab: the sampler's measured motion energy against the closed form."""

from __future__ import annotations

import pytest
import torch

from cil_lightning.diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule
from cil_lightning.lab.gaussian import (
    GaussianVideoDenoiser,
    GaussianVideos,
    data_stats,
    measure,
    theory,
)
from cil_lightning.lab.model import LatentCondition
from cil_lightning.sampling import Sampler

DATA = GaussianVideos(frames=6, columns=16)
FAMILIES = [
    ("vp", VPSchedule(), "ddim", [None, 800]),
    ("edm", EDMSchedule(sigma_data=0.5, sigma_max=80.0), "euler", [None, 2.0]),
    ("flow", FlowSchedule(), "flow_euler", [None, 0.6]),
]
CASES = [
    (name, sch, step, M, ai) for name, sch, step, Ms in FAMILIES for M in Ms for ai in (False, True)
]


@pytest.fixture(scope="module")
def stats():
    return data_stats(DATA, n=2048)


def test_data_motion_energy_closed_form():
    # 20000 videos x 16 columns x 5 pairs: the closed form within 4 standard errors.
    x, _ = DATA.sample(20000, torch.Generator().manual_seed(1))
    per_video = torch.diff(x.double().flatten(2), dim=1).pow(2).mean(dim=(1, 2))
    se = float(per_video.std()) / 20000**0.5
    assert abs(float(per_video.mean()) - DATA.motion_energy()) < 4 * se


def test_exact_denoiser_matches_least_squares_regression():
    # Independent reference: regress x0 on (x_t - alpha c 1) over many draws at one level; the
    # fitted matrix is the posterior-mean gain K_t (the posterior mean is linear here).
    schedule = EDMSchedule(sigma_data=0.5)
    den = GaussianVideoDenoiser(DATA, schedule)
    x0, c = DATA.sample(4000, torch.Generator().manual_seed(2))
    t = torch.full((4000,), 0.7)
    x_t = x0 + 0.7 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    y = (x_t - c[:, None]).double().flatten(2).permute(0, 2, 1).reshape(-1, DATA.frames)
    target = (x0 - c[:, None]).double().flatten(2).permute(0, 2, 1).reshape(-1, DATA.frames)
    K_fit = torch.linalg.lstsq(y, target).solution.T
    assert torch.allclose(K_fit, den.gain(t[:1])[0], atol=0.02)
    pred = den(x_t, t, LatentCondition(c))
    assert torch.allclose(pred[:, 0], c, atol=1e-5)  # frame 0 is the condition


@pytest.mark.parametrize(
    "name,schedule,step,M,ai", CASES, ids=[f"{c[0]}-{c[3]}-ai{c[4]}" for c in CASES]
)
def test_measured_motion_energy_matches_closed_form(stats, name, schedule, step, M, ai):
    """The Sampler's output (600 videos) matches the closed-form law of the same ladder.

    Tolerance: 4 standard errors of the per-video motion energy over the 600 videos (a false
    alarm about once in 16000 cases), plus 1e-4 relative for float32 sampling."""
    den = GaussianVideoDenoiser(DATA, schedule)
    sampler = Sampler(step=step, num_steps=6, M=M, stats=stats if ai else None)
    th, mc = theory(den, sampler), measure(den, sampler, 600, seed=5)
    tol = 4 * mc["motion_energy_se"] + 1e-4 * th["motion_energy"]
    assert abs(mc["motion_energy"] - th["motion_energy"]) < tol
    # The fitted Gaussian's W2 tracks the closed form too (looser: covariance estimation error).
    assert abs(mc["w2"] - th["w2"]) < 0.1 * th["w2"] + 0.02


def test_analytic_init_lowers_w2_at_early_start(stats):
    den = GaussianVideoDenoiser(DATA, FlowSchedule())
    plain = theory(den, Sampler(step="flow_euler", num_steps=8, M=0.6))
    ai = theory(den, Sampler(step="flow_euler", num_steps=8, M=0.6, stats=stats))
    assert ai["w2"] < plain["w2"] and ai["kl"] < plain["kl"]
