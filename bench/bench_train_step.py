"""Training-step overhead of the framework against a bare PyTorch loop (CPU, tiny real-class SVD).

Both sides train the same tiny SVD (real UNet, temporal VAE and CLIP classes) on the same batches
for the same number of steps, with the same loss, AdamW, gradient clipping and EMA:

- ``bare``: a plain loop doing the step as the reference code does: VAE-encode the clip every
  step, condition, loss, backward, clip, step, EMA update;
- ``framework``: ``lightning.Trainer.fit`` on ``I2VLitModule`` with the default callbacks
  switched off except checkpointing (logging to CSV), i.e. what ``train`` runs.

Prints a table of median seconds per step and the overhead ratio framework / bare, measured in
the same run. Usage: ``python bench/bench_train_step.py [--steps 20] [--frames 8] [--size 32]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch


def make_batches(n: int, frames: int, size: int, batch: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "video": torch.rand(batch, frames, 3, size, size, generator=g) * 2 - 1,
            "cond_frame": None,
            "fps": torch.full((batch,), 7.0),
        }
        for _ in range(n)
    ]


def build(seed: int = 0):
    from cil_lightning.diffusion.cond_noise import TimeNoise
    from cil_lightning.models.tiny import tiny_svd

    return tiny_svd(seed=seed, cfg_dropout=0.1), TimeNoise(beta_m=15.0, a=5.0)


def bare_loop(batches: list[dict], warmup: int) -> list[float]:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from cil_lightning.diffusion.loss import DenoisingLoss

    torch.manual_seed(0)
    den, tn = build()
    loss_fn = DenoisingLoss(tn)
    opt = torch.optim.AdamW(den.trainable_parameters(), lr=3e-5, weight_decay=0.01)
    ema = AveragedModel(den.unet, multi_avg_fn=get_ema_multi_avg_fn(0.9999))
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        x0 = den.encode_video(b["video"])
        cond = den.encode_condition(b["video"][:, 0], fps=b["fps"])
        loss = loss_fn(den, x0, cond).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(den.trainable_parameters(), 1.0)
        opt.step()
        ema.update_parameters(den.unet)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def framework(batches: list[dict], warmup: int) -> list[float]:
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from cil_lightning.lit_module import I2VLitModule

    class StepTimer(Callback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= warmup:
                self.times.append(time.perf_counter() - self.t0)

    torch.manual_seed(0)
    den, tn = build()
    module = I2VLitModule(
        den,
        tn,
        optimizer=lambda params: torch.optim.AdamW(params, lr=3e-5, weight_decay=0.01),
        ema_decay=0.9999,
    )
    data = [{**b, "cond_frame": b["video"][:, 0]} for b in batches]
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=len(batches),
            gradient_clip_val=1.0,
            logger=CSVLogger(tmp),
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer, ModelCheckpoint(dirpath=tmp, every_n_train_steps=10**9)],
            default_root_dir=tmp,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        trainer.fit(module, train_dataloaders=loader)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    batches = make_batches(args.steps + args.warmup, args.frames, args.size, args.batch)

    results = {}
    for name, fn in (("bare", bare_loop), ("framework", framework)):
        results[name] = statistics.median(fn(batches, args.warmup))
    base = results["bare"]
    print(
        f"tiny SVD train step, {args.batch}x{args.frames}x3x{args.size}x{args.size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print("| loop | median s/step | ratio to bare |\n|---|---|---|")
    for name, sec in results.items():
        print(f"| {name} | {sec:.4f} | {sec / base:.3f} |")


if __name__ == "__main__":
    main()
