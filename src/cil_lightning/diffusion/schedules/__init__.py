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

A schedule owns everything that depends on its family: forward noising, the training-time law, the
loss weight of its objective, the normalised time TimeNoise reads, sigma-space and its inverse,
the sampling ladders and the valid range of the start point M. One family per file.
"""

from .base import Schedule
from .edm import EDMSchedule
from .flow import FlowSchedule
from .vp import VPSchedule

__all__ = ["EDMSchedule", "FlowSchedule", "Schedule", "VPSchedule"]
