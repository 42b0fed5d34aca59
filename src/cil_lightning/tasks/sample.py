"""``python -m cil_lightning sample``: image-to-video generation, optionally with Analytic-Init.

From a training checkpoint (``ckpt=...``) or a model config (``model=svd
model.pretrained_path=...``). Writes one mp4 and one gif per image and seed, and ``record.json``
with the exact settings. Models that encode text (DynamiCrafter, VideoCrafter1) take ``prompt=``
for every image, else each image's sidecar ``<name>.txt`` (as the folder data reads captions),
else the empty caption.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import ConfigError, validate
from . import choose_device, run_hydra_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(spec) -> list[Path]:
    """Image files from a file, a folder (sorted) or a list of either."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"images={str(item)!r}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"images={spec!r}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image(path: Path, height: int, width: int):
    """An image as [3, H, W] in [-1, 1], brought to size as the training clips' frames are
    (``data.video_io.cover_center_crop``: short side scaled to cover, centre crop)."""
    import numpy as np
    from PIL import Image

    from ..data.video_io import cover_center_crop

    with Image.open(path) as im:
        frame = np.asarray(im.convert("RGB"))[None]  # [1, h, w, 3] uint8
    return cover_center_crop(frame, height, width)[0]


def sample(cfg: DictConfig) -> dict:
    validate(cfg, inputs=True)
    files = list_images(cfg.images)

    import torch
    from hydra.utils import instantiate
    from tqdm import tqdm

    from ..data.folder import sidecar_caption
    from ..data.video_io import write_gif, write_mp4
    from ..diffusion.rng import per_sample_generators
    from ..models.checkpoint import load_denoiser

    sampler = instantiate(cfg.sampler)
    stats = sampler.latent_stats  # a missing file fails here, before the model loads
    run_data = {}
    if cfg.get("ckpt"):
        denoiser, run_cfg = load_denoiser(cfg.ckpt, use_ema=cfg.use_ema)
        run_data = OmegaConf.to_container(run_cfg.data)
    else:
        denoiser = instantiate(cfg.model).eval()
    num_frames = int(cfg.num_frames or run_data.get("num_frames") or 14)
    height = int(cfg.height or run_data.get("height") or 320)
    width = int(cfg.width or run_data.get("width") or 512)
    device = choose_device(cfg.device)
    denoiser.to(device)
    prompt, encodes_text = cfg.get("prompt"), getattr(denoiser, "text_encoder", None) is not None
    if prompt is not None and not encodes_text:
        raise ConfigError(
            f"prompt={prompt!r}: this {type(denoiser).__name__} encodes no text (prompts reach "
            "DynamiCrafter and VideoCrafter1; Wan and I2VGen-XL take model.prompt_embeds, SVD none)"
        )

    # null: the conditioning the checkpoint was trained with (load_denoiser sets the adapter's
    # defaults to it), or the model config's for a pretrained model.
    fps = float(cfg.fps if cfg.get("fps") is not None else denoiser.fps)
    # SVD's motion bucket; models without one (Wan) ignore it.
    bucket = cfg.get("motion_bucket_id")
    bucket = bucket if bucket is not None else getattr(denoiser, "motion_bucket_id", None)
    bucket = None if bucket is None else float(bucket)
    out_dir = Path(cfg.paths.output_dir)
    outputs, seeds = [], [int(x) for x in cfg.seeds]
    for path in tqdm(files, desc="sample", unit="image"):
        image = load_image(path, height, width).to(device)[None].expand(len(seeds), -1, -1, -1)
        generators = per_sample_generators(seeds)
        caption = (prompt if prompt is not None else sidecar_caption(path)) if encodes_text else ""
        # Each seed draws its inference condition noise first, then the sampler's noise, in the
        # stock pipeline's order.
        cond = denoiser.sampling_condition(
            image,
            fps=torch.tensor([fps]),
            motion_bucket_id=None if bucket is None else torch.tensor([bucket]),
            num_frames=num_frames,
            generator=generators,
            caption=[caption] * len(seeds),
        )
        videos = sampler(denoiser, cond, num_frames, generators).video.cpu()
        for seed, video in zip(seeds, videos):
            mp4 = write_mp4(out_dir / f"{path.stem}_seed{seed}.mp4", video, fps)
            write_gif(mp4.with_suffix(".gif"), video, fps)
            outputs.append(
                {"image": str(path), "seed": seed, "video": str(mp4), "caption": caption}
            )

    record = {
        "ckpt": cfg.get("ckpt"),
        "model": None if cfg.get("ckpt") else OmegaConf.to_container(cfg.model, resolve=True),
        "sampler": sampler.settings(),
        "analytic_init": None
        if stats is None
        else {
            "stats": str(sampler.stats),
            "count": stats.count,
            "tr_cov_d": stats.tr_cov_d,
        },
        "num_frames": num_frames,
        "height": height,
        "width": width,
        "fps": fps,
        "motion_bucket_id": bucket,
        "noise_aug_strength": getattr(denoiser, "noise_aug_strength", None),
        "seeds": seeds,
        "use_ema": cfg.use_ema,
        "device": str(device),
        "outputs": outputs,
    }
    (out_dir / "record.json").write_text(json.dumps(record, indent=2))
    print(f"cil_lightning sample: {len(outputs)} videos and record.json in {out_dir}")
    return record


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, sample)
