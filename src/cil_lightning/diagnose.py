"""Conditional image leakage diagnostic (``shared/METHOD.md`` section 2; Zhao et al., NeurIPS 2024).

Two measurements on real clips x0 [F, 3, H, W] with their first frame as the clean condition c:

1. **One-step motion ratio.** Noise x0 to a noise level t in the model's native units (EDM sigma,
   VP integer step, flow time), x_t = alpha_t x0 + sigma_t eps, take the model's one-step
   prediction D(x_t; t, c), decode it and compare motion scores:
   ratio(t) = MS(decode(D(x_t; t, c))) / MS(x0). The default levels (``noise_levels``) are
   log-spaced in sigma-space sigma_t / alpha_t up to and including the sampling start, where
   leakage matters: a model that leans on c and ignores x_t predicts a still video there.
   A ratio of 1 is **not** the target at high noise: even the exact MMSE denoiser predicts
   E[x0 | x_t], which tends to the data mean as sigma/alpha grows and moves less than any one
   clip. Compare checkpoints with each other (and with an oracle where one exists), level by level.
2. **Output against input motion.** Sample fully from T (``M=None``) and from each start point M,
   with and without Analytic-Init, and compare MS(output) with MS(input clip) per clip (the
   paper's Figure 1 layout: points below y = x are a motion deficit).

Framework-light: functions take a denoiser adapter (``schedule``, ``encode_video``,
``decode_video``, ``encode_condition``, ``__call__``), clips and a motion-score function
``motion_fn(videos [B, F, 3, H, W] in [-1, 1]) -> [B]``. No Hydra or Lightning here; CSV, JSON
and plots are in ``diagnose_report``, the noise levels in ``diagnose_levels``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .diagnose_levels import LEVEL_MIN, check_levels, level_info, levels_meta, noise_levels
from .diagnose_report import plot, summarize, write_csv, write_json
from .diffusion.analytic_init import LatentStats
from .diffusion.rng import per_sample_generators, randn
from .sampling import Sampler

MotionFn = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------ helpers
def _seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, clip index, time index, ...)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def _ratio(num: float, den: float, min_motion: float) -> float:
    return num / den if den > min_motion else float("nan")


def _condition(denoiser, videos: Tensor, fps: Tensor | None):
    return denoiser.encode_condition(videos[:, 0], fps=fps, num_frames=videos.shape[1])


def _encode(denoiser, video: Tensor, seeds: Sequence[int]) -> Tensor:
    """Latents [B, F, C, h, w], clip by clip with its own seeded generator (VAE posterior draw),
    so a clip's latent does not depend on the batch it came in."""
    gens = per_sample_generators(seeds)
    return torch.cat([denoiser.encode_video(v[None], generator=g) for v, g in zip(video, gens)])


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


def _clip_batches(
    denoiser, videos: Tensor, fps: Tensor | None, batch_size: int, motion_fn, desc: str
):
    """Per batch of clips: (indices, clips [b, F, 3, H, W], clean condition, MS of the clips),
    with a progress bar over the clips."""
    from tqdm import tqdm

    n = videos.shape[0]
    with tqdm(total=n, desc=desc, unit="clip") as bar:
        for sl in _batches(n, batch_size):
            video = videos[sl]
            cond = _condition(denoiser, video, None if fps is None else fps[sl])
            yield list(range(n))[sl], video, cond, motion_fn(video).tolist()
            bar.update(sl.stop - sl.start)


