"""The sampler object: its defaults are its only ones, one statistics loader, and Analytic-Init
reaching the sampler: the x_M the denoiser first sees, by value.

With statistics (E[x0], tr(Cov)/d) the start at M is x_M = alpha_M E[x0] + sqrt(sigma_M^2 +
alpha_M^2 tr(Cov)/d) eps (METHOD.md section 4; EDM: alpha = 1, sigma = M). The statistics here
have a large mean and variance, so a start that dropped them (the plain N(0, (M^2 + 1) I)) is
far off. x_M is read where it is used: the first input of the adapter's forward.
"""

import dataclasses

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from cil_lightning.diffusion.analytic_init import LatentStats, load_stats
from cil_lightning.diffusion.rng import per_sample_generators, randn
from cil_lightning.models.svd import SVDDenoiser
from cil_lightning.sampling import Sampler, cached_stats

from .conftest import CONF, compose

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


def test_sampler_starts_from_the_analytic_init_gaussian(first_inputs):
    denoiser = instantiate(compose("train").model).eval()
    seeds = [0, 1, 2]
    frame = torch.rand(len(seeds), 3, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cond = denoiser.encode_condition(frame)
    sampler = Sampler(num_steps=2, M=M, stats=make_stats())
    out = sampler(denoiser, cond, F, per_sample_generators(seeds), return_intermediates=True)
    x_M, sigma = first_inputs[0]
    torch.testing.assert_close(sigma, torch.full((3,), M))
    torch.testing.assert_close(out.trajectory[0], x_M, rtol=0, atol=0)
    assert out.latents.shape == out.video.shape == (3, F, C, H, W)
    # The sampler draws the start first from each sample's generator.
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


# ------------------------------------------------------------------ the settings object
def class_defaults() -> dict:
    return {f.name: f.default for f in dataclasses.fields(Sampler)}


def test_base_yaml_holds_exactly_the_class_defaults():
    """conf/sampler/base.yaml lists every field (so `sampler.KEY=...` overrides work) at the
    class's values: the class is the one place of the defaults."""
    base = OmegaConf.to_container(OmegaConf.load(CONF / "sampler" / "base.yaml"))
    assert base.pop("_target_") == "cil_lightning.sampling.Sampler"
    assert base == class_defaults()


def test_a_config_that_sets_only_the_step_gets_the_class_values():
    sampler = instantiate({"_target_": "cil_lightning.sampling.Sampler", "step": "heun"})
    assert sampler == Sampler(step="heun")
    assert {**class_defaults(), "step": "heun"} == dataclasses.asdict(sampler)


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("euler", {"max_guidance": 3.0}),
        ("heun", {"step": "heun", "num_steps": 18, "max_guidance": 3.0}),
        (
            "ddim",
            {"step": "ddim", "num_steps": 50, "eta": 1.0, "min_guidance": 7.5, "max_guidance": 7.5},
        ),
    ],
)
def test_each_sampler_config_overrides_only_what_it_names(name, overrides, tmp_path):
    cfg = compose("sample", [f"sampler={name}", "images=x"], tmp_path)
    sampler = instantiate(cfg.sampler)
    assert isinstance(sampler, Sampler)
    assert dataclasses.asdict(sampler) == {**class_defaults(), **overrides}
    # Overrides of keys the named file does not set still work from the command line.
    cfg = compose("sample", [f"sampler={name}", "images=x", "sampler.M=10", "sampler.eta=0.5"])
    assert instantiate(cfg.sampler) == Sampler(**{**overrides, "M": 10, "eta": 0.5})


def test_sampler_is_frozen_and_replace_gives_another_start():
    sampler = Sampler(num_steps=3, max_guidance=3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.M = 10.0
    other = sampler.replace(M=10.0, stats="s.safetensors")
    assert (other.M, other.stats, other.num_steps, other.max_guidance) == (
        10.0,
        "s.safetensors",
        3,
        3.0,
    )
    assert sampler.M is None and sampler.stats is None
    with pytest.raises(ValueError, match="sampler.step='dpm' is unknown"):
        Sampler(step="dpm")


def test_one_loader_reads_every_statistics_format(tmp_path):
    """Ours (safetensors, whatever the file name) and both reference .pt layouts (SVD;
    DynamiCrafter / VideoCrafter1), through load_stats and through the sampler's stats."""
    stats = make_stats()
    ours, renamed = tmp_path / "ours.safetensors", tmp_path / "ours.stats"
    stats.save(ours)
    stats.save(renamed)
    svd, dc = tmp_path / "svd.pt", tmp_path / "dc.pt"
    stats.to_reference(svd, "svd", dtype=torch.float64)
    stats.to_reference(dc, "dynamicrafter", dtype=torch.float64)
    for path in (ours, renamed, svd, dc):
        for loaded in (load_stats(path), Sampler(stats=str(path)).latent_stats):
            assert loaded.shape == (F, C, H, W)
            torch.testing.assert_close(loaded.mean, stats.mean)
            assert loaded.tr_cov_d == pytest.approx(stats.tr_cov_d, rel=1e-12)
    # Loaded once per file however many samplers name it.
    assert Sampler(stats=str(svd)).latent_stats is Sampler(M=3.0, stats=str(svd)).latent_stats
    assert cached_stats(svd) is cached_stats(str(svd))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        _ = Sampler(stats=str(tmp_path / "missing.pt")).latent_stats


def test_statistics_of_another_shape_fail_naming_sampler_stats():
    denoiser = instantiate(compose("train").model).eval()
    cond = denoiser.encode_condition(torch.zeros(1, 3, H, W))
    sampler = Sampler(num_steps=1, M=M, stats=make_stats())
    with pytest.raises(ValueError, match=r"sampler.stats=.*\(4, 3, 16, 16\).*\(5, 3, 16, 16\)"):
        sampler(denoiser, cond, F + 1)
