"""Analytic-Init reaches the sampler: the x_M the denoiser first sees, by value.

With statistics (E[x0], tr(Cov)/d) the start at M is x_M = alpha_M E[x0] + sqrt(sigma_M^2 +
alpha_M^2 tr(Cov)/d) eps (METHOD.md section 4; EDM: alpha = 1, sigma = M). The statistics here
have a large mean and variance, so a start that dropped them (the plain N(0, (M^2 + 1) I)) is
far off. x_M is read where it is used: the first input of the adapter's forward.
"""

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from cil_lightning.diffusion.analytic_init import LatentStats
from cil_lightning.diffusion.rng import per_sample_generators, randn
from cil_lightning.generate import generate
from cil_lightning.models.svd import SVDDenoiser

from .conftest import compose

F, C, H, W = 4, 3, 16, 16  # the tiny pixel-space model: the latent is the frame
M = 10.0
SPREAD = 20.0  # per-element standard deviation of the statistics: tr(Cov)/d = 400


def distinctive_mean() -> torch.Tensor:
    """E[x0] [F, C, H, W]: 40 plus a pattern in [-10, 10] that differs across elements."""
    pattern = torch.linspace(-1.0, 1.0, F * C * H * W).view(F, C, H, W)
    return 40.0 + 10.0 * pattern.roll(37).sin()


def make_stats() -> LatentStats:
    """Two samples mean +- SPREAD: exactly E[x0] = mean and tr(Cov)/d = SPREAD^2."""
    mean = distinctive_mean().double()
    return LatentStats().update(torch.stack([mean + SPREAD, mean - SPREAD]))


@pytest.fixture
def first_inputs(monkeypatch) -> list:
    """(x, sigma) of every adapter call, in order."""
    seen = []
    forward = SVDDenoiser.forward

    def recording(self, x, sigma, cond):
        seen.append((x.detach().clone(), sigma.detach().clone()))
        return forward(self, x, sigma, cond)

    monkeypatch.setattr(SVDDenoiser, "forward", recording)
    return seen


def test_make_stats_holds_the_intended_values():
    stats = make_stats()
    torch.testing.assert_close(stats.mean, distinctive_mean().double())
    assert stats.tr_cov_d == pytest.approx(SPREAD**2, rel=1e-12)


def test_generate_starts_from_the_analytic_init_gaussian(first_inputs):
    denoiser = instantiate(compose("train").model).eval()
    seeds = [0, 1, 2]
    frame = torch.rand(len(seeds), 3, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cond = denoiser.encode_condition(frame)
    generate(
        denoiser,
        cond,
        num_frames=F,
        num_steps=2,
        M=M,
        stats=make_stats(),
        generator=per_sample_generators(seeds),
    )
    x_M, sigma = first_inputs[0]
    torch.testing.assert_close(sigma, torch.full((3,), M))
    # generate draws the start first from each sample's generator.
    eps = randn((3, F, C, H, W), per_sample_generators(seeds))
    std = (M**2 + SPREAD**2) ** 0.5
    torch.testing.assert_close(x_M, distinctive_mean() + std * eps, rtol=1e-5, atol=1e-4)


def test_sample_task_starts_from_the_statistics_file(first_inputs, tmp_path):
    """``python -m cil_lightning sample`` with ``sampler.stats``: the conf/sample.yaml path, with a
    statistics file written by ``LatentStats.save``."""
    from cil_lightning.tasks.sample import sample

    stats_path = tmp_path / "stats.safetensors"
    make_stats().save(stats_path)
    Image.new("RGB", (24, 16), (200, 30, 60)).save(tmp_path / "red.png")
    seeds = [0, 1, 2, 3]
    cfg = compose(
        "sample",
        [
            "model=tiny",
            f"images={tmp_path / 'red.png'}",
            f"num_frames={F}",
            f"height={H}",
            f"width={W}",
            f"seeds=[{','.join(map(str, seeds))}]",
            f"sampler.stats={stats_path}",
            f"sampler.M={M}",
            "sampler.num_steps=1",
            "device=cpu",
        ],
        tmp_path / "out",
    )
    record = sample(cfg)
    assert record["analytic_init"]["tr_cov_d"] == pytest.approx(SPREAD**2)
    x_M, sigma = first_inputs[0]
    torch.testing.assert_close(sigma, torch.full((len(seeds),), M))
    # The sample task draws inference condition noise before the start from the same
    # generators, so the check is by distribution: x_M - E[x0] ~ N(0, (M^2 + tr(Cov)/d) I)
    # over 3072 elements (the plain start would have mean -E[x0] ~ -40 and std ~10).
    z = (x_M - distinctive_mean()) / (M**2 + SPREAD**2) ** 0.5
    assert abs(z.mean().item()) < 0.1  # 5 standard errors
    assert z.std().item() == pytest.approx(1.0, abs=0.05)
    # Per element, the mean pattern is there: x_M correlates with E[x0] across elements.
    centred = x_M.mean(0) - x_M.mean()
    pattern = distinctive_mean() - distinctive_mean().mean()
    assert torch.corrcoef(torch.stack([centred.flatten(), pattern.flatten()]))[0, 1] > 0.2
