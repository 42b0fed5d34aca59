"""The whole Lightning training loop against a bare PyTorch loop doing the same work (CPU).

    python bench/bench_train_step.py      # writes bench/results/train_step_cpu.json and .md
    python bench/bench_train_step.py --render bench/results/train_step_cpu.json   # the .md again

Both loops train the same tiny SVD (real UNet, temporal VAE and CLIP classes) on the same clips
from the same DataLoader for the same number of steps, with the same loss, fused AdamW, gradient
clipping and EMA, and both log the loss and save a checkpoint every ``--every`` steps:

- ``bare``: a plain loop: fetch the batch, VAE-encode, condition, loss, backward, clip, step,
  EMA update; every N steps append the loss to a CSV and ``torch.save`` the model, optimiser
  and EMA state;
- ``lightning``: ``lightning.Trainer.fit`` on ``I2VLitModule`` with a CSV logger
  (``log_every_n_steps=N``) and ``ModelCheckpoint(every_n_train_steps=N)``, i.e. what ``train``
  runs, its data fetching, hooks and sync-free step included.

A run's clock starts after ``--warmup`` steps and stops when the loop has finished its last step
(its checkpoint included), so it covers everything between steps. The two loops alternate over
``--repeats`` runs (each with a fresh model), so drifting machine load hits both; s/step is
reported as median (min - max) and the ratio is of medians. Raw times go to the JSON and the
Markdown table is generated from it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from _host import cpu_name, load_average

RESULTS = Path(__file__).resolve().parent / "results"


def make_clips(n: int, frames: int, size: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        video = torch.rand(frames, 3, size, size, generator=g) * 2 - 1
        out.append({"video": video, "cond_frame": video[0].clone(), "fps": torch.tensor(7.0)})
    return out


def loader(clips: list[dict], batch: int):
    return torch.utils.data.DataLoader(clips, batch_size=batch, shuffle=False, drop_last=True)


def build(seed: int = 0):
    from cil_lightning.diffusion.cond_noise import TimeNoise
    from cil_lightning.models.tiny import tiny_svd

    return tiny_svd(seed=seed, cfg_dropout=0.1), TimeNoise(beta_m=15.0, a=5.0)


OPTIMIZER = partial(torch.optim.AdamW, lr=3e-5, weight_decay=0.01, fused=True)


def bare_loop(clips: list[dict], args, tmp: Path) -> float:
    from cil_lightning.diffusion.loss import DenoisingLoss
    from cil_lightning.ema import build_ema

    torch.manual_seed(0)
    den, tn = build()
    loss_fn = DenoisingLoss(tn)
    params = den.trainable_parameters()
    opt = OPTIMIZER(params)
    ema = build_ema(den.unet, 0.9999)
    csv = (tmp / "bare_loss.csv").open("w")
    step, t0 = 0, time.perf_counter()
    while step < args.warmup + args.steps:
        for b in loader(clips, args.batch):
            gen = torch.Generator().manual_seed(step)
            x0 = den.encode_video(b["video"], generator=gen)
            cond = den.encode_condition(b["cond_frame"], fps=b["fps"])
            loss = loss_fn(den, x0, cond, gen).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.found_inf = (~torch.isfinite(loss.detach())).float()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            ema.update_parameters(den.unet)
            step += 1
            if step % args.every == 0:
                csv.write(f"{step},{loss.item()}\n")
                state = {
                    "model": den.state_dict(),
                    "opt": opt.state_dict(),
                    "ema": ema.state_dict(),
                }
                torch.save(state, tmp / "bare.ckpt")
            if step == args.warmup:  # the clock starts at the end of the last warm-up step
                t0 = time.perf_counter()
            if step == args.warmup + args.steps:
                break
    csv.close()
    return time.perf_counter() - t0


def lightning_loop(clips: list[dict], args, tmp: Path) -> float:
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from cil_lightning.lit_module import I2VLitModule

    class Clock(Callback):
        def __init__(self) -> None:
            self.t0 = self.t1 = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == args.warmup:
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            self.t1 = time.perf_counter()

    torch.manual_seed(0)
    den, tn = build()
    module = I2VLitModule(den, tn, optimizer=OPTIMIZER, ema_decay=0.9999)
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.warmup + args.steps,
        gradient_clip_val=1.0,
        logger=CSVLogger(tmp),
        log_every_n_steps=args.every,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock, ModelCheckpoint(dirpath=tmp, every_n_train_steps=args.every)],
        default_root_dir=tmp,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=loader(clips, args.batch))
    return clock.t1 - clock.t0


def machine() -> str:
    return (
        f"{cpu_name()}, {os.cpu_count()} logical cores (load average {load_average():.2f} at "
        "start), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def render(result: dict) -> str:
    """The Markdown report of one run's JSON."""
    c = result["config"]
    lines = [
        "# Training loop: Lightning against a bare PyTorch loop (CPU)",
        "",
        f"Generated by `bench/bench_train_step.py` from its JSON. Command: `{result['command']}`.",
        f"Machine: {result['machine']}.",
        f"Model: the tiny real-class SVD, batch {c['batch']} x {c['frames']} frames x "
        f"{c['size']}x{c['size']}, TimeNoise (beta_m 15, a 5), fused AdamW, grad clip 1.0, EMA; "
        f"loss logged and a checkpoint saved every {c['every']} steps; {c['steps']} timed steps "
        f"after {c['warmup']} warm-up steps, {c['repeats']} alternating runs of each loop.",
        "",
        "| loop | s/step median (min - max) | ratio to bare (medians) |",
        "|---|---|---:|",
    ]
    base = statistics.median(result["bare"])
    for name in ("bare", "lightning"):
        per_step = [t / c["steps"] for t in result[name]]
        med = statistics.median(per_step)
        lines.append(
            f"| {name} | {med:.4f} ({min(per_step):.4f} - {max(per_step):.4f}) | "
            f"{statistics.median(result[name]) / base:.3f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--every", type=int, default=10, help="log and checkpoint interval")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "train_step_cpu")
    p.add_argument("--render", type=Path, default=None, help="only rewrite the .md of this JSON")
    args = p.parse_args(argv)
    if args.render is not None:
        result = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(render(result))
        return result

    clips = make_clips(args.batch * 4, args.frames, args.size)
    result = {
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(),
        "config": {k: getattr(args, k) for k in ("steps", "warmup", "repeats", "every")}
        | {k: getattr(args, k) for k in ("frames", "size", "batch")},
        "bare": [],
        "lightning": [],
    }
    for _ in range(args.repeats):
        for name, fn in (("bare", bare_loop), ("lightning", lightning_loop)):
            with tempfile.TemporaryDirectory() as tmp:
                result[name].append(fn(clips, args, Path(tmp)))
    json_path = args.out.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    json_path.with_suffix(".md").write_text(render(result))
    print(render(result) + f"\nwrote {json_path} and {json_path.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
