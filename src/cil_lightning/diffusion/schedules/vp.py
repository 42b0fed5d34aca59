"""Discrete variance-preserving DDPM schedule (Ho et al. 2020), as DynamiCrafter / VideoCrafter."""

from __future__ import annotations

import torch
from torch import Tensor

from ..rng import randint
from .base import Schedule


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
        prediction: the network's target, ``"eps"`` or ``"v"`` (v = alpha eps - sigma x0, Salimans &
            Ho 2022); it fixes the loss weight, so the objective always matches the network.
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
        return randint(self.T, (batch_size,), generator, device=device).float()

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        dtype = t.dtype if t.is_floating_point() else torch.float32
        _, alpha, sigma = self._lookup(t).to(dtype)
        return alpha, sigma

    def loss_weight(self, t: Tensor) -> Tensor:
        """eps-prediction: ||eps_hat - eps||^2 = (alpha^2 / sigma^2) ||x0_hat - x0||^2;
        v-prediction: ||v_hat - v||^2 = ((alpha^2 + sigma^2)^2 / sigma^2) ||x0_hat - x0||^2."""
        alpha, sigma = self.alpha_sigma(t)
        if self.prediction == "eps":
            return alpha**2 / sigma**2
        return (alpha**2 + sigma**2) ** 2 / sigma**2

    def normalized_time(self, t: Tensor) -> Tensor:
        # METHOD.md section 3: t_int / T (t_int / 1000); the clean time -1 maps to 0.
        return (t / self.T).clamp(0.0, 1.0)

    @property
    def start_range(self) -> str:
        return f"an integer step count in (0, T] = (0, {self.T}]"

    def _start_ok(self, M: float) -> bool:
        return int(M) == M and 0 < M <= self.T

    def _start_steps(self, M: float | None) -> int:
        """The checked start point M as a step count (None: T)."""
        self.check_start(M)
        return self.T if M is None else int(M)

    def start_time(self, M: float | None = None) -> float:
        # DDIM "trailing" spacing: starting at M means the first network call is at step M - 1.
        return float(self._start_steps(M) - 1)

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
        M = self._start_steps(M)
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
