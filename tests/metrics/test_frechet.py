import math

import numpy as np
import pytest
import scipy.linalg
import torch

from cil_lightning.metrics import FrechetVideoDistance, frechet_distance

from .helpers import MeanPoolFeatures


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    # Commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    expected = (mu1 - mu2).square().sum() + (v1.sqrt() - v2.sqrt()).square().sum()
    d = frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert d.dtype == torch.float64
    assert d.item() == pytest.approx(expected.item(), rel=1e-12)  # 1 + 6.25 + 4 + 1 = 12.25
    assert expected.item() == pytest.approx(12.25)


def test_frechet_distance_matches_scipy_for_full_covariances():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(6, 6, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(6), b @ b.T + 0.1 * torch.eye(6)
    mu1 = torch.randn(6, generator=g, dtype=torch.float64)
    mu2 = torch.randn(6, generator=g, dtype=torch.float64)
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = ((mu1 - mu2) ** 2).sum().item() + np.trace(s1.numpy() + s2.numpy() - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2).item() == pytest.approx(expected, rel=1e-9)
    # Rotated isotropic 2-D pair: W2^2 of N(0, I) and N(0, 4 I) is 2 * (2 - 1)^2 = 2.
    c, s = math.cos(0.3), math.sin(0.3)
    r = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    d = frechet_distance(torch.zeros(2), r @ r.T, torch.zeros(2), 4 * r @ r.T)
    assert d.item() == pytest.approx(2.0, abs=1e-12)


def test_streaming_moments_equal_the_sample_mean_and_covariance():
    torch.manual_seed(0)
    fvd = FrechetVideoDistance(MeanPoolFeatures(8))
    real = torch.rand(10, 3, 3, 8, 8) * 2 - 1
    fake = torch.rand(12, 3, 3, 8, 8) * 2 - 1
    for chunk in real.split(3):
        fvd.update(chunk, real=True)
    for chunk in fake.split(5):
        fvd.update(chunk, real=False)
    f_real = fvd.feature_network(real).double()
    f_fake = fvd.feature_network(fake).double()
    mean, cov = fvd.moments(real=True)
    torch.testing.assert_close(mean, f_real.mean(0))
    torch.testing.assert_close(cov, torch.cov(f_real.T))
    expected = frechet_distance(
        f_real.mean(0), torch.cov(f_real.T), f_fake.mean(0), torch.cov(f_fake.T)
    )
    torch.testing.assert_close(fvd.compute(), expected)
    fvd.reset()
    fvd.update(real, real=True)
    fvd.update(real, real=False)
    assert abs(fvd.compute().item()) < 1e-8  # identical sets
