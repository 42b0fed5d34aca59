"""Validation metrics during training: sample fixed conditions, score them, log ``val/<name>``."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor


class ValidationMetrics(L.Callback):
    """Every ``every_n_steps`` steps and at the end of training, sample and score fixed conditions.

    The conditions are the first frames of the first ``num_conditions`` validation clips, each
    sampled with the same ``seeds`` every time, once per entry of ``settings`` (a start point ``M``
    with or without Analytic-Init). Conditions are split over ranks (i % world_size), and the
    metrics (``torchmetrics``) gather their state, so every rank must run this callback. For each
    setting it logs ``val/<metric>/<tag>`` (tag ``full``, ``M80`` or ``M80_ai``), and for the
    first setting also ``val/<metric>``: ``val/fvd``, ``val/motion_score``, ``val/ms_error``,
    ``val/clip_alignment``, ``val/temporal_consistency`` (and ``val/is``, ``val/fid``). Generated
    videos go to ``{dirpath}/step{N:06d}/{tag}/{name}_seed{S}.mp4``; rank 0 logs its own to W&B.

    Args:
        metrics: name -> ``torchmetrics.Metric`` (names as ``metrics.registry.METRICS``), or a
            list of names built with ``metric_settings`` (the ``metric`` config block).
        sampler: the sampler settings (``name``, ``num_steps``, ``M``, guidance, ``eta``,
            ``stats``); ``settings`` override ``M`` per run.
        settings: dicts with ``M`` (None: the full start) and ``analytic_init`` (bool).
        stats_path: Analytic-Init statistics (``LatentStats`` file); None: ``sampler.stats``,
            and if that is None too, estimated from up to ``stats_num_clips`` training clips.
    """

    def __init__(
        self,
        dirpath: str,
        sampler: Mapping,
        metrics: Mapping | Sequence[str],
        metric_settings: Mapping | None = None,
        settings: Sequence[Mapping] = ({"M": None, "analytic_init": False},),
        num_conditions: int = 4,
        seeds: Sequence[int] = (0,),
        every_n_steps: int = 0,
        stats_path: str | None = None,
        stats_num_clips: int = 32,
        fps: float = 8.0,
        save_videos: bool = True,
        log_videos: bool = True,
    ) -> None:
        if not isinstance(metrics, Mapping):
            from ..metrics.registry import build_metrics

            metrics = build_metrics(list(metrics), dict(metric_settings or {}))
        self.metrics = dict(metrics)
        self.dirpath, self.sampler = Path(dirpath), dict(sampler)
        self.settings = [
            {"M": s.get("M"), "analytic_init": bool(s.get("analytic_init", False))}
            for s in settings
        ]
        self.num_conditions, self.seeds = num_conditions, tuple(int(s) for s in seeds)
        self.every_n_steps, self.fps = every_n_steps, fps
        self.stats_path = stats_path or self.sampler.get("stats")
        self.stats_num_clips = stats_num_clips
        self.save_videos, self.log_videos = save_videos, log_videos
        self._stats = None
        self.last: dict[str, float] = {}

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
        """This rank's share of the fixed conditions, each repeated once per seed."""
        dm = trainer.datamodule
        dataset = getattr(dm, "val_set", None) or getattr(dm, "train_set", None)
        if dataset is None or len(dataset) == 0:
            return None
        indices = range(min(self.num_conditions, len(dataset)))
        mine = [i for i in indices if i % trainer.world_size == trainer.global_rank]
        repeated = [i for i in mine for _ in self.seeds]  # condition-major, like VideoSamples
        items = [dataset[i] for i in repeated]
        if not items:
            return None
        return {
            "video": torch.stack([it["video"] for it in items]),
            "cond_frame": torch.stack([it["cond_frame"] for it in items]),
            "fps": torch.stack([torch.as_tensor(it.get("fps", self.fps)).float() for it in items]),
            "name": [str(it.get("name", i)) for i, it in zip(repeated, items)],
            "seed": [s for _ in mine for s in self.seeds],
        }

    def _analytic_init_stats(self, trainer, denoiser):
        from ..diffusion.analytic_init import LatentStats

        if self._stats is None:
            if self.stats_path:
                self._stats = LatentStats.load(self.stats_path)
            else:  # estimated from real clips: enough to exercise the path during training
                dm = trainer.datamodule
                dataset = getattr(dm, "train_set", None) or dm.val_set
                stats = LatentStats()
                for i in range(min(self.stats_num_clips, len(dataset))):
                    video = dataset[i]["video"][None].to(next(denoiser.parameters()).device)
                    stats.update(denoiser.encode_video(video))
                self._stats = stats
        return self._stats

    @torch.no_grad()
    def run(self, trainer, pl_module) -> dict[str, float]:
        """Sample, score and log every setting. Returns the logged values (on every rank)."""
        from ..diffusion.rng import per_sample_generators
        from ..generate import generate

        batch = self._conditions(trainer)
        denoiser, device = pl_module.denoiser, pl_module.device
        was_training = denoiser.training
        denoiser.eval()
        values: dict[str, float] = {}
        s = self.sampler
        for k, setting in enumerate(self.settings):
            tag = self.tag(setting)
            for metric in self.metrics.values():
                metric.to(device).reset()
            paths = []
            if batch is not None:
                stats = (
                    self._analytic_init_stats(trainer, denoiser)
                    if setting["analytic_init"]
                    else None
                )
                generators = per_sample_generators(batch["seed"])
                cond = denoiser.sampling_condition(
                    batch["cond_frame"].to(device),
                    fps=batch["fps"].to(device),
                    generator=generators,
                )
                out = generate(
                    denoiser,
                    cond,
                    num_frames=batch["video"].shape[1],
                    sampler=s.get("name", "euler"),
                    num_steps=int(s.get("num_steps", 25)),
                    M=setting["M"],
                    stats=stats,
                    min_guidance=float(s.get("min_guidance", 1.0)),
                    max_guidance=float(s.get("max_guidance", 1.0)),
                    eta=float(s.get("eta", 0.0)),
                    generator=generators,
                )
                videos = denoiser.decode_video(out.sample).float()
                real = batch["video"].to(device)
                for metric in self.metrics.values():
                    metric.update_videos(videos, real, batch["cond_frame"].to(device))
                paths = self._save(trainer, tag, videos, batch)
            for name, metric in self.metrics.items():
                value = self._compute(name, metric)
                if value is None:
                    continue
                values[f"val/{name}/{tag}"] = value
                if k == 0:
                    values[f"val/{name}"] = value
            if trainer.is_global_zero and self.log_videos and paths:
                self._log_wandb_videos(trainer, tag, paths)
        denoiser.train(was_training)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        self.last = values
        return values

    @staticmethod
    def _compute(name: str, metric) -> float | None:
        try:
            return float(metric.compute())
        except RuntimeError as e:  # e.g. FVD with fewer than 2 videos on all ranks
            warnings.warn(f"val/{name} not computed: {e}", stacklevel=2)
            return None

    def _save(self, trainer, tag: str, videos: Tensor, batch: dict) -> list[Path]:
        if not self.save_videos:
            return []
        from ..data.video_io import write_mp4

        folder = self.dirpath / f"step{trainer.global_step:06d}" / tag
        return [
            write_mp4(folder / f"{name}_seed{seed}.mp4", video.cpu(), self.fps)
            for video, name, seed in zip(videos, batch["name"], batch["seed"])
        ]

    def _log_wandb_videos(self, trainer, tag: str, paths: list[Path]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log(
                    {
                        f"val/videos/{tag}": [wandb.Video(str(p), caption=p.stem) for p in paths],
                        "trainer/global_step": trainer.global_step,
                    }
                )
