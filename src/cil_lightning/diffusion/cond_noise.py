"""Condition-noise strategies: what is added to the conditional image during training.

Zhao et al., "Identifying and Solving Conditional Image Leakage in Image-to-Video Diffusion Model",
NeurIPS 2024 (arXiv 2406.15735), "TimeNoise", and ``shared/METHOD.md`` section 3.

Every strategy is a noise-*level* law (k-diffusion ``config.py::make_sample_density`` habit): it
draws one level beta per sample, shape [B], from the sample's normalised time t in [0, 1], and the
shared ``apply`` turns it into

    c~ = c + beta * eps,   eps ~ N(0, I).

The noise is added to the *encoded* condition (VAE latent of the conditional frame, or the image
embedding tokens, each with its own call) and never at inference, where the condition is clean.

TimeNoise:

    beta = beta_m * sigmoid(u),   u ~ N(mu(t), s^2),   mu(t) = 2 * mu_max * t^a - mu_max,

with s = 1 and mu_max = 1 in the paper, so mu(t) = 2 t^a - 1 runs from -1 (clean end) to +1.

All draws happen on the tensors' own device through ``rng.randn`` (None, one generator, or one
generator per sample), and nothing reads a tensor value on the host, so ``apply`` never
synchronises with the device.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .rng import Generator, randn

__all__ = [
    "COND_NOISES",
    "CondNoise",
    "ConstantCondNoise",
    "LogNormalCondNoise",
    "NoCondNoise",
    "TimeNoise",
    "build_cond_noise",
]


def _check_t_norm(t_norm: Tensor) -> None:
    if t_norm.ndim != 1:
        raise ValueError(f"t_norm must have shape [B], got {tuple(t_norm.shape)}")


class CondNoise(ABC):
    """A law for the condition-noise level beta, plus the shared ``c + beta * eps``.

    Attributes:
        per_element: True draws eps with the condition's full shape [B, ...] (the paper);
            False draws one scalar per sample, shape [B, 1, ..., 1], broadcast over the whole
            condition (the reference SVD code's ``randn([B, 1, 1, 1, 1])``).
    """

    per_element: bool = True

    @abstractmethod
    def sample_beta(self, t_norm: Tensor, generator: Generator = None) -> Tensor:
        """Draw one noise level per sample.

        Args:
            t_norm: [B] normalised time in [0, 1] (``Schedule.normalized_time`` of the training t).
            generator: None, one ``torch.Generator`` or a list of B of them (see ``rng``).

        Returns:
            beta: [B] float32 on ``t_norm``'s device, beta >= 0.
        """

    def add_noise(self, cond: Tensor, beta: Tensor, generator: Generator = None) -> Tensor:
        """Return ``cond + beta * eps`` for given levels (a new tensor; ``cond`` is not touched).

        Useful to reuse one beta for two conditions (e.g. the latent and the image tokens).

        Args:
            cond: [B, ...] condition of any float dtype (e.g. [B, F, C, H, W] or [B, C, H, W]).
            beta: [B] noise levels.
            generator: where eps comes from; eps is drawn in float32 on ``cond``'s device, so a
                seed gives the same noise whatever ``cond``'s dtype.

        Returns:
            [B, ...] with ``cond``'s shape, dtype and device.
        """
        if cond.ndim < 1 or beta.shape != cond.shape[:1]:
            raise ValueError(
                f"beta must have shape [B] = {tuple(cond.shape[:1])}, got {tuple(beta.shape)}"
            )
        bshape = (cond.shape[0],) + (1,) * (cond.ndim - 1)
        eps_shape = tuple(cond.shape) if self.per_element else bshape
        eps = randn(eps_shape, generator, device=cond.device, dtype=torch.float32)
        noise = beta.to(device=cond.device, dtype=torch.float32).reshape(bshape) * eps
        work = torch.promote_types(cond.dtype, torch.float32)
        # Out of place: the caller's condition may be reused (reference-code bug, METHOD.md 5).
        return (cond.to(work) + noise.to(work)).to(cond.dtype)

    def apply(
        self, cond: Tensor, t_norm: Tensor, generator: Generator = None
    ) -> tuple[Tensor, Tensor]:
        """Noise a batch of conditions at their samples' times.

        Args:
            cond: [B, ...] condition (e.g. latent [B, F, C, H, W] or tokens [B, N, D]).
            t_norm: [B] normalised time in [0, 1].
            generator: None, one generator, or B per-sample generators; beta is drawn first,
                then eps, from the same generator(s).

        Returns:
            (cond_noisy [B, ...] in ``cond``'s dtype and device, beta [B] float32). ``cond`` itself
            is never modified.
        """
        _check_t_norm(t_norm)
        if t_norm.shape[0] != cond.shape[0]:
            raise ValueError(f"t_norm has {t_norm.shape[0]} entries for a batch of {cond.shape[0]}")
        beta = self.sample_beta(t_norm, generator)
        return self.add_noise(cond, beta, generator), beta


class NoCondNoise(CondNoise):
    """No condition noise (naive fine-tuning baseline): beta = 0 and ``apply`` returns ``cond``.

    The returned condition is the input object itself (no copy, nothing written to it).
    """

    def sample_beta(self, t_norm: Tensor, generator: Generator = None) -> Tensor:
        _check_t_norm(t_norm)
        return torch.zeros(t_norm.shape, device=t_norm.device, dtype=torch.float32)

    def apply(
        self, cond: Tensor, t_norm: Tensor, generator: Generator = None
    ) -> tuple[Tensor, Tensor]:
        _check_t_norm(t_norm)
        return cond, self.sample_beta(t_norm, generator)

    def __repr__(self) -> str:
        return "NoCondNoise()"


class ConstantCondNoise(CondNoise):
    """A constant level beta for every sample and time (baseline)."""

    def __init__(self, beta: float) -> None:
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.beta = float(beta)

    def sample_beta(self, t_norm: Tensor, generator: Generator = None) -> Tensor:
        _check_t_norm(t_norm)
        return torch.full(t_norm.shape, self.beta, device=t_norm.device, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"ConstantCondNoise(beta={self.beta})"


class LogNormalCondNoise(CondNoise):
    """Stable Video Diffusion's own augmentation level: beta = sigma_c ~ LogNormal(P_mean, P_std).

    Independent of t. The defaults -3.0 / 0.5 (median sigma_c = e^-3 ~ 0.05) are the values of the
    widely used SVD fine-tuning script (SVD_Xtend ``train_svd.py``: ``rand_log_normal(loc=-3.0,
    scale=0.5)``); Stability did not publish SVD's own training law. There the noise is added in
    *pixel* space before the VAE and sigma_c is also fed as ``added_time_ids[2]``; this class is
    only the level law, and the caller decides which tensor it noises.
    """

    def __init__(self, P_mean: float = -3.0, P_std: float = 0.5) -> None:
        if not math.isfinite(P_mean):
            raise ValueError(f"P_mean must be finite, got {P_mean}")
        if not (math.isfinite(P_std) and P_std > 0):
            raise ValueError(f"P_std must be > 0, got {P_std}")
        self.P_mean, self.P_std = float(P_mean), float(P_std)

    def sample_beta(self, t_norm: Tensor, generator: Generator = None) -> Tensor:
        _check_t_norm(t_norm)
        n = randn(t_norm.shape, generator, device=t_norm.device, dtype=torch.float32)
        return (self.P_mean + self.P_std * n).exp()

    def __repr__(self) -> str:
        return f"LogNormalCondNoise(P_mean={self.P_mean}, P_std={self.P_std})"


class TimeNoise(CondNoise):
    """TimeNoise: a time-dependent condition-noise level (METHOD.md section 3).

    beta = beta_m * sigmoid(u), u ~ N(mu(t), s^2), mu(t) = 2 * mu_max * t^a - mu_max.

    Args:
        beta_m: maximum level (> 0). Reference defaults: 100 for DynamiCrafter / VideoCrafter1,
            15 for SVD.
        a: exponent of the time schedule (> 0); smaller a means more noise earlier (reference: 5).
        s: standard deviation of u (> 0; paper: 1).
        mu_max: mu runs from -mu_max at t = 0 to +mu_max at t = 1 (paper: 1).
        per_element: False reproduces the reference SVD code: one scalar eps per sample,
            broadcast over the whole condition.
    """

    def __init__(
        self,
        beta_m: float,
        a: float,
        s: float = 1.0,
        mu_max: float = 1.0,
        per_element: bool = True,
    ) -> None:
        if not (math.isfinite(beta_m) and beta_m > 0):
            raise ValueError(f"beta_m must be > 0, got {beta_m}")
        if not (math.isfinite(a) and a > 0):
            raise ValueError(f"a must be > 0, got {a}")
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"s must be > 0, got {s}")
        if not math.isfinite(mu_max):
            raise ValueError(f"mu_max must be finite, got {mu_max}")
        self.beta_m, self.a, self.s, self.mu_max = float(beta_m), float(a), float(s), float(mu_max)
        self.per_element = bool(per_element)

    def mu(self, t_norm: Tensor) -> Tensor:
        """mu(t) = 2 * mu_max * t^a - mu_max, elementwise, float32."""
        t = t_norm.to(torch.float32).clamp(0.0, 1.0)
        return 2.0 * self.mu_max * t.pow(self.a) - self.mu_max

    def sample_beta(self, t_norm: Tensor, generator: Generator = None) -> Tensor:
        _check_t_norm(t_norm)
        n = randn(t_norm.shape, generator, device=t_norm.device, dtype=torch.float32)
        return self.beta_m * torch.sigmoid(self.mu(t_norm) + self.s * n)

    def __repr__(self) -> str:
        return (
            f"TimeNoise(beta_m={self.beta_m}, a={self.a}, s={self.s}, mu_max={self.mu_max}, "
            f"per_element={self.per_element})"
        )


COND_NOISES: dict[str, type[CondNoise]] = {
    "none": NoCondNoise,
    "constant": ConstantCondNoise,
    "lognormal": LogNormalCondNoise,
    "timenoise": TimeNoise,
}


def build_cond_noise(name: str, **kwargs) -> CondNoise:
    """Build a strategy by name: ``"none"``, ``"constant"``, ``"lognormal"`` or ``"timenoise"``.

    ``kwargs`` go to the class, e.g. ``build_cond_noise("timenoise", beta_m=100, a=5)``.
    """
    key = name.lower()
    if key not in COND_NOISES:
        raise ValueError(f"unknown cond noise {name!r}; choose one of {sorted(COND_NOISES)}")
    return COND_NOISES[key](**kwargs)
