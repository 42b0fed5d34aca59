"""uint8 clips from the loader, normalised on the device; the sequential (no-seek) backend."""

import pytest
import torch

from cil_lightning.data.video import ClipSpec, load_clip, open_video, to_unit_range
from cil_lightning.diffusion.cond_noise import TimeNoise
from cil_lightning.lit_module import I2VLitModule
from cil_lightning.models.tiny import tiny_pixel_svd


@pytest.mark.parametrize("size", [(64, 96), (32, 48)])  # source size (no resize), downscaled
def test_uint8_clip_is_the_float_clip_within_one_grey_level(footage, size):
    spec = dict(num_frames=6, height=size[0], width=size[1], stride=2, crop="random", flip=0.5)
    floats = load_clip(footage[0], ClipSpec(**spec), torch.Generator().manual_seed(4))
    bytes_ = load_clip(footage[0], ClipSpec(**spec, uint8=True), torch.Generator().manual_seed(4))
    assert bytes_["video"].dtype == torch.uint8 and bytes_["video"].shape == (6, 3, *size)
    assert bytes_["indices"] == floats["indices"] and bytes_["flipped"] == floats["flipped"]
    assert torch.equal(bytes_["cond_frame"], bytes_["video"][0])
    diff = (to_unit_range(bytes_["video"]) - floats["video"]).abs().max()
    if size == (64, 96):  # no resize: the same pixels exactly
        assert diff < 1e-6
    else:  # uint8 bilinear kernel: rounded, within one grey level
        assert 0 < diff <= 1.01 / 127.5


def test_to_unit_range_maps_bytes_and_leaves_floats():
    x = torch.tensor([0, 127, 255], dtype=torch.uint8)
    assert torch.allclose(to_unit_range(x), torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))
    y = torch.rand(3)
    assert to_unit_range(y) is y


def test_module_loss_of_a_uint8_batch_is_that_of_its_float_batch():
    module = I2VLitModule(tiny_pixel_svd(), TimeNoise(15.0, 5.0), optimizer=torch.optim.AdamW)
    video = torch.randint(0, 256, (2, 3, 3, 8, 8), dtype=torch.uint8)
    fps = torch.full((2,), 7.0)
    floats = video.float() / 127.5 - 1
    losses = [
        module._loss(
            {"video": v, "cond_frame": v[:, 0], "fps": fps}, torch.Generator().manual_seed(0)
        )
        for v in (video, floats)
    ]
    assert torch.equal(losses[0], losses[1])
    wrong = floats / 2  # what a missed conversion of some kind would feed: a different loss
    other = module._loss(
        {"video": wrong, "cond_frame": wrong[:, 0], "fps": fps}, torch.Generator().manual_seed(0)
    )
    assert not torch.allclose(other, losses[1])


def test_sequential_backend_decodes_the_frames_of_the_full_decode(footage):
    indices = [5, 9, 13, 17, 29]
    with open_video(footage[0], "naive") as a, open_video(footage[0], "sequential") as b:
        assert (a.num_frames, a.fps, tuple(a.size)) == (b.num_frames, b.fps, tuple(b.size))
        assert (a.get(indices) == b.get(indices)).all()
