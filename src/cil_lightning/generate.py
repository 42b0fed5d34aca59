"""Image-to-video generation: an adapter, a sampler from ``diffusion/`` and Analytic-Init, glued.

Used by the validation callback and the ``sample`` task, so both produce the same videos for the
same seeds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .diffusion.analytic_init import LatentStats, analytic_init
from .diffusion.rng import Generator
from .diffusion.samplers import (
    SamplerOutput,
    classifier_free_guidance,
    get_sampler,
    svd_guidance_scale,
)


@torch.no_grad()
def generate(
    denoiser,
    cond,
    *,
    num_frames: int,
    sampler: str = "euler",
    num_steps: int = 25,
    M: float | None = None,
    stats: LatentStats | None = None,
    min_guidance: float = 1.0,
    max_guidance: float = 1.0,
    eta: float = 0.0,
    generator: Generator = None,
    return_intermediates: bool = False,
) -> SamplerOutput:
    """Sample latent videos [B, F, C, h, w] for a batch of conditions.

    Args:
        denoiser: a model adapter (``models/``); ``denoiser.schedule`` gives the family.
        cond: the clean condition from ``denoiser.encode_condition`` (B conditions).
        M: start point in the schedule's native units (EDM: sigma_max; VP: a step count; flow:
            t); None starts at the full start.
        stats: Analytic-Init statistics; None starts from the plain Gaussian.
        min_guidance, max_guidance: SVD's per-frame guidance ramp; both 1 disables guidance.
        generator: one generator, or one per sample for batch-size-independent results.
    """
    schedule = denoiser.schedule
    latent = cond.latent
    shape = (latent.shape[0], num_frames, *latent.shape[1:])
    x = analytic_init(schedule, M, stats, shape, generator, device=latent.device)
    times = schedule.sampling_times(num_steps, M, device=latent.device)

    def conditional(x_t: Tensor, t: Tensor) -> Tensor:
        return denoiser(x_t, t, cond)

    fn = conditional
    if max(min_guidance, max_guidance) != 1.0 or min_guidance != max_guidance:
        uncond = cond.unconditional()
        scale = svd_guidance_scale(num_frames, min_guidance, max_guidance, device=latent.device)
        fn = classifier_free_guidance(conditional, lambda x_t, t: denoiser(x_t, t, uncond), scale)
    kwargs = {"eta": eta} if sampler == "ddim" else {}
    return get_sampler(sampler)(
        fn,
        schedule,
        x,
        times,
        generator=generator,
        return_intermediates=return_intermediates,
        **kwargs,
    )
