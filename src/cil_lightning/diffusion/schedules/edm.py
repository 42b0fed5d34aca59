"""Variance-exploding EDM schedule (Karras et al. 2022), as Stable Video Diffusion uses it."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..rng import randn
from .base import Schedule


class EDMSchedule(Schedule):
    """Variance-exploding EDM process as Stable Video Diffusion uses it (Karras et al. 2022).

    Training sigma ~ LogNormal(P_mean, P_std); sampling on the Karras ladder
    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0.
    Loss weight lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (EDM eq. 8), which
    is 1 / c_out^2 of the preconditioning with the same ``sigma_data``.

    Args:
        P_mean, P_std: log-normal training law of sigma (SVD: -1.2 and 1.2, EDM paper values).
        sigma_data: data standard deviation of the EDM preconditioning and loss weight (SVD: 1.0).
        sigma_min, sigma_max: ends of the sampling ladder (SVD scheduler config: 0.002 and 700).
        rho: Karras ladder exponent (7).
        time_mode: ``"quantile"`` maps sigma to Phi((ln sigma - P_mean) / P_std), uniform on [0, 1]
            under the training law (our default); ``"reference"`` is the reference code's
            sigma / sigma_ref, clamped to [0, 1].
        sigma_ref: divisor of the reference mode (700).
    """

    family = "edm"

    def __init__(
        self,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        sigma_data: float = 1.0,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        rho: float = 7.0,
        time_mode: str = "quantile",
        sigma_ref: float = 700.0,
    ) -> None:
        if P_std <= 0:
            raise ValueError(f"P_std must be > 0, got {P_std}")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if time_mode not in ("quantile", "reference"):
            raise ValueError(f"time_mode must be 'quantile' or 'reference', got {time_mode!r}")
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.sigma_data = float(sigma_data)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.time_mode, self.sigma_ref = time_mode, float(sigma_ref)

    def sample_training_time(self, batch_size, *, generator=None, device=None) -> Tensor:
        n = randn((batch_size,), generator, device=device)
        return (self.P_mean + self.P_std * n).exp()

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), t

    def loss_weight(self, t: Tensor) -> Tensor:
        sigma, sd = self.alpha_sigma(t)[1], self.sigma_data
        return (sigma**2 + sd**2) / (sigma * sd) ** 2

    def normalized_time(self, t: Tensor) -> Tensor:
        if self.time_mode == "reference":
            return (t / self.sigma_ref).clamp(0.0, 1.0)
        z = (t.clamp_min(1e-20).log() - self.P_mean) / self.P_std
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))

    @property
    def start_range(self) -> str:
        return f"> sigma_min = {self.sigma_min} (EDM sigma_max)"

    def _start_ok(self, M: float) -> bool:
        return M > self.sigma_min

    def start_time(self, M: float | None = None) -> float:
        self.check_start(M)
        return self.sigma_max if M is None else float(M)

    def time_for_sigma(self, s: Tensor) -> Tensor:
        # alpha = 1: the native time is sigma itself.
        return torch.as_tensor(s, dtype=torch.float64).clone()

    def sampling_times(self, num_steps, M=None, *, device=None) -> Tensor:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        sigma_max = self.start_time(M)
        ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), sigma_max ** (1 / self.rho)
        sigmas = (hi + ramp * (lo - hi)) ** self.rho
        if num_steps == 1:
            sigmas = torch.tensor([sigma_max], dtype=torch.float64)
        return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)
