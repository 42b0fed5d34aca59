"""Conditional image leakage diagnostic (``shared/METHOD.md`` section 2; Zhao et al., NeurIPS 2024).

Two measurements on real clips x0 [F, 3, H, W] with their first frame as the clean condition c:

1. **One-step motion ratio.** Noise x0 to a normalised time t, x_t = alpha_t x0 + sigma_t eps,
   take the model's one-step prediction D(x_t; t, c), decode it and compare motion scores:
   ratio(t) = MS(decode(D(x_t; t, c))) / MS(x0). A model that leans on c and ignores x_t predicts
   a still video at large t: the ratio falls with t (leakage); an ideal denoiser keeps it near 1.
2. **Output against input motion.** Sample fully from T (``M=None``) and from each start point M,
   with and without Analytic-Init, and compare MS(output) with MS(input clip) per clip (the
   paper's Figure 1 layout: points below y = x are a motion deficit).

Framework-light: functions take a denoiser adapter (``schedule``, ``encode_video``,
``decode_video``, ``encode_condition``, ``__call__``), clips and a motion-score function
``motion_fn(videos [B, F, 3, H, W] in [-1, 1]) -> [B]``. No Hydra or Lightning here.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .diffusion.analytic_init import LatentStats
from .diffusion.rng import per_sample_generators, randn
from .diffusion.schedules import EDMSchedule, FlowSchedule, Schedule, VPSchedule
from .generate import generate

MotionFn = Callable[[Tensor], Tensor]

T_EPS = 1e-3  # normalised times are clamped into [T_EPS, 1 - T_EPS] before inversion
CSV_FIELDS = (
    "kind",
    "clip",
    "name",
    "seed",
    "t",
    "t_used",
    "t_native",
    "setting",
    "M",
    "analytic_init",
    "ms_real",
    "ms_recon",
    "ms_pred",
    "ratio",
    "ratio_recon",
)


# ------------------------------------------------------------------------------ time inverse
def edm_sigma_for_normalized(schedule: EDMSchedule, t: Tensor) -> Tensor:
    """Inverse of ``EDMSchedule.normalized_time``: the sigma whose normalised time is ``t``.

    Quantile mode: Phi((ln sigma - P_mean) / P_std) = t  =>  sigma = exp(P_mean + P_std Phi^-1(t)),
    with Phi^-1(t) = sqrt(2) erfinv(2 t - 1); t is clamped into [T_EPS, 1 - T_EPS] (the map is
    onto (0, 1) only). Reference mode: sigma = t * sigma_ref. Float64 in, float64 out.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    if schedule.time_mode == "reference":
        return t.clamp(T_EPS, 1.0) * schedule.sigma_ref
    z = math.sqrt(2.0) * torch.erfinv(2.0 * t.clamp(T_EPS, 1.0 - T_EPS) - 1.0)
    return (schedule.P_mean + schedule.P_std * z).exp()


def native_time(schedule: Schedule, t: float) -> float:
    """The schedule's native time whose ``normalized_time`` is ``t`` (clamped into the range).

    EDM: ``edm_sigma_for_normalized``; VP: the integer step round(t T) in [0, T - 1] (so t = 1
    gives the last step); flow: t itself, clamped into [T_EPS, 1].
    """
    if isinstance(schedule, EDMSchedule):
        return float(
            edm_sigma_for_normalized(schedule, torch.tensor(float(t), dtype=torch.float64))
        )
    if isinstance(schedule, VPSchedule):
        return float(min(max(round(float(t) * schedule.T), 0), schedule.T - 1))
    if isinstance(schedule, FlowSchedule):
        return float(min(max(float(t), T_EPS), 1.0))
    raise TypeError(f"no normalised-time inverse for schedule {type(schedule).__name__}")


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
    return denoiser.encode_condition(videos[:, 0], fps=fps)


def _encode(denoiser, video: Tensor, seeds: Sequence[int]) -> Tensor:
    """Latents [B, F, C, h, w], clip by clip with its own seeded generator (VAE posterior draw),
    so a clip's latent does not depend on the batch it came in."""
    return torch.cat(
        [
            denoiser.encode_video(v[None], generator=torch.Generator(device="cpu").manual_seed(s))
            for v, s in zip(video, seeds)
        ]
    )


def _batches(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))


def _clip_batches(denoiser, videos: Tensor, fps: Tensor | None, batch_size: int, motion_fn):
    """Per batch of clips: (indices, clips [b, F, 3, H, W], clean condition, MS of the clips)."""
    n = videos.shape[0]
    for sl in _batches(n, batch_size):
        video = videos[sl]
        cond = _condition(denoiser, video, None if fps is None else fps[sl])
        yield list(range(n))[sl], video, cond, motion_fn(video).tolist()


