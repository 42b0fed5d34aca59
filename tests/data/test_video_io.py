import numpy as np
import pytest
import torch
from PIL import Image

from cil_lightning.data.video import ClipSpec, load_clip
from cil_lightning.data.video_io import (
    cover_center_crop,
    probe_video,
    read_video,
    to_uint8,
    write_gif,
    write_mp4,
)


def test_mp4_round_trip_keeps_frame_count_size_and_content(tmp_path):
    g = torch.Generator().manual_seed(0)
    # Smooth content survives lossy coding: a horizontal ramp moving one pixel per frame.
    ramp = torch.linspace(-0.8, 0.8, 48)
    frames = torch.stack([ramp.roll(f)[None, None].expand(3, 32, 48) for f in range(7)])
    frames = frames + 0.01 * torch.randn(frames.shape, generator=g)
    path = write_mp4(tmp_path / "v.mp4", frames, fps=8)
    back = read_video(path)
    assert back.shape == (7, 3, 32, 48)
    assert (back - frames).abs().mean() < 0.05


def test_gif_has_all_frames_upscaled(tmp_path):
    frames = torch.rand(5, 3, 8, 10) * 2 - 1
    path = write_gif(tmp_path / "v.gif", frames, fps=4, scale=3)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (30, 24)


def test_to_uint8_maps_range_endpoints():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 4, 1).expand(3, 4, 1)
    assert to_uint8(x)[:, 0, 0].tolist() == [0, 128, 255, 255]


def test_write_mp4_keeps_a_fractional_frame_rate(tmp_path):
    # 25 fps read at frame stride 3 is 25/3 = 8.33 fps; rounding it to 8 would misstate it.
    frames = torch.zeros(4, 3, 16, 24)
    path = write_mp4(tmp_path / "v.mp4", frames, fps=25 / 3)
    assert probe_video(path) == pytest.approx((16, 24, 25 / 3), abs=1e-9)


def test_cover_center_crop_keeps_the_centre_at_one_scale():
    # A ramp of source column (rows: source row) indices: bilinear resampling with antialias
    # preserves a linear ramp away from the borders, so each output pixel shows the source
    # coordinate it samples. 64 x 114 -> 32 x 48: scale max(32/64, 48/114) = 0.5, the kept
    # region is 64 x 96 starting at column (114 - 96) // 2 = 9, and output column j samples
    # source column 9 + 2j + 0.5 (output row i: source row 2i + 0.5).
    cols = np.broadcast_to(np.arange(114, dtype=np.uint8)[None, :, None], (64, 114, 3))
    rows = np.broadcast_to(np.arange(64, dtype=np.uint8)[:, None, None], (64, 114, 3))
    out = cover_center_crop(np.stack([cols, rows]), 32, 48)
    assert out.shape == (2, 3, 32, 48)
    values = (out + 1) * 127.5  # back to source indices
    inner = slice(2, -2)  # the antialias filter is renormalised at the borders
    j = torch.arange(48, dtype=torch.float32)[inner]
    i = torch.arange(32, dtype=torch.float32)[inner]
    assert torch.allclose(values[0, 0, 16, inner], 9 + 2 * j + 0.5, atol=0.02)
    assert torch.allclose(values[1, 0, inner, 24], 2 * i + 0.5, atol=0.02)
    # Upscaling covers too: 32 x 48 -> 48 x 96 scales by 2 and keeps rows 8..31 of 32.
    assert cover_center_crop(out, 48, 96).shape == (2, 3, 48, 96)


def test_cover_center_crop_is_the_training_clips_transform(tmp_path):
    """Evaluated videos and exported references are made like the training clips (load_clip)."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-0.8, 0.8, 60)
    frames = torch.stack([ramp.roll(3 * f)[None, None].expand(3, 40, 60) for f in range(4)])
    frames = (frames + 0.1 * torch.randn(frames.shape, generator=g)).clamp(-1, 1)
    path = write_mp4(tmp_path / "v.mp4", frames, fps=8)
    spec = ClipSpec(num_frames=4, height=24, width=24, stride=1, start="first", backend="pyav")
    clip = load_clip(path, spec)["video"]
    ours = cover_center_crop(read_video(path), 24, 24)
    assert torch.equal(ours, clip)
    same = read_video(path)
    assert cover_center_crop(same, 40, 60) is same  # already at the size: untouched
    with pytest.raises(ValueError, match="frames"):
        cover_center_crop(torch.zeros(2, 4, 8, 8), 4, 4)
