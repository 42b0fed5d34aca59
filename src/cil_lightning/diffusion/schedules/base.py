"""The interface every schedule family implements (see the package docstring)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..rng import Generator


class Schedule(ABC):
    """A family's forward process in its native time.

    Subclasses implement the training law, (alpha_t, sigma_t), the normalised time, the loss
    weight, the sampling ladder and the start-point rule (``start_range``, ``_start_ok``).
    """

    family: str = ""

    # ---------------------------------------------------------------------------------------------
    # Training: time law, forward noising, loss weight, normalised time

    @abstractmethod
    def sample_training_time(
        self,
        batch_size: int,
        *,
        generator: Generator = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw training times from the family's training law. Returns [B] float32."""

    @abstractmethod
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) for native times ``t`` of any shape; both have t's shape."""

    def add_noise(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Forward process x_t = alpha_t x0 + sigma_t eps.

        Args:
            x0: clean samples [B, ...] (e.g. latents [B, F, C, h, w]).
            t: native times [B], one per sample.
            eps: standard normal noise, x0's shape.

        Returns:
            x_t [B, ...] in x0's dtype.
        """
        alpha, sigma = self.alpha_sigma(t)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return alpha.view(shape).to(x0.dtype) * x0 + sigma.view(shape).to(x0.dtype) * eps

    @abstractmethod
    def loss_weight(self, t: Tensor) -> Tensor:
        """Weight lambda(t) [B] that turns the x0-space MSE ||x0_hat - x0||^2 into the family's own
        training objective (``diffusion/loss.py``), in the dtype of ``alpha_sigma(t)``."""

    @abstractmethod
    def normalized_time(self, t: Tensor) -> Tensor:
        """Normalised time in [0, 1] that TimeNoise's mu(t) = 2 t^a - 1 reads (METHOD.md sec. 3)."""

    # ---------------------------------------------------------------------------------------------
    # Sampling: start point M and ladder

    @property
    @abstractmethod
    def start_range(self) -> str:
        """The allowed start points M, in words, for messages (e.g. ``"a flow time in (0, 1]"``)."""

    @abstractmethod
    def _start_ok(self, M: float) -> bool:
        """Whether the finite number ``M`` is an allowed start point."""

    def check_start(self, M: float | None) -> None:
        """Raise ``ValueError`` naming :attr:`start_range` unless ``M`` is None (the full start) or
        an allowed start point."""
        if M is None:
            return
        try:
            value = float(M)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(M, (bool, str)) or not (math.isfinite(value) and self._start_ok(value)):
            raise ValueError(f"M must be {self.start_range}, got {M}")

    @abstractmethod
    def start_time(self, M: float | None = None) -> float:
        """Native time at which sampling starts for the start point ``M`` (None: the full start)."""

    def init_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) of Analytic-Init's Gaussian at the start time ``t``: the forward
        process's own, unless a schedule follows a reference that uses other values."""
        return self.alpha_sigma(t)

    @abstractmethod
    def sampling_times(
        self, num_steps: int, M: float | None = None, *, device: torch.device | str | None = None
    ) -> Tensor:
        """Sampling ladder [num_steps + 1]: first entry ``start_time(M)``, last the clean time."""

    # ---------------------------------------------------------------------------------------------
    # Shared sigma-space and its inverse

    def sigma_over_alpha(self, t: Tensor) -> Tensor:
        """sigma_t / alpha_t (float64) of native times ``t``, any shape; +inf where alpha_t = 0.

        The noise level of the shared sigma-space x0 + (sigma_t / alpha_t) eps; log-SNR is
        -2 ln(sigma_t / alpha_t).
        """
        alpha, sigma = self.alpha_sigma(torch.as_tensor(t, dtype=torch.float64))
        alpha, sigma = alpha.double(), sigma.double()
        return torch.where(alpha > 0, sigma / alpha.clamp_min(1e-300), torch.inf)

    def time_for_sigma(self, s: Tensor) -> Tensor:
        """Native time whose sigma_t / alpha_t is ``s`` (float64, any shape; ``s`` > 0, may be
        +inf). Inverse of :meth:`sigma_over_alpha` where the family's time is continuous."""
        raise NotImplementedError(f"{type(self).__name__} has no sigma-space inverse")
