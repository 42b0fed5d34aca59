"""The ``evaluate`` task's inputs: the two folders' videos, their pairing by name, every check of
the config before torch or any network loads, and reading one video or condition image.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import ConfigError, validate

VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".webm", ".mkv", ".mov")
RESIZE_POLICIES = ("cover_center_crop",)


def list_videos(folder: str | Path) -> dict[str, Path]:
    """Stem -> path of the videos directly in ``folder``; for a stem present with several
    suffixes the first of ``VIDEO_SUFFIXES`` wins (mp4 before its gif preview)."""
    found: dict[str, Path] = {}
    for suffix in VIDEO_SUFFIXES:
        for path in sorted(Path(folder).glob(f"*{suffix}")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def pair_videos(
    generated: dict[str, Path], reference: dict[str, Path] | None, pair_regex: str | None
) -> list[tuple[str, Path, Path | None]]:
    """(generated stem, generated path, reference path or None), sorted by stem.

    The pairing key is the stem, or the first group of ``pair_regex`` matched on it. Raises
    ``ConfigError`` listing generated videos without a reference.
    """
    pattern = re.compile(pair_regex) if pair_regex else None
    pairs, missing = [], []
    for stem, path in generated.items():
        key = stem
        if pattern is not None:
            m = pattern.fullmatch(stem)
            key = m.group(1) if m else stem
        if reference is None:
            pairs.append((stem, path, None))
        elif key in reference:
            pairs.append((stem, path, reference[key]))
        else:
            missing.append(f"{stem} (key {key!r})")
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ConfigError(f"reference: no reference video for {len(missing)} generated: {shown}")
    return pairs


def check_config(cfg: DictConfig) -> list[tuple[str, Path, Path | None]]:
    """Validate paths, metric names and weight files before any network loads; return pairs."""
    from ..metrics.registry import METRICS, weight_files

    validate(cfg, inputs=True)
    problems = []
    names = list(cfg.metrics or [])
    unknown = [n for n in names if n not in METRICS]
    if not names or unknown:
        problems.append(
            f"  metrics={names} has unknown or no names {unknown}; known: {', '.join(METRICS)}"
        )
    generated = Path(str(cfg.generated))
    if not generated.is_dir():
        problems.append(f"  generated={generated} is not a folder")
    elif not list_videos(generated):
        problems.append(f"  generated={generated} holds no videos ({', '.join(VIDEO_SUFFIXES)})")
    needs_ref = [n for n in names if n in METRICS and METRICS[n].needs_reference]
    cond = str(cfg.condition)
    if "clip_alignment" in names and cond == "reference":
        needs_ref.append("clip_alignment (condition=reference)")
    reference = cfg.reference
    if reference is None and needs_ref:
        problems.append(f"  reference=null, but {', '.join(needs_ref)} need reference videos")
    elif reference is not None and not Path(str(reference)).is_dir():
        problems.append(f"  reference={reference} is not a folder")
    if cond not in ("reference", "generated") and not Path(cond).is_dir():
        problems.append(f"  condition={cond} is neither 'reference', 'generated' nor a folder")
    for key, lo in (("batch_size", 1), ("reference_stride", 1)):
        v = cfg.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            problems.append(f"  {key}={v!r} is out of range; allowed: an integer >= {lo}")
    nf = cfg.get("num_frames")
    if nf is not None and (not isinstance(nf, int) or nf < 2):
        problems.append(f"  num_frames={nf!r} is out of range; allowed: null or an integer >= 2")
    res = cfg.get("resolution")
    if res is not None and not _is_size(res):
        problems.append(f"  resolution={res!r} is out of range; allowed: null or [H, W], ints >= 8")
    if cfg.get("resize", "cover_center_crop") not in RESIZE_POLICIES:
        problems.append(f"  resize={cfg.get('resize')!r}; allowed: {', '.join(RESIZE_POLICIES)}")
    if str(cfg.device) not in ("auto", "cpu") and not str(cfg.device).startswith("cuda"):
        problems.append(f"  device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")
    if not unknown:
        settings = OmegaConf.to_container(cfg.metric, resolve=True)
        for key, path, expected in weight_files(names, settings):
            if path is None or not Path(str(path)).is_file():
                problems.append(
                    f"  {key}={path} does not exist (expected {expected}; nothing is downloaded)"
                )
    if problems:
        raise ConfigError("invalid config values:\n" + "\n".join(problems))

    ref = list_videos(reference) if reference is not None else None
    pairs = pair_videos(list_videos(generated), ref, cfg.get("pair_regex"))
    if cfg.get("num_videos") is not None and len(pairs) != int(cfg.num_videos):
        raise ConfigError(
            f"num_videos={cfg.num_videos}: the protocol needs that many videos, found {len(pairs)}"
        )
    if cond not in ("reference", "generated"):
        missing = [s for s, _, r in pairs if _condition_png(Path(cond), s, r) is None]
        if missing:
            raise ConfigError(f"condition={cond}: no <key>.png or <key>_cond.png for {missing[:5]}")
    return pairs


def _is_size(value) -> bool:
    """[H, W] of two integers >= 8 (a list or a ListConfig)."""
    try:
        h, w = value
    except (TypeError, ValueError):
        return False
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in (h, w))


def _condition_png(folder: Path, stem: str, reference: Path | None) -> Path | None:
    keys = [stem] + ([reference.stem] if reference is not None else [])
    for key in keys:
        for name in (f"{key}.png", f"{key}_cond.png"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load(path: Path, size: tuple[int, int], num_frames: int | None, stride: int = 1):
    """(frames [F, 3, H, W] in [-1, 1] at ``size``, the file's own (h, w), its fps / stride)."""
    from ..data.video_io import cover_center_crop, probe_video, read_video

    video = read_video(path)[::stride]
    video = video[:num_frames] if num_frames else video
    fps = probe_video(path)[2]
    native = tuple(video.shape[-2:])
    return cover_center_crop(video, *size), native, None if fps is None else fps / stride


def _read_png(path: Path):
    import numpy as np
    import torch
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0
