import torch
from PIL import Image

from cil_lightning.data.video_io import read_video, to_uint8, write_gif, write_mp4


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
