"""``python -m cil_lightning evaluate``: metrics of a folder of generated videos against real ones.

Reads both folders, pairs videos by name, brings every video to one resolution, runs the chosen
metrics (``metrics/``) batch by batch with progress bars, and writes ``metrics.json`` (set-level
numbers and how they were computed) and ``per_video.csv`` (per-pair numbers) in the run folder;
with W&B on (offline by default) it also logs the numbers and a table with the videos.

One resolution (METHOD.md section 6): ``resolution`` (default: the first generated video's own
size, so generated videos are not resized) is where every comparison happens. Videos, reference
clips and condition images of another size are brought to it by ``resize: cover_center_crop``
(``data.video_io.cover_center_crop``, the training clips' transform), so the motion score of a
320x240 reference and of a 320x512 generation are both pixels per frame at 320x512.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config.checks import ConfigError, validate
from . import run_hydra_task

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


def evaluate(cfg: DictConfig) -> dict:
    """Compute ``cfg.metrics`` over the paired folders. Returns the set-level results."""
    pairs = check_config(cfg)  # before torch or any network

    import torch
    from tqdm import tqdm

    from ..data.video_io import RESIZE_POLICY, cover_center_crop, probe_video
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
    # Generated videos are not resized by default: references come to the generation size.
    if cfg.get("resolution") is not None:
        size, size_from = tuple(int(v) for v in cfg.resolution), "config (resolution)"
    else:
        size, size_from = probe_video(pairs[0][1])[:2], f"the first generated video ({pairs[0][1]})"
    rows: list[dict] = []
    seen: dict[str, dict] = {"generated": {}, "reference": {}, "condition": {}}
    fps: dict[str, set] = {"generated": set(), "reference": set()}
    counts = {n: {"generated": 0, "reference": 0} for n in names}

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
            counts[name]["generated"] += len(batch)
            counts[name]["reference"] += len(batch) if METRICS[name].needs_reference else 0
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
        gen, gsize, gfps = _load(gpath, size, nf)
        record = {"name": stem, "generated": str(gpath), "reference": ""}
        record["generated_size"] = _hw(gsize)
        _count(seen["generated"], gsize)
        fps["generated"].add(gfps)
        ref = None
        if rpath is not None:
            ref, rsize, rfps = _load(rpath, size, nf, int(cfg.reference_stride))
            record.update(reference=str(rpath), reference_size=_hw(rsize))
            _count(seen["reference"], rsize)
            fps["reference"].add(rfps)
        if cond_mode == "reference":
            cond = ref[0]
        elif cond_mode == "generated":
            cond = gen[0]
        else:
            png = _read_png(_condition_png(Path(cond_mode), stem, rpath))
            _count(seen["condition"], tuple(png.shape[-2:]))
            cond = cover_center_crop(png, *size)
        item = {"generated": gen, "reference": ref, "condition": cond}
        key = tuple(t.shape if t is not None else None for t in item.values())
        if batch and (key != shape or len(batch) == cfg.batch_size):
            flush(batch)  # stacking needs equal shapes: a new shape starts a new batch
            batch = []
        shape = key
        batch.append(item)
        rows.append(record)
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
    h, w = size
    stride = int(cfg.reference_stride)
    summary = {
        "metrics": results,
        **extra,
        "num_videos": len(pairs),
        "videos_per_metric": counts,
        "unique_references": len({r for _, _, r in pairs if r is not None}),
        "generated": str(cfg.generated),
        "reference": None if cfg.reference is None else str(cfg.reference),
        "num_frames": nf,
        "reference_stride": stride,
        "frame_stride": {
            "reference": stride,
            "meaning": f"frame stride, not fps: one decoded frame in {stride} of each reference "
            f"file is kept (its fps / {stride}); generated videos are read at stride 1",
            "protocol": _plain(cfg.get("protocol")),
        },
        "fps": {
            **{k: sorted(round(v, 4) for v in vs if v is not None) for k, vs in fps.items()},
            "note": "distinct frame rates of the files (references: divided by the stride); a "
            "generated file's rate is what the sampler wrote, not necessarily the model's",
        },
        "resolution": [h, w],
        "resolution_from": size_from,
        "resize": {
            "policy": str(cfg.get("resize", "cover_center_crop")),
            "description": RESIZE_POLICY,
            "native_sizes": {k: v for k, v in seen.items() if v},
            "resized": {
                k: sum(n for hw, n in v.items() if hw != _hw(size)) for k, v in seen.items() if v
            },
        },
        "motion_score_definition": (
            f"MS = mean over the F - 1 consecutive frame pairs and all {h}x{w} pixels of "
            f"|flow| = sqrt(u^2 + v^2), in pixels per frame at {h}x{w} (after the resize above), "
            f"flow by {flow_name}; ms_error = mean over pairs of |MS(generated) - MS(reference)|"
        )
        if flow_name
        else None,
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


def _hw(size) -> str:
    return f"{size[0]}x{size[1]}"


def _count(counter: dict, size) -> None:
    counter[_hw(size)] = counter.get(_hw(size), 0) + 1


def _plain(node):
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


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
