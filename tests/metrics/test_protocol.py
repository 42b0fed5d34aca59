"""The UCF101 protocol export: reference clips and condition frames at the generation size, made
by one resize and crop, at the frame rate the frame stride implies."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cil_lightning.data.video_io import probe_video, read_video, write_mp4
from cil_lightning.metrics.protocol import build_parser, draw_clips, export_clips, main

from ..conftest import compose
from .helpers import pan, photo

SOURCE_FPS = 25.0  # UCF101's rate


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 240 x 320 (UCF101's size), 25 fps real photograph panning 2 px/frame, 40 frames."""
    path = tmp_path_factory.mktemp("ucf") / "v_Photo_g01_c01.mp4"
    frames = pan(photo("chelsea"), 2, 0, frames=40, size=300)[:, :, 30:270, :]
    frames = F.interpolate(frames, size=(240, 320), mode="bilinear", antialias=True)
    write_mp4(path, frames, SOURCE_FPS, {"crf": "12"})
    return path


def _source_frames(path) -> np.ndarray:
    """All frames of the source as uint8 [F, H, W, 3], decoded here (not by the export)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _expected(frame: np.ndarray) -> np.ndarray:
    """240 x 320 -> 64 x 96 by hand: scale max(64/240, 96/320) = 0.3 keeps ceil(64/0.3) = 214
    rows from row (240 - 214) // 2 = 13 and all 320 columns, resampled bilinear with antialias."""
    x = torch.from_numpy(frame[13 : 13 + 214].copy()).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(64, 96), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).byte()[0].permute(1, 2, 0).numpy()


def test_export_writes_clips_at_the_requested_size_and_fps(source, tmp_path):
    counts = {str(source): 40}
    clips = draw_clips(counts, num_videos=2, num_frames=6, frame_stride=3, seed=0)
    manifest = export_clips(clips, tmp_path, height=64, width=96)
    src = _source_frames(source)
    rows = list(csv.DictReader(manifest.open()))
    assert [r["name"] for r in rows] == [c.name for c in clips]
    for clip, row in zip(clips, rows):
        mp4 = tmp_path / f"{clip.name}.mp4"
        h, w, fps = probe_video(mp4)
        assert (h, w) == (64, 96)
        assert fps == pytest.approx(SOURCE_FPS / 3, abs=1e-6)  # 8.33 fps, not 3 and not 8
        assert float(row["source_fps"]) == pytest.approx(SOURCE_FPS)
        assert float(row["fps"]) == pytest.approx(SOURCE_FPS / 3, abs=1e-5)
        assert (row["source_height"], row["source_width"]) == ("240", "320")
        assert (row["height"], row["width"], row["stride"]) == ("64", "96", "3")
        # The condition is exactly the first source frame after the resize and crop ...
        cond = np.array(Image.open(tmp_path / f"{clip.name}_cond.png").convert("RGB"))
        expected = _expected(src[clip.start]).astype(int)
        assert np.abs(cond.astype(int) - expected).max() <= 1
        # ... and the reference clip shows the same frames, up to near-lossless H.264 with
        # 4:2:0 chroma (about 2 of 255 levels on this textured photograph).
        video = read_video(mp4)
        assert video.shape == (6, 3, 64, 96)
        first = torch.from_numpy(cond).permute(2, 0, 1).float() / 127.5 - 1
        assert (video[0] - first).abs().mean() < 0.03
        # Frame k is source frame start + 3k (the pan would show a wrong stride).
        k3 = torch.from_numpy(_expected(src[clip.start + 3])).permute(2, 0, 1).float() / 127.5 - 1
        k1 = torch.from_numpy(_expected(src[clip.start + 1])).permute(2, 0, 1).float() / 127.5 - 1
        assert (video[1] - k3).abs().mean() < 0.5 * (video[1] - k1).abs().mean()


def test_cli_frame_stride_and_size_are_configurable(source, tmp_path):
    out = tmp_path / "out"
    args = [str(source.parent), str(out), "--num-videos", "2", "--num-frames", "4"]
    assert main([*args, "--frame-stride", "2", "--height", "32", "--width", "48"]) == 0
    rows = list(csv.DictReader((out / "clips.csv").open()))
    assert len(rows) == 2
    for row in rows:
        assert row["stride"] == "2" and float(row["fps"]) == pytest.approx(12.5)
        assert probe_video(out / f"{row['name']}.mp4") == pytest.approx((32, 48, 12.5))
        assert Image.open(out / f"{row['name']}_cond.png").size == (48, 32)
    with pytest.raises(SystemExit, match="--frame-stride=0"):
        main([*args, "--frame-stride", "0"])


def test_cli_defaults_are_the_protocol_config():
    p = compose("evaluate", ["protocol=ucf101", "generated=x"]).protocol
    a = build_parser().parse_args(["src", "out"])
    assert (a.num_videos, a.num_frames, a.frame_stride, a.seed) == (
        p.num_videos,
        p.num_frames,
        p.frame_stride,
        p.seed,
    )
    assert (a.height, a.width) == (p.height, p.width) == (320, 512)
    assert p.source_fps / p.frame_stride == pytest.approx(8.33, abs=0.01)
