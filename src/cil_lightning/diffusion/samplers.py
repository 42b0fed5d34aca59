"""Samplers as functions: DDIM, Euler, Heun and flow Euler on any schedule, started at M.

Zhao et al., "Identifying and Solving Conditional Image Leakage in Image-to-Video Diffusion Model",
NeurIPS 2024, section 4 and ``shared/METHOD.md`` section 4: sampling starts at a step M < T (from
Analytic-Init's Gaussian), so every sampler takes an explicit ladder ``times`` built by
``Schedule.sampling_times(num_steps, M)``: first entry ``start_time(M)``, last the clean time.

All samplers see the network only through a denoiser D(x_t, t) -> x0_hat (model adapters convert
eps-, v- or velocity-prediction into x0), and all of them are one update written in (alpha, sigma):

  eps_hat = (x_t - alpha_t x0_hat) / sigma_t
  x_s     = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,     z ~ N(0, I)
  c       = eta sigma_s sqrt(1 - SNR_t / SNR_s),                       SNR = alpha^2 / sigma^2

- VP: this is DDIM (Song et al. 2021, Eq. 12), with c = DDIM's sigma_t(eta) of Eq. 16,
  eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s); eta = 1 is ancestral DDPM.
- EDM (alpha = 1), eta = 0: x_s = x_t + (sigma_s - sigma_t) (x_t - x0_hat) / sigma_t, the Euler step
  of the probability-flow ODE (Karras et al. 2022, Algorithm 1 without the corrector and churn).
- Flow (alpha = 1 - t, sigma = t), eta = 0: x_s = x_t + (s - t) v_hat with v_hat = eps_hat - x0_hat,
  the rectified-flow Euler step.

No step divides by the current alpha_t: zero-terminal-SNR VP schedules have alpha = 0 at their
first step. (alpha_s of the next time only enters the SNR ratio, guarded against 0.)
Heun (Karras et al. 2022, Algorithm 1, S_churn = 0) is EDM-only.

Noise comes from an injected generator (``rng.randn``): None, one ``torch.Generator``, or one per
sample, which makes seeded samples independent of batch size and rank (EDM ``generate.py``).
Classifier-free guidance (Ho & Salimans 2022) wraps two denoisers into one; guidance on x0 equals
guidance on eps or v: at fixed (x_t, t) both are affine in x0, and the CFG weights sum to one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .rng import Generator, randn
from .schedules import Schedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``denoiser(x_t, t) -> x0_hat``: x_t [B, ...] native noisy sample, t [B] native times."""


# --------------------------------------------------------------------------------------------------
# Classifier-free guidance


def classifier_free_guidance(
    cond: Denoiser, uncond: Denoiser, scale: float | Tensor, frame_dim: int = 1
) -> Denoiser:
    """Guided denoiser uncond + scale * (cond - uncond) on x0 predictions (Ho & Salimans 2022).

    Args:
        cond, uncond: conditional and unconditional denoisers (two forward passes per call; an
            adapter that batches them can implement the same formula itself).
        scale: a float, a 0-d tensor, a [F] tensor applied along ``frame_dim`` of [B, F, C, H, W]
            x0 predictions (SVD's per-frame ramp, see :func:`svd_guidance_scale`), or any tensor
            that broadcasts against the prediction. A float 1.0 returns ``cond`` itself.
        frame_dim: the frame axis of the predictions for a [F] scale.

    Returns:
        a denoiser with the same call signature.
    """
    if not isinstance(scale, Tensor):
        w = float(scale)
        if w == 1.0:
            return cond  # uncond + 1 * (cond - uncond) is cond: skip the second pass

        def guided(x_t: Tensor, t: Tensor) -> Tensor:
            x0_u = uncond(x_t, t)
            return x0_u + w * (cond(x_t, t) - x0_u)

        return guided

    def guided_tensor(x_t: Tensor, t: Tensor) -> Tensor:
        x0_c, x0_u = cond(x_t, t), uncond(x_t, t)
        w = _broadcast_scale(scale, x0_c, frame_dim)
        return x0_u + w * (x0_c - x0_u)

    return guided_tensor


def _broadcast_scale(scale: Tensor, like: Tensor, frame_dim: int) -> Tensor:
    """Shape a guidance scale to broadcast against ``like`` [B, F, ...]."""
    scale = scale.to(device=like.device, dtype=like.dtype)
    if scale.ndim != 1:
        return scale
    dim = frame_dim % like.ndim
    if scale.shape[0] != like.shape[dim]:
        raise ValueError(
            f"guidance scale has {scale.shape[0]} entries but dim {frame_dim} of the prediction "
            f"has {like.shape[dim]} (shape {tuple(like.shape)})"
        )
    shape = [1] * like.ndim
    shape[dim] = -1
    return scale.view(shape)


