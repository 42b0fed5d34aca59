import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from cil_lightning.data.video_io import write_mp4
from cil_lightning.validation import ConfigError

from .conftest import compose
from .metrics.helpers import TINY_CLIP, pan, photo, tiny_clip_encoder


def _clip_override() -> str:
    def fmt(v):
        if isinstance(v, dict):
            return "{" + ",".join(f"{k}:{fmt(x)}" for k, x in v.items()) + "}"
        return str(v)

    return f"metric.clip.model_config={fmt(TINY_CLIP)}"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Generated and reference folders of 3 paired mp4s (real photograph pans), plus weights."""
    root = tmp_path_factory.mktemp("eval")
    image = photo("chelsea")
    for i, (gen_dx, ref_dx) in enumerate([(0, 1), (1, 1), (2, 1)]):
        write_mp4(root / "gen" / f"clip{i}.mp4", pan(image, gen_dx, 0, frames=5, size=48))
        write_mp4(root / "ref" / f"clip{i}.mp4", pan(image, ref_dx, 0, frames=5, size=48))
    torch.save(tiny_clip_encoder().model.state_dict(), root / "clip.pt")
    from cil_lightning.metrics import InceptionI3d

    torch.manual_seed(0)
    torch.save(InceptionI3d().state_dict(), root / "i3d.pt")
    return root


def test_evaluate_end_to_end_writes_metrics_json_and_per_video_csv(folders, tmp_path):
    run_dir = tmp_path / "run"
    metrics = "[fvd,motion_score,ms_error,clip_alignment,temporal_consistency]"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cil_lightning",
            "evaluate",
            f"hydra.run.dir={run_dir}",
            f"generated={folders / 'gen'}",
            f"reference={folders / 'ref'}",
            f"metrics={metrics}",
            f"metric.fvd.weights={folders / 'i3d.pt'}",
            "metric.fvd.size=16",
            f"metric.clip.weights={folders / 'clip.pt'}",
            _clip_override(),
            "wandb.enabled=false",
            "batch_size=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "cil_lightning evaluate finished" in out.stdout
    summary = json.loads((run_dir / "metrics.json").read_text())
    m = summary["metrics"]
    assert set(m) == {"fvd", "motion_score", "ms_error", "clip_alignment", "temporal_consistency"}
    assert summary["num_videos"] == 3 and summary["motion_flow"] == "FarnebackFlow"
    # Generated pans of 0, 1, 2 px/frame against references of 1 px/frame (Farneback, mp4).
    assert m["motion_score"] == pytest.approx(1.0, rel=0.15)
    assert m["ms_error"] == pytest.approx(2 / 3, rel=0.15)
    assert 0 < m["temporal_consistency"] <= 1 + 1e-6
    rows = list(csv.DictReader((run_dir / "per_video.csv").open()))
    assert [r["name"] for r in rows] == ["clip0", "clip1", "clip2"]
    assert float(rows[0]["motion_score"]) < 0.1  # the static clip
    assert float(rows[2]["ms_generated"]) == pytest.approx(2.0, rel=0.15)
    assert float(rows[1]["ms_error"]) < 0.1
    assert 0 < float(rows[0]["clip_alignment"]) <= 1 + 1e-6


def test_config_is_checked_before_any_network_loads(folders, tmp_path):
    cfg = compose(
        "evaluate",
        [
            f"generated={tmp_path / 'absent'}",
            "metrics=[fvd,bogus,clip_alignment]",
            f"metric.fvd.weights={tmp_path / 'i3d_torchscript.pt'}",
        ],
        tmp_path,
    )
    from cil_lightning.tasks.evaluate import check_config

    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "generated=" in msg and "absent" in msg and "bogus" in msg
    assert "reference=null" in msg

    cfg = compose(
        "evaluate",
        [
            f"generated={folders / 'gen'}",
            f"reference={folders / 'ref'}",
            "metrics=[fvd,is]",
            f"metric.fvd.weights={tmp_path / 'i3d_torchscript.pt'}",
        ],
        tmp_path,
    )
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    msg = str(e.value)
    assert "metric.fvd.weights=" in msg and "i3d_torchscript.pt" in msg
    assert "metric.is.weights=" in msg and "C3D" in msg


def test_pairing_by_name_with_a_regex(folders, tmp_path):
    from cil_lightning.tasks.evaluate import pair_videos

    gen = {"clip0_seed0": tmp_path / "a.mp4", "clip0_seed1": tmp_path / "b.mp4"}
    ref = {"clip0": tmp_path / "r.mp4"}
    pairs = pair_videos(gen, ref, r"(.+)_seed\d+")
    assert [(s, r.name) for s, _, r in pairs] == [
        ("clip0_seed0", "r.mp4"),
        ("clip0_seed1", "r.mp4"),
    ]
    with pytest.raises(ConfigError, match="clip0_seed0"):
        pair_videos(gen, ref, None)


def test_ucf101_protocol_config_composes_and_draws_fixed_clips():
    cfg = compose("evaluate", ["protocol=ucf101", "generated=x"])
    assert cfg.protocol.num_videos == 2048 and cfg.num_videos == 2048
    assert cfg.protocol.num_frames == 16 and cfg.protocol.frame_stride == 3
    assert "fvd" in cfg.metrics and "is" in cfg.metrics

    from cil_lightning.metrics.protocol import draw_clips

    counts = {"a.avi": 100, "b.avi": 46, "short.avi": 45}
    clips = draw_clips(counts, num_videos=5, num_frames=16, frame_stride=3, seed=0)
    assert clips == draw_clips(counts, num_videos=5, num_frames=16, frame_stride=3, seed=0)
    assert {c.source for c in clips} == {"a.avi", "b.avi"}  # 45 frames < span 46
    for c in clips:
        assert c.frame_indices[-1] < counts[c.source] and c.frame_indices[1] - c.start == 3
    assert len({c.name for c in clips}) == 5


@pytest.mark.slow
def test_evaluate_logs_a_wandb_table_offline(folders, tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cil_lightning",
            "evaluate",
            f"hydra.run.dir={run_dir}",
            f"generated={folders / 'gen'}",
            f"reference={folders / 'ref'}",
            "metrics=[motion_score,ms_error]",
            "wandb.enabled=true",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list((run_dir / "wandb").glob("offline-run-*"))
