"""Exact Gaussian lab: the training-inference gap of a start M < T with a perfect denoiser.

Data ("videos" of F frames, D independent columns; latent layout [B, F, D, 1, 1]):

    c ~ N(mu_c, s_c^2)            the first frame (also the condition), per column
    u ~ N(0, v^2)                 a velocity, independent of c
    w_f ~ N(0, tau^2), w_0 = 0    per-frame jitter
    x_f = c + f u + w_f           so x - c 1 ~ N(0, Sigma), Sigma = v^2 a a^T + tau^2 J,

with a = (0, 1, ..., F-1) and J = diag(0, 1, ..., 1). Given c, every family's posterior mean is
closed form (``GaussianVideoDenoiser``): with y = x_t - alpha c 1,

    E[x0 | x_t, c] = c 1 + K_t y,     K_t = alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1.

The deterministic sampler (DDIM eta = 0 = Euler = flow Euler, ``diffusion/samplers.py``) with this
denoiser maps y_t to y_s = L y_t, L = alpha_s K_t + (sigma_s / sigma_t)(I - alpha_t K_t), so the
generated video is x = c 1 + P y_M with P the product of the ladder's L: its law, motion energy
and distance to the data are closed form for any start x_M ~ N(m0, s0^2 I) (``theory``). The
Monte Carlo side (``measure``) runs the framework's ``Sampler`` with the same denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.analytic_init import LatentStats, analytic_init_params
from ..diffusion.schedules import Schedule
from ..sampling import Sampler
from .model import LatentCondition


@dataclass(frozen=True)
class GaussianVideos:
    """The data law above. Motion energy = mean over frame pairs of E[(x_{f+1} - x_f)^2]."""

    frames: int = 8
    columns: int = 64
    mu_c: float = 0.5
    s_c: float = 0.5
    v: float = 0.3
    tau: float = 0.1

    def sigma(self) -> Tensor:
        """Sigma = Cov[x0 - c 1] [F, F], float64."""
        a = torch.arange(self.frames, dtype=torch.float64)
        jitter = torch.ones(self.frames, dtype=torch.float64)
        jitter[0] = 0.0
        return self.v**2 * torch.outer(a, a) + self.tau**2 * torch.diag(jitter)

    def motion_energy(self) -> float:
        """Closed-form motion energy of the data: v^2 + tau^2 (2F - 3) / (F - 1)."""
        F = self.frames
        return self.v**2 + self.tau**2 * (2 * F - 3) / (F - 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(videos [n, F, D, 1, 1], conditions [n, D, 1, 1]) float32; frame 0 equals c."""
        F, D = self.frames, self.columns
        g = dict(generator=generator)
        c = self.mu_c + self.s_c * torch.randn(n, 1, D, **g, dtype=torch.float64)
        u = self.v * torch.randn(n, 1, D, **g, dtype=torch.float64)
        w = self.tau * torch.randn(n, F, D, **g, dtype=torch.float64)
        w[:, 0] = 0.0
        f = torch.arange(F, dtype=torch.float64).view(1, F, 1)
        x = c + f * u + w
        return x.float()[..., None, None], c[:, 0].float()[..., None, None]


