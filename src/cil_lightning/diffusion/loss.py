"""Denoising losses of the three families, with TimeNoise on the condition.

Zhao et al. 2024, section 4.1 (TimeNoise), and Karras et al. 2022, eq. (8) (EDM weighting).

Every adapter predicts x0 (``denoiser(x_t, t, cond) -> x0_hat``), so one loss serves all families:
an x0-space MSE times the weight that makes it equal to the family's own objective,

    edm  : lambda = (sigma^2 + sd^2) / (sigma * sd)^2                      (EDM / SVD)
    eps  : lambda = alpha^2 / sigma^2          (||eps_hat - eps||^2,  VP eps-prediction)
    v    : lambda = (alpha^2 + sigma^2)^2 / sigma^2   (||v_hat - v||^2, v = alpha eps - sigma x0)
    flow : lambda = (alpha + sigma)^2 / sigma^2      (||u_hat - u||^2, u = eps - x0)

since eps_hat - eps = -(alpha / sigma)(x0_hat - x0), and likewise for v and u.
"""

from __future__ import annotations

from torch import Tensor

from .cond_noise import CondNoise
from .rng import Generator, randn
from .schedules import Schedule

WEIGHTINGS = ("edm", "eps", "v", "flow")


def loss_weight(kind: str, alpha: Tensor, sigma: Tensor, sigma_data: float = 1.0) -> Tensor:
    """Weight [B] turning an x0-space MSE into the family's objective (see the module docstring)."""
    if kind == "edm":
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    if kind == "eps":
        return alpha**2 / sigma**2
    if kind == "v":
        return (alpha**2 + sigma**2) ** 2 / sigma**2
    if kind == "flow":
        return (alpha + sigma) ** 2 / sigma**2
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {kind!r}")


def denoising_loss(
    denoiser,
    schedule: Schedule,
    x0: Tensor,
    cond,
    cond_noise: CondNoise,
    *,
    weighting: str = "edm",
    generator: Generator = None,
) -> Tensor:
    """Per-sample denoising loss [B] for clean latents x0 [B, F, C, h, w].

    Draws the training time t from the schedule, noises the condition with ``cond_noise`` at the
    sample's own normalised time (through the adapter's ``training_condition``, which also applies
    classifier-free-guidance dropout), and scores the x0 prediction with the family's weighting.

    Args:
        denoiser: an adapter with ``training_condition(cond, t_norm, cond_noise, generator)`` and
            ``__call__(x_t, t, cond) -> x0_hat``.
        cond: the clean condition as the adapter's ``encode_condition`` returns it.
    """
    B = x0.shape[0]
    t = schedule.sample_training_time(B, generator=generator, device=x0.device)
    cond = denoiser.training_condition(cond, schedule.normalized_time(t), cond_noise, generator)
    alpha, sigma = schedule.alpha_sigma(t)
    shape = (B,) + (1,) * (x0.ndim - 1)
    eps = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
    x_t = alpha.view(shape).to(x0.dtype) * x0 + sigma.view(shape).to(x0.dtype) * eps
    x0_hat = denoiser(x_t, t, cond)
    mse = (x0_hat.float() - x0.float()).pow(2).flatten(1).mean(dim=1)
    sigma_data = getattr(schedule, "sigma_data", 1.0)
    return loss_weight(weighting, alpha.float(), sigma.float(), sigma_data) * mse
