"""The lab's settings (full and quick) and the two runners; the numbers are fixed before the run.

Everything the README's pre-registration names lives here: families, starts M, strategies, seeds,
training budget and evaluation sizes. ``experiments/leakage_lab/run_lab.py`` calls ``run_gaussian``
and ``run_trained`` and writes tables and plots with ``lab.report``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..diffusion.cond_noise import build_cond_noise
from ..diffusion.schedules import EDMSchedule, FlowSchedule, VPSchedule
from ..sampling import Sampler
from . import gaussian as gl
from .model import LabDenoiser
from .textures import EVAL_PHOTOS, MovingTextures
from .trained import TrainConfig, data_stats, evaluate, train

# Condition-noise strategies: the framework's conf/cond_noise defaults, pixel-space TimeNoise grid.
STRATEGIES: dict[str, tuple[str, dict]] = {
    "none": ("none", {}),
    "svd_lognormal": ("lognormal", {"P_mean": -1.2, "P_std": 1.2}),  # SVD baseline of the paper
    "constant": ("constant", {"beta": 0.1}),  # conf/cond_noise/constant.yaml
    "timenoise_b1.5_a5": ("timenoise", {"beta_m": 1.5, "a": 5.0}),  # conf timenoise_pixel
    "timenoise_b1.5_a1": ("timenoise", {"beta_m": 1.5, "a": 1.0}),
    "timenoise_b5_a5": ("timenoise", {"beta_m": 5.0, "a": 5.0}),
    "timenoise_b5_a1": ("timenoise", {"beta_m": 5.0, "a": 1.0}),
}


def gaussian_families():
    """(name, schedule, step, starts M) of the exact lab; None is the full start."""
    return [
        ("vp", VPSchedule(), "ddim", [None, 900, 700, 500]),  # scaled_linear, terminal SNR > 0
        ("edm", EDMSchedule(sigma_data=0.5, sigma_max=80.0), "euler", [None, 10.0, 3.0, 1.0]),
        ("flow", FlowSchedule(), "flow_euler", [None, 0.9, 0.7, 0.5]),
    ]


def trained_families():
    """(name, schedule, step, starts M) of the trained lab (VP: v-prediction, terminal SNR > 0)."""
    return [
        ("edm", EDMSchedule(sigma_data=0.5, sigma_max=80.0), "euler", [10.0, 2.0]),
        ("vp", VPSchedule(prediction="v"), "ddim", [900, 700]),
    ]


@dataclass(frozen=True)
class Plan:
    gaussian_n: int = 2000
    gaussian_steps: tuple[int, ...] = (25, 100)
    gaussian_starts: int = 4  # how many of each family's starts (the first ones)
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)
    pool: int = 4096
    val: int = 256
    eval_clips: int = 64
    sample_steps: int = 20
    levels: int = 8


FULL = Plan(train=TrainConfig(steps=300, batch_size=64, lr=2e-3, width=16, eval_every=30))
QUICK = Plan(
    gaussian_n=256,
    gaussian_steps=(10,),
    gaussian_starts=2,
    strategies=("none", "timenoise_b1.5_a5"),
    seeds=(0,),
    train=TrainConfig(steps=12, batch_size=16, lr=2e-3, width=8, eval_every=4),
    pool=128,
    val=32,
    eval_clips=8,
    sample_steps=4,
    levels=3,
)


def run_gaussian(plan: Plan, log=print) -> list[dict]:
    """Every family, start, steps and start law: closed form and Monte Carlo side by side."""
    data = gl.GaussianVideos()
    stats = gl.data_stats(data)
    rows = []
    for fam, schedule, step, starts in gaussian_families():
        den = gl.GaussianVideoDenoiser(data, schedule)
        for num_steps in plan.gaussian_steps:
            for M in starts[: plan.gaussian_starts]:
                for ai in (False, True):
                    sampler = Sampler(
                        step=step, num_steps=num_steps, M=M, stats=stats if ai else None
                    )
                    th, mc = (
                        gl.theory(den, sampler),
                        gl.measure(den, sampler, plan.gaussian_n, seed=0),
                    )
                    z = (mc["motion_energy"] - th["motion_energy"]) / mc["motion_energy_se"]
                    rows.append(
                        {
                            "family": fam,
                            "num_steps": num_steps,
                            "M": "T" if M is None else M,
                            "analytic_init": ai,
                            "data_motion_energy": data.motion_energy(),
                            "theory_motion_energy": th["motion_energy"],
                            "mc_motion_energy": mc["motion_energy"],
                            "mc_se": mc["motion_energy_se"],
                            "z": z,
                            "theory_kl": th["kl"],
                            "mc_kl": mc["kl"],
                            "theory_w2": th["w2"],
                            "mc_w2": mc["w2"],
                        }
                    )
                    log(f"gaussian {fam} steps={num_steps} M={M} AI={ai}: z={z:+.2f}")
    return rows


def run_trained(plan: Plan, log=print) -> tuple[list[dict], list[dict], list[dict]]:
    """Train and evaluate every (family, strategy, seed); returns (runs, sampling, diagnostic)."""
    evald = MovingTextures(photos=EVAL_PHOTOS)
    clips, _ = evald.sample(plan.eval_clips, torch.Generator().manual_seed(2024))
    runs, sampling, diag = [], [], []
    for seed in plan.seeds:
        train_data = MovingTextures()
        pool, _ = train_data.sample(plan.pool, torch.Generator().manual_seed(seed))
        val, _ = train_data.sample(plan.val, torch.Generator().manual_seed(10_000 + seed))
        stats = data_stats(pool)
        for fam, schedule, step, Ms in trained_families():
            for strategy in plan.strategies:
                name, kwargs = STRATEGIES[strategy]
                torch.manual_seed(seed)
                den = LabDenoiser(schedule, train_data.frames, width=plan.train.width)
                t0 = time.time()
                res = train(den, build_cond_noise(name, **kwargs), pool, val, plan.train, seed)
                rows, drows = evaluate(
                    den,
                    clips,
                    stats,
                    Ms,
                    num_steps=plan.sample_steps,
                    step=step,
                    seed=seed,
                    num_levels=plan.levels,
                )
                key = {"family": fam, "strategy": strategy, "seed": seed}
                runs.append({**key, **res, "seconds": time.time() - t0})
                sampling += [{**key, **r} for r in rows]
                diag += [{**key, **r} for r in drows]
                log(
                    f"trained {fam} {strategy} seed={seed}: val {res['final_val_loss']:.4f} "
                    f"converged={res['converged']} {time.time() - t0:.0f}s"
                )
    return runs, sampling, diag
