"""Metric state merged over 2 CPU processes (gloo) equals the single-process result."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .helpers import MeanPoolFeatures, SoftmaxOfMean, tiny_clip_encoder


def _data():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(5, 4, 3, 16, 16, generator=g) * 2 - 1
    fake = torch.rand(5, 4, 3, 16, 16, generator=g) * 2 - 1
    return real, fake


def _metrics():
    from cil_lightning.metrics import (
        CLIPTemporalConsistency,
        FarnebackFlow,
        FrameFID,
        FrechetVideoDistance,
        MotionScore,
        MotionScoreError,
        VideoInceptionScore,
    )

    return {
        "fvd": FrechetVideoDistance(MeanPoolFeatures(6)),
        "fid": FrameFID(MeanPoolFeatures(4, seed=1)),
        "is": VideoInceptionScore(SoftmaxOfMean(5), splits=2),
        "motion_score": MotionScore(FarnebackFlow()),
        "ms_error": MotionScoreError(FarnebackFlow()),
        "temporal_consistency": CLIPTemporalConsistency(tiny_clip_encoder()),
    }


def _run(metrics, real, fake) -> dict:
    for metric in metrics.values():
        metric.update_videos(fake, real, None)
    return {name: metric.compute().item() for name, metric in metrics.items()}


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    real, fake = _data()
    # Uneven contiguous shards (3 + 2): gathered in rank order they equal the whole set.
    part = slice(0, 3) if rank == 0 else slice(3, 5)
    results = _run(_metrics(), real[part], fake[part])
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()


def test_metric_state_merged_over_two_processes_equals_single_process(tmp_path):
    out = tmp_path / "ddp.pt"
    # Single process first: the forked ranks then inherit every import (open_clip takes seconds).
    single = _run(_metrics(), *_data())
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, start_method="fork"
    )
    merged = torch.load(out)
    assert merged.keys() == single.keys()
    for name in single:
        assert abs(merged[name] - single[name]) <= 1e-6 * max(1.0, abs(single[name])), (
            name,
            merged[name],
            single[name],
        )
