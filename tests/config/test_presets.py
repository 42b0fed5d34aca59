"""The SVD presets do what their comments say: the released code's exact settings beside ours."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose


def _parts(experiment: str, tmp_path):
    cfg = compose("train", [f"+experiment={experiment}"], output_dir=tmp_path)
    return cfg, instantiate(cfg.cond_noise), instantiate(cfg.model.schedule)


def test_reference_timenoise_uses_sigma_over_700_and_one_scalar_per_sample(tmp_path):
    cfg, noise, schedule = _parts("svd_timenoise_reference", tmp_path)
    sigma = torch.tensor([0.002, 0.3, 5.0, 36.0, 700.0], dtype=torch.float64)
    torch.testing.assert_close(schedule.normalized_time(sigma).double(), sigma / 700)
    assert (noise.beta_m, noise.a) == (15.0, 5.0)
    latent = torch.zeros(3, 4, 8, 8)
    noisy, beta = noise.apply(latent, torch.full((3,), 0.9), torch.Generator().manual_seed(0))
    offsets = noisy.flatten(1)
    # One scalar per sample: every element of a sample carries the same offset.
    torch.testing.assert_close(offsets, offsets[:, :1].expand_as(offsets))
    assert offsets[:, 0].abs().min() > 0


def test_our_timenoise_uses_the_quantile_time_and_per_element_noise(tmp_path):
    cfg, noise, schedule = _parts("svd_timenoise", tmp_path)
    # sigma = exp(P_mean) is the median training sigma: normalised time 1/2.
    median = torch.tensor([math.exp(-1.2)], dtype=torch.float64)
    torch.testing.assert_close(
        schedule.normalized_time(median).double(), torch.tensor([0.5]).double()
    )
    noisy, _ = noise.apply(torch.zeros(2, 4, 8, 8), torch.full((2,), 0.9))
    assert noisy.flatten(1).std(1).min() > 0  # per element


@pytest.mark.parametrize(
    "experiment, P_mean, P_std",
    [("svd_svdaug_reference", -1.2, 1.2), ("svd_svdaug", -3.0, 0.5)],
)
def test_svd_augmentation_presets_draw_pixel_noise_at_their_law(
    experiment, P_mean, P_std, tmp_path
):
    cfg, noise, _ = _parts(experiment, tmp_path)
    assert cfg.model.noise_space == "pixel"
    beta = noise.sample_beta(torch.zeros(20000), torch.Generator().manual_seed(0))
    # log beta ~ N(P_mean, P_std^2): its median is exp(P_mean) (0.30 and 0.05).
    assert float(beta.median()) == pytest.approx(math.exp(P_mean), rel=0.05)
    assert float(beta.log().std()) == pytest.approx(P_std, rel=0.05)
