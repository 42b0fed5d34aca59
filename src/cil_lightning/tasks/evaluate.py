"""``python -m cil_lightning evaluate``: metrics of a folder of generated videos against real ones.

Reads both folders, pairs videos by name, runs the chosen metrics (``metrics/``) batch by batch
with progress bars, and writes ``metrics.json`` (set-level numbers and how they were computed) and
``per_video.csv`` (per-pair numbers) in the run folder; with W&B on (offline by default) it also
logs the numbers and a table with the videos.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..validation import ConfigError, validate
from . import run_hydra_task

VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".webm", ".mkv", ".mov")


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

    validate(cfg)
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


def _condition_png(folder: Path, stem: str, reference: Path | None) -> Path | None:
    keys = [stem] + ([reference.stem] if reference is not None else [])
    for key in keys:
        for name in (f"{key}.png", f"{key}_cond.png"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load(path: Path, num_frames: int | None, stride: int = 1):
    from ..data.video_io import read_video

    video = read_video(path)[::stride]
    return video[:num_frames] if num_frames else video


def evaluate(cfg: DictConfig) -> dict:
    """Compute ``cfg.metrics`` over the paired folders. Returns the set-level results."""
    pairs = check_config(cfg)  # before torch or any network

    import torch
    from tqdm import tqdm

    from ..metrics.registry import METRICS, build_metrics

    torch.manual_seed(cfg.seed)
    device = str(cfg.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    names = list(cfg.metrics)
    settings = OmegaConf.to_container(cfg.metric, resolve=True)
    metrics = {n: m.to(device) for n, m in build_metrics(names, settings).items()}
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cond_mode, nf = str(cfg.condition), cfg.get("num_frames")
    rows: list[dict] = []

    def flush(batch: list[dict]) -> None:
        gen = torch.stack([b["generated"] for b in batch]).to(device)
        ref = (
            torch.stack([b["reference"] for b in batch]).to(device)
            if batch[0]["reference"] is not None
            else None
        )
        cond = torch.stack([b["condition"] for b in batch]).to(device)
        for name, metric in metrics.items():
            if METRICS[name].needs_reference and ref is None:
                continue
            metric.update_videos(gen, ref, cond)
            if hasattr(metric, "scores") and name != "ms_error":
                for row, v in zip(rows[-len(batch) :], metric.scores[-1].tolist()):
                    row[name] = v
            elif name == "ms_error":
                g, r = metric.generated[-1].tolist(), metric.reference[-1].tolist()
                for row, gv, rv in zip(rows[-len(batch) :], g, r):
                    row.update(ms_generated=gv, ms_reference=rv, ms_error=abs(gv - rv))

    batch: list[dict] = []
    shape = None
    for stem, gpath, rpath in tqdm(pairs, desc="evaluate", unit="video"):
        gen = _load(gpath, nf)
        ref = _load(rpath, nf, int(cfg.reference_stride)) if rpath is not None else None
        if cond_mode == "reference":
            cond = ref[0]
        elif cond_mode == "generated":
            cond = gen[0]
        else:
            cond = _read_png(_condition_png(Path(cond_mode), stem, rpath))
        item = {"generated": gen, "reference": ref, "condition": cond}
        key = tuple(t.shape if t is not None else None for t in item.values())
        if batch and (key != shape or len(batch) == cfg.batch_size):
            flush(batch)  # stacking needs equal shapes: a new shape starts a new batch
            batch = []
        shape = key
        batch.append(item)
        rows.append(
            {
                "name": stem,
                "generated": str(gpath),
                "reference": str(rpath) if rpath is not None else "",
            }
        )
        if len(batch) == cfg.batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)

    results, extra = {}, {}
    for name in tqdm(names, desc="compute", unit="metric"):
        results[name] = float(metrics[name].compute())
        if name == "is":
            extra["is_std"] = float(metrics[name].std)
    flows = [m.flow for m in metrics.values() if hasattr(m, "flow")]
    flow_name = type(flows[0]).__name__ if flows else None
    summary = {
        "metrics": results,
        **extra,
        "num_videos": len(pairs),
        "generated": str(cfg.generated),
        "reference": None if cfg.reference is None else str(cfg.reference),
        "num_frames": nf,
        "reference_stride": int(cfg.reference_stride),
        "condition": cond_mode,
        "settings": {METRICS[n].group: settings.get(METRICS[n].group) for n in names},
        "motion_flow": flow_name,
    }
    json_path = out_dir / "metrics.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    csv_path = out_dir / "per_video.csv"
    _write_csv(csv_path, rows)
    if cfg.wandb.enabled:
        _log_wandb(cfg, summary, rows, out_dir)
    print("\ncil_lightning evaluate finished:")
    for name, value in results.items():
        print(f"  {name:<21} {value:.6g}")
    print(f"  metrics.json          {json_path}\n  per_video.csv         {csv_path}")
    return {"metrics": results, "metrics_json": json_path, "per_video_csv": csv_path}


def _read_png(path: Path):
    import numpy as np
    import torch
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _log_wandb(cfg: DictConfig, summary: dict, rows: list[dict], out_dir: Path) -> None:
    import wandb

    run = wandb.init(
        project=cfg.wandb.project,
        name=cfg.wandb.name,
        dir=str(out_dir),
        job_type="evaluate",
        mode="offline" if cfg.wandb.offline else "online",
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = wandb.Table(columns=["generated_video", "reference_video", *columns])
    for row in rows[: int(cfg.wandb.max_videos)]:
        gen = wandb.Video(row["generated"])
        ref = wandb.Video(row["reference"]) if row.get("reference") else None
        table.add_data(gen, ref, *[row.get(c) for c in columns])
    run.log({"eval/videos": table, **{f"eval/{k}": v for k, v in summary["metrics"].items()}})
    run.summary.update({f"eval/{k}": v for k, v in summary["metrics"].items()})
    run.finish()


def main(task: str, overrides: list[str]) -> int:
    return run_hydra_task(task, overrides, evaluate)
