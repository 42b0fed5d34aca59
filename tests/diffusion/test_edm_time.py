"""The EDM normalised time that TimeNoise reads must grow with sigma, in both time modes.

TimeNoise's mean level mu(t) = 2 t^a - 1 rises with t (METHOD.md section 3): a reversed time
would noise the condition most where the video is nearly clean. The quantile mode's uniformity
under the training law (``test_schedules.py``) holds for 1 - t as well, so it cannot tell.
"""

import math

import pytest
import torch

from cil_lightning.diffusion.cond_noise import TimeNoise
from cil_lightning.diffusion.schedules import EDMSchedule

GRID = torch.logspace(math.log10(0.002), math.log10(700.0), 200)  # the SVD sampling range


@pytest.mark.parametrize("P_mean, P_std", [(-1.2, 1.2), (0.5, 2.0)])
def test_quantile_time_increases_with_sigma_from_0_to_1(P_mean, P_std):
    sch = EDMSchedule(P_mean=P_mean, P_std=P_std, time_mode="quantile")
    t = sch.normalized_time(GRID).double()
    assert (t.diff() >= 0).all()
    # Strictly where float32 still resolves the steps (below 0.999, sigma < 12 for the SVD law):
    # distinct noise levels get distinct times over most of the range.
    unsaturated = t[1:] < 0.999
    assert unsaturated.sum() > 120 and (t.diff()[unsaturated] > 0).all()
    assert t[0] < 0.01 and t[-1] > 0.99
    # The median sigma of the training law, exp(P_mean), sits in the middle.
    mid = sch.normalized_time(torch.tensor([math.exp(P_mean)]))
    torch.testing.assert_close(mid, torch.tensor([0.5]))
    # A one-sigma step of log sigma up the training law: Phi(1).
    up = sch.normalized_time(torch.tensor([math.exp(P_mean + P_std)]))
    torch.testing.assert_close(up, torch.tensor([0.8413447]))


@pytest.mark.parametrize("sigma_ref", [700.0, 80.0])
def test_reference_time_increases_with_sigma_up_to_sigma_ref(sigma_ref):
    sch = EDMSchedule(time_mode="reference", sigma_ref=sigma_ref)
    below = GRID[GRID < sigma_ref]
    t = sch.normalized_time(below).double()
    assert (t.diff() > 0).all()
    assert t[0] < 0.01
    ends = sch.normalized_time(torch.tensor([0.0, sigma_ref, 2 * sigma_ref]))
    torch.testing.assert_close(ends, torch.tensor([0.0, 1.0, 1.0]))
    assert (sch.normalized_time(GRID).diff() >= 0).all()  # flat, never falling, beyond sigma_ref


@pytest.mark.parametrize("time_mode", ["quantile", "reference"])
def test_timenoise_mean_level_rises_with_sigma(time_mode):
    """What the time is for: TimeNoise's mu(t) is -1 at the clean end and rises with sigma."""
    sch = EDMSchedule(time_mode=time_mode, sigma_ref=80.0)
    tn = TimeNoise(beta_m=15.0, a=1.0)
    sigma = torch.tensor([0.002, 0.3, 5.0, 80.0])
    mu = tn.mu(sch.normalized_time(sigma))
    assert (mu.diff() > 0).all()
    assert mu[0] < -0.98 and mu[-1] > 0.9
