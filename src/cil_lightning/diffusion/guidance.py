"""Guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", section 3.4) for samplers that work on x0 predictions.

The rescale acts on the network's own output (eps, v or flow velocity): the guided output is
scaled to the standard deviation of the conditional one and mixed with the unscaled guided output,
out = phi * cfg * std(cond) / std(cfg) + (1 - phi) * cfg (diffusers' ``rescale_noise_cfg``; the
DynamiCrafter reference uses phi = 0.7). Each output is affine in x0 at a fixed (x_t, t),
out = a x_t + b x0, so the rescale runs in the output's space and comes back to x0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .samplers import _broadcast_scale

Denoiser = Callable[[Tensor, Tensor], Tensor]


def output_coefficients(schedule, t: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) [B] with the network's output = a x_t + b x0 at native times ``t`` [B].

    VP eps: eps = (x_t - alpha x0) / sigma; VP v: v = alpha eps - sigma x0; flow: u = eps - x0
    with x_t = (1 - t) x0 + t eps; EDM: eps (the rescale's reference space for sigma-space models).
    """
    alpha, sigma = schedule.alpha_sigma(t)
    alpha, sigma = alpha.double(), sigma.double()
    if schedule.family == "vp" and getattr(schedule, "prediction", "eps") == "v":
        return alpha / sigma, -(alpha**2 + sigma**2) / sigma
    if schedule.family == "flow":
        return 1 / sigma, -1 / sigma
    return 1 / sigma, -alpha / sigma


def rescaled_guidance(
    cond: Denoiser, uncond: Denoiser, scale: Tensor | float, phi: float, schedule
) -> Denoiser:
    """Classifier-free guidance uncond + scale (cond - uncond) on x0 predictions, with the guided
    output rescaled by ``phi`` in [0, 1] in the network's output space (see the module docstring).

    Args:
        cond, uncond: denoisers D(x_t [B, F, ...], t [B]) -> x0_hat.
        scale: a float or a [F] per-frame scale along dim 1.
        phi: the rescale factor (0: plain guidance).
        schedule: the model's schedule (its family and prediction type fix the output space).
    """

    def guided(x_t: Tensor, t: Tensor) -> Tensor:
        x0_c, x0_u = cond(x_t, t), uncond(x_t, t)
        w = _broadcast_scale(torch.as_tensor(scale), x0_c, frame_dim=1)
        x0_cfg = x0_u + w * (x0_c - x0_u)
        a, b = output_coefficients(schedule, t)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        a, b = a.view(shape).to(x_t.dtype), b.view(shape).to(x_t.dtype)
        out_c, out_cfg = a * x_t + b * x0_c, a * x_t + b * x0_cfg
        dims = list(range(1, x_t.ndim))
        rescaled = out_cfg * (
            out_c.std(dim=dims, keepdim=True) / out_cfg.std(dim=dims, keepdim=True)
        )
        out = phi * rescaled + (1 - phi) * out_cfg
        return (out - a * x_t) / b

    return guided
