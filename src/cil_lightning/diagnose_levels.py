"""Noise levels of the leakage diagnostic, in the model's own units (framework-free).

The one-step measurement of ``diagnose`` must reach the regime where leakage acts: the sampling
start (EDM sigma_max or M, VP step T - 1 or M - 1, flow t = 1 or t_M). Levels are native times of
the schedule; they are reported with their sigma-space coordinate sigma_t / alpha_t, the log-SNR
-2 ln(sigma_t / alpha_t) and the normalised time TimeNoise reads (``shared/METHOD.md`` sec. 1, 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .diffusion.schedules import EDMSchedule, FlowSchedule, Schedule, VPSchedule

LEVEL_MIN = 0.02  # default lowest sigma/alpha of the ladder: nearly clean for data of unit scale
FLOW_TOP = 1.0 - 1e-3  # flow: last finite level below the pure-noise start t = 1 (sigma/alpha 999)


def level_range(schedule: Schedule) -> str:
    """The allowed native noise levels of ``schedule``'s family, in words."""
    if isinstance(schedule, EDMSchedule):
        return "EDM sigma, finite and > 0"
    if isinstance(schedule, VPSchedule):
        return f"VP integer steps in [0, T - 1] = [0, {schedule.T - 1}]"
    if isinstance(schedule, FlowSchedule):
        return "flow times in (0, 1]"
    raise TypeError(f"no noise-level range for schedule {type(schedule).__name__}")


def check_levels(schedule: Schedule, levels: Sequence[float], key: str = "levels") -> list[float]:
    """Validate explicit native noise levels; returns them as floats or raises ``ValueError``
    naming ``key`` and the family's allowed range (``level_range``)."""
    vals = [float(v) for v in levels]
    if isinstance(schedule, EDMSchedule):
        bad = [v for v in vals if not (math.isfinite(v) and v > 0)]
    elif isinstance(schedule, VPSchedule):
        bad = [v for v in vals if not (v == int(v) and 0 <= v <= schedule.T - 1)]
    elif isinstance(schedule, FlowSchedule):
        bad = [v for v in vals if not 0 < v <= 1]
    else:
        raise TypeError(f"no noise-level range for schedule {type(schedule).__name__}")
    if not vals or bad:
        got = bad if bad else "an empty list"
        raise ValueError(f"{key} must be a non-empty list of {level_range(schedule)}; got {got}")
    return vals


def noise_levels(
    schedule: Schedule,
    num_levels: int = 10,
    *,
    M: float | None = None,
    level_min: float = LEVEL_MIN,
) -> list[float]:
    """Default noise levels [<= num_levels] in native units, increasing, the last one the start.

    Log-spaced in sigma-space s = sigma_t / alpha_t from ``level_min`` (raised to the schedule's
    lowest level, VP step 0) up to and including the sampling start ``schedule.start_time(M)``:
    EDM sigma_max or M; VP step T - 1 or M - 1 (DDIM trailing: the first network call); flow 1
    or t_M. Where the start is pure noise (s = +inf: flow t = 1, zero-terminal-SNR VP), the
    first ``num_levels - 1`` levels end at the last finite level below it (VP T - 2, flow
    ``FLOW_TOP``) and the start is appended. VP levels are rounded to steps; repeats are dropped.
    """
    if int(num_levels) != num_levels or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2, got {num_levels}")
    if not (math.isfinite(level_min) and level_min > 0):
        raise ValueError(f"level_min (sigma/alpha) must be finite and > 0, got {level_min}")
    start = float(schedule.start_time(M))

    def s_of(t: float) -> float:
        return float(schedule.sigma_over_alpha(torch.tensor(t, dtype=torch.float64)))

    top, n = start, int(num_levels)
    if math.isinf(s_of(start)):
        top = start - 1.0 if isinstance(schedule, VPSchedule) else FLOW_TOP
        n -= 1
    s_lo, s_hi = max(float(level_min), s_of(0.0)), s_of(top)
    if not s_lo < s_hi:
        raise ValueError(f"level_min = {level_min} must be below the start's sigma/alpha {s_hi:g}")
    s = torch.logspace(math.log10(s_lo), math.log10(s_hi), n, dtype=torch.float64)
    out = schedule.time_for_sigma(s).tolist()
    out[n - 1] = top  # exact end despite the round trip
    if top != start:
        out.append(start)
    return list(dict.fromkeys(float(v) for v in out))


def level_info(schedule: Schedule, level: float) -> dict:
    """A native level's coordinates: ``t_native``, ``sigma_alpha`` (+inf for pure noise),
    ``log_snr`` = -2 ln(sigma/alpha) and ``t_norm`` (the normalised time TimeNoise reads)."""
    t = torch.tensor(float(level), dtype=torch.float64)
    s = float(schedule.sigma_over_alpha(t))
    return {
        "t_native": float(level),
        "sigma_alpha": s,
        "log_snr": -2.0 * math.log(s) if s > 0 else math.inf,
        "t_norm": float(schedule.normalized_time(t)),
    }


def levels_meta(schedule: Schedule, levels: Sequence[float], M: float | None, source: str) -> dict:
    """What the summary records about the levels: family, units, the sampling start (native and
    sigma/alpha) and how the levels were chosen."""
    start = float(schedule.start_time(M))
    return {
        "family": schedule.family,
        "units": level_range(schedule),
        "values": [float(v) for v in levels],
        "start": start,
        "start_sigma_alpha": level_info(schedule, start)["sigma_alpha"],
        "start_M": M,
        "source": source,
    }
