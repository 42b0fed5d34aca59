"""lvdm's dynamic rescale (DynamiCrafter 512/1024, VideoCrafter1) as a VP schedule of scaled data.

The reference multiplies the clean latent by s_t before noising in training
(``use_dynamic_rescale``; ``scale_arr`` = linspace(1, base_scale, turning_step), then base_scale),
and its DDIM rescales the x0 prediction by s_prev / s_t each step.
Both are the VP process of s_t x0:

    x_t = alpha_t s_t x0 + sigma_t eps        (alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t))

so ``alpha_sigma`` returns (alpha_t s_t, sigma_t), and every sampler that steps through
``alpha_sigma`` (DDIM: x_prev = alpha_prev s_prev x0_hat + ...) reproduces the reference's
rescaled step. The clean time t = -1 has s = 1 (unscaled latents to decode; the reference
ends at its last ladder step's scale, about 0.986 for 50 trailing steps). The adapter undoes s for
v-prediction through :meth:`data_scale`. Framework-free maths; it lives with the lvdm adapter
until the lead moves it to ``diffusion/schedules``.

Analytic-Init: the TimeNoise reference (``scripts/evaluation/inference.py``) builds x_M from
``sqrt_alphas_cumprod[M - 1]`` alone, without ``scale_arr``, although its sampler then treats x_M
as noised s_M x0: mean sqrt(abar_M) E[x0], variance 1 - abar_M + abar_M tr(Cov)/d. At M = 940 on
the 512 schedule that alpha is 0.0304 where the process's alpha_M s_M is 0.0212 (s = 0.7).
``init_alpha_sigma`` follows the reference by default (``reference_analytic_init``); False gives
the process's own (alpha_M s_M, sigma_M).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...diffusion.schedules import VPSchedule


class DynamicRescaleVPSchedule(VPSchedule):
    """A ``VPSchedule`` of data scaled by s_t (lvdm ``scale_arr``).

    Args:
        base_scale: s for steps >= ``turning_step`` (DynamiCrafter 512 and VideoCrafter1: 0.7;
            1024: 0.3).
        turning_step: steps over which s falls linearly from 1 to ``base_scale`` (400).
        reference_analytic_init: Analytic-Init with the unscaled alpha_M as the reference
            (module docstring); False: with alpha_M s_M.
        **kwargs: the ``VPSchedule`` arguments.
    """

    def __init__(
        self,
        base_scale: float = 0.7,
        turning_step: int = 400,
        reference_analytic_init: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.reference_analytic_init = bool(reference_analytic_init)
        if not 0 < base_scale <= 1:
            raise ValueError(f"base_scale must be in (0, 1], got {base_scale}")
        if int(turning_step) != turning_step or not 1 <= turning_step <= self.T:
            raise ValueError(f"turning_step must be an integer in [1, T], got {turning_step}")
        self.base_scale, self.turning_step = float(base_scale), int(turning_step)
        # float32 as the reference's buffer (np.linspace in float64, then torch.float32)
        ramp = torch.linspace(1.0, base_scale, self.turning_step, dtype=torch.float64).float()
        scale = torch.cat([ramp, torch.full((self.T - self.turning_step,), float(base_scale))])
        self.scale_arr = scale  # [T], entry t scales step t
        # table column 0 is the clean time t = -1: s = 1 there
        self._scale_cpu = torch.cat([torch.ones(1), scale]).double()
        self._table_cpu[1] *= self._scale_cpu
        self._tables.clear()

    def data_scale(self, t: Tensor) -> Tensor:
        """s_t at steps ``t`` (float rounded to the nearest step; -1: the clean time, s = 1)."""
        idx = (t + 1.5).long() if t.is_floating_point() else t.long() + 1
        scale = self._scale_cpu.to(t.device).index_select(0, idx.reshape(-1)).view(t.shape)
        return scale.to(t.dtype if t.is_floating_point() else torch.float32)

    def init_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(sqrt(abar_t), sigma_t) as the reference's Analytic-Init, or the process's
        (alpha_t s_t, sigma_t) with ``reference_analytic_init=False``."""
        if not self.reference_analytic_init:
            return self.alpha_sigma(t)
        _, sigma = self.alpha_sigma(t)
        return self.abar(t).sqrt().to(sigma.dtype), sigma  # abar is not rescaled

    def loss_weight(self, t: Tensor) -> Tensor:
        """The reference's unweighted loss on its target, in x0 units of the unscaled data.

        eps: (alpha s / sigma)^2 (the base formula with the scaled alpha); v: v = alpha eps -
        sigma s x0 on the scaled data, so ||v_hat - v||^2 = (s / sigma)^2 ||x0_hat - x0||^2.
        """
        if self.prediction == "eps":
            return super().loss_weight(t)
        _, sigma = self.alpha_sigma(t)
        return (self.data_scale(t).to(sigma.dtype) / sigma) ** 2