# ------------------------------------------------------------------------------ measurement 1
@torch.no_grad()
def one_step_rows(
    denoiser,
    videos: Tensor,
    *,
    times: Sequence[float],
    motion_fn: MotionFn,
    seeds: Sequence[int] = (0,),
    fps: Tensor | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    min_motion: float = 1e-3,
) -> list[dict]:
    """One-step x0-prediction motion ratio for each clip, normalised time and seed.

    Args:
        denoiser: an adapter; ``denoiser(x_t, t_native [B], cond) -> x0_hat`` in latent space.
        videos: real clips [N, F, 3, H, W] in [-1, 1] (on the denoiser's device); frame 0 is
            the condition.
        times: normalised times in [0, 1] (inverted with ``native_time``).
        motion_fn: per-video motion score [B, F, 3, H, W] -> [B] (pixels per frame).
        seeds: noise seeds; each (seed, clip, time) gets its own generator, so results do not
            depend on the batch size.
        fps: [N] frames per second fed to the condition (None: the adapter's default).
        min_motion: real clips with MS at or below this get ratio NaN (a still clip has none).

    Returns:
        rows (kind ``one_step``) with ``ms_real`` (the clip), ``ms_recon`` (its VAE round trip),
        ``ms_pred`` and ``ratio`` = ms_pred / ms_real, ``ratio_recon`` = ms_pred / ms_recon.
    """
    schedule = denoiser.schedule
    n = videos.shape[0]
    names = list(names) if names is not None else [f"clip{i}" for i in range(n)]
    rows = []
    for idx, video, cond, ms_real in _clip_batches(denoiser, videos, fps, batch_size, motion_fn):
        for seed in seeds:
            x0 = _encode(denoiser, video, [_seed(seed, i, -1) for i in idx])
            ms_recon = motion_fn(denoiser.decode_video(x0)).tolist()
            for j, t in enumerate(times):
                t_nat = native_time(schedule, t)
                t_vec = torch.full((len(idx),), t_nat, device=x0.device)
                alpha, sigma = schedule.alpha_sigma(t_vec)
                gens = per_sample_generators([_seed(seed, i, j) for i in idx])
                eps = randn(x0.shape, gens, device=x0.device, dtype=x0.dtype)
                shape = (-1, *[1] * (x0.ndim - 1))
                x_t = alpha.to(x0.dtype).view(shape) * x0 + sigma.to(x0.dtype).view(shape) * eps
                pred = denoiser(x_t, t_vec, cond)
                ms_pred = motion_fn(denoiser.decode_video(pred)).tolist()
                t_used = float(schedule.normalized_time(torch.tensor(t_nat, dtype=torch.float64)))
                for k, i in enumerate(idx):
                    rows.append(
                        {
                            "kind": "one_step",
                            "clip": i,
                            "name": names[i],
                            "seed": int(seed),
                            "t": float(t),
                            "t_used": t_used,
                            "t_native": t_nat,
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
    stats: LatentStats | None = None,
    seeds: Sequence[int] = (0,),
    fps: Tensor | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    min_motion: float = 1e-3,
    sampler: str = "euler",
    num_steps: int = 25,
    min_guidance: float = 1.0,
    max_guidance: float = 1.0,
    eta: float = 0.0,
) -> list[dict]:
    """Full sampling from each setting's start; MS(output) against MS(input clip) per clip.

    ``stats`` are the Analytic-Init statistics (latent shape [F, C, h, w]); required when a
    setting uses Analytic-Init. Each (seed, clip) gets its own generator, shared by every
    setting, so settings differ only in their start. Rows have kind ``sampling``, ``ms_real``
    (input), ``ms_pred`` (output) and ``ratio`` = output / input.
    """
    if any(s.analytic_init for s in settings) and stats is None:
        raise ValueError("an Analytic-Init setting needs stats")
    n, frames = videos.shape[:2]
    names = list(names) if names is not None else [f"clip{i}" for i in range(n)]
    rows = []
    for idx, _video, cond, ms_real in _clip_batches(denoiser, videos, fps, batch_size, motion_fn):
        for seed in seeds:
            for setting in settings:
                out = generate(
                    denoiser,
                    cond,
                    num_frames=frames,
                    sampler=sampler,
                    num_steps=num_steps,
                    M=setting.M,
                    stats=stats if setting.analytic_init else None,
                    min_guidance=min_guidance,
                    max_guidance=max_guidance,
                    eta=eta,
                    generator=per_sample_generators([_seed(seed, i, 10**6) for i in idx]),
                )
                ms_out = motion_fn(denoiser.decode_video(out.sample)).tolist()
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


# ------------------------------------------------------------------------------ reporting
def _stats(values: Sequence[float]) -> dict:
    v = torch.tensor([x for x in values if not math.isnan(x)], dtype=torch.float64)
    if v.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(v.std(unbiased=False)) if v.numel() > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.numel())}


