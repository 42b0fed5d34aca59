"""Analytic-Init: the Gaussian closest in KL to the marginal q_M at the start step M.

Zhao et al., "Identifying and Solving Conditional Image Leakage in Image-to-Video Diffusion Model",
NeurIPS 2024 (arXiv 2406.15735), "Analytic-Init", and ``shared/METHOD.md`` section 4.

Sampling starts at M < T. The marginal there, q_M(x_M) = E_{x0}[N(alpha_M x0, sigma_M^2 I)], still
carries x0; the isotropic Gaussian closest to it in KL has

    mu*      = alpha_M * E[x0]                           (a full tensor, e.g. [F, C, H, W])
    sigma*^2 = sigma_M^2 + alpha_M^2 * tr(Cov[x0]) / d   (one scalar; d = number of elements)

VP: alpha = sqrt(abar_M), sigma = sqrt(1 - abar_M) (native time M - 1, as the reference code);
EDM: alpha = 1, sigma = sigma_max; flow: alpha = 1 - t_M, sigma = t_M.

E[x0] and tr(Cov)/d live in the model's *scaled* latent space (after the VAE scaling factor) and
are estimated by streaming float64 sums of x and x^2 (``LatentStats``), mergeable across
DataLoader workers and ranks. Our canonical latent layout is (F, C, H, W) ("FCHW").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .latent_stats import LatentStats, load_stats
from .rng import Generator, randn
from .schedules import Schedule
from .stats_files import FORMAT_NAME, FORMAT_VERSION

# LatentStats, load_stats and the format names are re-exported: callers import them from here.
__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LatentStats",
    "analytic_init",
    "analytic_init_params",
    "load_stats",
]


def analytic_init_params(
    schedule: Schedule, M: float | None, stats: LatentStats | None
) -> tuple[Tensor, float]:
    """The Analytic-Init Gaussian N(mean, std^2 I) at the start point ``M``.

    (alpha, sigma) = ``schedule.init_alpha_sigma(schedule.start_time(M))`` (the forward process's
    ``alpha_sigma`` except where a schedule follows its reference, e.g. lvdm's dynamic rescale);
    mean = alpha * E[x0], std = sqrt(sigma^2 + alpha^2 * tr(Cov)/d).

    ``stats=None`` means a zero-mean, unit-variance data prior: mean = 0, std^2 = sigma^2 + alpha^2.
    For VP that is N(0, I) (alpha^2 + sigma^2 = 1); for EDM it is N(0, (sigma_max^2 + 1) I), i.e.
    diffusers' ``init_noise_sigma`` for SVD; for flow (1 - t)^2 + t^2.

    Returns:
        mean: Tensor[*stats.shape] float64 (a 0-d zero when ``stats`` is None), on CPU.
        std: python float.
    """
    t = torch.tensor(float(schedule.start_time(M)), dtype=torch.float64)
    alpha_t, sigma_t = schedule.init_alpha_sigma(t)
    alpha, sigma = float(alpha_t), float(sigma_t)
    if stats is None:
        return torch.zeros((), dtype=torch.float64), math.sqrt(sigma**2 + alpha**2)
    mean = alpha * stats.mean.detach().to("cpu", torch.float64)
    return mean, math.sqrt(sigma**2 + alpha**2 * stats.tr_cov_d)


def analytic_init(
    schedule: Schedule,
    M: float | None,
    stats: LatentStats | None,
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw the initial sample x_M = alpha_M E[x0] + sqrt(sigma_M^2 + alpha_M^2 tr(Cov)/d) * eps.

    Args:
        schedule: the model's schedule (any family).
        M: start point in the schedule's convention (VP: step count, e.g. 940, native time M - 1;
            EDM: sigma_max, e.g. 100; flow: t_M, e.g. 0.9); None: the schedule's full start.
        stats: latent statistics of shape (F, C, H, W), or None for the plain start
            N(0, (sigma_M^2 + alpha_M^2) I) (see ``analytic_init_params``).
        shape: [B, *stats.shape], e.g. [B, F, C, H, W].
        generator: None, one generator, or B per-sample generators (``rng.randn``); eps is drawn
            in float32, so a seed gives the same eps whatever ``dtype``.
        device, dtype: of the result.

    Returns:
        x_M: Tensor[shape] on ``device`` in ``dtype``.
    """
    shape = tuple(int(s) for s in shape)
    if stats is not None and stats.shape is not None and shape[1:] != stats.shape:
        raise ValueError(f"shape {shape} must be [B, *stats.shape] with stats.shape={stats.shape}")
    mean, std = analytic_init_params(schedule, M, stats)
    eps = randn(shape, generator, device=device, dtype=torch.float32)
    work = torch.promote_types(dtype, torch.float32)
    mean = mean.to(device=eps.device, dtype=work)
    return (mean + std * eps.to(work)).to(dtype)
