import pytest
import torch

from cil_lightning.data.shipped import PANS, PHOTOS, PannedPhotoClips


@pytest.fixture(scope="module")
def clips():
    return PannedPhotoClips("train", num_frames=6, height=24, width=32, photo_short_side=64)


def test_shapes_ranges_and_split_are_disjoint(clips):
    val = PannedPhotoClips("val", num_frames=6, height=24, width=32, photo_short_side=64)
    assert len(clips) + len(val) == len(PHOTOS) * len(PANS) * 2
    assert not {it for it in clips.items} & {it for it in val.items}
    item = clips[3]
    assert item["video"].shape == (6, 3, 24, 32)
    assert item["cond_frame"].shape == (3, 24, 32)
    assert torch.equal(item["cond_frame"], item["video"][0])
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["video"].std() > 0.05  # a real photograph, not a constant


def test_frames_follow_the_stated_pan_exactly(clips):
    checked = 0
    for i in range(len(clips)):
        item = clips[i]
        dx, dy = (int(v) for v in item["motion"])
        if dx == 0 and dy == 0:
            assert torch.equal(item["video"][0], item["video"][-1])
            continue
        v = item["video"]
        # Frame f+1 shows the photo shifted by (dx, dy): its overlap with frame f is identical.
        H, W = v.shape[-2:]
        a = v[0][:, max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)]
        b = v[1][:, max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)]
        assert torch.equal(a, b), item["name"]
        assert not torch.equal(v[0], v[1])
        checked += 1
    assert checked > 10


def test_a_pan_that_does_not_fit_fails_at_construction():
    with pytest.raises(ValueError, match="does not fit"):
        PannedPhotoClips("train", num_frames=40, height=32, width=32, photo_short_side=40)
