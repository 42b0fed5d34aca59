import pytest
import torch

from cil_lightning.metrics import (
    CLIPImageAlignment,
    CLIPTemporalConsistency,
    MissingWeightsError,
    load_clip,
)

from .helpers import TINY_CLIP, tiny_clip_encoder


def test_identical_frames_have_temporal_consistency_one():
    torch.manual_seed(0)
    frame = torch.rand(3, 40, 48) * 2 - 1
    video = frame.expand(5, -1, -1, -1)[None]
    tc = CLIPTemporalConsistency(tiny_clip_encoder())
    tc.update(video)
    assert tc.compute().item() == pytest.approx(1.0, abs=1e-6)
    noisy = torch.rand(1, 5, 3, 40, 48) * 2 - 1
    tc.update(noisy)
    assert tc.per_video()[1].item() < 0.9999  # different frames: below 1


def test_alignment_is_one_for_a_video_of_the_condition_and_lower_otherwise():
    torch.manual_seed(0)
    cond = torch.rand(2, 3, 32, 32) * 2 - 1
    same = cond[:, None].expand(-1, 4, -1, -1, -1)
    other = torch.rand(2, 4, 3, 32, 32) * 2 - 1
    align = CLIPImageAlignment(tiny_clip_encoder())
    align.update(same, cond)
    align.update(other, cond)
    scores = align.per_video()
    torch.testing.assert_close(scores[:2], torch.ones(2, dtype=torch.float64))
    assert (scores[2:] < 0.9999).all()


def test_load_clip_from_a_local_checkpoint(tmp_path):
    encoder = tiny_clip_encoder(seed=1)
    torch.save(encoder.model.state_dict(), tmp_path / "tiny_clip.pt")
    loaded = load_clip("tiny", tmp_path / "tiny_clip.pt", model_config=TINY_CLIP)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), encoder(x))


def test_clip_refuses_hub_names_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="hub"):
        load_clip("hf-hub:laion/CLIP-ViT-B-32", tmp_path / "x.bin")
    with pytest.raises(MissingWeightsError, match="metric.clip.weights"):
        load_clip("ViT-B-32", tmp_path / "missing.bin")
