"""``python -m cil_lightning stats``: Analytic-Init latent statistics of a data set.

Streams the training clips through the model's VAE (its ``encode_video``), accumulates E[x0] and
tr(Cov)/d in float64 on every device (Lightning Fabric, so several GPUs or nodes work as in
training), all-reduces them, and writes a safetensors file with its metadata.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import validate
from . import run_hydra_task


def stats(cfg: DictConfig) -> Path:
    validate(cfg, inputs=True)
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from tqdm import tqdm

    from ..data.video import to_unit_range
    from ..diffusion.analytic_init import LatentStats

    fabric = L.Fabric(**OmegaConf.to_container(cfg.fabric, resolve=True))
    fabric.launch()
    fabric.seed_everything(cfg.seed + fabric.global_rank)
    datamodule = instantiate(cfg.data)
    if hasattr(datamodule, "setup"):
        datamodule.setup("fit")
    loader = fabric.setup_dataloaders(datamodule.train_dataloader())
    denoiser = fabric.to_device(instantiate(cfg.model).eval())

    acc = LatentStats(device=fabric.device)
    limit = cfg.max_batches if cfg.max_batches is not None else len(loader)
    bar = tqdm(total=min(limit, len(loader)), desc="stats", disable=not fabric.is_global_zero)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= limit:
                break
            acc.update(denoiser.encode_video(to_unit_range(batch["video"])))
            bar.update(1)
    bar.close()
    acc.all_reduce_()

    out = (
        Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir) / "latent_stats.safetensors"
    )
    if fabric.is_global_zero:
        acc.save(
            out,
            layout="FCHW",
            # A record only: adapters with per-channel latent normalisation (Wan) have no scalar.
            latent_scaling=getattr(denoiser, "scaling_factor", None),
            extra_metadata={"model": OmegaConf.to_container(cfg.model, resolve=True)},
        )
        print(
            f"cil_lightning stats: {acc.count} clips, latent shape {tuple(acc.shape)}, "
            f"tr(Cov)/d = {acc.tr_cov_d:.6g}; wrote {out}"
        )
    return out


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, stats)
