"""``python -m cil_lightning diagnose``: conditional image leakage in a model, measured.

Loads the model (``ckpt=...`` or ``model=...``) and the first ``num_clips`` validation clips of
``data``, then runs ``cil_lightning.diagnose.run_diagnostic``: one-step x0-prediction motion
against the normalised time, and full sampling from T and from each M (with and without
Analytic-Init), output against input motion. Writes ``diagnose.csv``, ``summary.json``,
``motion_ratio.png`` and ``motion_scatter.png`` into the run folder.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..validation import validate
from . import run_hydra_task


def load_clips(datamodule, num_clips: int):
    """The first ``num_clips`` validation clips: (videos [N, F, 3, H, W], fps [N], names)."""
    import torch

    if hasattr(datamodule, "setup"):
        datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    if not loader:
        raise ValueError("diagnose: the data module has no validation split")
    videos, fps, names = [], [], []
    for batch in loader:
        video = batch["video"]
        b = video.shape[0]
        videos.append(video)
        fps.append(torch.as_tensor(batch["fps"], dtype=torch.float32).reshape(-1).expand(b))
        names += list(batch.get("name", [f"clip{len(names) + i}" for i in range(b)]))
        if len(names) >= num_clips:
            break
    videos, fps = torch.cat(videos)[:num_clips], torch.cat(fps)[:num_clips]
    return videos, fps, names[:num_clips]


def diagnose(cfg: DictConfig) -> dict:
    validate(cfg)
    import torch
    from hydra.utils import instantiate

    from ..checkpoint import load_denoiser
    from ..diagnose import run_diagnostic
    from ..diffusion.analytic_init import load_stats
    from ..metrics.motion import build_flow, motion_scores

    torch.manual_seed(cfg.seed)
    if cfg.get("ckpt"):
        denoiser, _ = load_denoiser(cfg.ckpt, use_ema=cfg.use_ema)
    else:
        denoiser = instantiate(cfg.model).eval()
    device = torch.device(
        cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    denoiser.to(device)

    videos, fps, names = load_clips(instantiate(cfg.data), int(cfg.num_clips))
    m = cfg.metric.motion
    flow = build_flow(m.method, m.raft_weights, m.raft_arch, int(m.num_flow_updates)).to(device)
    flow.eval()

    def motion_fn(v):
        return motion_scores(v, flow, max_pairs=int(m.max_pairs))

    s = cfg.sampler
    stats_path = cfg.get("stats") or s.get("stats")
    out_dir = Path(cfg.paths.output_dir)
    _, summary = run_diagnostic(
        denoiser,
        videos.to(device),
        times=[float(t) for t in cfg.times],
        motion_fn=motion_fn,
        out_dir=out_dir,
        Ms=[float(x) for x in (cfg.M or [])],
        stats=load_stats(stats_path) if stats_path else None,
        seeds=[int(x) for x in cfg.seeds],
        fps=fps.to(device),
        names=names,
        batch_size=int(cfg.batch_size),
        min_motion=float(cfg.min_motion),
        sampling=dict(
            sampler=s.name,
            num_steps=int(s.num_steps),
            min_guidance=float(s.min_guidance),
            max_guidance=float(s.max_guidance),
            eta=float(s.eta),
        ),
        full_sampling=bool(cfg.full_sampling),
    )
    if stats_path:
        summary["stats"] = str(stats_path)
    summary["ckpt"] = cfg.get("ckpt")
    summary["model"] = None if cfg.get("ckpt") else OmegaConf.to_container(cfg.model, resolve=True)
    summary["sampler"] = OmegaConf.to_container(s, resolve=True)
    summary["device"] = str(device)
    from ..diagnose import write_json

    write_json(summary, out_dir / "summary.json")
    for row in summary["one_step"]:
        r = row["ratio"]
        print(f"t={row['t']:.2f}  motion ratio {r['mean']:.3f} +- {r['std']:.3f} (n={r['n']})")
    for row in summary["sampling"]:
        print(
            f"{row['setting']:>12}: output MS {row['ms_output']['mean']:.3f} vs input "
            f"{row['ms_input']['mean']:.3f}"
        )
    print(f"cil_lightning diagnose: diagnose.csv, summary.json and plots in {out_dir}")
    return summary


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, diagnose)
