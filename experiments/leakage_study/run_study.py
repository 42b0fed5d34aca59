"""A small, reproducible study of conditional image leakage and its fixes on the shipped clips.

Trains the tiny SVD-class model (pixel space, `model=tiny`) with four condition-noise strategies
and the same budget and seeds: (a) none, (b) SVD's log-normal augmentation, (c) a constant level,
(d) TimeNoise. Then, on the shipped validation clips, for every trained model:

- the leakage diagnostic: motion ratio MS(one-step x0 prediction) / MS(real clip) against t;
- full sampling from the full start and from an earlier M, with and without Analytic-Init
  (statistics of the training clips' latents), scored by motion score (Farneback), motion-score
  error |MS_out - MS_in|, and pixel-space substitutes for the CLIP scores (no CLIP weights here):
  alignment = mean cosine similarity between the condition frame and each generated frame,
  temporal consistency = mean cosine similarity of consecutive generated frames (both on
  mean-centred pixels).

Writes `results.csv` (one row per model and setting), `results.md` (mean ± std over seeds) and
`leakage.png` / `sampling.png` into OUT. Nothing here is tuned toward an outcome.

Usage: python experiments/leakage_study/run_study.py [--out DIR] [--steps 60] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {  # name -> experiment file (conf/experiment/)
    "none": "tiny_naive",
    "svd_lognormal": "tiny_svdaug",
    "constant": "tiny_constant",
    "timenoise": "tiny_timenoise",
}
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
        "~callbacks.video_samples",
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


def cosine(a, b):
    """Cosine similarity of mean-centred flattened frames: a, b [N, ...] -> [N]."""
    import torch

    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def evaluate(ckpt: Path, args) -> tuple[list[dict], list[dict]]:
    import torch
    from hydra.utils import instantiate

    from cil_lightning.checkpoint import load_denoiser
    from cil_lightning.diagnose import one_step_rows
    from cil_lightning.diffusion.analytic_init import LatentStats
    from cil_lightning.diffusion.rng import per_sample_generators
    from cil_lightning.generate import generate
    from cil_lightning.metrics.motion import build_flow, motion_scores

    torch.manual_seed(0)
    denoiser, run_cfg = load_denoiser(ckpt)
    dm = instantiate(run_cfg.data)
    dm.setup("fit")
    val = [dm.val_set[i] for i in range(len(dm.val_set))]
    videos = torch.stack([v["video"] for v in val])
    fps = torch.stack([torch.as_tensor(v["fps"], dtype=torch.float32) for v in val])
    flow = build_flow("farneback")

    def ms(v):
        return motion_scores(v, flow)

    leak = one_step_rows(denoiser, videos, times=args.times, motion_fn=ms, seeds=[0], fps=fps)

    stats = LatentStats()
    for i in range(min(len(dm.train_set), 64)):
        stats.update(denoiser.encode_video(dm.train_set[i]["video"][None]))
    ms_in = ms(videos)
    cond = denoiser.encode_condition(videos[:, 0], fps=fps)
    rows = []
    for M in [None, *args.M]:
        for ai in [False] if M is None else [False, True]:
            name = "full start" if M is None else f"M={M:g}" + (" +AI" if ai else "")
            with torch.no_grad():
                out = generate(
                    denoiser,
                    cond,
                    num_frames=videos.shape[1],
                    sampler="euler",
                    num_steps=args.num_steps,
                    M=M,
                    stats=stats if ai else None,
                    min_guidance=1.0,
                    max_guidance=3.0,
                    generator=per_sample_generators(range(len(val))),
                )
                gen = denoiser.decode_video(out.sample)
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


def mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(all_rows: list[dict], leak_rows: list[dict], out: Path, args) -> None:
    keys = ["motion_score", "ms_error", "alignment_px", "consistency_px"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "seed", "setting", *keys, "input_motion_score"])
        w.writeheader()
        w.writerows(all_rows)
    settings = list(dict.fromkeys(r["setting"] for r in all_rows))
    lines = [
        f"Tiny pixel-space SVD-class model, {args.steps} steps, seeds {args.seeds}; "
        f"{len(all_rows) // max(1, len(METHODS) * len(args.seeds))} sampling settings; "
        f"input motion score (Farneback) {all_rows[0]['input_motion_score']:.3f} px/frame.",
        "",
        "| method | setting | motion score | MS error | alignment (px) | consistency (px) |",
        "|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        for s in settings:
            sel = [r for r in all_rows if r["method"] == method and r["setting"] == s]
            cells = [mean_std([r[k] for r in sel]) for k in keys]
            lines.append(f"| {method} | {s} | " + " | ".join(cells) + " |")
    lines += ["", "Motion ratio MS(one-step x0) / MS(real) against t (mean ± std over seeds):", ""]
    lines += [
        "| method | " + " | ".join(f"t={t:g}" for t in args.times) + " |",
        "|---|" + "---|" * len(args.times),
    ]
    for method in METHODS:
        cells = []
        for t in args.times:
            per_seed = []
            for seed in args.seeds:
                vals = [
                    r["ratio"]
                    for r in leak_rows
                    if r["method"] == method
                    and r["seed_model"] == seed
                    and r["t"] == t
                    and r["ratio"] == r["ratio"]
                ]
                per_seed.append(statistics.mean(vals))
            cells.append(mean_std(per_seed))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        means = []
        for t in args.times:
            vals = [
                r["ratio"]
                for r in leak_rows
                if r["method"] == method and r["t"] == t and r["ratio"] == r["ratio"]
            ]
            means.append(statistics.mean(vals))
        ax.plot(args.times, means, marker="o", label=method)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("normalised time t")
    ax.set_ylabel("MS(one-step x0) / MS(real)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "leakage.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, key in enumerate(["motion_score", "alignment_px"]):
        for method in METHODS:
            ys = [
                statistics.mean(
                    [r[key] for r in all_rows if r["method"] == method and r["setting"] == s]
                )
                for s in settings
            ]
            axes[k].plot(range(len(settings)), ys, marker="o", label=method)
        axes[k].set_xticks(range(len(settings)), settings, rotation=20)
        axes[k].set_ylabel(key)
    axes[0].axhline(all_rows[0]["input_motion_score"], color="grey", lw=0.8, ls="--")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "sampling.png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "leakage_study" / "results")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--M", type=float, nargs="+", default=[10.0])
    p.add_argument("--times", type=float, nargs="+", default=[0.1, 0.4, 0.7, 1.0])
    p.add_argument("--num-steps", type=int, default=8)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    all_rows, leak_rows = [], []
    for seed in args.seeds:
        for method in METHODS:
            ckpt = train(method, seed, args.steps, args.out)
            leak, rows = evaluate(ckpt, args)
            all_rows += [{"method": method, "seed": seed, **r} for r in rows]
            leak_rows += [{"method": method, "seed_model": seed, **r} for r in leak]
            print(f"[{time.time() - start:6.0f} s] {method} seed {seed} done", flush=True)
    report(all_rows, leak_rows, args.out, args)
    print(f"total {time.time() - start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
