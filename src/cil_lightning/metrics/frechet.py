"""Fréchet distance between Gaussians fitted to features, with streaming moments that sync.

For N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017; Unterthiner et al. 2018 for FVD):

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})

tr((S1 S2)^{1/2}) equals tr((S1^{1/2} S2 S1^{1/2})^{1/2}); the inner matrix is symmetric positive
semi-definite, so its square root comes from ``eigh`` without the complex parts that ``sqrtm`` of a
non-symmetric product leaves behind. Everything runs in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _sqrt_psd(a: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix [D, D] (negative round-off clipped)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: means [D].
        sigma1, sigma2: covariances [D, D] (symmetric PSD).

    Returns:
        a 0-d float64 tensor.
    """
    mu1, mu2, sigma1, sigma2 = (t.to(torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    sigma1 = (sigma1 + sigma1.T) / 2  # remove asymmetry left by float accumulation
    sigma2 = (sigma2 + sigma2.T) / 2
    root1 = _sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2 * tr_sqrt


class FrechetFeatureDistance(Metric):
    """Fréchet distance between real and generated feature sets, from streaming float64 moments.

    States (sums of features, of their outer products, and counts) reduce by summation, so ranks
    merge exactly and no per-sample features are kept. Subclasses implement ``features``.

    Args:
        num_features: feature size D.
        reset_real_features: if False, ``reset`` keeps the real statistics (a fixed reference set).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_features: int, reset_real_features: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_features = int(num_features)
        self.reset_real_features = reset_real_features
        d = self.num_features
        for which in ("real", "fake"):
            self.add_state(f"{which}_sum", torch.zeros(d, dtype=torch.float64), "sum")
            self.add_state(f"{which}_outer", torch.zeros(d, d, dtype=torch.float64), "sum")
            self.add_state(f"{which}_n", torch.zeros((), dtype=torch.float64), "sum")

    def features(self, videos: Tensor) -> Tensor:
        """Inputs [B, ...] -> features [B, D]."""
        raise NotImplementedError

    def update_features(self, feats: Tensor, real: bool) -> None:
        """Add precomputed features [B, D] to the real or the generated set."""
        feats = feats.detach().to(torch.float64).reshape(-1, self.num_features)
        which = "real" if real else "fake"
        setattr(self, f"{which}_sum", getattr(self, f"{which}_sum") + feats.sum(0))
        setattr(self, f"{which}_outer", getattr(self, f"{which}_outer") + feats.T @ feats)
        setattr(self, f"{which}_n", getattr(self, f"{which}_n") + feats.shape[0])

    def update(self, videos: Tensor, real: bool) -> None:
        """Add a batch (shape as ``features`` takes it) to the real or the generated set."""
        with torch.no_grad():
            self.update_features(self.features(videos), real)

    def moments(self, real: bool) -> tuple[Tensor, Tensor]:
        """Mean [D] and unbiased covariance [D, D] (float64) of one set."""
        which = "real" if real else "fake"
        n = getattr(self, f"{which}_n")
        if n < 2:
            raise RuntimeError(
                f"{type(self).__name__}: need at least 2 {which} samples, have {int(n)}"
            )
        mean = getattr(self, f"{which}_sum") / n
        cov = (getattr(self, f"{which}_outer") - n * torch.outer(mean, mean)) / (n - 1)
        return mean, cov

    def compute(self) -> Tensor:
        return frechet_distance(*self.moments(True), *self.moments(False))

    def reset(self) -> None:
        if self.reset_real_features:
            return super().reset()
        kept = {k: getattr(self, k).clone() for k in ("real_sum", "real_outer", "real_n")}
        super().reset()
        for k, v in kept.items():
            setattr(self, k, v)