class GaussianVideoDenoiser:
    """The exact posterior mean E[x0 | x_t, c] of ``GaussianVideos`` for any schedule family.

    ``denoiser(x_t [B, F, D, 1, 1], t [B] native, cond) -> x0_hat`` like every adapter; pixel
    space, so ``decode_video`` is the identity.
    """

    def __init__(self, data: GaussianVideos, schedule: Schedule) -> None:
        self.data, self.schedule = data, schedule
        self._sigma = data.sigma()

    def gain(self, t: Tensor) -> Tensor:
        """K_t [B, F, F] (float64) for native times t [B]; 0 where alpha_t = 0."""
        alpha, sigma = self.schedule.alpha_sigma(t.double())
        alpha, sigma = alpha.double().view(-1, 1, 1), sigma.double().view(-1, 1, 1)
        eye = torch.eye(self.data.frames, dtype=torch.float64)
        A = alpha**2 * self._sigma + sigma**2 * eye  # symmetric
        return torch.linalg.solve(A, alpha * self._sigma).transpose(1, 2)

    def __call__(self, x_t: Tensor, t: Tensor, cond: LatentCondition) -> Tensor:
        alpha = self.schedule.alpha_sigma(t.double())[0].double().view(-1, 1, 1)
        x = x_t.double().flatten(2)  # [B, F, D]
        c = cond.latent.double().flatten(1)[:, None]  # [B, 1, D]
        y = x - alpha * c
        # One solve per distinct time (a sampler passes one time for the whole batch).
        times, index = t.unique(return_inverse=True)
        return (c + self.gain(times)[index] @ y).view_as(x_t).to(x_t.dtype)

    def decode_video(self, latents: Tensor) -> Tensor:
        return latents


def propagator(denoiser: GaussianVideoDenoiser, times: Tensor) -> Tensor:
    """P [F, F] (float64): y_out = P y_M along the ladder ``times`` (eta = 0 steps)."""
    alpha, sigma = denoiser.schedule.alpha_sigma(times.double())
    a, s = alpha.double().tolist(), sigma.double().tolist()
    P = torch.eye(denoiser.data.frames, dtype=torch.float64)
    eye = P.clone()
    for i in range(len(a) - 1):
        K = denoiser.gain(times[i : i + 1])[0]
        P = (a[i + 1] * K + (s[i + 1] / s[i]) * (eye - a[i] * K)) @ P
    return P


def start_moments(schedule: Schedule, M, stats: LatentStats | None, data: GaussianVideos):
    """The start x_M ~ N(m0, s0^2 I) the Sampler draws: (m0 [F, D] float64, s0, alpha_M)."""
    mean, s0 = analytic_init_params(schedule, M, stats)
    alpha = float(schedule.alpha_sigma(torch.tensor(float(schedule.start_time(M))))[0])
    m0 = (
        mean.reshape(data.frames, data.columns)
        if mean.ndim
        else mean.expand(data.frames, data.columns)
    )
    return m0, s0, alpha


