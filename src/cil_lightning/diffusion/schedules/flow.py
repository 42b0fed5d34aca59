"""Rectified flow / flow matching schedule (Liu et al. 2023; Esser et al. 2024, SD3)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..rng import randn
from .base import Schedule


class FlowSchedule(Schedule):
    """Rectified flow / flow matching (Liu et al. 2023; Esser et al. 2024, SD3).

    x_t = (1 - t) x0 + t eps for t in [0, 1]; the network predicts the velocity v = eps - x0, so the
    loss weight is lambda(t) = (alpha + sigma)^2 / sigma^2 = 1 / t^2 (||v_hat - v||^2 in x0 space).
    Training t = sigmoid(n), n ~ N(logit_mean, logit_std^2) (SD3's logit-normal law; defaults 0, 1).
    Sampling ladder: uniform in an unshifted time u, mapped through SD3's timestep shift
    t = shift u / (1 + (shift - 1) u); with shift = 1 it is linspace(t_M, 0, n + 1).

    Args:
        shift: SD3 timestep shift (> 0; 1 leaves the ladder uniform, > 1 spends more steps at
            high noise).
        logit_mean, logit_std: logit-normal training law.
    """

    family = "flow"

    def __init__(self, shift: float = 1.0, logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        if not logit_std > 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        self.shift = float(shift)
        self.logit_mean, self.logit_std = float(logit_mean), float(logit_std)

    def sample_training_time(self, batch_size, *, generator=None, device=None) -> Tensor:
        n = randn((batch_size,), generator, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * n)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1.0 - t, t.clone()

    def loss_weight(self, t: Tensor) -> Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return (alpha + sigma) ** 2 / sigma**2

    def normalized_time(self, t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0)

    @property
    def start_range(self) -> str:
        return "a flow time in (0, 1]"

    def _start_ok(self, M: float) -> bool:
        return 0 < M <= 1

    def start_time(self, M: float | None = None) -> float:
        self.check_start(M)
        return 1.0 if M is None else float(M)

    def time_for_sigma(self, s: Tensor) -> Tensor:
        # s = t / (1 - t)  =>  t = s / (1 + s); s = +inf is pure noise, t = 1.
        s = torch.as_tensor(s, dtype=torch.float64)
        return torch.where(torch.isinf(s), 1.0, s / (1.0 + s))

    def shift_time(self, u: Tensor) -> Tensor:
        """SD3 timestep shift t = shift u / (1 + (shift - 1) u); identity for shift = 1."""
        return self.shift * u / (1.0 + (self.shift - 1.0) * u)

    def unshift_time(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`shift_time`: u = t / (shift - (shift - 1) t)."""
        return t / (self.shift - (self.shift - 1.0) * t)

    def sampling_times(self, num_steps, M=None, *, device=None) -> Tensor:
        """[num_steps + 1] float32 ladder from t_M down to 0.

        The ladder is uniform in the unshifted time from u_M = unshift(t_M) to 0 and then shifted,
        so it starts exactly at ``start_time(M)`` for every shift, and equals SD3's shifted
        linspace(1, 0, n + 1) for M = 1.
        """
        if int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps}")
        t_M = torch.tensor(self.start_time(M), dtype=torch.float64)
        ramp = torch.linspace(1.0, 0.0, int(num_steps) + 1, dtype=torch.float64)
        u = ramp * self.unshift_time(t_M)
        times = self.shift_time(u)
        times[0] = t_M  # exact start despite the round trip through the shift
        return times.float().to(device)
