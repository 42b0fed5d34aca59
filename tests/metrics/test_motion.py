import pytest
import torch

from cil_lightning.metrics import (
    FarnebackFlow,
    MissingWeightsError,
    MotionScore,
    MotionScoreError,
    RAFTFlow,
    load_raft,
    motion_scores,
)

from .helpers import pan, photo


@pytest.mark.parametrize("name", ["chelsea", "immunohistochemistry"])
@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (2, 0), (0, -3), (2, 2)])
def test_farneback_motion_score_of_a_translated_photograph_is_the_shift(name, dx, dy):
    video = pan(photo(name), dx, dy)[None]
    k = (dx**2 + dy**2) ** 0.5
    score = MotionScore(FarnebackFlow())
    score.update(video)
    assert score.compute().item() == pytest.approx(k, rel=0.10)


def test_static_video_scores_about_zero():
    video = pan(photo("chelsea"), 0, 0)[None]
    assert motion_scores(video, FarnebackFlow()).item() < 0.02


def test_default_method_is_farneback_without_raft_weights():
    assert isinstance(MotionScore().flow, FarnebackFlow)


def test_motion_score_error_on_known_pairs():
    image = photo("chelsea")
    generated = torch.stack([pan(image, 0, 0), pan(image, 2, 0)])
    reference = torch.stack([pan(image, 1, 0), pan(image, 2, 0)])
    err = MotionScoreError(FarnebackFlow())
    err.update(generated, reference)
    per_video = err.per_video()
    assert per_video.shape == (2, 3)
    assert per_video[0, 2].item() == pytest.approx(1.0, rel=0.1)  # |0 - 1|
    assert per_video[1, 2].item() < 0.05  # same motion
    assert err.compute().item() == pytest.approx(0.5, rel=0.1)
    # Precomputed scores: exact arithmetic.
    exact = MotionScoreError(FarnebackFlow())
    exact.update(torch.tensor([1.0, 4.0, 2.5]), torch.tensor([3.0, 4.0, 0.5]))
    assert exact.compute().item() == pytest.approx((2 + 0 + 2) / 3)


def test_raft_code_path_with_random_weights(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), tmp_path / "raft_small.pth")
    flow = load_raft(tmp_path / "raft_small.pth", arch="small", num_flow_updates=2)
    assert isinstance(flow, RAFTFlow) and flow.num_flow_updates == 2
    video = pan(photo("chelsea"), 1, 0, frames=3, size=40)[None]  # < 128: upsampled, then back
    a, b = video[:, 0], video[:, 1]
    uv = flow(a, b)
    assert uv.shape == (1, 2, 40, 40)
    torch.testing.assert_close(flow(a, b), uv)  # deterministic
    scores = motion_scores(video, flow)
    assert scores.shape == (1,) and torch.isfinite(scores).all()


def test_missing_raft_weights_name_the_key_and_the_file(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        MotionScore(method="raft", raft_weights=tmp_path / "nope.pth")
    msg = str(e.value)
    assert "metric.motion.raft_weights" in msg and "nope.pth" in msg and "raft_large" in msg
