"""The trained lab: fit the small adapter on moving textures, then measure motion and fidelity.

Training is the framework's: ``DenoisingLoss(cond_noise)`` on the ``LabDenoiser`` with Adam and a
cosine learning-rate decay to zero. Convergence criterion (stated before the run, README): the
fixed-draw validation objective (``val_loss``: the same 256 clips, times, condition noise and eps
at every evaluation) improved by less than ``tol`` (relative) over the last quarter of training.

Evaluation uses the framework's ``Sampler`` (plain start and Analytic-Init from the training
clips' ``LatentStats``) and the diagnostic's ``one_step_rows`` with the phase-correlation speed as
the motion function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diagnose import one_step_rows
from ..diagnose_levels import noise_levels
from ..diffusion.analytic_init import LatentStats
from ..diffusion.cond_noise import CondNoise
from ..diffusion.loss import DenoisingLoss
from ..diffusion.rng import per_sample_generators
from ..sampling import Sampler
from .model import LabDenoiser
from .textures import coherence, speed

STATIC_SPEED = 0.25  # px/frame: a clip measured slower counts as static (the law's minimum is 0.5)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 16
    eval_every: int = 40
    tol: float = 0.05


def flip_augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random horizontal / vertical flips and transposes per clip [B, F, 1, H, W]: they map a
    velocity law that is uniform in direction onto itself, so the motion law is unchanged."""
    k = torch.randint(8, (x.shape[0],), generator=g)
    out = x.clone()
    h, v, tr = (k & 1).bool(), (k & 2).bool(), (k & 4).bool()
    out[h] = out[h].flip(-1)
    out[v] = out[v].flip(-2)
    out[tr] = out[tr].transpose(-1, -2)
    return out


def train(
    denoiser: LabDenoiser,
    cond_noise: CondNoise,
    pool: Tensor,
    val: Tensor,
    cfg: TrainConfig,
    seed: int,
) -> dict:
    """Train in place on clips drawn from ``pool`` [N, F, 1, H, W]; returns the loss curves and
    whether the convergence criterion held."""
    torch.manual_seed(seed)
    loss_fn = DenoisingLoss(cond_noise)
    opt = torch.optim.Adam(denoiser.trainable_parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps))
    )
    g = torch.Generator().manual_seed(seed)
    val_cond = denoiser.encode_condition(val[:, 0])

    def val_loss() -> float:
        denoiser.eval()
        with torch.no_grad():
            out = loss_fn(denoiser, val, val_cond, torch.Generator().manual_seed(999)).mean()
        denoiser.train()
        return float(out)

    curve, val_curve, t0 = [], [(0, val_loss())], time.time()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(pool.shape[0], (cfg.batch_size,), generator=g)
        x0 = flip_augment(pool[idx], g)
        loss = loss_fn(denoiser, x0, denoiser.encode_condition(x0[:, 0]), g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        curve.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_curve.append((step, val_loss()))
    denoiser.eval()
    quarter = [v for s, v in val_curve if s >= 0.75 * cfg.steps]
    ref = min(v for s, v in val_curve if s <= 0.75 * cfg.steps)
    improvement = (ref - min(quarter)) / ref
    return {
        "train_loss": curve,
        "val_loss": val_curve,
        "final_val_loss": val_curve[-1][1],
        "last_quarter_improvement": improvement,
        "converged": bool(improvement < cfg.tol),
        "train_seconds": time.time() - t0,
    }


def data_stats(pool: Tensor) -> LatentStats:
    """Analytic-Init statistics of the training clips (pixel space: the latents are the clips)."""
    return LatentStats().update(pool)


def _psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB per clip of frames [B, 1, H, W] with values in [-1, 1] (peak-to-peak 2)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


@torch.no_grad()
def evaluate(
    denoiser: LabDenoiser,
    clips: Tensor,
    stats: LatentStats,
    Ms: Sequence[float],
    *,
    num_steps: int,
    step: str,
    seed: int,
    num_levels: int = 8,
) -> tuple[list[dict], list[dict]]:
    """Sampling rows (one per clip and setting) and one-step diagnostic rows.

    Settings: the full start, and each M plain and with Analytic-Init; each clip's sample uses
    the same per-clip generator in every setting, so settings differ only in their start.
    """
    cond = denoiser.sampling_condition(clips[:, 0])
    real, real_coh = speed(clips), coherence(clips)
    n, frames = clips.shape[:2]
    base = Sampler(step=step, num_steps=num_steps)
    settings = [("T", None, False)]
    for M in Ms:
        settings += [(f"M={M:g}", float(M), False), (f"M={M:g} +AI", float(M), True)]
    rows = []
    for name, M, ai in settings:
        sampler = base.replace(M=M, stats=stats if ai else None)
        gens = per_sample_generators([seed * 100003 + i for i in range(n)])
        video = sampler(denoiser, cond, frames, gens).video
        gen_speed, gen_coh = speed(video), coherence(video)
        psnr = _psnr(video[:, 0], clips[:, 0])
        for i in range(n):
            rows.append(
                {
                    "setting": name,
                    "M": M,
                    "analytic_init": ai,
                    "clip": i,
                    "speed_real": float(real[i]),
                    "speed_gen": float(gen_speed[i]),
                    "psnr_first": float(psnr[i]),
                    "coherence_gen": float(gen_coh[i]),
                    "coherence_real": float(real_coh[i]),
                }
            )
    levels = noise_levels(denoiser.schedule, num_levels)
    diag = one_step_rows(
        denoiser, clips, levels=levels, motion_fn=speed, seeds=(seed,), batch_size=n
    )
    keep = ("t_native", "sigma_alpha", "t_norm", "ms_real", "ms_pred", "ratio", "clip")
    return rows, [{k: r[k] for k in keep} for r in diag]
