import json

import numpy as np
import pytest
import torch

from cil_lightning.data.shipped import (
    PANS,
    PHOTO_MOTIONS,
    PHOTOS,
    PannedPhotoClips,
    ShippedClips,
    build_shipped,
)
from cil_lightning.data.video import ClipSpec


def test_build_writes_footage_and_photo_clips_with_a_manifest(shipped_dir):
    meta = json.loads((shipped_dir / "manifest.json").read_text())
    kinds = [c["path"].split("/")[0] for c in meta["clips"]]
    assert kinds.count("footage") == 250 // 32 + 132 // 32  # bikes + bigbuckbunny
    assert kinds.count("photos") == len(PHOTOS) * len(PHOTO_MOTIONS)
    assert all((shipped_dir / c["path"]).stat().st_size > 1000 for c in meta["clips"])
    assert {c["split"] for c in meta["clips"]} == {"train", "val"}
    assert sum(p.stat().st_size for p in shipped_dir.rglob("*.mp4")) < 5e6  # small
    before = (shipped_dir / "manifest.json").stat().st_mtime_ns
    assert build_shipped(shipped_dir) == shipped_dir  # cached: not rebuilt
    assert (shipped_dir / "manifest.json").stat().st_mtime_ns == before


def _shift(a: np.ndarray, b: np.ndarray, r: int = 4) -> tuple[int, int]:
    """The integer (dx, dy), |dx|, |dy| <= r, that best explains b(x) = a(x + (dx, dy))."""
    h, w = a.shape

    def err(dx: int, dy: int) -> float:
        aa = a[r + dy : h - r + dy, r + dx : w - r + dx]
        return float(np.abs(aa - b[r : h - r, r : w - r]).mean())

    return min(
        ((dx, dy) for dx in range(-r, r + 1) for dy in range(-r, r + 1)), key=lambda d: err(*d)
    )


@pytest.mark.parametrize("height, width, stride", [(64, 96, 1), (64, 96, 2), (32, 48, 2)])
def test_decoded_photo_clips_move_by_their_stated_motion(shipped_dir, height, width, stride):
    spec = ClipSpec(num_frames=4, height=height, width=width, stride=stride, start="first")
    ds = ShippedClips(spec, split="all", cache_dir=str(shipped_dir), kinds=("photos",))
    checked = 0
    for i in range(len(ds)):
        item = ds[i]
        dx, dy, zoom = item["motion"].tolist()
        if zoom != 1.0:
            continue
        assert (dx, dy) == (
            ds.motions[i, 0] * stride * width / 96,
            ds.motions[i, 1] * stride * height / 64,
        )
        grey = item["video"].mean(1).numpy()
        for f in range(3):
            # The window moves by (dx, dy): frame f + 1 shows frame f's content at -(dx, dy).
            assert _shift(grey[f], grey[f + 1]) == (round(dx), round(dy)), (item["name"], f)
        checked += 1
    assert checked == len(PHOTOS) * 7


def test_zoom_clips_magnify_by_their_stated_factor(shipped_dir):
    spec = ClipSpec(num_frames=3, height=64, width=96, stride=2, start="first")
    ds = ShippedClips(spec, split="all", cache_dir=str(shipped_dir), kinds=("photos",))
    zooms = [i for i in range(len(ds)) if ds.motions[i, 2] != 1.0]
    assert len(zooms) == 2 * len(PHOTOS)
    for i in zooms:
        item = ds[i]
        z = float(item["motion"][2])
        assert z == pytest.approx(float(ds.motions[i, 2]) ** 2)
        v = item["video"]

        def err(scale: float, v: torch.Tensor = v) -> float:
            # Frame 1 should equal frame 0 magnified by `scale` about the centre.
            theta = torch.tensor([[[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]]])
            grid = torch.nn.functional.affine_grid(theta, [1, 3, 64, 96], align_corners=False)
            pred = torch.nn.functional.grid_sample(v[:1], grid, align_corners=False)
            return float((pred - v[1:2])[..., 8:-8, 12:-12].abs().mean())

        # Among nearby magnifications, the stated one explains frame 1 best.
        candidates = [z ** (k / 2) for k in (-2, -1, 0, 1, 2, 3, 4)]
        best = min(candidates, key=err)
        assert best == pytest.approx(z), (item["name"], [round(err(c), 4) for c in candidates])


def test_items_carry_fields_and_flip_mirrors_motion(shipped_dir):
    spec = ClipSpec(num_frames=4, height=32, width=32, fps=8.0, start="center", flip=1.0)
    ds = ShippedClips(spec, split="train", cache_dir=str(shipped_dir))
    item = next(ds[i] for i in range(len(ds)) if ds.motions[i, 0] == 1 and ds.motions[i, 1] == 0)
    assert item["motion"].tolist() == [-1.5, 0.0, 1.0]  # flipped, stride 3, scale 1/2
    assert float(item["fps"]) == pytest.approx(25 / 3) and int(item["stride"]) == 3
    footage = ds[0]
    assert footage["kind"] == "footage" and torch.isnan(footage["motion"]).all()
    assert footage["caption"].endswith("footage") and footage["video"].shape == (4, 3, 32, 32)
    val = ShippedClips(spec, split="val", cache_dir=str(shipped_dir))
    assert not set(map(str, val.paths)) & set(ds.paths)  # train and val are disjoint


# The in-memory variant (exact pixels, no codec).
@pytest.fixture(scope="module")
def clips():
    return PannedPhotoClips("train", num_frames=6, height=24, width=32, photo_short_side=64)


def test_panned_shapes_ranges_and_split_are_disjoint(clips):
    val = PannedPhotoClips("val", num_frames=6, height=24, width=32, photo_short_side=64)
    assert len(clips) + len(val) == len(PHOTOS) * len(PANS) * 2
    assert not set(clips.items) & set(val.items)
    item = clips[3]
    assert item["video"].shape == (6, 3, 24, 32)
    assert torch.equal(item["cond_frame"], item["video"][0])
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["video"].std() > 0.05  # a real photograph, not a constant


def test_panned_frames_follow_the_stated_pan_exactly(clips):
    checked = 0
    for i in range(len(clips)):
        item = clips[i]
        dx, dy = (int(v) for v in item["motion"])
        v = item["video"]
        if dx == 0 and dy == 0:
            assert torch.equal(v[0], v[-1])
            continue
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


def test_dynamicrafter_experiment_trains_on_a_random_condition_frame(shipped_dir, tmp_path):
    from hydra.utils import instantiate

    from tests.conftest import compose

    cfg = compose("train", ["+experiment=dynamicrafter_tiny_timenoise"], output_dir=tmp_path)
    train = instantiate(cfg.data.train, cache_dir=str(shipped_dir))
    val = instantiate(cfg.data.val, cache_dir=str(shipped_dir))
    indices = []
    for i in range(len(train)):
        item = train[i]
        k = int(item["cond_index"])
        assert torch.equal(item["cond_frame"], item["video"][k])
        indices.append(k)
    assert len(set(indices)) > 3  # not always the first frame (reference: rand_cond_frame)
    assert all(int(val[i]["cond_index"]) == 0 for i in range(len(val)))  # evaluation: first
