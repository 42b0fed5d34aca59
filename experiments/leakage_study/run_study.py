"""A small, reproducible study of conditional image leakage and its fixes on the shipped clips.

Trains the tiny SVD-class model (pixel space, `model=tiny`) with four condition-noise strategies
and the same budget and seeds: (a) none, (b) a log-normal augmentation level, (c) a constant
level, (d) TimeNoise. Then, on the shipped validation clips, for every trained model:

- the leakage diagnostic: motion ratio MS(one-step x0 prediction) / MS(real clip) at noise levels
  log-spaced in sigma from 0.02 up to and including the sampling start sigma_max
  (``cil_lightning.diagnose_levels.noise_levels``);
- full sampling from the full start and from an earlier M, with and without Analytic-Init
  (statistics of the training clips' latents), scored by motion score (the project's default
  flow, named in the outputs), motion-score error |MS_out - MS_in|, and pixel-space substitutes
  for the CLIP scores (no CLIP weights here): alignment = mean cosine similarity between the
  condition frame and each generated frame, temporal consistency = mean cosine similarity of
  consecutive generated frames (both on mean-centred pixels).

Writes into OUT: `results.csv` (one row per model and setting), `leakage.csv` (one row per model,
clip and noise level), `summary.json` (every number the README reports: settings, levels, wall
time, mean ± std tables, per-seed comparison counts, effects of M and Analytic-Init), `results.md`
(the same as tables) and `leakage.png` / `sampling.png`. Nothing here is tuned toward an outcome.

Usage: python experiments/leakage_study/run_study.py [--out DIR] [--steps 60] [--seeds 0 1 2]
       python experiments/leakage_study/run_study.py --recount DIR  (counts of DIR/results.csv)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_report import (  # noqa: E402  (the study folder is not a package)
    KEYS,
    METHODS,
    markdown,
    plots,
    recount,
    summarize,
    write_csv,
    write_json,
)

ROOT = Path(__file__).resolve().parents[2]


def train(method: str, seed: int, steps: int, out: Path) -> Path:
    run = out / "train" / f"{method}_seed{seed}"
    ckpt = run / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        return ckpt  # resumable study: finished trainings are kept
    cmd = [
        sys.executable,
        "-m",
        "cil_lightning",
        "train",
        f"+experiment={METHODS[method]}",
        f"seed={seed}",
        f"model.seed={seed}",
        f"trainer.max_steps={steps}",
        "logger=csv",
        "~callbacks.validation_metrics",
        f"callbacks.model_checkpoint.every_n_train_steps={steps}",
        f"hydra.run.dir={run}",
    ]
    subprocess.run(
        cmd,
        check=True,
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
    )
    return ckpt


def project_flow():
    """The project's default motion flow (conf/metric/default.yaml `motion.method`, no RAFT
    weights offline) and its name for the outputs."""
    from omegaconf import OmegaConf

    from cil_lightning.cli import conf_dir
    from cil_lightning.metrics.motion import build_flow

    method = OmegaConf.load(conf_dir() / "metric" / "default.yaml").motion.method
    flow = build_flow(method)
    return flow, f"{type(flow).__name__} (metric.motion.method={method})"


def cosine(a, b):
    """Cosine similarity of mean-centred flattened frames: a, b [N, ...] -> [N]."""
    import torch

    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def evaluate(ckpt: Path, args, flow) -> tuple[list[dict], list[dict]]:
    import torch
    from hydra.utils import instantiate

    from cil_lightning.data.video import to_unit_range
    from cil_lightning.diagnose import noise_levels, one_step_rows
    from cil_lightning.diffusion.analytic_init import LatentStats
    from cil_lightning.diffusion.rng import per_sample_generators
    from cil_lightning.metrics.motion import motion_scores
    from cil_lightning.models.checkpoint import load_denoiser
    from cil_lightning.sampling import Sampler

    torch.manual_seed(0)
    denoiser, run_cfg = load_denoiser(ckpt)
    dm = instantiate(run_cfg.data)
    dm.setup("fit")
    val = [dm.val_set[i] for i in range(len(dm.val_set))]
    videos = to_unit_range(torch.stack([v["video"] for v in val]))
    fps = torch.stack([torch.as_tensor(v["fps"], dtype=torch.float32) for v in val])

    def ms(v):
        return motion_scores(v, flow)

    # Up to and including the full start (sigma_max), where sampling from T begins.
    levels = noise_levels(denoiser.schedule, args.num_levels, level_min=args.level_min)
    leak = one_step_rows(denoiser, videos, levels=levels, motion_fn=ms, seeds=[0], fps=fps)

    stats = LatentStats()
    for i in range(min(len(dm.train_set), 64)):
        stats.update(denoiser.encode_video(to_unit_range(dm.train_set[i]["video"][None])))
    ms_in = ms(videos)
    cond = denoiser.encode_condition(videos[:, 0], fps=fps, num_frames=videos.shape[1])
    rows = []
    sampler = Sampler(step="euler", num_steps=args.num_steps, min_guidance=1.0, max_guidance=3.0)
    for M in [None, *args.M]:
        for ai in [False] if M is None else [False, True]:
            name = "full start" if M is None else f"M={M:g}" + (" +AI" if ai else "")
            start = sampler.replace(M=M, stats=stats if ai else None)
            generators = per_sample_generators(range(len(val)))
            gen = start(denoiser, cond, videos.shape[1], generators).video
            ms_out = ms(gen)
            F = gen.shape[1]
            align = cosine(gen.flatten(0, 1), videos[:, :1].expand(-1, F, -1, -1, -1).flatten(0, 1))
            consist = cosine(gen[:, 1:].flatten(0, 1), gen[:, :-1].flatten(0, 1))
            rows.append(
                {
                    "setting": name,
                    "motion_score": float(ms_out.mean()),
                    "input_motion_score": float(ms_in.mean()),
                    "ms_error": float((ms_out - ms_in).abs().mean()),
                    "alignment_px": float(align.mean()),
                    "consistency_px": float(consist.mean()),
                }
            )
    return leak, rows


def git_state() -> dict:
    def run(*cmd):
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = [ln[3:] for ln in run("git", "status", "--short").splitlines() if ln[:2] != "??"]
    return {"commit": run("git", "rev-parse", "HEAD"), "dirty": dirty}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "leakage_study" / "results")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--M", type=float, nargs="+", default=[10.0])
    p.add_argument("--num-levels", type=int, default=10, help="diagnostic levels up to sigma_max")
    p.add_argument("--level-min", type=float, default=0.02, help="lowest diagnostic sigma")
    p.add_argument("--num-steps", type=int, default=8)
    p.add_argument("--recount", type=Path, default=None, help="only recount DIR/results.csv")
    args = p.parse_args()
    if args.recount is not None:
        recount(args.recount)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    flow, flow_name = project_flow()
    print(f"motion flow: {flow_name}", flush=True)
    meta = {"motion_flow": flow_name, "git": git_state()}
    start = time.time()
    all_rows, leak_rows = [], []
    for seed in args.seeds:
        for method in METHODS:
            ckpt = train(method, seed, args.steps, args.out)
            leak, rows = evaluate(ckpt, args, flow)
            all_rows += [{"method": method, "seed": seed, **r} for r in rows]
            leak_rows += [{"method": method, "seed_model": seed, **r} for r in leak]
            print(f"[{time.time() - start:6.0f} s] {method} seed {seed} done", flush=True)
    meta["wall_time_s"] = time.time() - start
    meta["git_at_end"] = git_state()  # others may commit while the study runs
    fields = ["method", "seed", "setting", *KEYS, "input_motion_score"]
    write_csv(all_rows, fields, args.out / "results.csv")
    leak_fields = ["method", "seed_model", "clip", "name", "seed", "t_native", "sigma_alpha"]
    leak_fields += ["log_snr", "t_norm", "ms_real", "ms_recon", "ms_pred", "ratio", "ratio_recon"]
    write_csv(leak_rows, leak_fields, args.out / "leakage.csv")
    summary = summarize(all_rows, leak_rows, args, meta)
    write_json(summary, args.out / "summary.json")
    (args.out / "results.md").write_text(markdown(summary))
    plots(summary, args.out)
    print(markdown(summary))
    print(f"total {meta['wall_time_s']:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
