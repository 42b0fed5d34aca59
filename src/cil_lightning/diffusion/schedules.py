"""Noise schedules of the three families behind one interface.

Zhao et al., "Identifying and Solving Conditional Image Leakage in Image-to-Video Diffusion Model",
NeurIPS 2024, and ``shared/METHOD.md`` section 1.

Every forward process is x_t = alpha_t * x0 + sigma_t * eps. Each schedule keeps its own *native*
time ``t`` (the value its network is conditioned on):

==========  ============================  ===================  ====================
family      native time t                 alpha_t              sigma_t
==========  ============================  ===================  ====================
VP          integer step in [0, T)        sqrt(abar_t)         sqrt(1 - abar_t)
EDM         sigma itself                  1                    sigma
flow        t in [0, 1]                   1 - t                t
==========  ============================  ===================  ====================

Dividing by alpha_t gives the shared sigma-space x0 + (sigma_t / alpha_t) * eps (EDM, k-diffusion),
which is how samplers and Analytic-Init are written once for all families. Samplers never divide by
alpha, though: zero-terminal-SNR VP schedules have alpha = 0 at their last step.

Sampling ladders end at a *clean* time whose (alpha, sigma) is (1, 0).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .rng import Generator, randn


class Schedule(ABC):
    """A family's forward process in its native time (see the module docstring)."""

    family: str = ""

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

    @abstractmethod
    def normalized_time(self, t: Tensor) -> Tensor:
        """Normalised time in [0, 1] that TimeNoise's mu(t) = 2 t^a - 1 reads (METHOD.md sec. 3)."""

    @abstractmethod
    def start_time(self, M: float | None = None) -> float:
        """Native time at which sampling starts for the start point ``M`` (None: the full start)."""

    @abstractmethod
    def sampling_times(
        self, num_steps: int, M: float | None = None, *, device: torch.device | str | None = None
    ) -> Tensor:
        """Sampling ladder [num_steps + 1]: first entry ``start_time(M)``, last the clean time."""

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


class EDMSchedule(Schedule):
    """Variance-exploding EDM process as Stable Video Diffusion uses it (Karras et al. 2022).

    Training sigma ~ LogNormal(P_mean, P_std); sampling on the Karras ladder
    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then 0.

    Args:
        P_mean, P_std: log-normal training law of sigma (SVD: -1.2 and 1.2, EDM paper values).
        sigma_data: data standard deviation of the EDM preconditioning (SVD: 1.0).
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

    def normalized_time(self, t: Tensor) -> Tensor:
        if self.time_mode == "reference":
            return (t / self.sigma_ref).clamp(0.0, 1.0)
        z = (t.clamp_min(1e-20).log() - self.P_mean) / self.P_std
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))

    def start_time(self, M: float | None = None) -> float:
        return self.sigma_max if M is None else float(M)

    def time_for_sigma(self, s: Tensor) -> Tensor:
        # alpha = 1: the native time is sigma itself.
        return torch.as_tensor(s, dtype=torch.float64).clone()

    def sampling_times(self, num_steps, M=None, *, device=None) -> Tensor:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        sigma_max = self.start_time(M)
        if not sigma_max > self.sigma_min:
            raise ValueError(
                f"M (sigma_max) must exceed sigma_min={self.sigma_min}, got {sigma_max}"
            )
        ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), sigma_max ** (1 / self.rho)
        sigmas = (hi + ramp * (lo - hi)) ** self.rho
        if num_steps == 1:
            sigmas = torch.tensor([sigma_max], dtype=torch.float64)
        return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)


def _randint(
    high: int,
    batch_size: int,
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform integers in [0, high) of shape [B] (int64), drawn like ``rng.randn`` draws.

    None uses the global RNG; one generator draws the batch on its own device; a list draws one
    value per sample from its own generator, so sample i's time does not depend on the batch size.
    """
    if generator is None:
        return torch.randint(0, high, (batch_size,), device=device)
    if isinstance(generator, torch.Generator):
        out = torch.randint(0, high, (batch_size,), generator=generator, device=generator.device)
        return out.to(device) if device is not None else out
    gens = list(generator)
    if len(gens) != batch_size:
        raise ValueError(f"{len(gens)} generators for a batch of {batch_size}")
    out = torch.cat([torch.randint(0, high, (1,), generator=g, device=g.device) for g in gens])
    return out.to(device) if device is not None else out


