"""Validation sampling during training: generate fixed conditions once per setting, then save,
log and score the same videos."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from ..data.video import to_unit_range
from ..data.video_io import write_gif, write_mp4, write_png
from ..diffusion.analytic_init import LatentStats
from ..diffusion.rng import per_sample_generators
from ..ema import ema_weights
from ..sampling import Sampler


class ValidationSampling(L.Callback):
    """Every ``every_n_steps`` steps and at the end of training, sample fixed conditions.

    The conditions are the first frames of the first ``num_conditions`` validation clips (the
    training clips when there is no validation split), each sampled with the same ``seeds`` every
    time, so videos and numbers are comparable across steps. Conditions are split over ranks
    (i % world_size) and the metrics (``torchmetrics``) gather their state, so every rank runs
    this callback. With ``use_ema`` and an EMA in the module, everything uses the EMA UNet.

    For each entry of ``settings`` (a start point ``M``, None for the full start, with or without
    Analytic-Init; tag ``full``, ``M10`` or ``M10_ai``) the videos are generated once, then:

    - written (``save_videos``): the first setting's as ``{dirpath}/step{N:06d}/{name}_seed{S}.mp4``
      and ``.gif``, the others' under ``{dirpath}/step{N:06d}/{tag}/``; each condition frame as
      ``{name}_cond.png`` and its real clip as ``{name}_real.gif``;
    - logged to W&B as ``val/videos/{tag}`` (rank 0's share, ``log_videos``);
    - scored: ``val/<metric>/<tag>``, and for the first setting also ``val/<metric>`` (e.g.
      ``val/motion_score``, ``val/ms_error``, ``val/fvd``, ``val/clip_alignment``).

    Args:
        sampler: the sampling settings (``conf/sampler``); each setting replaces its ``M`` and
            ``stats``.
        metrics: name -> ``torchmetrics.Metric`` (names as ``metrics.registry.METRICS``), or a
            list of names built with ``metric_settings`` (the ``metric`` config block).
        settings: dicts with ``M`` (None: the full start) and ``analytic_init`` (bool).
        stats_path: Analytic-Init statistics of the ``analytic_init`` settings; None: the
            sampler's ``stats``, and if that is None too, estimated from up to
            ``stats_num_clips`` training clips.
        gif_scale: nearest-neighbour upscaling of the gifs and pngs, for viewing tiny videos.
        use_ema: sample with the module's EMA UNet when it keeps one (``ema.ema_weights``).
    """

    def __init__(
        self,
        dirpath: str,
        sampler: Sampler,
        metrics: Mapping | Sequence[str] = (),
        metric_settings: Mapping | None = None,
        settings: Sequence[Mapping] = ({"M": None, "analytic_init": False},),
        num_conditions: int = 2,
        seeds: Sequence[int] = (0,),
        every_n_steps: int = 0,
        stats_path: str | None = None,
        stats_num_clips: int = 32,
        fps: float = 8.0,
        gif_scale: int = 4,
        use_ema: bool = True,
        save_videos: bool = True,
        log_videos: bool = True,
    ) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be a cil_lightning.sampling.Sampler, got {sampler!r}")
        if not isinstance(metrics, Mapping):
            from ..metrics.registry import build_metrics

            metrics = build_metrics(list(metrics), dict(metric_settings or {})) if metrics else {}
        self.metrics = dict(metrics)
        self.dirpath, self.sampler = Path(dirpath), sampler
        self.settings = [
            {"M": s.get("M"), "analytic_init": bool(s.get("analytic_init", False))}
            for s in settings
        ]
        self.num_conditions, self.seeds = num_conditions, tuple(int(s) for s in seeds)
        self.every_n_steps, self.fps, self.gif_scale = every_n_steps, fps, gif_scale
        self.stats_path, self.stats_num_clips = stats_path, stats_num_clips
        self.use_ema, self.save_videos, self.log_videos = use_ema, save_videos, log_videos
        self._stats: LatentStats | None = None  # estimated from training clips, once
        self.last: dict[str, float] = {}
        self.written: list[Path] = []  # the first setting's videos of the last run

    @staticmethod
    def tag(setting: Mapping) -> str:
        base = "full" if setting["M"] is None else f"M{setting['M']:g}"
        return base + ("_ai" if setting["analytic_init"] else "")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.run(trainer, pl_module)

    def _conditions(self, trainer) -> dict | None:
        """This rank's share of the fixed conditions, each repeated once per seed
        (condition-major: c0 s0, c0 s1, c1 s0, ...)."""
        dm = trainer.datamodule
        dataset = getattr(dm, "val_set", None) or getattr(dm, "train_set", None)
        if dataset is None or len(dataset) == 0:
            return None
        indices = range(min(self.num_conditions, len(dataset)))
        mine = [i for i in indices if i % trainer.world_size == trainer.global_rank]
        if not mine:
            return None
        items = [dataset[i] for i in mine]
        k = len(self.seeds)
        stride = None  # the adapter's default when the data set gives none
        if all("stride" in it for it in items):
            stride = torch.stack([torch.as_tensor(it["stride"]) for it in items])
            stride = stride.repeat_interleave(k, dim=0)
        # uint8 clips (ClipSpec.uint8) as [-1, 1] floats, as the training step sees them.
        return {
            "video": to_unit_range(torch.stack([it["video"] for it in items])).repeat_interleave(
                k, dim=0
            ),
            "cond_frame": to_unit_range(
                torch.stack([it["cond_frame"] for it in items])
            ).repeat_interleave(k, 0),
            "fps": torch.stack(
                [torch.as_tensor(it.get("fps", self.fps)).float() for it in items]
            ).repeat_interleave(k, dim=0),
            "stride": stride,
            "caption": [str(it.get("caption", "")) for it in items for _ in self.seeds],
            "name": [str(it.get("name", i)) for i, it in zip(mine, items) for _ in self.seeds],
            "seed": [s for _ in mine for s in self.seeds],
        }

    def _estimated_stats(self, trainer, denoiser) -> LatentStats:
        """Analytic-Init statistics of up to ``stats_num_clips`` training clips' latents: enough
        to exercise the path during training."""
        if self._stats is None:
            dm = trainer.datamodule
            dataset = getattr(dm, "train_set", None) or dm.val_set
            device = next(denoiser.parameters()).device
            stats = LatentStats()
            for i in range(min(self.stats_num_clips, len(dataset))):
                video = to_unit_range(dataset[i]["video"][None].to(device))
                stats.update(denoiser.encode_video(video))
            self._stats = stats
        return self._stats

    def sampler_for(self, setting: Mapping, trainer, denoiser) -> Sampler:
        """The sampler of one setting: its start ``M``, Analytic-Init statistics or none."""
        stats = None
        if setting["analytic_init"]:
            stats = self.stats_path or self.sampler.stats
            if stats is None:
                stats = self._estimated_stats(trainer, denoiser)
        return self.sampler.replace(M=setting["M"], stats=stats)

    @torch.no_grad()
    def run(self, trainer, pl_module) -> dict[str, float]:
        """Sample, save, log and score every setting. Returns the logged values (every rank)."""
        batch = self._conditions(trainer)
        denoiser, device = pl_module.denoiser, pl_module.device
        was_training = denoiser.training
        values: dict[str, float] = {}
        try:
            with ema_weights(pl_module, self.use_ema):
                denoiser.eval()
                for k, setting in enumerate(self.settings):
                    values.update(self._run_setting(trainer, denoiser, device, batch, k, setting))
        finally:
            denoiser.train(was_training)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        self.last = values
        return values

    def _run_setting(self, trainer, denoiser, device, batch, k: int, setting) -> dict[str, float]:
        tag = self.tag(setting)
        for metric in self.metrics.values():
            metric.to(device).reset()
        if batch is not None:
            sampler = self.sampler_for(setting, trainer, denoiser)
            generators = per_sample_generators(batch["seed"])
            # Each seed draws its inference condition noise first, then the sampler's noise.
            cond = denoiser.sampling_condition(
                batch["cond_frame"].to(device),
                fps=batch["fps"].to(device),
                generator=generators,
                num_frames=batch["video"].shape[1],
                stride=None if batch["stride"] is None else batch["stride"].to(device),
                caption=batch["caption"],
            )
            videos = sampler(denoiser, cond, batch["video"].shape[1], generators).video.float()
            real, frames = batch["video"].to(device), batch["cond_frame"].to(device)
            for metric in self.metrics.values():
                metric.update_videos(videos, real, frames)
            paths = self._save(trainer, k, tag, videos.cpu(), batch)
            if trainer.is_global_zero and self.log_videos and paths:
                self._log_wandb_videos(trainer, tag, paths)
        values = {}
        for name, metric in self.metrics.items():
            value = self._compute(name, metric)
            if value is None:
                continue
            values[f"val/{name}/{tag}"] = value
            if k == 0:
                values[f"val/{name}"] = value
        return values

    @staticmethod
    def _compute(name: str, metric) -> float | None:
        try:
            return float(metric.compute())
        except RuntimeError as e:  # e.g. FVD with fewer than 2 videos on all ranks
            warnings.warn(f"val/{name} not computed: {e}", stacklevel=2)
            return None

    def _save(self, trainer, k: int, tag: str, videos: Tensor, batch: dict) -> list[Path]:
        """Write one setting's videos [n, F, 3, H, W] (and, for the first, the conditions and
        real clips); returns the mp4 paths."""
        if not self.save_videos:
            return []
        step_dir = self.dirpath / f"step{trainer.global_step:06d}"
        folder = step_dir if k == 0 else step_dir / tag
        written = []
        for video, name, seed in zip(videos, batch["name"], batch["seed"]):
            written.append(write_mp4(folder / f"{name}_seed{seed}.mp4", video, self.fps))
            write_gif(folder / f"{name}_seed{seed}.gif", video, self.fps, self.gif_scale)
        if k == 0:
            scale = self.gif_scale
            for i in range(0, len(batch["name"]), len(self.seeds)):  # once per condition
                name = batch["name"][i]
                write_png(step_dir / f"{name}_cond.png", batch["cond_frame"][i], scale)
                write_gif(step_dir / f"{name}_real.gif", batch["video"][i], self.fps, scale)
            self.written = written
        return written

    def _log_wandb_videos(self, trainer, tag: str, paths: list[Path]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                gifs = [
                    wandb.Video(str(p.with_suffix(".gif")), caption=p.stem, format="gif")
                    for p in paths
                ]
                logger.experiment.log(
                    {f"val/videos/{tag}": gifs, "trainer/global_step": trainer.global_step}
                )