def _gauss_kl(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> float:
    """KL(N(m0, S0) || N(m1, S1)) in nats (float64)."""
    k = m0.numel()
    S1_inv = torch.linalg.inv(S1)
    dm = m1 - m0
    logdet = torch.linalg.slogdet(S1)[1] - torch.linalg.slogdet(S0)[1]
    return float(0.5 * (torch.trace(S1_inv @ S0) + dm @ S1_inv @ dm - k + logdet))


def _sqrtm(S: Tensor) -> Tensor:
    w, V = torch.linalg.eigh(S)
    return (V * w.clamp_min(0).sqrt()) @ V.T


def _gauss_w2(m0: Tensor, S0: Tensor, m1: Tensor, S1: Tensor) -> float:
    """Squared 2-Wasserstein distance between N(m0, S0) and N(m1, S1)."""
    r = _sqrtm(S0)
    cross = _sqrtm(r @ S1 @ r)
    return float((m0 - m1).pow(2).sum() + torch.trace(S0 + S1 - 2 * cross))


def joint_law(data: GaussianVideos, P: Tensor, m0_col: Tensor, s0: float, alpha_M: float):
    """Generated law of z = (c, x_1 - c, ..., x_{F-1} - c) for one column: (mean [F], cov [F, F]).

    x = c 1 + P (m0 - alpha_M c 1 + s0 xi) with c ~ N(mu_c, s_c^2), xi ~ N(0, I).
    """
    one = torch.ones(data.frames, dtype=torch.float64)
    P1 = P @ one
    mean_y = P @ m0_col - alpha_M * data.mu_c * P1
    cov_yc = -alpha_M * data.s_c**2 * P1
    cov_y = alpha_M**2 * data.s_c**2 * torch.outer(P1, P1) + s0**2 * P @ P.T
    mean = torch.cat([torch.tensor([data.mu_c], dtype=torch.float64), mean_y[1:]])
    cov = torch.zeros(data.frames, data.frames, dtype=torch.float64)
    cov[0, 0] = data.s_c**2
    cov[0, 1:] = cov[1:, 0] = cov_yc[1:]
    cov[1:, 1:] = cov_y[1:, 1:]
    return mean, cov


def data_law(data: GaussianVideos) -> tuple[Tensor, Tensor]:
    """The data's law of z = (c, x_1 - c, ..., x_{F-1} - c) for one column."""
    mean = torch.zeros(data.frames, dtype=torch.float64)
    mean[0] = data.mu_c
    cov = torch.zeros(data.frames, data.frames, dtype=torch.float64)
    cov[0, 0] = data.s_c**2
    cov[1:, 1:] = data.sigma()[1:, 1:]
    return mean, cov


def theory(denoiser: GaussianVideoDenoiser, sampler: Sampler) -> dict:
    """Closed-form motion energy, KL(data || generated) and W2^2 per column for ``sampler``."""
    data, schedule = denoiser.data, denoiser.schedule
    times = schedule.sampling_times(sampler.num_steps, sampler.M)
    P = propagator(denoiser, times)
    m0, s0, alpha_M = start_moments(schedule, sampler.M, sampler.latent_stats, data)
    diff = torch.diff(torch.eye(data.frames, dtype=torch.float64), dim=0)  # [F-1, F]
    md, Sd = data_law(data)
    energy, kl, w2 = 0.0, 0.0, 0.0
    for d in range(m0.shape[1]):
        mean, cov = joint_law(data, P, m0[:, d], s0, alpha_M)
        # Frame differences of x are those of y = x - c 1 (frame 0 of y is 0 after the last step).
        y_mean = torch.cat([torch.zeros(1, dtype=torch.float64), mean[1:]])
        y_cov = torch.zeros_like(cov)
        y_cov[1:, 1:] = cov[1:, 1:]
        second = diff @ (y_cov + torch.outer(y_mean, y_mean)) @ diff.T
        energy += float(torch.trace(second)) / (data.frames - 1)
        kl += _gauss_kl(md, Sd, mean, cov)
        w2 += _gauss_w2(md, Sd, mean, cov)
    n = m0.shape[1]
    return {"motion_energy": energy / n, "kl": kl / n, "w2": w2 / n}


@torch.no_grad()
def measure(
    denoiser: GaussianVideoDenoiser, sampler: Sampler, n: int, seed: int
) -> dict[str, float]:
    """Monte Carlo: ``n`` videos from the framework's ``Sampler``; motion energy with its
    standard error (over videos), and KL / W2^2 of the Gaussian fitted to the samples."""
    data = denoiser.data
    g = torch.Generator().manual_seed(seed)
    _, cond = data.sample(n, g)
    x = sampler(denoiser, LatentCondition(cond), data.frames, g).latents.double().flatten(2)
    per_video = torch.diff(x, dim=1).pow(2).mean(dim=(1, 2))  # [n]
    c = cond.double().flatten(1)  # [n, D]
    z = torch.cat([c[:, None], x[:, 1:] - c[:, None]], dim=1)  # [n, F, D]
    z = z.permute(0, 2, 1).reshape(-1, data.frames)  # columns pooled (they are exchangeable)
    mean, cov = z.mean(0), torch.cov(z.T)
    md, Sd = data_law(data)
    return {
        "motion_energy": float(per_video.mean()),
        "motion_energy_se": float(per_video.std() / math.sqrt(n)),
        "kl": _gauss_kl(md, Sd, mean, cov),
        "w2": _gauss_w2(md, Sd, mean, cov),
    }


def data_stats(data: GaussianVideos, n: int = 8192, seed: int = 12345) -> LatentStats:
    """Analytic-Init statistics (E[x0] per element, tr(Cov)/d) estimated from ``n`` data videos."""
    videos, _ = data.sample(n, torch.Generator().manual_seed(seed))
    return LatentStats().update(videos)