class VPSchedule(Schedule):
    """Discrete variance-preserving DDPM process (Ho et al. 2020), as in DynamiCrafter/VideoCrafter.

    abar_t = prod_{i <= t} (1 - beta_i) for integer steps t in [0, T); alpha_t = sqrt(abar_t),
    sigma_t = sqrt(1 - abar_t). Betas are computed exactly as diffusers' ``DDIMScheduler`` does
    (float32 ``linspace``), optionally rescaled to zero terminal SNR (Lin et al. 2024, Algorithm 1),
    which makes abar_{T-1} = 0: the last step is pure noise and alpha vanishes there.

    Native time ``t`` is the integer step, carried as a float or integer tensor (floats are rounded
    to the nearest step). ``t = -1`` is the clean time of sampling ladders: (alpha, sigma) = (1, 0)
    with ``set_alpha_to_one``, else (sqrt(abar_0), sqrt(1 - abar_0)) as diffusers'
    ``final_alpha_cumprod``.

    Args:
        T: number of training steps (1000).
        beta_schedule: ``"scaled_linear"`` (latent diffusion: linspace(sqrt(b0), sqrt(b1), T)^2) or
            ``"linear"`` (linspace(b0, b1, T)).
        beta_start, beta_end: ends of the beta schedule (latent diffusion: 0.00085 and 0.012).
        rescale_zero_terminal_snr: rescale the betas so that abar_{T-1} = 0 (DynamiCrafter).
        prediction: the network's target, ``"eps"`` or ``"v"``; read by model adapters, not here.
        set_alpha_to_one: whether the clean time t = -1 has abar = 1 (else abar_0).
    """

    family = "vp"

    def __init__(
        self,
        T: int = 1000,
        beta_schedule: str = "scaled_linear",
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        rescale_zero_terminal_snr: bool = False,
        prediction: str = "eps",
        set_alpha_to_one: bool = True,
    ) -> None:
        if int(T) != T or T < 2:
            raise ValueError(f"T must be an integer >= 2, got {T}")
        if beta_schedule not in ("scaled_linear", "linear"):
            raise ValueError(
                f"beta_schedule must be 'scaled_linear' or 'linear', got {beta_schedule!r}"
            )
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
        self.T = int(T)
        self.beta_schedule = beta_schedule
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.rescale_zero_terminal_snr = bool(rescale_zero_terminal_snr)
        self.prediction = prediction
        self.set_alpha_to_one = bool(set_alpha_to_one)

        # float32 exactly as diffusers builds them, so parity tests can compare bit for bit.
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, self.T, dtype=torch.float32)
        else:
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, self.T, dtype=torch.float32) ** 2
        if self.rescale_zero_terminal_snr:
            betas = _rescale_zero_terminal_snr(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.final_alpha_cumprod = (
            torch.tensor(1.0) if self.set_alpha_to_one else self.alphas_cumprod[0].clone()
        )
        # Lookup table [3, T + 1] of (abar, alpha, sigma) indexed by t + 1: column 0 is the clean
        # time t = -1. Float64, so sigma = sqrt(1 - abar) keeps its precision near t = 0; one copy
        # per device, built lazily; a lookup is one gather, no per-call sqrt.
        abar = torch.cat([self.final_alpha_cumprod[None], self.alphas_cumprod]).double()
        self._table_cpu = torch.stack([abar, abar.sqrt(), (1.0 - abar).clamp_min(0.0).sqrt()])
        self._tables: dict[torch.device, Tensor] = {}

    def _lookup(self, t: Tensor) -> Tensor:
        """Rows (abar, alpha, sigma) at steps ``t`` (float rounded to the nearest step): [3, *t]."""
        if t.device not in self._tables:
            self._tables[t.device] = self._table_cpu.to(t.device)
        # floor(t + 1.5) = round(t) + 1 (ties up) for t >= -1; cheaper than round() on CPU.
        idx = (t + 1.5).long() if t.is_floating_point() else t.long() + 1
        return self._tables[t.device].index_select(1, idx.reshape(-1)).view(3, *t.shape)

    def abar(self, t: Tensor) -> Tensor:
        """abar_t (float64) for integer steps ``t`` in [-1, T), any shape (-1: the clean time)."""
        return self._lookup(t)[0]

    def sample_training_time(self, batch_size, *, generator=None, device=None) -> Tensor:
        return _randint(self.T, batch_size, generator, device=device).float()

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        dtype = t.dtype if t.is_floating_point() else torch.float32
        _, alpha, sigma = self._lookup(t).to(dtype)
        return alpha, sigma

    def normalized_time(self, t: Tensor) -> Tensor:
        # METHOD.md section 3: t_int / T (t_int / 1000); the clean time -1 maps to 0.
        return (t / self.T).clamp(0.0, 1.0)

    def _check_M(self, M: float | None) -> int:
        if M is None:
            return self.T
        if int(M) != M or not 0 < M <= self.T:
            raise ValueError(f"M must be an integer step count in (0, T] = (0, {self.T}], got {M}")
        return int(M)

    def start_time(self, M: float | None = None) -> float:
        # DDIM "trailing" spacing: starting at M means the first network call is at step M - 1.
        return float(self._check_M(M) - 1)

    def time_for_sigma(self, s: Tensor) -> Tensor:
        """The integer step in [0, T - 1] whose sigma/alpha is nearest to ``s`` in log space
        (steps are discrete); s at or below step 0's level gives 0, s = +inf gives T - 1."""
        s = torch.as_tensor(s, dtype=torch.float64)
        table = self.sigma_over_alpha(torch.arange(self.T, dtype=torch.float64)).log()  # [T]
        log_s = s.log().reshape(-1)
        hi = torch.searchsorted(table, log_s).clamp(1, self.T - 1)  # table[hi - 1] < log_s
        lo = hi - 1
        # Nearest of the two neighbours in log space (the pure-noise step of a zero-terminal-SNR
        # schedule sits at +inf and is reached only by s = +inf); beyond the ends, the end step.
        step = torch.where(table[hi] - log_s < log_s - table[lo], hi, lo)
        step = torch.where(log_s >= table[-1], self.T - 1, step)
        return step.double().view(s.shape)

    def sampling_times(self, num_steps, M=None, *, device=None) -> Tensor:
        """DDIM "uniform trailing" ladder started at M: round(arange(M, 0, -M/n)) - 1, then -1.

        The ``arange`` is emulated as numpy computes it (start + i * delta with delta =
        (start + step) - start, half-to-even rounding), so for M = T the first ``num_steps``
        entries equal diffusers' ``DDIMScheduler(timestep_spacing="trailing")`` timesteps exactly.
        (numpy's ``arange`` occasionally returns n + 1 values, e.g. T = 1000, n = 61, which gives
        diffusers a spurious trailing -1; we always take exactly n.) Strictly decreasing for
        num_steps <= M. Returns [num_steps + 1] float32 integer values.
        """
        M = self._check_M(M)
        if int(num_steps) != num_steps or not 1 <= num_steps <= M:
            raise ValueError(f"num_steps must be an integer in [1, M] = [1, {M}], got {num_steps}")
        start = float(M)
        delta = (start + (-start / num_steps)) - start
        steps = (start + torch.arange(num_steps, dtype=torch.float64) * delta).round() - 1.0
        return torch.cat([steps, steps.new_full((1,), -1.0)]).float().to(device)


def _rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Zero terminal SNR: Lin et al. 2024, "Common Diffusion Noise Schedules ... Flawed", Alg. 1.

    Shift sqrt(abar) so its last entry is 0, scale so its first entry is unchanged, convert back to
    betas. Same float32 operations as diffusers' ``rescale_zero_terminal_snr``. [T] -> [T].
    """
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1.0 - alphas


class FlowSchedule(Schedule):
    """Rectified flow / flow matching (Liu et al. 2023; Esser et al. 2024, SD3).

    x_t = (1 - t) x0 + t eps for t in [0, 1]; the network predicts the velocity v = eps - x0.
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

    def normalized_time(self, t: Tensor) -> Tensor:
        return t.clamp(0.0, 1.0)

    def start_time(self, M: float | None = None) -> float:
        if M is None:
            return 1.0
        if not 0 < M <= 1:
            raise ValueError(f"M must be a flow time in (0, 1], got {M}")
        return float(M)

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
