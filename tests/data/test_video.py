import pytest
import torch

from cil_lightning.data.video import (
    ClipSpec,
    VideoError,
    VideoTooShortError,
    choose_stride,
    clip_indices,
    crop_box,
    load_clip,
    open_video,
)


def test_fps_mode_stride_is_the_rounded_rate_ratio():
    assert choose_stride(25.0, 100, 8, fps=8.0) == 3  # 25 / 8 = 3.125
    assert choose_stride(30.0, 200, 16, fps=3.0) == 10
    assert choose_stride(30.0, 100, 16, fps=7.0) == 4  # 4.29
    assert choose_stride(24.0, 100, 8, fps=60.0) == 1  # never below 1
    with pytest.raises(VideoTooShortError):
        choose_stride(25.0, 21, 8, fps=8.0)  # 8 frames at stride 3 span 22
    assert choose_stride(25.0, 22, 8, fps=8.0) == 3


def test_stride_range_is_drawn_uniformly_and_lowered_to_fit():
    g = torch.Generator().manual_seed(0)
    draws = [choose_stride(30.0, 1000, 16, stride=(1, 6), generator=g) for _ in range(600)]
    counts = torch.bincount(torch.tensor(draws), minlength=7)[1:]
    assert counts.min() > 60 and set(draws) == {1, 2, 3, 4, 5, 6}
    # 31 frames hold 16 frames at stride <= 2: larger draws are lowered, never below lo.
    short = {choose_stride(30.0, 31, 16, stride=(1, 6), generator=g) for _ in range(50)}
    assert short == {1, 2}
    with pytest.raises(VideoTooShortError):
        choose_stride(30.0, 31, 16, stride=(3, 6), generator=g)
    assert choose_stride(30.0, 100, 16, stride=4) == 4
    with pytest.raises(ValueError, match="exactly one"):
        choose_stride(30.0, 100, 16, fps=3.0, stride=2)


def test_clip_indices_are_evenly_spaced_inside_the_video():
    g = torch.Generator().manual_seed(1)
    starts = set()
    for _ in range(200):
        idx = clip_indices(50, 8, 3, "random", g)
        assert len(idx) == 8 and all(b - a == 3 for a, b in zip(idx, idx[1:]))
        assert idx[0] >= 0 and idx[-1] <= 49
        starts.add(idx[0])
    assert starts == set(range(0, 50 - 22 + 1))  # every start in reach is drawn
    assert clip_indices(50, 8, 3, "center") == [14 + 3 * k for k in range(8)]
    assert clip_indices(22, 8, 3, "first") == list(range(0, 22, 3))
    with pytest.raises(VideoTooShortError):
        clip_indices(21, 8, 3, "first")


def test_crop_box_covers_the_output_at_the_short_side_scale():
    box = crop_box((64, 150), 32, 32)  # short side 64 -> 32: scale 0.5, a 64x64 source crop
    assert (box.height, box.width, box.scale) == (64, 64, 0.5)
    assert box.left == (150 - 64) // 2 and box.top == 0
    box = crop_box((272, 640), 320, 512)  # height-limited upscale
    assert box.scale == pytest.approx(320 / 272) and box.height == 272 and box.width <= 640
    g = torch.Generator().manual_seed(0)
    lefts = {crop_box((64, 150), 32, 32, "random", g).left for _ in range(100)}
    assert min(lefts) >= 0 and max(lefts) <= 150 - 64 and len(lefts) > 20


def test_load_clip_shapes_range_fps_and_condition_frame(footage):
    spec = ClipSpec(num_frames=8, height=32, width=48, fps=8.0, start="random", crop="random")
    out = load_clip(footage[0], spec, torch.Generator().manual_seed(0))
    assert out["video"].shape == (8, 3, 32, 48) and out["video"].dtype == torch.float32
    assert out["cond_frame"].shape == (3, 32, 48)
    assert torch.equal(out["cond_frame"], out["video"][0])
    assert out["video"].min() >= -1 and out["video"].max() <= 1 and out["video"].std() > 0.1
    assert int(out["stride"]) == 3 and float(out["fps"]) == pytest.approx(25 / 3)
    assert out["indices"][1] - out["indices"][0] == 3
    again = load_clip(footage[0], spec, torch.Generator().manual_seed(0))
    assert torch.equal(again["video"], out["video"])  # seeded: the same clip


def test_random_condition_frame_is_a_uniform_frame_of_the_same_clip(footage):
    first = ClipSpec(num_frames=6, height=32, width=32, stride=2, crop="random", flip=0.5)
    rand = ClipSpec(**{**vars(first), "cond_frame": "random"})
    seen = []
    for seed in range(40):
        a = load_clip(footage[0], first, torch.Generator().manual_seed(seed))
        b = load_clip(footage[0], rand, torch.Generator().manual_seed(seed))
        # the option adds one draw after the others: the clip itself is the same
        assert torch.equal(a["video"], b["video"]) and int(a["cond_index"]) == 0
        k = int(b["cond_index"])
        assert torch.equal(b["cond_frame"], b["video"][k])
        seen.append(k)
    assert set(seen) == set(range(6))  # every frame can be the condition
    with pytest.raises(ValueError, match="cond_frame"):
        ClipSpec(cond_frame="last")


def test_flip_mirrors_the_same_clip(footage):
    spec = ClipSpec(num_frames=4, height=32, width=32, stride=2, start="center", crop="center")
    plain = load_clip(footage[1], spec)
    spec.flip = 1.0
    flipped = load_clip(footage[1], spec, torch.Generator().manual_seed(3))
    assert flipped["flipped"] and torch.equal(flipped["video"], plain["video"].flip(-1))


def test_backends_decode_the_same_frames(footage):
    indices = [5, 9, 13, 17, 29]  # mid-clip start: PyAV must seek and count frames right
    frames = {}
    for backend in ("decord", "pyav", "naive"):
        with open_video(footage[2], backend) as h:
            assert h.num_frames == 32 and h.fps == pytest.approx(25.0)
            frames[backend] = torch.from_numpy(h.get(indices)).float()
    assert frames["decord"].shape == (5, 64, frames["decord"].shape[2], 3)
    for backend in ("pyav", "naive"):
        assert (frames[backend] - frames["decord"]).abs().mean() < 1.0, backend
    # Distinct frames really differ, so agreement is not trivial.
    assert (frames["decord"][0] - frames["decord"][-1]).abs().mean() > 3.0


@pytest.mark.parametrize("backend", ["decord", "pyav", "naive"])
def test_broken_files_raise_video_error(tmp_path, footage, backend):
    data = footage[0].read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    spec = ClipSpec(num_frames=4, height=16, width=16, stride=2, backend=backend)
    for name in ("empty.mp4", "half.mp4", "noise.mp4", "missing.mp4"):
        with pytest.raises(VideoError):
            load_clip(tmp_path / name, spec)
    with pytest.raises(VideoTooShortError):
        load_clip(footage[0], ClipSpec(num_frames=20, height=16, width=16, stride=2))


def test_clip_spec_rejects_bad_settings():
    with pytest.raises(ValueError, match="not both"):
        ClipSpec(fps=3.0, stride=2)
    with pytest.raises(ValueError, match="backend"):
        ClipSpec(backend="opencv")
    assert ClipSpec().stride == 1
    assert ClipSpec(stride=[1, 6]).stride == (1, 6)