def svd_guidance_scale(
    num_frames: int,
    min_guidance: float = 1.0,
    max_guidance: float = 3.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """SVD's per-frame guidance ramp linspace(min, max, F) -> [F] (diffusers
    ``StableVideoDiffusionPipeline``: 1.0 on the conditioning frame up to 3.0 on the last)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return torch.linspace(min_guidance, max_guidance, num_frames, device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# The shared update


@dataclass
class SamplerOutput:
    """Result of a sampler.

    Attributes:
        sample: final sample at the ladder's last time (the clean time) [B, ...].
        trajectory: [x_start, x_1, ..., sample], num_steps + 1 tensors [B, ...], or None.
        x0_predictions: the denoiser's x0 prediction at each step's start, num_steps tensors
            [B, ...] (Heun: the predictor's), or None.
    """

    sample: Tensor
    trajectory: list[Tensor] | None = None
    x0_predictions: list[Tensor] | None = None


def ddim_update(
    x_t: Tensor,
    x0_hat: Tensor,
    alpha_t: float,
    sigma_t: float,
    alpha_s: float,
    sigma_s: float,
    *,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """One generalised DDIM step from (alpha_t, sigma_t) to (alpha_s, sigma_s); see the banner.

    Args:
        x_t: current sample [B, ...]; x0_hat: the denoiser's prediction at t, same shape.
        alpha_t, sigma_t, alpha_s, sigma_s: coefficients of the current and the next time
            (sigma_t > 0; alpha_t may be 0).
        eta: stochasticity in [0, 1]; 0 deterministic (DDIM / Euler), 1 ancestral (DDPM).
        noise: z ~ N(0, I) of x_t's shape, required when eta > 0.

    Returns:
        x_s [B, ...].
    """
    eps_hat = (x_t - alpha_t * x0_hat) / sigma_t
    # r = SNR_t / SNR_s = (alpha_t sigma_s)^2 / (alpha_s sigma_t)^2, in [0, 1] along a ladder of
    # decreasing noise; alpha_s = 0 only when stepping between pure-noise times (then r := 0).
    den = (alpha_s * sigma_t) ** 2
    r = min(max((alpha_t * sigma_s) ** 2 / den, 0.0), 1.0) if den > 0 else 0.0
    # sqrt(sigma_s^2 - c^2) as sigma_s sqrt(1 - eta^2 (1 - r)) keeps eta = 0 exactly sigma_s.
    direction = sigma_s * math.sqrt(max(1.0 - eta**2 * (1.0 - r), 0.0))
    x_s = alpha_s * x0_hat + direction * eps_hat
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_update needs `noise` when eta > 0")
        x_s = x_s + (eta * sigma_s * math.sqrt(1.0 - r)) * noise
    return x_s


def _ladder(
    schedule: Schedule, times: Tensor, x: Tensor
) -> tuple[Tensor, list[float], list[float]]:
    """Validate a ladder and read its (alpha, sigma) once (one host sync per sampling call).

    Returns the times on x's device [N + 1] and alpha, sigma as Python floats (float64 maths).
    """
    if times.ndim != 1 or times.numel() < 2:
        raise ValueError(
            f"times must be a 1-D ladder of >= 2 times, got shape {tuple(times.shape)}"
        )
    alpha, sigma = schedule.alpha_sigma(times.double())
    t_list, a_list, s_list = torch.stack([times.double(), alpha, sigma]).cpu().tolist()
    if any(t_next >= t for t, t_next in zip(t_list[:-1], t_list[1:])):
        raise ValueError(f"times must be strictly decreasing, got {t_list}")
    if any(s <= 0 for s in s_list[:-1]):
        raise ValueError(f"every time but the last needs sigma > 0, got sigmas {s_list}")
    return times.to(x.device), a_list, s_list


def _time_batch(times: Tensor, i: int, batch_size: int) -> Tensor:
    """times[i] repeated to [B] (a real copy: networks may write to their inputs)."""
    return times[i].repeat(batch_size)


# --------------------------------------------------------------------------------------------------
# Samplers


def ddim_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    x_start: Tensor,
    times: Tensor,
    *,
    eta: float = 0.0,
    generator: Generator = None,
    return_intermediates: bool = False,
) -> SamplerOutput:
    """DDIM (Song et al. 2021) in (alpha, sigma) form for any schedule family.

    Args:
        denoiser: D(x_t [B, ...], t [B]) -> x0_hat [B, ...].
        schedule: the family whose native times ``times`` are.
        x_start: sample at ``times[0]`` [B, ...] (e.g. Analytic-Init's Gaussian draw).
        times: ladder [N + 1], strictly decreasing, from ``schedule.sampling_times``.
        eta: 0 deterministic DDIM, 1 DDPM-like ancestral sampling (DynamiCrafter: 1.0).
        generator: None, one generator, or B per-sample generators for the eta > 0 noise; with
            eta > 0 one draw of x_start's shape is taken at every step, the last one included.
        return_intermediates: keep the trajectory and the x0 predictions (memory: 2N tensors).

    Returns:
        :class:`SamplerOutput`; ``sample`` is at ``times[-1]``.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    x = x_start
    times, a, s = _ladder(schedule, times, x)
    traj, x0s = ([x], []) if return_intermediates else (None, None)
    for i in range(len(a) - 1):
        x0_hat = denoiser(x, _time_batch(times, i, x.shape[0]))
        noise = randn(x.shape, generator, device=x.device, dtype=x.dtype) if eta > 0 else None
        x = ddim_update(x, x0_hat, a[i], s[i], a[i + 1], s[i + 1], eta=eta, noise=noise)
        if return_intermediates:
            traj.append(x)
            x0s.append(x0_hat)
    return SamplerOutput(x, traj, x0s)


def euler_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    x_start: Tensor,
    times: Tensor,
    *,
    generator: Generator = None,
    return_intermediates: bool = False,
) -> SamplerOutput:
    """Deterministic Euler on the probability-flow ODE (no churn): :func:`ddim_sample`, eta = 0.

    For EDM this is diffusers' ``EulerDiscreteScheduler`` with ``s_churn = 0`` (SVD's sampler);
    for VP it is deterministic DDIM; for flow the rectified-flow Euler step. ``generator`` is
    accepted for a uniform signature and unused. Shapes as in :func:`ddim_sample`.
    """
    return ddim_sample(
        denoiser, schedule, x_start, times, eta=0.0, return_intermediates=return_intermediates
    )


def heun_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    x_start: Tensor,
    times: Tensor,
    *,
    generator: Generator = None,
    return_intermediates: bool = False,
) -> SamplerOutput:
    """EDM's 2nd-order Heun sampler (Karras et al. 2022, Algorithm 1, S_churn = 0); EDM only.

    d_i = (x_i - D(x_i, sigma_i)) / sigma_i; Euler predictor x' = x_i + (sigma_{i+1} - sigma_i) d_i;
    if sigma_{i+1} != 0 the trapezoidal corrector x_{i+1} = x_i + (sigma_{i+1} - sigma_i)
    (d_i + d'_i) / 2 with d'_i = (x' - D(x', sigma_{i+1})) / sigma_{i+1}. 2N - 1 denoiser calls on a
    ladder ending at 0. ``generator`` is unused. Shapes as in :func:`ddim_sample`.
    """
    if schedule.family != "edm":
        raise ValueError(f"heun_sample needs an EDM schedule (alpha = 1), got {schedule.family!r}")
    x = x_start
    times, _, s = _ladder(schedule, times, x)
    traj, x0s = ([x], []) if return_intermediates else (None, None)
    batch = x.shape[0]
    for i in range(len(s) - 1):
        x0_hat = denoiser(x, _time_batch(times, i, batch))
        d = (x - x0_hat) / s[i]
        h = s[i + 1] - s[i]
        x_next = x + h * d
        if s[i + 1] != 0:
            d_next = (x_next - denoiser(x_next, _time_batch(times, i + 1, batch))) / s[i + 1]
            x_next = x + (0.5 * h) * (d + d_next)
        x = x_next
        if return_intermediates:
            traj.append(x)
            x0s.append(x0_hat)
    return SamplerOutput(x, traj, x0s)


def flow_euler_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    x_start: Tensor,
    times: Tensor,
    *,
    generator: Generator = None,
    return_intermediates: bool = False,
) -> SamplerOutput:
    """Rectified-flow Euler x_s = x_t + (s - t) v_hat, v_hat = eps_hat - x0_hat; flow only.

    Identical to :func:`euler_sample` on a flow schedule; the family check guards configs.
    ``generator`` is unused. Shapes as in :func:`ddim_sample`.
    """
    if schedule.family != "flow":
        raise ValueError(
            f"flow_euler_sample needs a flow schedule, got {schedule.family!r}; use euler_sample"
        )
    return euler_sample(
        denoiser, schedule, x_start, times, return_intermediates=return_intermediates
    )


Sampler = Callable[..., SamplerOutput]

SAMPLERS: dict[str, Sampler] = {
    "ddim": ddim_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "flow_euler": flow_euler_sample,
}


def get_sampler(name: str) -> Sampler:
    """The sampler function registered under ``name`` (see ``SAMPLERS``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {sorted(SAMPLERS)}")
    return SAMPLERS[name]
