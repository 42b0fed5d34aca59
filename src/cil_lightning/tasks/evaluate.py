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
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import choose_device, run_hydra_task
from .evaluate_inputs import (
    RESIZE_POLICIES,
    VIDEO_SUFFIXES,
    _condition_png,
    _load,
    _read_png,
    check_config,
    list_videos,
    pair_videos,
)

# The inputs half is re-exported: tests and callers import these names from here.
__all__ = [
    "RESIZE_POLICIES",
    "VIDEO_SUFFIXES",
    "check_config",
    "evaluate",
    "list_videos",
    "pair_videos",
]


def evaluate(cfg: DictConfig) -> dict:
    """Compute ``cfg.metrics`` over the paired folders. Returns the set-level results."""
    pairs = check_config(cfg)  # before torch or any network

    import torch
    from tqdm import tqdm

    from ..data.video_io import RESIZE_POLICY, cover_center_crop, probe_video
    from ..metrics.registry import METRICS, build_metrics

    torch.manual_seed(cfg.seed)
    device = choose_device(cfg.device)
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
