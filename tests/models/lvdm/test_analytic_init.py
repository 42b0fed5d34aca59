"""Analytic-Init through the lvdm adapter, as ``sample`` runs it: the start x_M from a reference
statistics file (``Expectation_X0`` [1, C, F, h, w], ``Tr_Cov_d``) and from our own file equals
alpha_M E[x0] + sqrt(sigma_M^2 + alpha_M^2 tr/d) eps computed by hand, with the reference's
alpha_M on the dynamic-rescale schedule (sqrt(abar_{M-1}), no scale_arr)."""

from __future__ import annotations

import functools

import pytest
import torch

from cil_lightning.diffusion.analytic_init import LatentStats
from cil_lightning.diffusion.rng import per_sample_generators
from cil_lightning.models.lvdm.schedule import DynamicRescaleVPSchedule
from cil_lightning.models.lvdm.tiny import tiny_dynamicrafter
from cil_lightning.sampling import Sampler

F, C, H, W = 3, 4, 16, 16  # the tiny model's latents of 3 frames of 32 x 32
M, SEEDS = 940, (4, 11)


@pytest.fixture(scope="module")
def latents():
    """Latent videos [N, F, C, h, w] whose statistics both files hold (non-zero mean)."""
    g = torch.Generator().manual_seed(0)
    return 0.5 + 1.7 * torch.randn(6, F, C, H, W, generator=g, dtype=torch.float64)


def _abar_939() -> float:
    """abar at step M - 1 of DynamiCrafter 512's betas, from diffusers' own scheduler."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        rescale_betas_zero_snr=True,
    )
    return float(scheduler.alphas_cumprod[M - 1])


@functools.cache
def _model(reference_alpha: bool):
    schedule = DynamicRescaleVPSchedule(
        base_scale=0.7,
        rescale_zero_terminal_snr=True,
        prediction="v",
        reference_analytic_init=reference_alpha,
    )
    return tiny_dynamicrafter(schedule=schedule, num_frames=F).eval()


def _start(stats_path, reference_alpha: bool = True):
    """x_M [B, F, C, h, w] as ``sample`` draws it with the tiny DynamiCrafter, stats and seeds."""
    model = _model(reference_alpha)
    image = torch.zeros(len(SEEDS), 3, 32, 32)
    generators = per_sample_generators(SEEDS)
    cond = model.sampling_condition(image, num_frames=F, generator=generators)
    sampler = Sampler(step="ddim", num_steps=1, M=M, stats=stats_path, eta=1.0)
    out = sampler(model, cond, F, generators, return_intermediates=True)
    return out.trajectory[0]


def _by_hand(latents, alpha: float, sigma2: float) -> torch.Tensor:
    mean = latents.mean(0)  # [F, C, h, w]
    tr_d = float(latents.var(0, unbiased=False).mean())
    eps = torch.stack(
        [torch.randn(F, C, H, W, generator=torch.Generator().manual_seed(s)) for s in SEEDS]
    )
    return (alpha * mean + (sigma2 + alpha**2 * tr_d) ** 0.5 * eps).float()


@pytest.mark.parametrize("tr_as", ["float", "0-d", "[1]"])
def test_start_from_a_reference_file_is_the_closed_form(latents, tmp_path, tr_as):
    tr = float(latents.var(0, unbiased=False).mean())
    stored = {"float": tr, "0-d": torch.tensor(tr), "[1]": torch.tensor([tr])}[tr_as]
    path = tmp_path / "reference.pt"
    # the reference's layout: [1, C, F, h, w], float32
    mean = latents.mean(0).permute(1, 0, 2, 3)[None].float()
    torch.save({"Expectation_X0": mean, "Tr_Cov_d": stored}, path)
    abar = _abar_939()
    expected = _by_hand(latents, abar**0.5, 1.0 - abar)
    torch.testing.assert_close(_start(path), expected, atol=2e-6, rtol=1e-5)


def test_start_from_our_file_is_the_same_closed_form(latents, tmp_path):
    path = tmp_path / "ours.safetensors"
    LatentStats().update(latents).save(path)
    abar = _abar_939()
    expected = _by_hand(latents, abar**0.5, 1.0 - abar)
    torch.testing.assert_close(_start(path), expected, atol=2e-6, rtol=1e-5)


def test_the_reference_alpha_leaves_out_the_data_scale(latents, tmp_path):
    """alpha_M = sqrt(abar) (reference) is 1 / 0.7 of the process's alpha_M s_M at M = 940; the
    opt-out gives the process's own Gaussian."""
    path = tmp_path / "ours.safetensors"
    LatentStats().update(latents).save(path)
    abar = _abar_939()
    scaled = _by_hand(latents, 0.7 * abar**0.5, 1.0 - abar)
    torch.testing.assert_close(_start(path, reference_alpha=False), scaled, atol=2e-6, rtol=1e-5)
    assert (_start(path) - scaled).abs().max() > 1e-3
