"""``python -m cil_lightning diagnose``: conditional image leakage in a model, measured.

Loads the model (``ckpt=...`` or ``model=...``) and the first ``num_clips`` validation clips of
``data``, then runs ``cil_lightning.diagnose.run_diagnostic``: one-step x0-prediction motion at
noise levels up to the sampling start (``levels`` in native units, or the default ladder of
``num_levels`` up to ``sampler.M`` / the full start), and full sampling from T and from each M
(with and without Analytic-Init), output against input motion. Writes ``diagnose.csv``,
``summary.json``, ``motion_ratio.png`` and ``motion_scatter.png`` into the run folder.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import validate
from . import choose_device, run_hydra_task


def load_clips(datamodule, num_clips: int):
    """The first ``num_clips`` validation clips: (videos [N, F, 3, H, W] in [-1, 1], fps [N],
    names)."""
    import torch

    from ..data.video import to_unit_range

    if hasattr(datamodule, "setup"):
        datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    if not loader:
        raise ValueError("diagnose: the data module has no validation split")
    videos, fps, names = [], [], []
    for batch in loader:
        video = to_unit_range(batch["video"])  # uint8 clips (ClipSpec.uint8) as [-1, 1] floats
        b = video.shape[0]
        videos.append(video)
        fps.append(torch.as_tensor(batch["fps"], dtype=torch.float32).reshape(-1).expand(b))
        names += list(batch.get("name", [f"clip{len(names) + i}" for i in range(b)]))
        if len(names) >= num_clips:
            break
    videos, fps = torch.cat(videos)[:num_clips], torch.cat(fps)[:num_clips]
    return videos, fps, names[:num_clips]


def check_level_config(cfg: DictConfig) -> None:
    """``levels``, ``num_levels`` and ``level_min`` before anything heavy is built (their range
    against the model's schedule is checked once the model is there)."""
    levels, n, lo = cfg.get("levels"), cfg.get("num_levels"), cfg.get("level_min")
    if levels is not None and (
        not OmegaConf.is_list(levels)
        or len(levels) == 0
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
    ):
        raise ValueError(f"levels must be null or a non-empty list of numbers, got {levels}")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 2):
        raise ValueError(f"num_levels must be an integer >= 2, got {n}")
    if not (isinstance(lo, (int, float)) and not isinstance(lo, bool) and 0 < lo < float("inf")):
        raise ValueError(f"level_min (sigma/alpha) must be finite and > 0, got {lo}")


def diagnose(cfg: DictConfig) -> dict:
    validate(cfg, inputs=True)
    check_level_config(cfg)
    import torch
    from hydra.utils import instantiate

    from ..diagnose import check_levels, noise_levels, run_diagnostic
    from ..metrics.motion import build_flow, motion_scores
    from ..models.checkpoint import load_denoiser

    sampler = instantiate(cfg.sampler)
    if cfg.get("stats"):  # the diagnostic's own statistics win over the sampler's
        sampler = sampler.replace(stats=cfg.stats)
    torch.manual_seed(cfg.seed)
    if cfg.get("ckpt"):
        denoiser, _ = load_denoiser(cfg.ckpt, use_ema=cfg.use_ema)
    else:
        denoiser = instantiate(cfg.model).eval()
    device = choose_device(cfg.device)
    denoiser.to(device)
    # The levels' range depends on the model's schedule: fail here, before clips and flow load.
    if cfg.levels is None:
        lv = dict(num_levels=int(cfg.num_levels), level_min=float(cfg.level_min))
        noise_levels(denoiser.schedule, M=sampler.M, **lv)
    else:
        lv = dict(levels=check_levels(denoiser.schedule, list(cfg.levels)))

    videos, fps, names = load_clips(instantiate(cfg.data), int(cfg.num_clips))
    # A checkpoint is diagnosed with the fps it was trained with (load_denoiser made the recorded
    # mean the adapter's default), as `sample` does; `fps=` fixes one for every clip.
    if cfg.get("fps") is not None:
        fps = torch.full_like(fps, float(cfg.fps))
    elif cfg.get("ckpt") and hasattr(denoiser, "fps"):
        fps = torch.full_like(fps, float(denoiser.fps))
    m = cfg.metric.motion
    flow = build_flow(m.method, m.raft_weights, m.raft_arch, int(m.num_flow_updates)).to(device)
    flow.eval()

    def motion_fn(v):
        return motion_scores(v, flow, max_pairs=int(m.max_pairs))

    out_dir = Path(cfg.paths.output_dir)
    _, summary = run_diagnostic(
        denoiser,
        videos.to(device),
        motion_fn=motion_fn,
        sampler=sampler,
        **lv,
        out_dir=out_dir,
        Ms=[float(x) for x in (cfg.M or [])],
        seeds=[int(x) for x in cfg.seeds],
        fps=fps.to(device),
        names=names,
        batch_size=int(cfg.batch_size),
        min_motion=float(cfg.min_motion),
        full_sampling=bool(cfg.full_sampling),
    )
    if sampler.stats is not None:
        summary["stats"] = str(sampler.stats)
    summary["ckpt"] = cfg.get("ckpt")
    summary["model"] = None if cfg.get("ckpt") else OmegaConf.to_container(cfg.model, resolve=True)
    summary["sampler"] = sampler.settings()
    summary["device"] = str(device)
    summary["fps"] = sorted(set(fps.tolist()))
    summary["motion_flow"] = f"{m.method}: {type(flow).__name__}"
    from ..diagnose_report import write_json

    write_json(summary, out_dir / "summary.json")
    print(f"levels ({summary['levels']['units']}); sampling start {summary['levels']['start']:g}")
    for row in summary["one_step"]:
        r = row["ratio"]
        print(
            f"t={row['t_native']:<9.4g} sigma/alpha={row['sigma_alpha']:<9.4g} motion ratio "
            f"{r['mean']:.3f} +- {r['std']:.3f} (n={r['n']})"
        )
    print(f"({summary['note']})")
    for row in summary["sampling"]:
        print(
            f"{row['setting']:>12}: output MS {row['ms_output']['mean']:.3f} vs input "
            f"{row['ms_input']['mean']:.3f}"
        )
    print(f"cil_lightning diagnose: diagnose.csv, summary.json and plots in {out_dir}")
    return summary


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, diagnose)
