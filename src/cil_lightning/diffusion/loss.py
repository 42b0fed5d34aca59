"""The denoising loss of every family, with TimeNoise on the condition.

Zhao et al. 2024, section 4.1 (TimeNoise), and Karras et al. 2022, eq. (8) (EDM weighting);
the habit of NVlabs/edm ``training/loss.py::EDMLoss``: one callable object, the denoiser and the
batch in, the per-sample loss out.

Every adapter predicts x0 (``denoiser(x_t, t, cond) -> x0_hat``), so one loss serves all families:
an x0-space MSE times the weight lambda(t) that makes it equal to the family's own objective. The
schedule owns lambda (``Schedule.loss_weight``), so a schedule cannot be paired with another
family's weighting:

    EDM    : lambda = (sigma^2 + sd^2) / (sigma * sd)^2  (SVD; = 1 / c_out^2)
    VP eps : lambda = alpha^2 / sigma^2                 (||eps_hat - eps||^2)
    VP v   : lambda = (alpha^2 + sigma^2)^2 / sigma^2   (||v_hat - v||^2, v = alpha eps - sigma x0)
    flow   : lambda = (alpha + sigma)^2 / sigma^2       (||u_hat - u||^2, u = eps - x0)

since eps_hat - eps = -(alpha / sigma)(x0_hat - x0), and likewise for v and u.
"""

from __future__ import annotations

from torch import Tensor

from .cond_noise import CondNoise
from .rng import Generator, randn


class DenoisingLoss:
    """Per-sample denoising loss with condition noise drawn at each sample's own time.

    Args:
        cond_noise: the law of the condition-noise level beta (TimeNoise, constant, SVD's
            log-normal, none), applied through the adapter's ``training_condition``.
    """

    def __init__(self, cond_noise: CondNoise) -> None:
        self.cond_noise = cond_noise

    def __call__(self, denoiser, x0: Tensor, cond, generator: Generator = None) -> Tensor:
        """Loss [B] of ``denoiser`` on clean latents x0 [B, F, C, h, w] and the clean ``cond``.

        Draws, in this order from ``generator``: the training time t [B] from the schedule's law;
        the condition noise and CFG dropout (inside ``training_condition``, at t's normalised
        time); the noise eps [B, F, C, h, w]. Then scores x0_hat(x_t, t) with the schedule's weight.

        Args:
            denoiser: an adapter with ``schedule``, ``training_condition(cond, t_norm, cond_noise,
                generator)`` and ``__call__(x_t, t, cond) -> x0_hat``.
            cond: the clean condition as the adapter's ``encode_condition`` returns it.
        """
        schedule = denoiser.schedule
        t = schedule.sample_training_time(x0.shape[0], generator=generator, device=x0.device)
        cond = denoiser.training_condition(
            cond, schedule.normalized_time(t), self.cond_noise, generator
        )
        eps = randn(x0.shape, generator, device=x0.device, dtype=x0.dtype)
        x0_hat = denoiser(schedule.add_noise(x0, t, eps), t, cond)
        mse = (x0_hat.float() - x0.float()).pow(2).flatten(1).mean(dim=1)
        return schedule.loss_weight(t) * mse