# ------------------------------------------------------------------------------ measurement 1
@torch.no_grad()
def one_step_rows(
    denoiser,
    videos: Tensor,
    *,
    levels: Sequence[float],
    motion_fn: MotionFn,
    seeds: Sequence[int] = (0,),
    fps: Tensor | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    min_motion: float = 1e-3,
) -> list[dict]:
    """One-step x0-prediction motion ratio for each clip, noise level and seed.

    Args:
        denoiser: an adapter; ``denoiser(x_t, t_native [B], cond) -> x0_hat`` in latent space.
        videos: real clips [N, F, 3, H, W] in [-1, 1] (on the denoiser's device); frame 0 is
            the condition.
        levels: noise levels in the schedule's native units (``noise_levels`` for the default
            ladder; checked with ``check_levels``).
        motion_fn: per-video motion score [B, F, 3, H, W] -> [B] (pixels per frame).
        seeds: noise seeds; each (seed, clip, level) gets its own generator, so results do not
            depend on the batch size.
        fps: [N] frames per second fed to the condition (None: the adapter's default).
        min_motion: real clips with MS at or below this get ratio NaN (a still clip has none).

    Returns:
        rows (kind ``one_step``) with the level's ``level_info`` (``t_native``, ``sigma_alpha``,
        ``log_snr``, ``t_norm``), ``ms_real`` (the clip), ``ms_recon`` (its VAE round trip),
        ``ms_pred`` and ``ratio`` = ms_pred / ms_real, ``ratio_recon`` = ms_pred / ms_recon.
    """
    schedule = denoiser.schedule
    levels = check_levels(schedule, levels)
    infos = [level_info(schedule, t) for t in levels]
    n = videos.shape[0]
    names = list(names) if names is not None else [f"clip{i}" for i in range(n)]
    rows = []
    batches = _clip_batches(denoiser, videos, fps, batch_size, motion_fn, "diagnose: one step")
    for idx, video, cond, ms_real in batches:
        for seed in seeds:
            x0 = _encode(denoiser, video, [_seed(seed, i, -1) for i in idx])
            ms_recon = motion_fn(denoiser.decode_video(x0)).tolist()
            for j, (t_nat, info) in enumerate(zip(levels, infos)):
                t_vec = torch.full((len(idx),), t_nat, device=x0.device)
                gens = per_sample_generators([_seed(seed, i, j) for i in idx])
                eps = randn(x0.shape, gens, device=x0.device, dtype=x0.dtype)
                x_t = schedule.add_noise(x0, t_vec, eps)
                pred = denoiser(x_t, t_vec, cond)
                ms_pred = motion_fn(denoiser.decode_video(pred)).tolist()
                for k, i in enumerate(idx):
                    rows.append(
                        {
                            "kind": "one_step",
                            "clip": i,
                            "name": names[i],
                            "seed": int(seed),
                            **info,
                            "ms_real": ms_real[k],
                            "ms_recon": ms_recon[k],
                            "ms_pred": ms_pred[k],
                            "ratio": _ratio(ms_pred[k], ms_real[k], min_motion),
                            "ratio_recon": _ratio(ms_pred[k], ms_recon[k], min_motion),
                        }
                    )
    return rows


# ------------------------------------------------------------------------------ measurement 2
@dataclass(frozen=True)
class SamplingSetting:
    """One way of sampling: start point M (None: the full start T), Analytic-Init or not."""

    M: float | None = None
    analytic_init: bool = False

    @property
    def name(self) -> str:
        start = "T" if self.M is None else f"M={self.M:g}"
        return start + (" +AI" if self.analytic_init else "")


def sampling_settings(Ms: Sequence[float] | None) -> list[SamplingSetting]:
    """From T, then each M without and with Analytic-Init."""
    out = [SamplingSetting()]
    for M in Ms or ():
        out += [SamplingSetting(float(M), False), SamplingSetting(float(M), True)]
    return out


