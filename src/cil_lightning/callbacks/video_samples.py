"""Sample videos for fixed validation conditions with fixed seeds, and save and log them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from ..data.video_io import write_gif, write_mp4, write_png
from ..diffusion.analytic_init import load_stats
from ..diffusion.rng import per_sample_generators
from ..generate import generate


class VideoSamples(L.Callback):
    """Every ``every_n_steps`` steps and at the end of training, generate from fixed conditions.

    Conditions are the first ``num_conditions`` validation clips' first frames; each gets the same
    ``seeds`` every time, so videos are comparable across steps. Writes
    ``{dirpath}/step{N:06d}/{name}_seed{S}.mp4`` (and ``.gif``), the condition frame as
    ``{name}_cond.png``, and the real clip as ``{name}_real.gif``; logs the videos to W&B when a
    W&B logger is attached.

    Args:
        sampler: the sampler settings (the ``sampler`` config group): ``name``, ``num_steps``,
            ``M``, ``min_guidance``, ``max_guidance``, ``eta``, ``stats`` (Analytic-Init file).
        gif_scale: nearest-neighbour upscaling of the gifs, for viewing tiny videos.
        use_ema: sample with the module's EMA UNet when it keeps one.
    """

    def __init__(
        self,
        dirpath: str,
        sampler: dict,
        num_conditions: int = 2,
        seeds: tuple[int, ...] = (0,),
        every_n_steps: int = 0,
        fps: float = 8.0,
        gif_scale: int = 4,
        use_ema: bool = True,
    ) -> None:
        self.dirpath, self.sampler = Path(dirpath), dict(sampler)
        self.num_conditions, self.seeds = num_conditions, tuple(int(s) for s in seeds)
        self.every_n_steps, self.fps, self.gif_scale = every_n_steps, fps, gif_scale
        self.use_ema = use_ema
        self._stats = None
        self.written: list[Path] = []

    def _conditions(self, trainer) -> dict | None:
        dm = trainer.datamodule
        dataset = getattr(dm, "val_set", None) or getattr(dm, "train_set", None)
        if dataset is None or len(dataset) == 0:
            return None
        items = [dataset[i] for i in range(min(self.num_conditions, len(dataset)))]
        return {
            "video": torch.stack([it["video"] for it in items]),
            "cond_frame": torch.stack([it["cond_frame"] for it in items]),
            "fps": torch.stack([torch.as_tensor(it.get("fps", self.fps)) for it in items]),
            "name": [str(it.get("name", i)) for i, it in enumerate(items)],
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.sample(trainer, pl_module)

    @torch.no_grad()
    def sample(self, trainer, pl_module) -> list[Path]:
        if not trainer.is_global_zero:
            return []
        batch = self._conditions(trainer)
        if batch is None:
            return []
        denoiser = pl_module.denoiser
        was_training, raw_unet = denoiser.training, denoiser.unet
        ema = getattr(pl_module, "ema", None)
        if self.use_ema and ema is not None:
            denoiser.unet = ema.module
        denoiser.eval()
        try:
            videos, seeds = self._generate(denoiser, batch, pl_module.device)
        finally:
            denoiser.unet = raw_unet
            denoiser.train(was_training)

        folder = self.dirpath / f"step{trainer.global_step:06d}"
        written = []
        for i, video in enumerate(videos):
            name, seed = batch["name"][i // len(self.seeds)], seeds[i]
            written.append(write_mp4(folder / f"{name}_seed{seed}.mp4", video, self.fps))
            write_gif(folder / f"{name}_seed{seed}.gif", video, self.fps, self.gif_scale)
        for name, real, frame in zip(batch["name"], batch["video"], batch["cond_frame"]):
            write_png(folder / f"{name}_cond.png", frame, self.gif_scale)
            write_gif(folder / f"{name}_real.gif", real, self.fps, self.gif_scale)
        self.written = written
        self._log_wandb(trainer, written)
        return written

    def _generate(self, denoiser, batch: dict, device) -> tuple[torch.Tensor, list[int]]:
        """Videos [n * len(seeds), F, 3, H, W] in [-1, 1], condition-major, and their seeds."""
        n, num_frames, k = len(batch["name"]), batch["video"].shape[1], len(self.seeds)
        seeds = [s for _ in range(n) for s in self.seeds]  # condition-major: c0 s0, c0 s1, ...
        generators = per_sample_generators(seeds)
        cond = denoiser.sampling_condition(
            batch["cond_frame"].to(device).repeat_interleave(k, dim=0),
            fps=batch["fps"].to(device).repeat_interleave(k, dim=0),
            generator=generators,
        )
        s = self.sampler
        if s.get("stats") and self._stats is None:
            self._stats = load_stats(s["stats"])
        out = generate(
            denoiser,
            cond,
            num_frames=num_frames,
            sampler=s.get("name", "euler"),
            num_steps=int(s.get("num_steps", 25)),
            M=s.get("M"),
            min_guidance=float(s.get("min_guidance", 1.0)),
            max_guidance=float(s.get("max_guidance", 1.0)),
            eta=float(s.get("eta", 0.0)),
            stats=self._stats,
            generator=generators,
        )
        return denoiser.decode_video(out.sample).float().cpu(), seeds

    def _log_wandb(self, trainer, paths: list[Path]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                gifs = [wandb.Video(str(p.with_suffix(".gif")), format="gif") for p in paths]
                logger.experiment.log(
                    {"val/samples": gifs, "trainer/global_step": trainer.global_step}
                )