def summarize(rows: Sequence[dict]) -> dict:
    """Per normalised time: motion ratio mean/std over clips and seeds (NaN ratios skipped);
    per sampling setting: mean input and output MS, ratio, |output - input| (MS error)."""
    one = [r for r in rows if r["kind"] == "one_step"]
    by_t: dict[float, list[dict]] = {}
    for r in one:
        by_t.setdefault(r["t"], []).append(r)
    smp = [r for r in rows if r["kind"] == "sampling"]
    by_s: dict[str, list[dict]] = {}
    for r in smp:
        by_s.setdefault(r["setting"], []).append(r)
    return {
        "one_step": [
            {
                "t": t,
                "t_native": rs[0]["t_native"],
                "ratio": _stats([r["ratio"] for r in rs]),
                "ratio_recon": _stats([r["ratio_recon"] for r in rs]),
                "ms_pred": _stats([r["ms_pred"] for r in rs]),
                "ms_real": _stats([r["ms_real"] for r in rs]),
            }
            for t, rs in sorted(by_t.items())
        ],
        "sampling": [
            {
                "setting": name,
                "M": rs[0]["M"],
                "analytic_init": rs[0]["analytic_init"],
                "ms_input": _stats([r["ms_real"] for r in rs]),
                "ms_output": _stats([r["ms_pred"] for r in rs]),
                "ratio": _stats([r["ratio"] for r in rs]),
                "ms_error": _stats([abs(r["ms_pred"] - r["ms_real"]) for r in rs]),
            }
            for name, rs in by_s.items()
        ],
    }


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """Rows as CSV with the columns ``CSV_FIELDS`` (blank where a row kind has no value)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return path


def write_json(summary: dict, path: str | Path) -> Path:
    """JSON with NaN written as null."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    path = Path(path)
    path.write_text(json.dumps(clean(summary), indent=2))
    return path


def plot(rows: Sequence[dict], summary: dict, out_dir: str | Path) -> list[Path]:
    """``motion_ratio.png`` (ratio against t, mean +- std) and ``motion_scatter.png`` (output
    against input MS per sampling setting, with y = x). Matplotlib Agg; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    files = []
    if summary["one_step"]:
        ts = [s["t"] for s in summary["one_step"]]
        mean = [s["ratio"]["mean"] for s in summary["one_step"]]
        std = [s["ratio"]["std"] for s in summary["one_step"]]
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.errorbar(ts, mean, yerr=std, marker="o", capsize=3, label="MS(x0 pred) / MS(real)")
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("normalised time t")
        ax.set_ylabel("motion ratio")
        ax.set_title("one-step prediction motion")
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(out_dir / "motion_ratio.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    settings = [s["setting"] for s in summary["sampling"]]
    if settings:
        fig, axes = plt.subplots(
            1, len(settings), figsize=(3.2 * len(settings), 3.3), squeeze=False
        )
        for ax, name in zip(axes[0], settings):
            rs = [r for r in rows if r["kind"] == "sampling" and r["setting"] == name]
            x = [r["ms_real"] for r in rs]
            y = [r["ms_pred"] for r in rs]
            hi = max([*x, *y, 1e-6]) * 1.05
            ax.scatter(x, y, s=14)
            ax.plot([0, hi], [0, hi], color="grey", linestyle="--", linewidth=1)
            ax.set_xlim(0, hi)
            ax.set_ylim(0, hi)
            ax.set_title(name)
            ax.set_xlabel("input MS")
            ax.set_ylabel("output MS")
        fig.tight_layout()
        files.append(out_dir / "motion_scatter.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files


def run_diagnostic(
    denoiser,
    videos: Tensor,
    *,
    times: Sequence[float],
    motion_fn: MotionFn,
    out_dir: str | Path | None = None,
    Ms: Sequence[float] | None = None,
    stats: LatentStats | None = None,
    seeds: Sequence[int] = (0,),
    fps: Tensor | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 8,
    min_motion: float = 1e-3,
    sampling: dict | None = None,
    full_sampling: bool = True,
) -> tuple[list[dict], dict]:
    """Both measurements; with ``out_dir``, writes ``diagnose.csv``, ``summary.json`` and plots.

    ``stats=None`` with an M given estimates the Analytic-Init statistics from ``videos``' own
    latents (in-sample; say so when reporting). ``sampling``: keyword arguments of
    ``sampling_rows`` (sampler, num_steps, min_guidance, max_guidance, eta).
    Returns (rows, summary).
    """
    common = dict(seeds=seeds, fps=fps, names=names, batch_size=batch_size, min_motion=min_motion)
    rows = one_step_rows(denoiser, videos, times=times, motion_fn=motion_fn, **common)
    stats_source = "given" if stats is not None else None
    if full_sampling:
        settings = sampling_settings(Ms)
        if stats is None and any(s.analytic_init for s in settings):
            stats = LatentStats()
            for sl in _batches(videos.shape[0], batch_size):
                seeds_sl = [_seed(0, i, -2) for i in range(sl.start, sl.stop)]
                stats.update(_encode(denoiser, videos[sl], seeds_sl))
            stats_source = "estimated from the diagnostic clips"
        rows += sampling_rows(
            denoiser,
            videos,
            settings=settings,
            motion_fn=motion_fn,
            stats=stats,
            **common,
            **(sampling or {}),
        )
    summary = summarize(rows)
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