@torch.no_grad()
def sampling_rows(
    denoiser,
    videos: Tensor,
    *,
    settings: Sequence[SamplingSetting],
    motion_fn: MotionFn,
    sampler: Sampler | None = None,
    seeds: Sequence[int] = (0,),
    fps: Tensor | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    min_motion: float = 1e-3,
) -> list[dict]:
    """Full sampling from each setting's start; MS(output) against MS(input clip) per clip.

    ``sampler`` (default ``Sampler()``) gives the step, steps, guidance and ``stats``, the
    Analytic-Init statistics (latent shape [F, C, h, w]), required when a setting uses
    Analytic-Init; each setting replaces its start M and stats. Each (seed, clip) gets its own
    generator, shared by every setting, so settings differ only in their start. Rows have kind
    ``sampling``, ``ms_real`` (input), ``ms_pred`` (output) and ``ratio`` = output / input.
    """
    sampler = sampler or Sampler()
    if any(s.analytic_init for s in settings) and sampler.stats is None:
        raise ValueError("an Analytic-Init setting needs stats")
    n, frames = videos.shape[:2]
    names = list(names) if names is not None else [f"clip{i}" for i in range(n)]
    rows = []
    batches = _clip_batches(denoiser, videos, fps, batch_size, motion_fn, "diagnose: sampling")
    for idx, _video, cond, ms_real in batches:
        for seed in seeds:
            for setting in settings:
                start = sampler.replace(
                    M=setting.M, stats=sampler.stats if setting.analytic_init else None
                )
                generators = per_sample_generators([_seed(seed, i, 10**6) for i in idx])
                video = start(denoiser, cond, frames, generators).video
                ms_out = motion_fn(video).tolist()
                for k, i in enumerate(idx):
                    rows.append(
                        {
                            "kind": "sampling",
                            "clip": i,
                            "name": names[i],
                            "seed": int(seed),
                            "setting": setting.name,
                            "M": setting.M,
                            "analytic_init": setting.analytic_init,
                            "ms_real": ms_real[k],
                            "ms_pred": ms_out[k],
                            "ratio": _ratio(ms_out[k], ms_real[k], min_motion),
                        }
                    )
    return rows


def run_diagnostic(
    denoiser,
    videos: Tensor,
    *,
    motion_fn: MotionFn,
    sampler: Sampler | None = None,
    levels: Sequence[float] | None = None,
    num_levels: int = 10,
    level_min: float = LEVEL_MIN,
    out_dir: str | Path | None = None,
    Ms: Sequence[float] | None = None,
    seeds: Sequence[int] = (0,),
    fps: Tensor | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    min_motion: float = 1e-3,
    full_sampling: bool = True,
) -> tuple[list[dict], dict]:
    """Both measurements; with ``out_dir``, writes ``diagnose.csv``, ``summary.json`` and plots.

    ``sampler`` (default ``Sampler()``): the sampling settings; its ``M`` is the sampling start
    (None: the full start), the top of the default levels and marked on the plot; its ``stats``
    are the Analytic-Init statistics, and when None with an M given they are estimated from
    ``videos``' own latents (in-sample; say so when reporting). ``levels`` (native units) or,
    when None, ``noise_levels(schedule, num_levels, M=sampler.M, level_min=level_min)``.
    Returns (rows, summary); ``summary["one_step"]`` holds the ratio per level.
    """
    schedule, sampler = denoiser.schedule, sampler or Sampler()
    start_M = None if sampler.M is None else float(sampler.M)
    if levels is None:
        levels = noise_levels(schedule, num_levels, M=start_M, level_min=level_min)
        source = f"default: {num_levels} levels log-spaced in sigma/alpha from {level_min:g}"
    else:
        levels, source = check_levels(schedule, levels), "explicit"
    common = dict(seeds=seeds, fps=fps, names=names, batch_size=batch_size, min_motion=min_motion)
    rows = one_step_rows(denoiser, videos, levels=levels, motion_fn=motion_fn, **common)
    stats_source = "given" if sampler.stats is not None else None
    if full_sampling:
        settings = sampling_settings(Ms)
        if sampler.stats is None and any(s.analytic_init for s in settings):
            stats = LatentStats()
            for sl in _batches(videos.shape[0], batch_size):
                seeds_sl = [_seed(0, i, -2) for i in range(sl.start, sl.stop)]
                stats.update(_encode(denoiser, videos[sl], seeds_sl))
            sampler = sampler.replace(stats=stats)
            stats_source = "estimated from the diagnostic clips"
        rows += sampling_rows(
            denoiser, videos, settings=settings, motion_fn=motion_fn, sampler=sampler, **common
        )
    summary = summarize(rows)
    summary["levels"] = levels_meta(schedule, levels, start_M, source)
    summary["num_clips"] = int(videos.shape[0])
    summary["seeds"] = [int(s) for s in seeds]
    summary["stats"] = stats_source
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out_dir / "diagnose.csv")
        summary["plots"] = [str(p) for p in plot(rows, summary, out_dir)]
        write_json(summary, out_dir / "summary.json")
    return rows, summary
